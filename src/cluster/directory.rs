//! The node directory in Redis: every node writes its entry (who it is, where clients reach
//! it, its load) every `cluster.heartbeat_interval`, with an expiry of `cluster.node_ttl`; a
//! node whose entry expired is dead.
//!
//! Keys: `{prefix}:node:{id}` (JSON, expires) and `{prefix}:nodes` (the set of ids seen,
//! pruned of dead ones by whoever lists them; it expires ten `node_ttl` after the last
//! heartbeat of any node).
//!
//! Invariants:
//! - a node trusts its view of who is alive only after Redis answered continuously for a
//!   whole `node_ttl` ([`Snapshot::settled`]): after Redis lost its data or was unreachable,
//!   live nodes need that long to write their entries again, and no session moves before;
//! - a malformed entry is skipped (logged without its content), never fatal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::NodeId;
use super::driver::ManagedDriver;

/// Where a node serves media.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaAddrs {
    /// Host candidates advertised over UDP (`ip:port`).
    pub udp: Vec<String>,
    /// ICE-TCP candidates.
    pub tcp: Vec<String>,
    /// The embedded TURN server's UDP address, when on.
    pub turn_udp: Option<String>,
}

/// What a node is doing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeLoad {
    pub peer_connections: i64,
    /// Consultations with a live room on this node.
    pub sessions: i64,
    /// Socket.IO connections to this node.
    pub sockets: i64,
    /// Share of the machine's CPUs the process used lately, percent (absent without /proc).
    pub cpu_percent: Option<f64>,
}

/// One entry of the directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    #[schema(value_type = String)]
    pub id: NodeId,
    /// Base of the URLs this node hands out (conference links point here).
    pub public_base_url: String,
    /// The listeners, as bound.
    pub http_addr: String,
    pub https_addr: Option<String>,
    pub media: MediaAddrs,
    pub load: NodeLoad,
    pub version: String,
    /// Epoch milliseconds.
    pub started_at: i64,
    pub heartbeat_at: i64,
}

/// Who is alive, as last read.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub live: Vec<NodeInfo>,
    /// Since when reads and writes have succeeded without a break (and our own entry was
    /// still there); `None` while Redis fails.
    pub healthy_since: Option<Instant>,
}

impl Snapshot {
    pub fn is_live(&self, node: &NodeId) -> bool {
        self.live.iter().any(|n| &n.id == node)
    }

    pub fn get(&self, node: &NodeId) -> Option<&NodeInfo> {
        self.live.iter().find(|n| &n.id == node)
    }

    /// True when the view can be trusted to say who is dead (see the module invariants).
    pub fn settled(&self, ttl: Duration) -> bool {
        self.healthy_since.is_some_and(|t| t.elapsed() >= ttl)
    }
}

/// This node's side of the directory.
pub struct Directory {
    driver: ManagedDriver,
    prefix: String,
    node: NodeId,
    ttl: Duration,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Our entry was written at least once (a missing entry later means Redis lost it).
    registered: Mutex<bool>,
}

impl Directory {
    pub fn new(driver: ManagedDriver, prefix: String, node: NodeId, ttl: Duration) -> Self {
        Self {
            driver,
            prefix,
            node,
            ttl,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            registered: Mutex::new(false),
        }
    }

    fn key(&self, node: &NodeId) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    fn set_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().clone()
    }

    /// Writes our entry (with its expiry) and reads everyone's; updates the snapshot.
    pub async fn beat(&self, me: &NodeInfo) -> redis::RedisResult<()> {
        let result = self.write_and_read(me).await;
        let mut snap = (*self.snapshot()).clone();
        match &result {
            Ok((was_there, live)) => {
                let mut registered = self.registered.lock();
                if *registered && !was_there {
                    tracing::warn!(
                        node = %self.node,
                        "our directory entry had expired (Redis lost its data or this node \
                         stalled); waiting one node_ttl before judging other nodes"
                    );
                    snap.healthy_since = Some(Instant::now());
                } else if snap.healthy_since.is_none() {
                    snap.healthy_since = Some(Instant::now());
                }
                *registered = true;
                snap.live = live.clone();
            }
            Err(_) => snap.healthy_since = None,
        }
        *self.snapshot.write() = Arc::new(snap);
        result.map(drop)
    }

    async fn write_and_read(&self, me: &NodeInfo) -> redis::RedisResult<(bool, Vec<NodeInfo>)> {
        let mut conn = self.driver.connection();
        let json = serde_json::to_string(me).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "entry", e.to_string()))
        })?;
        let previous: Option<String> = redis::cmd("SET")
            .arg(self.key(&self.node))
            .arg(json)
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .arg("GET")
            .query_async(&mut conn)
            .await?;
        let _: i64 = conn.sadd(self.set_key(), self.node.as_str()).await?;
        // The set outlives its members by a while only: a cluster whose nodes all vanished
        // leaves nothing behind.
        let _: i64 = conn
            .pexpire(
                self.set_key(),
                (self.ttl.as_millis() as i64).saturating_mul(10),
            )
            .await?;
        let live = self.read_all(&mut conn).await?;
        Ok((previous.is_some(), live))
    }

    async fn read_all(
        &self,
        conn: &mut redis::aio::ConnectionManager,
    ) -> redis::RedisResult<Vec<NodeInfo>> {
        let mut ids: Vec<String> = conn.smembers(self.set_key()).await?;
        ids.sort();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.key(&NodeId::from(id.as_str())))
            .collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (id, value) in ids.iter().zip(values) {
            match value {
                None => gone.push(id.clone()),
                Some(text) => match serde_json::from_str::<NodeInfo>(&text) {
                    Ok(info) if info.id.as_str() == id => live.push(info),
                    Ok(_) => {
                        tracing::warn!(node = %id, "directory entry names another node; skipped")
                    }
                    Err(e) => {
                        tracing::warn!(node = %id, error = %e, "malformed directory entry skipped")
                    }
                },
            }
        }
        if !gone.is_empty() {
            let _: redis::RedisResult<i64> = conn.srem(self.set_key(), &gone).await;
        }
        Ok(live)
    }

    /// Takes our entry out (graceful shutdown): the others stop placing sessions here at once.
    pub async fn deregister(&self) {
        let mut conn = self.driver.connection();
        let _: redis::RedisResult<i64> = conn.del(self.key(&self.node)).await;
        let _: redis::RedisResult<i64> = conn.srem(self.set_key(), self.node.as_str()).await;
    }
}
