//! Node loss: the sessions of a node whose directory entry expired move to live nodes.
//!
//! Every node watches (after each heartbeat); each session moves once, by whichever node's
//! conditional update wins ([`Store::move_session`](crate::store::Store::move_session)), and
//! that node tells the session's participants `session_moved` with the new node, on every
//! node (through the Socket.IO adapter: their sockets are wherever their clients connected).
//! The clients then send their offer (or their code) again, which reaches the new owner.
//!
//! Detection takes at most `node_ttl` (the entry expires) plus one `heartbeat_interval` (the
//! next look), 8 s with the defaults.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::directory::{NodeInfo, Snapshot};
use super::{Cluster, ClusterDeps, NodeId, placement};
use crate::ids::RoomKey;
use crate::ids::SessionId;
use crate::wire::{self as events, Outgoing};

/// Looks at the sessions at least this often even when no node disappeared (a safety net
/// for sessions a previous look could not move).
const FULL_SCAN_EVERY: u32 = 15;

/// When to look for orphaned sessions.
#[derive(Debug, Default)]
pub struct Watch {
    last_live: Option<HashSet<NodeId>>,
    ticks: u32,
}

impl Watch {
    /// True when the view is settled and a node disappeared since the last look, or on the
    /// first settled look, or every [`FULL_SCAN_EVERY`] heartbeats.
    pub fn due(&mut self, snapshot: &Snapshot, ttl: Duration) -> bool {
        if !snapshot.settled(ttl) {
            return false;
        }
        let live: HashSet<NodeId> = snapshot.live.iter().map(|n| n.id.clone()).collect();
        self.ticks += 1;
        let lost = match &self.last_live {
            None => true,
            Some(before) => before.difference(&live).next().is_some(),
        };
        self.last_live = Some(live);
        if lost || self.ticks >= FULL_SCAN_EVERY {
            self.ticks = 0;
            return true;
        }
        false
    }
}

/// Moves every session placed on a node that is not alive any more.
pub async fn run(deps: &ClusterDeps, cluster: &Cluster, snapshot: &Snapshot) {
    let placed = match deps.store.placed_sessions().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "failover: cannot list placed sessions");
            return;
        }
    };
    let mut orphans: HashMap<NodeId, Vec<SessionId>> = HashMap::new();
    for s in placed {
        let node = NodeId::from(s.node_id.as_str());
        if &node != cluster.node() && !snapshot.is_live(&node) {
            orphans.entry(node).or_default().push(s.id);
        }
    }
    if orphans.is_empty() || snapshot.live.is_empty() {
        return;
    }
    let mut pending = cluster.pending(deps).await;
    for (dead, sessions) in orphans {
        let started = Instant::now();
        // Rooms here that talked to sockets of the lost node: those sockets are gone.
        for (sid, who) in cluster.bus().forget_node(&dead) {
            deps.sfu.socket_disconnected(who, sid);
        }
        let mut moved = 0usize;
        for session in sessions {
            let Some(target) = placement::choose(&snapshot.live, &pending, |n| {
                rand::random_range(0..n.max(1))
            }) else {
                return;
            };
            let target = target.clone();
            match deps
                .store
                .move_session(
                    session,
                    dead.as_str(),
                    target.id.as_str(),
                    deps.clock.now_ms(),
                )
                .await
            {
                Ok(true) => {
                    moved += 1;
                    // Recordings the lost node was writing stopped with it: their rows
                    // are closed before anyone hears of the move.
                    if let Err(e) = deps
                        .recordings
                        .repair_where(|r| r.session_id == session)
                        .await
                    {
                        tracing::warn!(error = %e, "failover: cannot close its recordings");
                    }
                    *pending.entry(target.id.clone()).or_default() += 1;
                    cluster.forget_owner(session);
                    notify(deps, session, "node_lost", &dead, &target).await;
                }
                Ok(false) => {} // another node moved it first, or it ended
                Err(e) => tracing::warn!(error = %e, session = %session, "failover: move failed"),
            }
        }
        if moved > 0 {
            tracing::warn!(
                lost = %dead,
                moved,
                ms = started.elapsed().as_millis() as u64,
                "node lost: its sessions moved to live nodes"
            );
        }
    }
}

