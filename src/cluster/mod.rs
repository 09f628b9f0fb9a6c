//! Several relais nodes behind one name: PostgreSQL holds the state, Redis carries what
//! crosses nodes. Off unless `redis_url` is set; a single node never touches Redis.
//!
//! - [`driver`]: one reconnecting Redis connection per node (adapter, bus, directory);
//! - [`directory`]: each node's entry (URLs, media addresses, load) with a heartbeat and an
//!   expiry; `GET /api/messaging/nodes` lists it;
//! - [`placement`]: a new session goes to the least-loaded live node, which owns its room;
//! - [`bus`] and [`inbound`]: signaling for a session owned by another node is routed there,
//!   and the owner's room reaches the client's socket back through its node;
//! - [`failover`]: the sessions of a node whose entry expired move to live nodes; their
//!   participants get `session_moved` and reconnect their media there.
//!
//! Invariants:
//! - a session is owned by exactly one node at a time (`webrtc_sessions.node_id`, changed
//!   only by a conditional update, so one node wins each move);
//! - nothing a node receives from Redis can stop it: malformed input is logged and skipped;
//!   while Redis is away, events reach local sockets only and no session moves; when Redis is
//!   back, everything resumes without a restart;
//! - every task started here stops at shutdown (a watch channel), and a node leaving cleanly
//!   takes its directory entry out.

pub mod bus;
pub mod cpu;
pub mod directory;
pub mod driver;
pub mod failover;
pub mod inbound;
pub mod placement;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::socket::Sid;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::ErrorCode;
use crate::ids::{Identity, SessionId};
use crate::realtime::signaling::Caller;
use crate::sfu::SignalError;
use crate::state::AppState;
use bus::{Bus, BusMessage, RemoteCaller};
use directory::{Directory, MediaAddrs, NodeInfo, NodeLoad};
use driver::ManagedDriver;

/// A node's name in the directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long a session's owner, once looked up, is taken as known (while that node lives).
const OWNER_CACHE: Duration = Duration::from_secs(5);
const OWNER_CACHE_MAX: usize = 10_000;

/// What a node says about itself in the directory, besides its load.
#[derive(Debug, Clone)]
pub struct LocalNode {
    pub public_base_url: url::Url,
    pub http_addr: std::net::SocketAddr,
    pub https_addr: Option<std::net::SocketAddr>,
    pub media: MediaAddrs,
}

struct Inner {
    node: NodeId,
    prefix: String,
    heartbeat: Duration,
    ttl: Duration,
    request_timeout: Duration,
    driver: ManagedDriver,
    bus: Bus,
    directory: Directory,
    owners: Mutex<HashMap<SessionId, (NodeId, Instant)>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    started_at: i64,
}

/// This node's membership in a cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

/// `{host}-{6 hex}`: readable in the directory, new at each start.
fn generated_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let host = if host.is_empty() {
        "relais".into()
    } else {
        host
    };
    format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

