//! The Socket.IO server as the rest of relais sees it, on one node or several.
//!
//! On one node ([`Io::Local`]) this is socketioxide with its in-process `LocalAdapter`,
//! exactly as before several nodes existed. On several ([`Io::Cluster`]) socketioxide runs
//! with the Redis adapter, and two kinds of delivery differ:
//! - messaging events (`new_message`, `message_read`, `typing`) go to a room through the
//!   adapter, which reaches that room's sockets on every node;
//! - the SFU's signaling reaches a socket wherever it is: a socket of this node directly, a
//!   socket of another node (a patient whose socket landed elsewhere) through the
//!   [`Bus`](crate::cluster::bus::Bus), in order; session-room events reach every node
//!   through the bus too, so they stay ordered with the joins that precede them.
//!
//! Invariant: when Redis does not answer, events still reach this node's own sockets.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::{Adapter, Emitter, LocalAdapter};
use socketioxide::extract::SocketRef;
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::Sid;

use crate::cluster::NodeId;
use crate::cluster::bus::{Bus, BusMessage};
use crate::cluster::driver::ManagedDriver;
use crate::ids::{RoomKey, SocketId};
use crate::ports::{ClientNotify, NotifyError};
use crate::wire::Outgoing;

/// socketioxide's Redis adapter over relais's reconnecting driver.
pub type ClusterAdapter = socketioxide_redis::CustomRedisAdapter<Emitter, ManagedDriver>;

/// How long a cross-node broadcast may take before this node delivers locally only.
const ADAPTER_TIMEOUT: Duration = Duration::from_secs(1);

/// Why an emit did not go out (the text is for logs).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EmitError(String);

impl EmitError {
    fn from(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
    }
}

/// The Socket.IO server of this node. Cheap to clone.
#[derive(Clone)]
pub enum Io {
    Local(SocketIo<LocalAdapter>),
    Cluster {
        io: SocketIo<ClusterAdapter>,
        bus: Bus,
    },
}

impl Io {
    /// Sockets connected to this node.
    pub fn local_sockets(&self) -> usize {
        match self {
            Io::Local(io) => io.sockets().len(),
            Io::Cluster { io, .. } => io.sockets().len(),
        }
    }

    /// Disconnects every socket of this node.
    pub async fn close(&self) {
        match self {
            Io::Local(io) => io.close().await,
            Io::Cluster { io, .. } => io.close().await,
        }
    }

    /// False while Redis is unreachable (several nodes only).
    pub fn redis_healthy(&self) -> bool {
        match self {
            Io::Local(_) => true,
            Io::Cluster { bus, .. } => bus.healthy(),
        }
    }

    /// The socket `sid`: on this node, or on another node that routed its signaling here.
    pub fn get_socket(&self, sid: Sid) -> Option<SocketHandle> {
        match self {
            Io::Local(io) => io.get_socket(sid).map(SocketHandle::Local),
            Io::Cluster { io, bus } => match io.get_socket(sid) {
                Some(s) => Some(SocketHandle::Cluster(s)),
                None => bus.remote_node(sid).map(|node| {
                    SocketHandle::Remote(RemoteSocket {
                        bus: bus.clone(),
                        node,
                        sid,
                    })
                }),
            },
        }
    }

    /// The socket `sid` if it is connected to this node.
    pub fn get_local_socket(&self, sid: Sid) -> Option<SocketHandle> {
        match self {
            Io::Local(io) => io.get_socket(sid).map(SocketHandle::Local),
            Io::Cluster { io, .. } => io.get_socket(sid).map(SocketHandle::Cluster),
        }
    }

    /// Session-room events (the SFU): this node's sockets of `room`, and every other node's
    /// through the bus.
    pub fn to(&self, room: String) -> RoomTarget<'_> {
        RoomTarget { io: self, room }
    }

    /// Messaging events: the sockets of any of `rooms` on every node (each socket once),
    /// through the adapter; this node's only while Redis is unreachable.
    pub async fn emit_to_rooms<T: Serialize + ?Sized>(
        &self,
        rooms: Vec<String>,
        event: &str,
        data: &T,
    ) -> Result<(), EmitError> {
        match self {
            Io::Local(io) => io
                .to(rooms)
                .emit(event, data)
                .await
                .map_err(EmitError::from),
            Io::Cluster { io, bus } => {
                across_nodes(bus, io.to(rooms.clone()), io.local().to(rooms), event, data).await
            }
        }
    }

    /// What another node asked this one to emit to a room's sockets here.
    pub async fn emit_local(&self, room: String, event: &str, data: &Value) {
        let r = match self {
            Io::Local(io) => io.local().to(room).emit(event, data).await,
            Io::Cluster { io, .. } => io.local().to(room).emit(event, data).await,
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, event, "local room emit failed");
        }
    }
}

