//! What the cluster needs from the rest of the node: the store, the clock, the SFU, the
//! recordings, the metrics, and a way to this node's own sockets ([`SocketDelivery`]). Given
//! once, at [`Cluster::start`](super::Cluster::start); the cluster never sees the handlers'
//! state.

use std::sync::Arc;

use serde_json::Value;

use crate::clock::SharedClock;
use crate::ids::SocketId;
use crate::metrics::Metrics;
use crate::recording::Recordings;
use crate::sfu::Sfu;
use crate::store::Store;
use crate::wire::Outgoing;

#[derive(Clone)]
pub struct ClusterDeps {
    pub store: Store,
    pub clock: SharedClock,
    pub sfu: Sfu,
    pub recordings: Recordings,
    pub metrics: Arc<Metrics>,
    pub public_base_url: url::Url,
    pub sockets: Arc<dyn SocketDelivery>,
}

/// This node's Socket.IO sockets, as the bus delivers to them (the Socket.IO glue implements
/// it). Events arrive already serialized by the node that sent them.
#[async_trait::async_trait]
pub trait SocketDelivery: Send + Sync + 'static {
    /// Sockets connected to this node.
    fn local_count(&self) -> usize;
    /// Emits to one socket of this node (nothing when it is not here).
    fn emit_here(&self, sid: SocketId, event: &str, data: &Value);
    fn join_here(&self, sid: SocketId, room: String);
    fn leave_here(&self, sid: SocketId, room: String);
    /// Emits to the sockets of `room` on this node.
    async fn emit_room_here(&self, room: String, event: &str, data: &Value);
    /// Emits to the sockets of any of `rooms` on every node, each socket once.
    async fn emit_to_rooms(&self, rooms: Vec<String>, event: &Outgoing);
}