impl Cluster {
    /// Connects to Redis (`redis_url` must be set) and starts the bus's publisher.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let url = config
            .redis_url
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("redis_url is not set"))?;
        let c = &config.cluster;
        let driver = ManagedDriver::connect(url, Duration::from_secs(5))
            .await
            .map_err(|e| anyhow::anyhow!("redis_url: cannot connect to Redis: {e}"))?;
        let node = NodeId(c.node_id.clone().unwrap_or_else(generated_node_id));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (bus, publisher) =
            Bus::start(driver.clone(), node.clone(), c.prefix.clone(), shutdown_rx);
        let directory = Directory::new(driver.clone(), c.prefix.clone(), node.clone(), c.node_ttl);
        Ok(Self {
            inner: Arc::new(Inner {
                node,
                prefix: c.prefix.clone(),
                heartbeat: c.heartbeat_interval,
                ttl: c.node_ttl,
                request_timeout: c.request_timeout,
                driver,
                bus,
                directory,
                owners: Mutex::new(HashMap::new()),
                shutdown,
                tasks: Mutex::new(vec![publisher]),
                started_at: crate::clock::Clock::now_ms(&crate::clock::SystemClock),
            }),
        })
    }

    pub fn node(&self) -> &NodeId {
        &self.inner.node
    }

    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    pub fn driver(&self) -> &ManagedDriver {
        &self.inner.driver
    }

    /// The prefix of the Socket.IO adapter's channels.
    pub fn adapter_prefix(&self) -> String {
        format!("{}:sio", self.inner.prefix)
    }

    pub fn node_ttl(&self) -> Duration {
        self.inner.ttl
    }

    pub fn directory(&self) -> &Directory {
        &self.inner.directory
    }

    /// This node's directory entry, with its load now.
    fn entry(&self, state: &AppState, local: &LocalNode, cpu: Option<f64>) -> NodeInfo {
        NodeInfo {
            id: self.inner.node.clone(),
            public_base_url: local
                .public_base_url
                .as_str()
                .trim_end_matches('/')
                .to_string(),
            http_addr: local.http_addr.to_string(),
            https_addr: local.https_addr.map(|a| a.to_string()),
            media: local.media.clone(),
            load: local_load(state, cpu),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.inner.started_at,
            heartbeat_at: state.clock.now_ms(),
        }
    }

    /// Registers this node and starts its heartbeat, failover watch and bus reader. Fails
    /// when the first registration does (Redis unreachable at start).
    pub async fn start(&self, state: AppState, local: LocalNode) -> anyhow::Result<()> {
        let mut cpu = cpu::CpuSampler::new();
        cpu.sample();
        self.inner
            .directory
            .beat(&self.entry(&state, &local, None))
            .await
            .map_err(|e| anyhow::anyhow!("redis_url: cannot register this node: {e}"))?;
        let inbox = self
            .inner
            .bus
            .subscribe(&self.inner.driver)
            .await
            .map_err(|e| anyhow::anyhow!("redis_url: cannot subscribe: {e}"))?;
        // Recordings and sessions that processes gone left behind (a previous process of this
        // node, same `node_id`, included): nobody writes or serves them any more.
        failover::repair_recordings(&state, self)
            .await
            .map_err(|e| anyhow::anyhow!("recordings: cannot repair those left open: {e}"))?;
        failover::adopt_leftovers(&state, self).await;
        let shutdown = self.inner.shutdown.subscribe();
        let reader = tokio::spawn(inbound::run(state.clone(), inbox, shutdown.clone()));
        let heartbeat = tokio::spawn(self.clone().heartbeat(state, local, cpu, shutdown));
        self.inner.tasks.lock().extend([reader, heartbeat]);
        tracing::info!(node = %self.inner.node, prefix = %self.inner.prefix, "joined the cluster");
        Ok(())
    }

    async fn heartbeat(
        self,
        state: AppState,
        local: LocalNode,
        mut cpu: cpu::CpuSampler,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // The first beat went out in `start`.
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + self.inner.heartbeat,
            self.inner.heartbeat,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = failover::Watch::default();
        let mut failures: u64 = 0;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let entry = self.entry(&state, &local, cpu.sample());
            match self.inner.directory.beat(&entry).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(failed = failures, "node directory reachable again");
                        failures = 0;
                    }
                    self.inner.bus.set_healthy(true);
                }
                Err(e) => {
                    failures += 1;
                    self.inner.bus.set_healthy(false);
                    if failures == 1 || failures.is_multiple_of(30) {
                        tracing::warn!(error = %e, failed = failures, "node heartbeat failed");
                    }
                    continue;
                }
            }
            let snapshot = self.inner.directory.snapshot();
            if snapshot.settled(self.inner.ttl) {
                self.inner
                    .bus
                    .fail_requests_to_dead(|n| snapshot.is_live(n));
            }
            if watch.due(&snapshot, self.inner.ttl) {
                failover::run(&state, &self, &snapshot).await;
            }
        }
    }

    /// Stops every task and takes this node out of the directory.
    pub async fn stop(&self) {
        let _ = self.inner.shutdown.send(true);
        self.inner.directory.deregister().await;
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.inner.tasks.lock());
        for mut t in tasks {
            if tokio::time::timeout(Duration::from_secs(2), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }

    /// Who is alive, as last read (this node included).
    pub fn live_nodes(&self) -> Vec<NodeInfo> {
        self.inner.directory.snapshot().live.clone()
    }

    /// The node for a new session: the least-loaded live node (this one when the directory
    /// is empty, e.g. Redis away).
    pub async fn place(&self, state: &AppState) -> NodeInfo {
        let snapshot = self.inner.directory.snapshot();
        let pending = self.pending(state).await;
        let chosen = placement::choose(&snapshot.live, &pending, |n| {
            rand::random_range(0..n.max(1))
        })
        .cloned();
        match chosen {
            Some(n) => n,
            None => snapshot
                .get(&self.inner.node)
                .cloned()
                .unwrap_or_else(|| NodeInfo {
                    id: self.inner.node.clone(),
                    public_base_url: state.public_base_url.as_str().trim_end_matches('/').into(),
                    http_addr: String::new(),
                    https_addr: None,
                    media: MediaAddrs::default(),
                    load: NodeLoad::default(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    started_at: self.inner.started_at,
                    heartbeat_at: 0,
                }),
        }
    }

    /// Sessions waiting for media per node (placed within the last ten minutes).
    pub(crate) async fn pending(&self, state: &AppState) -> HashMap<NodeId, u32> {
        let since = state.clock.now_ms() - 10 * 60 * 1000;
        match state.store.pending_sessions_by_node(since).await {
            Ok(m) => m.into_iter().map(|(k, v)| (NodeId(k), v)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "placement: cannot count pending sessions");
                HashMap::new()
            }
        }
    }

    /// The node owning `session` when it is another live node; `None` to handle it here
    /// (ours, not placed, or unknown: the handler answers). A session whose node is dead is
    /// refused until it moved.
    pub async fn owner_of(
        &self,
        state: &AppState,
        session: SessionId,
    ) -> Result<Option<NodeId>, SignalError> {
        if state.sfu.has_room(session) {
            return Ok(None);
        }
        let snapshot = self.inner.directory.snapshot();
        if let Some((node, at)) = self.inner.owners.lock().get(&session).cloned()
            && at.elapsed() < OWNER_CACHE
            && snapshot.is_live(&node)
        {
            return Ok(Some(node));
        }
        let placed = state.store.session_node(session).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read a session's node");
            SignalError::internal()
        })?;
        let Some(Some(node)) = placed else {
            return Ok(None);
        };
        let node = NodeId(node);
        if node == self.inner.node {
            return Ok(None);
        }
        if !snapshot.is_live(&node) {
            return Err(SignalError::new(
                ErrorCode::NodeUnavailable,
                "the server of this consultation is unavailable; it moves to another server \
                 within seconds (session_moved)",
            ));
        }
        let mut owners = self.inner.owners.lock();
        if owners.len() >= OWNER_CACHE_MAX {
            owners.clear();
        }
        owners.insert(session, (node.clone(), Instant::now()));
        Ok(Some(node))
    }

    /// Forgets what was known of a session's owner (it moved).
    pub fn forget_owner(&self, session: SessionId) {
        self.inner.owners.lock().remove(&session);
    }

    /// Sends a signaling event to the session's owner and returns its outcome.
    pub async fn forward(
        &self,
        node: &NodeId,
        event: &str,
        caller: Caller,
        payload: Value,
    ) -> Result<Value, SignalError> {
        let caller = RemoteCaller {
            who: caller.who,
            sid: caller.sid,
            ip: caller.ip,
        };
        self.inner
            .bus
            .request(node, event, caller, payload, self.inner.request_timeout)
            .await
    }

    /// A socket of `who` connected here: rooms on other nodes waiting for them rebind.
    pub fn socket_connected(&self, who: Identity, sid: Sid) {
        self.inner
            .bus
            .broadcast(BusMessage::SocketBack { who, sid });
    }

    /// A socket of `who` disconnected here: the nodes it signaled to start its grace period.
    pub fn socket_disconnected(&self, who: Identity, sid: Sid, nodes: Vec<NodeId>) {
        for node in nodes {
            self.inner
                .bus
                .send_to(&node, BusMessage::SocketGone { who, sid });
        }
    }

    /// A session ended here (REST): whichever node has its room closes it.
    pub fn session_ended(&self, session: SessionId) {
        self.inner.bus.broadcast(BusMessage::EndRoom { session });
    }
}

/// This process's load as the directory shows it, read now from its gauges.
pub fn local_load(state: &AppState, cpu_percent: Option<f64>) -> NodeLoad {
    let media = &state.metrics.media;
    NodeLoad {
        peer_connections: media.peer_connections.get(),
        sessions: media.sessions_active.get(),
        sockets: state.io.local_sockets() as i64,
        cpu_percent,
    }
}
