//! Where a new (or moved) session goes: the least-loaded live node.
//!
//! Load is `PeerConnections + 2 × sessions waiting for media`: a session just placed has no
//! PeerConnection yet but will bring about two (doctor and patient), and counting it at once
//! keeps sessions created in a burst (between two heartbeats) from piling onto one node. A
//! node whose CPU is above [`BUSY_CPU_PERCENT`] comes last. Ties go to a random one of the
//! tied nodes, so nodes placing at the same moment do not all pick the same.

use std::collections::HashMap;

use super::NodeId;
use super::directory::NodeInfo;

/// Above this share of its machine, a node takes new sessions only when all are as busy.
pub const BUSY_CPU_PERCENT: f64 = 85.0;

/// A node's placement score; lower is better.
pub fn score(node: &NodeInfo, pending: u32) -> u64 {
    let busy = node.load.cpu_percent.is_some_and(|c| c > BUSY_CPU_PERCENT);
    let base = node.load.peer_connections.max(0) as u64 + 2 * u64::from(pending);
    if busy { base + 1_000_000 } else { base }
}

/// The node to place on among `nodes` (none when empty). `pick(n)` returns an index below
/// `n`, to break ties.
pub fn choose<'a>(
    nodes: &'a [NodeInfo],
    pending: &HashMap<NodeId, u32>,
    pick: impl FnOnce(usize) -> usize,
) -> Option<&'a NodeInfo> {
    let scored: Vec<(u64, &NodeInfo)> = nodes
        .iter()
        .map(|n| (score(n, pending.get(&n.id).copied().unwrap_or(0)), n))
        .collect();
    let best = scored.iter().map(|(s, _)| *s).min()?;
    let tied: Vec<&NodeInfo> = scored
        .into_iter()
        .filter(|(s, _)| *s == best)
        .map(|(_, n)| n)
        .collect();
    let i = pick(tied.len()).min(tied.len() - 1);
    Some(tied[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::directory::NodeLoad;
    use proptest::prelude::*;

    fn node(id: &str, peers: i64, cpu: Option<f64>) -> NodeInfo {
        NodeInfo {
            id: NodeId::from(id),
            public_base_url: format!("https://{id}.example"),
            http_addr: "127.0.0.1:1".into(),
            https_addr: None,
            media: Default::default(),
            load: NodeLoad {
                peer_connections: peers,
                cpu_percent: cpu,
                ..Default::default()
            },
            version: "test".into(),
            started_at: 0,
            heartbeat_at: 0,
        }
    }

    #[test]
    fn least_loaded_wins() {
        let nodes = [node("a", 10, None), node("b", 2, None), node("c", 7, None)];
        let chosen = choose(&nodes, &HashMap::new(), |_| 0).unwrap();
        assert_eq!(chosen.id.as_str(), "b");
        // Three sessions waiting on b outweigh its two PeerConnections' lead.
        let pending = HashMap::from([(NodeId::from("b"), 3)]);
        let chosen = choose(&nodes, &pending, |_| 0).unwrap();
        assert_eq!(chosen.id.as_str(), "c");
        assert!(choose(&[], &HashMap::new(), |_| 0).is_none());
    }

    #[test]
    fn busy_cpu_comes_last() {
        let nodes = [node("a", 0, Some(97.0)), node("b", 40, Some(20.0))];
        assert_eq!(
            choose(&nodes, &HashMap::new(), |_| 0).unwrap().id.as_str(),
            "b"
        );
        let all_busy = [node("a", 0, Some(97.0)), node("b", 40, Some(99.0))];
        assert_eq!(
            choose(&all_busy, &HashMap::new(), |_| 0)
                .unwrap()
                .id
                .as_str(),
            "a"
        );
    }

    #[test]
    fn ties_are_broken_by_pick() {
        let nodes = [node("a", 0, None), node("b", 0, None), node("c", 5, None)];
        assert_eq!(
            choose(&nodes, &HashMap::new(), |n| {
                assert_eq!(n, 2);
                1
            })
            .unwrap()
            .id
            .as_str(),
            "b"
        );
        // An out-of-range pick cannot panic.
        assert_eq!(
            choose(&nodes, &HashMap::new(), |_| 99).unwrap().id.as_str(),
            "b"
        );
    }

    proptest! {
        /// Placing sessions one after the other (each counted as pending where it went)
        /// spreads them evenly over idle nodes.
        #[test]
        fn bursts_spread_evenly(n_nodes in 1usize..6, sessions in 0usize..60, seed in any::<u64>()) {
            let nodes: Vec<NodeInfo> = (0..n_nodes).map(|i| node(&format!("n{i}"), 0, None)).collect();
            let mut pending: HashMap<NodeId, u32> = HashMap::new();
            let mut rng = seed;
            for _ in 0..sessions {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let chosen = choose(&nodes, &pending, |n| (rng >> 33) as usize % n).unwrap();
                *pending.entry(chosen.id.clone()).or_default() += 1;
            }
            let counts: Vec<u32> = nodes.iter().map(|n| pending.get(&n.id).copied().unwrap_or(0)).collect();
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            prop_assert!(max - min <= 1, "{counts:?}");
        }
    }
}
