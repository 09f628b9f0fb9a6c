//! A single node restarted (a crash, `kill -9`, a host reboot) while consultations were on:
//! their rooms died with the process, the database still has the sessions live and their
//! participants in. The browsers' sockets come back within a second or two of the new process
//! listening; each is told `session_moved` (reason `node_restarted`, to this same node) for
//! the sessions its person was in, so the client reconnects its media at once instead of
//! waiting for its PeerConnection to time out.
//!
//! Invariants:
//! - only sessions whose room on this node does not hold the person are announced (the room
//!   may exist again already: the other participant came back first); a socket that
//!   reconnects while its call runs here (a network blip) changes nothing;
//! - only the connecting socket is told; the client's own entry (`webrtc_offer`, or
//!   `request_webrtc_offer` with its code) does the rest, with every check it always has;
//! - with several nodes the cluster does this at start (`cluster::failover::adopt_leftovers`).

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::events::{self, Outgoing};
use crate::ids::{Identity, SessionId};
use crate::state::AppState;

/// The sessions among `open` (live, joined and not left) whose room here does not hold the
/// person: a restart took their place in it.
pub fn lost_places(open: &[SessionId], is_in: impl Fn(SessionId) -> bool) -> Vec<SessionId> {
    open.iter().copied().filter(|s| !is_in(*s)).collect()
}

/// Tells `socket` about the calls of `who` that a restart of this node interrupted.
pub async fn announce<A: Adapter>(state: &AppState, socket: &SocketRef<A>, who: Identity) {
    if state.cluster.is_some() {
        return;
    }
    let open = match state.store.open_participations(who).await {
        Ok(open) => open,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the sessions a returning socket was in");
            return;
        }
    };
    let node = events::NodeRef {
        id: state
            .config
            .cluster
            .node_id
            .clone()
            .unwrap_or_else(|| "local".into()),
        public_base_url: state
            .public_base_url
            .as_str()
            .trim_end_matches('/')
            .to_string(),
    };
    for session in lost_places(&open, |s| state.sfu.is_in(who, s)) {
        tracing::info!(session = %session, "a participant is back after a restart: session_moved");
        let ev = Outgoing::SessionMoved(events::SessionMoved {
            session_id: session,
            reason: "node_restarted",
            from: node.id.clone(),
            node: node.clone(),
            conference_url: format!("{}/conference/{session}", node.public_base_url),
        });
        let _ = socket.emit(ev.name(), &ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sessions_whose_room_here_lacks_the_person_are_announced() {
        let open = [SessionId(3), SessionId(5), SessionId(8)];
        assert_eq!(
            lost_places(&open, |s| s == SessionId(5)),
            vec![SessionId(3), SessionId(8)]
        );
        assert!(lost_places(&open, |_| true).is_empty(), "a network blip");
        assert!(lost_places(&[], |_| false).is_empty());
    }
}
