//! The node-to-node bus: relais's own messages between nodes over Redis pub/sub (the
//! Socket.IO adapter carries messaging events; this carries signaling for sessions owned by
//! another node and the owner's answers back to the client's socket).
//!
//! Channels: `{prefix}:bus:node:{id}` (to one node) and `{prefix}:bus:all` (to every node).
//!
//! Invariants:
//! - everything a node sends leaves through one queue and one task, in the order it was
//!   queued, and a node reads both its channels through one queue: what a room sends a
//!   remote socket (join the session room, then an offer, then candidates) arrives in order;
//! - sending never blocks the caller: a full queue drops the message and counts it;
//! - a malformed message is logged (without its content) and skipped; a routed request
//!   always ends, with the owner's answer or a timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide_redis::drivers::{ChanItem, Driver};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::NodeId;
use super::driver::ManagedDriver;
use crate::error::ErrorCode;
use crate::error::{DomainError, DomainResult};
use crate::ids::{Identity, SessionId, SocketId};
use crate::sfu::{Caller, RemoteError, SfuReply, SfuRequest};

/// Messages waiting to be published.
const OUTBOX: usize = 8192;
/// Messages received and not yet handled.
const INBOX: usize = 8192;
/// Remote sockets remembered at once (sockets of other nodes bound to rooms here).
const MAX_REMOTE_SOCKETS: usize = 100_000;

/// What nodes tell each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BusMessage {
    /// A request for a session the receiver owns (from a socket or a REST call of the sender).
    Request {
        id: u64,
        caller: Caller,
        request: SfuRequest,
    },
    /// The owner's answer to [`BusMessage::Request`] `id`.
    Reply {
        id: u64,
        outcome: Result<SfuReply, RemoteError>,
    },
    /// Emit to one socket of the receiver: an [`Outgoing`](crate::wire::Outgoing) event the
    /// sender serialized (its name and payload), delivered as it is.
    Emit {
        sid: SocketId,
        event: String,
        data: Value,
    },
    /// Put one socket of the receiver in a room (or take it out).
    Join {
        sid: SocketId,
        room: String,
    },
    Leave {
        sid: SocketId,
        room: String,
    },
    /// To every node: emit an event (as in [`BusMessage::Emit`]) to the sockets of a room there.
    RoomEmit {
        room: String,
        event: String,
        data: Value,
    },
    /// To every node: a socket of `who` connected on the sender (rooms waiting for them
    /// rebind to it).
    SocketBack {
        who: Identity,
        sid: SocketId,
    },
    /// A socket of the sender that took part in the receiver's sessions disconnected.
    SocketGone {
        who: Identity,
        sid: SocketId,
    },
    /// To every node: the session ended (through REST on the sender); its room closes.
    EndRoom {
        session: SessionId,
    },
}

/// A message and the node it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    #[serde(flatten)]
    pub msg: BusMessage,
}

struct Outgoing {
    channel: String,
    payload: Vec<u8>,
}

type Pending = oneshot::Sender<DomainResult<SfuReply>>;

struct Inner {
    node: NodeId,
    prefix: String,
    outbox: mpsc::Sender<Outgoing>,
    /// Sockets of other nodes that rooms here talk to: their node and person.
    remote: Mutex<HashMap<SocketId, (NodeId, Identity)>>,
    /// Routed requests waiting for their answer, and the node they went to.
    pending: Mutex<HashMap<u64, (NodeId, Pending)>>,
    next_id: AtomicU64,
    dropped: AtomicU64,
    /// False after Redis refused a command, until a heartbeat goes through again.
    healthy: AtomicBool,
}

/// The bus of one node. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

/// `{prefix}:bus:node:{id}`.
pub fn node_channel(prefix: &str, node: &NodeId) -> String {
    format!("{prefix}:bus:node:{node}")
}

/// `{prefix}:bus:all`.
pub fn all_channel(prefix: &str) -> String {
    format!("{prefix}:bus:all")
}

impl Bus {
    /// Starts the publishing task; it stops when `shutdown` turns true (after sending what
    /// was queued, for at most a second).
    pub fn start(
        driver: ManagedDriver,
        node: NodeId,
        prefix: String,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(OUTBOX);
        let bus = Self {
            inner: Arc::new(Inner {
                node,
                prefix,
                outbox: tx,
                remote: Mutex::new(HashMap::new()),
                pending: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                dropped: AtomicU64::new(0),
                healthy: AtomicBool::new(true),
            }),
        };
        let task = tokio::spawn(publish_loop(bus.clone(), driver, rx, shutdown));
        (bus, task)
    }

