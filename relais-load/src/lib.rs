//! relais-load: the load tool and the test client of relais, in their own crate so that the
//! server links none of their dependencies (`webrtc`, `reqwest`, `tokio-tungstenite`).
//!
//! - [`client`]: clients of relais's own protocols — REST ([`client::api`]), Socket.IO v4 over
//!   WebSocket ([`client::socketio`]), a WebRTC participant ([`client::peer`]) — used by the
//!   server's integration tests and by the load tool;
//! - [`load`]: the load tool's engine and scenarios; the `relais-load` binary is a thin CLI
//!   over it;
//! - [`synthetic`]: the synthetic media both send and check (one payload format), and
//!   [`peer_connection`]: how both configure a PeerConnection (one builder), below both.
//!
//! From the server crate it uses what crosses the wire only: ids, token minting, codec
//! knowledge and RTP-level pieces.

pub mod client;
pub mod load;
pub mod peer_connection;
pub mod synthetic;
