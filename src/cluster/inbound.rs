//! What a node does with the bus messages it receives, one at a time in arrival order.
//!
//! Routed signaling runs in a task of its own (it may wait seconds for a PeerConnection),
//! at most [`MAX_IN_FLIGHT`] at once: one client's events never overlap anyway (its node
//! waits for each answer before sending the next), and the reader never waits on them.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, watch};

use super::bus::{self, BusMessage, Envelope, WireError};
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
                            "too_many_requests",
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
                (_, Some(e)) => Err(SignalError::new(intern_code(&e.code), e.message)),
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
                code: e.code.to_string(),
                message: e.message,
            }),
        },
    }
}

/// Error codes from other nodes become the `&'static str` codes signaling uses. Codes are
/// short snake_case words from a small set; anything else (or past 256 distinct codes) is
/// `remote_error`, so a misbehaving peer cannot grow this set without bound.
fn intern_code(code: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static CODES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let ok = !code.is_empty()
        && code.len() <= 48
        && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if !ok {
        return "remote_error";
    }
    let mut set = CODES
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(c) = set.get(code) {
        return c;
    }
    if set.len() >= 256 {
        return "remote_error";
    }
    let leaked: &'static str = Box::leak(code.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::intern_code;

    #[test]
    fn codes_are_interned_and_bounded() {
        assert_eq!(intern_code("session_not_found"), "session_not_found");
        let a = intern_code("not_in_session");
        let b = intern_code("not_in_session");
        assert!(std::ptr::eq(a, b));
        assert_eq!(intern_code("Bad Code"), "remote_error");
        assert_eq!(intern_code(""), "remote_error");
        assert_eq!(intern_code(&"x".repeat(100)), "remote_error");
    }
}