    pub fn node(&self) -> &NodeId {
        &self.inner.node
    }

    /// Subscribes to this node's channels (one ordered queue).
    pub async fn subscribe(
        &self,
        driver: &ManagedDriver,
    ) -> redis::RedisResult<mpsc::Receiver<ChanItem>> {
        let channels = [
            node_channel(&self.inner.prefix, &self.inner.node),
            all_channel(&self.inner.prefix),
        ];
        driver.subscribe_ordered(&channels, INBOX).await
    }

    /// Whether Redis answered lately (a node falls back to local delivery when not).
    pub fn healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        let was = self.inner.healthy.swap(healthy, Ordering::Relaxed);
        if was != healthy {
            if healthy {
                tracing::info!("redis reachable again: events cross nodes again");
            } else {
                tracing::warn!("redis unreachable: events reach this node's sockets only");
            }
        }
    }

    /// Messages dropped because the outbox was full or Redis refused them.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn queue(&self, channel: String, msg: BusMessage) {
        let envelope = Envelope {
            from: self.inner.node.clone(),
            msg,
        };
        let payload = match serde_json::to_vec(&envelope) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "bus message not serializable; dropped");
                return;
            }
        };
        if self
            .inner
            .outbox
            .try_send(Outgoing { channel, payload })
            .is_err()
        {
            let n = self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(1000) {
                tracing::warn!(dropped = n + 1, "bus outbox full; message dropped");
            }
        }
    }

    /// Sends `msg` to one node (never blocks).
    pub fn send_to(&self, node: &NodeId, msg: BusMessage) {
        self.queue(node_channel(&self.inner.prefix, node), msg);
    }

    /// Sends `msg` to every node, this one included (receivers skip their own).
    pub fn broadcast(&self, msg: BusMessage) {
        self.queue(all_channel(&self.inner.prefix), msg);
    }

    /// Sends a request to the session's owner and waits for its answer.
    pub async fn request(
        &self,
        node: &NodeId,
        caller: Caller,
        request: SfuRequest,
        timeout: Duration,
    ) -> DomainResult<SfuReply> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().insert(id, (node.clone(), tx));
        self.send_to(
            node,
            BusMessage::Request {
                id,
                caller,
                request,
            },
        );
        let outcome = tokio::time::timeout(timeout, rx).await;
        self.inner.pending.lock().remove(&id);
        match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(_)) | Err(_) => Err(DomainError::conflict(
                ErrorCode::NodeUnavailable,
                "the server of this consultation did not answer; retry shortly",
            )),
        }
    }

    /// Hands the answer to request `id` to whoever waits for it (nobody after a timeout).
    pub fn resolve(&self, id: u64, result: DomainResult<SfuReply>) {
        if let Some((_, tx)) = self.inner.pending.lock().remove(&id) {
            let _ = tx.send(result);
        }
    }

    /// Answers at once the requests waiting on nodes that are not alive any more (they
    /// would only time out, holding their socket's other signaling behind them).
    pub fn fail_requests_to_dead(&self, is_live: impl Fn(&NodeId) -> bool) {
        let dead: Vec<Pending> = {
            let mut pending = self.inner.pending.lock();
            let ids: Vec<u64> = pending
                .iter()
                .filter(|(_, (node, _))| !is_live(node))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| pending.remove(&id).map(|(_, tx)| tx))
                .collect()
        };
        for tx in dead {
            let _ = tx.send(Err(DomainError::conflict(
                ErrorCode::NodeUnavailable,
                "the server of this consultation is gone; it moves to another server within \
                 seconds (session_moved)",
            )));
        }
    }

    /// Remembers that socket `sid` of `who` lives on `node` (rooms here talk to it).
    pub fn register_remote(&self, sid: SocketId, node: NodeId, who: Identity) {
        let mut remote = self.inner.remote.lock();
        if remote.len() >= MAX_REMOTE_SOCKETS && !remote.contains_key(&sid) {
            tracing::warn!("too many remote sockets remembered; this one is not");
            return;
        }
        remote.insert(sid, (node, who));
    }

    pub fn remote_node(&self, sid: SocketId) -> Option<NodeId> {
        self.inner.remote.lock().get(&sid).map(|(n, _)| n.clone())
    }

    pub fn forget_remote(&self, sid: SocketId) {
        self.inner.remote.lock().remove(&sid);
    }

    /// Forgets every socket of a lost node; returns them (their rooms start a grace period).
    pub fn forget_node(&self, node: &NodeId) -> Vec<(SocketId, Identity)> {
        let mut gone = Vec::new();
        self.inner.remote.lock().retain(|sid, (n, who)| {
            if n == node {
                gone.push((*sid, *who));
                false
            } else {
                true
            }
        });
        gone
    }
}

