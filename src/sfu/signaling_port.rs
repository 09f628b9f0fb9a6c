//! The port through which the SFU reaches the participants' signaling sockets, whatever
//! carries them (Socket.IO on this node, or a socket of another node that signals to a room
//! here). `sio::Io` implements it; the SFU never sees the transport.
//!
//! Invariants: every call is fire-and-forget for the room (a socket that is gone makes an
//! `Err` the room logs and goes on); payloads are the wire types of `crate::wire`, serialized
//! once here.

use serde_json::Value;

use crate::ids::SocketId;

#[async_trait::async_trait]
pub trait SignalingPort: Send + Sync + 'static {
    /// Puts the socket in `room` (its session's): what is emitted to the room reaches it.
    fn join(&self, sid: SocketId, room: String);
    /// Takes the socket out of `room`.
    fn leave(&self, sid: SocketId, room: String);
    /// Emits to one socket; `Err` when it is gone or the emit failed.
    fn emit_to(&self, sid: SocketId, event: &'static str, payload: &Value) -> Result<(), String>;
    /// Emits to every socket in `room`, on every node.
    async fn emit_room(
        &self,
        room: String,
        event: &'static str,
        payload: &Value,
    ) -> Result<(), String>;
}