/// Through the adapter (every node), or this node only when Redis is away.
pub(crate) async fn across_nodes<A: Adapter, T: Serialize + ?Sized>(
    bus: &Bus,
    everywhere: BroadcastOperators<A>,
    here: BroadcastOperators<A>,
    event: &str,
    data: &T,
) -> Result<(), EmitError> {
    if bus.healthy() {
        match tokio::time::timeout(ADAPTER_TIMEOUT, everywhere.emit(event, data)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(socketioxide::BroadcastError::Socket(e))) => {
                // Sent; some local sockets were gone or full.
                return Err(EmitError::from(format!("{e:?}")));
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, event, "cross-node emit failed; local sockets only");
                bus.set_healthy(false);
            }
            Err(_) => {
                tracing::warn!(event, "cross-node emit timed out; local sockets only");
                bus.set_healthy(false);
            }
        }
    }
    here.emit(event, data).await.map_err(EmitError::from)
}

/// Emitting to a room of sessions, see [`Io::to`].
pub struct RoomTarget<'a> {
    io: &'a Io,
    room: String,
}

impl RoomTarget<'_> {
    pub async fn emit<T: Serialize + ?Sized>(self, event: &str, data: &T) -> Result<(), EmitError> {
        match self.io {
            Io::Local(io) => io
                .to(self.room)
                .emit(event, data)
                .await
                .map_err(EmitError::from),
            Io::Cluster { io, bus } => {
                let data = serde_json::to_value(data).map_err(EmitError::from)?;
                let local = io.local().to(self.room.clone()).emit(event, &data).await;
                bus.broadcast(BusMessage::RoomEmit {
                    room: self.room,
                    event: event.to_string(),
                    data,
                });
                local.map_err(EmitError::from)
            }
        }
    }
}

/// A socket the SFU talks to: here, or on another node.
pub enum SocketHandle {
    Local(SocketRef<LocalAdapter>),
    Cluster(SocketRef<ClusterAdapter>),
    Remote(RemoteSocket),
}

impl SocketHandle {
    pub fn join(&self, room: String) {
        match self {
            SocketHandle::Local(s) => s.join(room),
            SocketHandle::Cluster(s) => s.join(room),
            SocketHandle::Remote(r) => r.send(BusMessage::Join { sid: r.sid, room }),
        }
    }

    pub fn leave(&self, room: String) {
        match self {
            SocketHandle::Local(s) => s.leave(room),
            SocketHandle::Cluster(s) => s.leave(room),
            SocketHandle::Remote(r) => r.send(BusMessage::Leave { sid: r.sid, room }),
        }
    }

    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), EmitError> {
        match self {
            SocketHandle::Local(s) => s.emit(event, data).map_err(EmitError::from),
            SocketHandle::Cluster(s) => s.emit(event, data).map_err(EmitError::from),
            SocketHandle::Remote(r) => {
                let data = serde_json::to_value(data).map_err(EmitError::from)?;
                r.send(BusMessage::Emit {
                    sid: r.sid,
                    event: event.to_string(),
                    data,
                });
                Ok(())
            }
        }
    }
}

/// A socket of another node, reached through the bus.
pub struct RemoteSocket {
    bus: Bus,
    node: NodeId,
    sid: Sid,
}

impl RemoteSocket {
    fn send(&self, msg: BusMessage) {
        self.bus.send_to(&self.node, msg);
    }
}

/// The core's name for a Socket.IO session id.
impl From<Sid> for SocketId {
    fn from(sid: Sid) -> Self {
        // A Sid is always 16 url-safe base64 characters, which is what SocketId holds.
        SocketId::parse(sid.as_str()).unwrap_or_else(|| {
            tracing::error!(%sid, "a Socket.IO session id that is not one");
            SocketId::NONE
        })
    }
}

/// Socket.IO's name for a socket the core names.
pub fn sid_of(id: SocketId) -> Option<Sid> {
    id.as_str().parse().ok()
}

/// The core's way to clients' sockets, here or on other nodes: session rooms go through the
/// bus (ordered with the joins before them), conversation and person rooms through the adapter.
#[async_trait::async_trait]
impl ClientNotify for Io {
    fn join(&self, id: SocketId, room: RoomKey) {
        if let Some(socket) = sid_of(id).and_then(|sid| self.get_socket(sid)) {
            socket.join(room.to_string());
        }
    }

    fn leave(&self, id: SocketId, room: RoomKey) {
        if let Some(socket) = sid_of(id).and_then(|sid| self.get_socket(sid)) {
            socket.leave(room.to_string());
        }
    }

    fn emit_to(&self, id: SocketId, event: &Outgoing) -> Result<(), NotifyError> {
        // A socket is not a room of its own in socketioxide: reach it directly.
        match sid_of(id).and_then(|sid| self.get_socket(sid)) {
            Some(socket) => socket
                .emit(event.name(), event)
                .map_err(|e| NotifyError(e.to_string())),
            None => Err(NotifyError("socket gone".into())),
        }
    }

    async fn emit_room(&self, room: RoomKey, event: &Outgoing) -> Result<(), NotifyError> {
        let r = match room {
            RoomKey::Session(_) => self.to(room.to_string()).emit(event.name(), event).await,
            RoomKey::Conversation(_) | RoomKey::Person(_) => {
                self.emit_to_rooms(vec![room.to_string()], event.name(), event)
                    .await
            }
        };
        r.map_err(|e| NotifyError(e.to_string()))
    }
}
