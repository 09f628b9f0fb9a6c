//! What a node does with the bus messages it receives, one at a time in arrival order.
//!
//! Routed signaling runs in a task of its own (it may wait seconds for a PeerConnection),
//! at most [`MAX_IN_FLIGHT`] at once: one client's events never overlap anyway (its node
//! waits for each answer before sending the next), and the reader never waits on them.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, watch};

use super::bus::{self, BusMessage, Envelope, WireError};
use crate::error::ErrorCode;
use crate::realtime::signaling::{self, Caller};
use crate::sfu::SignalError;
use crate::state::AppState;
use socketioxide_redis::drivers::ChanItem;

/// Routed signaling requests handled at once.
const MAX_IN_FLIGHT: usize = 512;

/// Reads the bus until shutdown.
pub async fn run(
    state: AppState,
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
        handle(&state, envelope, &limit).await;
    }
}

async fn handle(state: &AppState, envelope: Envelope, limit: &Arc<Semaphore>) {
    let Some(cluster) = &state.cluster else {
        return;
    };
    let from = envelope.from;
    if &from == cluster.node() {
        // Our own broadcast coming back.
        return;
    }
    let bus = cluster.bus();
    match envelope.msg {
        BusMessage::Signal {
            id,
            event,
            caller,
            payload,
        } => {
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                bus.send_to(
                    &from,
                    reply(
                        id,
                        Err(SignalError::new(
                            ErrorCode::TooManyRequests,
                            "the consultation's server is busy; retry shortly",
                        )),
                    ),
                );
                return;
            };
            if let Some(sid) = caller.sid {
                bus.register_remote(sid, from.clone(), caller.who);
            }
            let state = state.clone();
            let bus = bus.clone();
            tokio::spawn(async move {
                let caller = Caller {
                    who: caller.who,
                    sid: caller.sid,
                    ip: caller.ip,
                };
                let outcome = signaling::dispatch(&state, &event, caller, payload).await;
                bus.send_to(&from, reply(id, outcome));
                drop(permit);
            });
        }
        BusMessage::SignalReply { id, ok, error } => {
            let outcome = match (ok, error) {
                (_, Some(e)) => Err(SignalError::new(e.code, e.message)),
                (Some(v), None) => Ok(v),
                (None, None) => Ok(serde_json::Value::Null),
            };
            bus.resolve(id, outcome);
        }
        BusMessage::Emit { sid, event, data } => {
            if let Some(socket) = state.io.get_local_socket(sid)
                && let Err(e) = socket.emit(&event, &data)
            {
                tracing::debug!(error = %e, "routed emit failed");
            }
        }
        BusMessage::Join { sid, room } => {
            if let Some(socket) = state.io.get_local_socket(sid) {
                socket.join(room);
            }
        }
        BusMessage::Leave { sid, room } => {
            if let Some(socket) = state.io.get_local_socket(sid) {
                socket.leave(room);
            }
        }
        BusMessage::RoomEmit { room, event, data } => {
            state.io.emit_local(room, &event, &data).await;
        }
        BusMessage::SocketBack { who, sid } => {
            if state.sfu.is_present(who) {
                bus.register_remote(sid, from, who);
                state.sfu.socket_connected(who, sid.into());
            }
        }
        BusMessage::SocketGone { who, sid } => {
            state.sfu.socket_disconnected(who, sid.into());
            bus.forget_remote(sid);
        }
        BusMessage::EndRoom { session } => {
            state.sfu.close_room(session, "ended_by_doctor").await;
        }
    }
}

fn reply(id: u64, outcome: Result<serde_json::Value, SignalError>) -> BusMessage {
    match outcome {
        Ok(v) => BusMessage::SignalReply {
            id,
            ok: Some(v),
            error: None,
        },
        Err(e) => BusMessage::SignalReply {
            id,
            ok: None,
            error: Some(WireError {
                code: e.code,
                message: e.message,
            }),
        },
    }
}
