//! Clients of relais's own protocols, used by the load tool and the tests: a Socket.IO v4
//! client over WebSocket ([`socketio`]), a typed REST client ([`api`]), and the latency
//! statistics both the tests and the load tool keep ([`stats`]).

pub mod api;
pub mod media;
pub mod peer;
pub mod socketio;
pub mod stats;