async fn publish_loop(
    bus: Bus,
    driver: ManagedDriver,
    mut rx: mpsc::Receiver<Outgoing>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures: u64 = 0;
    loop {
        let next = tokio::select! {
            m = rx.recv() => m,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let Some(m) = next else { return };
        publish(&bus, &driver, m, &mut failures).await;
    }
    // Shutting down: what is queued still goes (a moved session's notice), briefly.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(m) = rx.try_recv() {
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        publish(&bus, &driver, m, &mut failures).await;
    }
}

async fn publish(bus: &Bus, driver: &ManagedDriver, m: Outgoing, failures: &mut u64) {
    match driver.publish(m.channel, m.payload).await {
        Ok(()) => {
            if *failures > 0 {
                tracing::info!(failed = *failures, "bus publishing again");
                *failures = 0;
            }
        }
        Err(e) => {
            *failures += 1;
            bus.inner.dropped.fetch_add(1, Ordering::Relaxed);
            bus.set_healthy(false);
            if *failures == 1 || failures.is_multiple_of(1000) {
                tracing::warn!(error = %e, failed = *failures, "bus message not published");
            }
        }
    }
}

/// Reads one received message; `None` (logged) when it is not a bus message.
pub fn decode(payload: &[u8]) -> Option<Envelope> {
    match serde_json::from_slice::<Envelope>(payload) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(
                error = %e.classify_label(),
                bytes = payload.len(),
                "malformed bus message skipped"
            );
            None
        }
    }
}

trait ClassifyLabel {
    fn classify_label(&self) -> &'static str;
}

impl ClassifyLabel for serde_json::Error {
    fn classify_label(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "unexpected shape",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Role;

    #[test]
    fn messages_round_trip() {
        let sid = SocketId::parse("AbCdEfGhIjKlMnOp").unwrap();
        let e = Envelope {
            from: NodeId::from("node-a"),
            msg: BusMessage::Request {
                id: 7,
                caller: Caller {
                    who: Identity::new(Role::Patient, 3),
                    socket: Some(sid),
                    ip: Some("127.0.0.1".parse().unwrap()),
                    name: None,
                },
                request: SfuRequest::Publish {
                    session: SessionId(1),
                    sdp: "v=0".into(),
                },
            },
        };
        let bytes = serde_json::to_vec(&e).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.from, NodeId::from("node-a"));
        match back.msg {
            BusMessage::Request {
                id,
                caller,
                request,
            } => {
                assert_eq!(id, 7);
                assert_eq!(caller.socket, Some(sid));
                assert_eq!(caller.who, Identity::new(Role::Patient, 3));
                assert_eq!(request.session(), SessionId(1));
            }
            other => panic!("{other:?}"),
        }
        let reply = Envelope {
            from: NodeId::from("node-b"),
            msg: BusMessage::Reply {
                id: 7,
                outcome: Err(RemoteError {
                    kind: crate::error::ErrorKind::Conflict,
                    code: crate::error::ErrorCode::NotRecording,
                    message: "no".into(),
                }),
            },
        };
        let back = decode(&serde_json::to_vec(&reply).unwrap()).unwrap();
        match back.msg {
            BusMessage::Reply {
                outcome: Err(e), ..
            } => {
                assert_eq!(e.code, crate::error::ErrorCode::NotRecording);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_skipped() {
        assert!(decode(b"").is_none());
        assert!(decode(b"{not json").is_none());
        assert!(decode(br#"{"from":"a","type":"nope"}"#).is_none());
        assert!(decode(br#"{"from":"a","type":"emit","sid":"x","event":"e","data":1}"#).is_none());
        assert!(decode(br#"[1,2,3]"#).is_none());
    }
}
