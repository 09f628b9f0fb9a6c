//! The port through which the core (messaging, the SFU) reaches clients, whatever carries
//! the events: Socket.IO on this node or on another (`sio::Io` implements it), a recorder in
//! tests. The core says *what* happens ([`Outgoing`], one enum tying each event name to its
//! payload) and *to whom* ([`RoomKey`] or one socket); it never sees the transport.
//!
//! Invariants: every call is fire-and-forget for the caller (a socket that is gone is an
//! `Err` the caller logs and goes past); events to one socket, and to one room, arrive in the
//! order they were sent, across nodes too; what is emitted to a room reaches the sockets that
//! joined it before the emit.

use crate::ids::{RoomKey, SocketId};
use crate::wire::Outgoing;

/// Why an event did not go out (the text is for logs: never message content).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NotifyError(pub String);

#[async_trait::async_trait]
pub trait ClientNotify: Send + Sync + 'static {
    /// Puts the socket in `room`: what is emitted to the room then reaches it.
    fn join(&self, socket: SocketId, room: RoomKey);
    /// Takes the socket out of `room`.
    fn leave(&self, socket: SocketId, room: RoomKey);
    /// One socket, here or on another node.
    fn emit_to(&self, socket: SocketId, event: &Outgoing) -> Result<(), NotifyError>;
    /// Every socket in `room`, on every node.
    async fn emit_room(&self, room: RoomKey, event: &Outgoing) -> Result<(), NotifyError>;
}

/// A [`ClientNotify`] that remembers what it was asked, for tests of the core.
#[derive(Debug, Default)]
pub struct Recorded {
    calls: parking_lot::Mutex<Vec<Call>>,
}

/// One call a [`Recorded`] received.
#[derive(Debug, Clone)]
pub enum Call {
    Join(SocketId, RoomKey),
    Leave(SocketId, RoomKey),
    Emit(SocketId, Outgoing),
    EmitRoom(RoomKey, Outgoing),
}

impl Recorded {
    /// The calls so far, oldest first; the record is emptied.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock())
    }
}

#[async_trait::async_trait]
impl ClientNotify for Recorded {
    fn join(&self, socket: SocketId, room: RoomKey) {
        self.calls.lock().push(Call::Join(socket, room));
    }
    fn leave(&self, socket: SocketId, room: RoomKey) {
        self.calls.lock().push(Call::Leave(socket, room));
    }
    fn emit_to(&self, socket: SocketId, event: &Outgoing) -> Result<(), NotifyError> {
        self.calls.lock().push(Call::Emit(socket, event.clone()));
        Ok(())
    }
    async fn emit_room(&self, room: RoomKey, event: &Outgoing) -> Result<(), NotifyError> {
        self.calls.lock().push(Call::EmitRoom(room, event.clone()));
        Ok(())
    }
}
