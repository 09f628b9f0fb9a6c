//! What a node does with the bus messages it receives, one at a time in arrival order.
//!
//! Routed requests run in a task of their own (one may wait seconds for a PeerConnection),
//! at most [`MAX_IN_FLIGHT`] at once: one client's events never overlap anyway (its node
//! waits for each answer before sending the next), and the reader never waits on them.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, watch};

use super::bus::{self, BusMessage, Envelope};
use super::{Cluster, ClusterDeps};
use crate::error::{DomainError, DomainResult, ErrorCode};
use crate::sfu::{RemoteError, SfuReply};
use socketioxide_redis::drivers::ChanItem;

/// Routed requests handled at once.
const MAX_IN_FLIGHT: usize = 512;

/// Reads the bus until shutdown.
pub async fn run(
    deps: ClusterDeps,
    cluster: Cluster,
    mut inbox: mpsc::Receiver<ChanItem>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let item = tokio::select! {
            i = inbox.recv() => i,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let Some((_, payload)) = item else { return };
        let Some(envelope) = bus::decode(&payload) else {
            continue;
        };
        handle(&deps, &cluster, envelope, &limit).await;
    }
}

async fn handle(deps: &ClusterDeps, cluster: &Cluster, envelope: Envelope, limit: &Arc<Semaphore>) {
    let from = envelope.from;
    if &from == cluster.node() {
        // Our own broadcast coming back.
        return;
    }
    let bus = cluster.bus();
    match envelope.msg {
        BusMessage::Request {
            id,
            caller,
            request,
        } => {
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                let busy = DomainError::new(
                    crate::error::ErrorKind::TooManyRequests,
                    ErrorCode::TooManyRequests,
                    "the consultation's server is busy; retry shortly",
                );
                bus.send_to(&from, reply(id, Err(busy)));
                return;
            };
            if let Some(sid) = caller.socket {
                bus.register_remote(sid, from.clone(), caller.who);
            }
            let sfu = deps.sfu.clone();
            let bus = bus.clone();
            tokio::spawn(async move {
                let outcome = sfu.handle(&caller, request).await;
                bus.send_to(&from, reply(id, outcome));
                drop(permit);
            });
        }
        BusMessage::Reply { id, outcome } => {
            bus.resolve(id, outcome.map_err(DomainError::from));
        }
        BusMessage::Emit { sid, event, data } => deps.sockets.emit_here(sid, &event, &data),
        BusMessage::Join { sid, room } => deps.sockets.join_here(sid, room),
        BusMessage::Leave { sid, room } => deps.sockets.leave_here(sid, room),
        BusMessage::RoomEmit { room, event, data } => {
            deps.sockets.emit_room_here(room, &event, &data).await;
        }
        BusMessage::SocketBack { who, sid } => {
            if deps.sfu.is_present(who) {
                bus.register_remote(sid, from, who);
                deps.sfu.socket_connected(who, sid);
            }
        }
        BusMessage::SocketGone { who, sid } => {
            deps.sfu.socket_disconnected(who, sid);
            bus.forget_remote(sid);
        }
        BusMessage::EndRoom { session } => {
            deps.sfu.close_room(session, "ended_by_doctor").await;
        }
    }
}

fn reply(id: u64, outcome: DomainResult<SfuReply>) -> BusMessage {
    BusMessage::Reply {
        id,
        outcome: outcome.map_err(|e| {
            if e.kind == crate::error::ErrorKind::Internal {
                tracing::error!(error = ?e.source, "routed request failed");
            }
            RemoteError::from(&e)
        }),
    }
}
