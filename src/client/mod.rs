//! Clients of relais's own protocols, used by the load tool and the tests: a Socket.IO v4
//! client over WebSocket ([`socketio`]) and a typed REST client ([`api`]).

pub mod api;
pub mod media;
pub mod peer;
pub mod socketio;