/// At start (several nodes): recordings left open by processes that are gone are closed —
/// those of sessions that are over or not placed on a live node other than this one. A live
/// node's recordings in progress are left alone.
pub async fn repair_recordings(deps: &ClusterDeps, cluster: &Cluster) -> anyhow::Result<()> {
    let snapshot = cluster.directory().snapshot();
    let placed: HashMap<SessionId, NodeId> = deps
        .store
        .placed_sessions()
        .await?
        .into_iter()
        .map(|s| (s.id, NodeId::from(s.node_id.as_str())))
        .collect();
    let me = cluster.node();
    deps.recordings
        .repair_where(|r| match placed.get(&r.session_id) {
            None => true,
            Some(node) => node == me || !snapshot.is_live(node),
        })
        .await?;
    Ok(())
}

/// At start: sessions placed on this node's id are leftovers of a previous process with the
/// same `cluster.node_id` (a fresh process has no rooms). They are placed again among the live
/// nodes (this one included) and their participants told, reason `node_restarted`.
pub async fn adopt_leftovers(deps: &ClusterDeps, cluster: &Cluster) {
    let snapshot = cluster.directory().snapshot();
    let placed = match deps.store.placed_sessions().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "start: cannot list placed sessions");
            return;
        }
    };
    let me = cluster.node().clone();
    let mut pending = cluster.pending(deps).await;
    let mut moved = 0usize;
    for s in placed.iter().filter(|s| s.node_id == me.as_str()) {
        let Some(target) = placement::choose(&snapshot.live, &pending, |n| {
            rand::random_range(0..n.max(1))
        })
        .cloned() else {
            return;
        };
        if let Ok(true) = deps
            .store
            .move_session(s.id, me.as_str(), target.id.as_str(), deps.clock.now_ms())
            .await
        {
            *pending.entry(target.id.clone()).or_default() += 1;
            notify(deps, s.id, "node_restarted", &me, &target).await;
            moved += 1;
        }
    }
    if moved > 0 {
        tracing::warn!(
            moved,
            "sessions left by this node's previous process placed again"
        );
    }
}

/// Graceful shutdown of this node: its sessions move to the other live nodes (their
/// participants told `session_moved`, reason `node_shutdown`) before its rooms close. Returns
/// the sessions moved; none when no other node is alive.
pub async fn drain(deps: &ClusterDeps, cluster: &Cluster) -> Vec<SessionId> {
    let snapshot = cluster.directory().snapshot();
    let others: Vec<NodeInfo> = snapshot
        .live
        .iter()
        .filter(|n| &n.id != cluster.node())
        .cloned()
        .collect();
    if others.is_empty() {
        return Vec::new();
    }
    let placed = match deps.store.placed_sessions().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "drain: cannot list placed sessions");
            return Vec::new();
        }
    };
    let mut pending = cluster.pending(deps).await;
    let mut moved = Vec::new();
    for s in placed
        .iter()
        .filter(|s| s.node_id == cluster.node().as_str())
    {
        let Some(target) =
            placement::choose(&others, &pending, |n| rand::random_range(0..n.max(1))).cloned()
        else {
            break;
        };
        let me = cluster.node().as_str();
        match deps
            .store
            .move_session(s.id, me, target.id.as_str(), deps.clock.now_ms())
            .await
        {
            Ok(true) => {
                *pending.entry(target.id.clone()).or_default() += 1;
                notify(deps, s.id, "node_shutdown", cluster.node(), &target).await;
                moved.push(s.id);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, session = %s.id, "drain: move failed"),
        }
    }
    if !moved.is_empty() {
        tracing::info!(
            moved = moved.len(),
            "shutting down: sessions moved to other nodes"
        );
    }
    moved
}

/// `session_moved` to the session's room and to each participant's sockets, on every node.
async fn notify(
    deps: &ClusterDeps,
    session: SessionId,
    reason: &'static str,
    from: &NodeId,
    to: &NodeInfo,
) {
    let mut rooms = vec![RoomKey::Session(session).to_string()];
    match deps.store.session_participants(session).await {
        Ok(people) => rooms.extend(
            people
                .iter()
                .filter(|p| p.left_at.is_none())
                .map(|p| p.who.room()),
        ),
        Err(e) => tracing::warn!(error = %e, "failover: cannot list participants"),
    }
    let ev = Outgoing::SessionMoved(events::SessionMoved {
        session_id: session,
        reason,
        from: from.to_string(),
        node: events::NodeRef {
            id: to.id.to_string(),
            public_base_url: to.public_base_url.clone(),
        },
        conference_url: format!("{}/conference/{session}", to.public_base_url),
    });
    tracing::info!(session = %session, from = %from, to = %to.id, "session moved");
    deps.sockets.emit_to_rooms(rooms, &ev).await;
}
