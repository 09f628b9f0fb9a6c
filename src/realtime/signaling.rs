//! WebRTC signaling events: the bridge between sockets and the SFU's rooms.
//!
//! Every event names its session; the caller's identity comes from the handshake. Failures are
//! answered with `webrtc_error {sessionId, code, message}` (and the acknowledgement, if asked).
//!
//! Invariant: one socket's signaling is handled in the order it was sent (socketioxide runs
//! each event in a task of its own, and candidates sent right after an offer must not overtake
//! it): every event becomes a job on the socket's own bounded queue, run one after the other.
//! A client that floods the queue gets `webrtc_error {code: "too_many_requests"}`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use axum::extract::ConnectInfo;
use socketioxide::extract::{SocketRef, TryData};

use super::SocketUser;
use super::events::{self, incoming};
use super::reply::Reply;
use crate::ids::SessionId;
use crate::sfu::SignalError;
use crate::state::AppState;

/// Signaling jobs waiting for one socket.
const QUEUE: usize = 64;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A socket's signaling queue (kept in its extensions; the worker stops when it is dropped).
#[derive(Clone)]
pub(super) struct SignalQueue(tokio::sync::mpsc::Sender<Job>);

impl SignalQueue {
    pub(super) fn start() -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Job>(QUEUE);
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                job.await;
            }
        });
        Self(tx)
    }
}

fn payload_error(e: impl std::fmt::Display) -> SignalError {
    SignalError::new("invalid_payload", format!("invalid payload: {e}"))
}

fn user(socket: &SocketRef) -> Result<SocketUser, SignalError> {
    socket
        .extensions
        .get::<SocketUser>()
        .ok_or_else(|| SignalError::new("unauthenticated", "socket is not authenticated"))
}

fn client_ip(socket: &SocketRef) -> Option<std::net::IpAddr> {
    socket
        .req_parts()
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Payloads that name their session.
trait Sessioned {
    fn session_id(&self) -> i64;
}

macro_rules! sessioned {
    ($($t:ty),*) => {
        $(impl Sessioned for $t {
            fn session_id(&self) -> i64 {
                self.session_id
            }
        })*
    };
}
sessioned!(
    events::ClientOffer,
    events::RequestOffer,
    events::ClientAnswer,
    events::ClientCandidates,
    events::SessionRef,
    events::StartRecording
);

/// Registers `handle` for `event`: payload parsed, caller identified, run in order on the
/// socket's queue, answered with an ack and `webrtc_error` on failure.
fn on_signal<T, F, Fut, R>(socket: &SocketRef, state: &AppState, event: &'static str, handle: F)
where
    T: serde::de::DeserializeOwned + Sessioned + Send + Sync + 'static,
    F: Fn(AppState, SocketRef, crate::ids::Identity, T) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R, SignalError>> + Send + 'static,
    R: serde::Serialize + Send + 'static,
{
    let state = state.clone();
    socket.on(
        event,
        async move |socket: SocketRef, TryData(p): TryData<T>, reply: Reply| {
            let session_id = p.as_ref().ok().map(Sessioned::session_id);
            let (handle, job_state, job_socket) = (handle.clone(), state.clone(), socket.clone());
            let job: Job = Box::pin(async move {
                let r = async {
                    let p = p.map_err(payload_error)?;
                    let who = user(&job_socket)?.principal.identity;
                    handle(job_state.clone(), job_socket.clone(), who, p).await
                }
                .await;
                reply.signal(session_id, r, &job_state.sfu);
            });
            // `reply` moved into the job; a refused job answers through a fresh one.
            if let Some(queue) = socket.extensions.get::<SignalQueue>()
                && let Err(e) = queue.0.try_send(job)
            {
                drop(e);
                state.sfu.count_signal_error("too_many_requests");
                let _ = socket.emit(
                    events::outgoing::WEBRTC_ERROR,
                    &events::WebrtcError {
                        session_id,
                        code: "too_many_requests",
                        message: "too many signaling messages at once; slow down".into(),
                    },
                );
            }
        },
    );
}

fn done(session_id: i64) -> serde_json::Value {
    serde_json::json!({ "sessionId": session_id })
}

pub(super) fn register(socket: &SocketRef, state: &AppState) {
    on_signal(
        socket,
        state,
        incoming::WEBRTC_OFFER,
        async |s: AppState, socket: SocketRef, who, p: events::ClientOffer| {
            s.sfu
                .publish(who, socket.id, SessionId(p.session_id), p.sdp_offer)
                .await
                .map(|()| done(p.session_id))
        },
    );
    on_signal(
        socket,
        state,
        incoming::REQUEST_WEBRTC_OFFER,
        async |s: AppState, socket: SocketRef, who, p: events::RequestOffer| {
            s.sfu
                .join(
                    who,
                    client_ip(&socket),
                    socket.id,
                    SessionId(p.session_id),
                    &p.code,
                )
                .await
                .map(|()| done(p.session_id))
        },
    );
    on_signal(
        socket,
        state,
        incoming::WEBRTC_ANSWER,
        async |s: AppState, _socket: SocketRef, who, p: events::ClientAnswer| {
            s.sfu
                .answer(who, SessionId(p.session_id), p.sdp_answer)
                .await
                .map(|()| done(p.session_id))
        },
    );
    on_signal(
        socket,
        state,
        incoming::WEBRTC_ICE_CANDIDATES,
        async |s: AppState, _socket: SocketRef, who, p: events::ClientCandidates| {
            s.sfu
                .candidates(who, SessionId(p.session_id), p.candidates)
                .await
                .map(|n| serde_json::json!({ "sessionId": p.session_id, "accepted": n }))
        },
    );
    on_signal(
        socket,
        state,
        incoming::LEAVE_SESSION,
        async |s: AppState, _socket: SocketRef, who, p: events::SessionRef| {
            s.sfu
                .leave(who, SessionId(p.session_id))
                .await
                .map(|()| done(p.session_id))
        },
    );
    on_signal(
        socket,
        state,
        incoming::END_SESSION,
        async |s: AppState, _socket: SocketRef, who, p: events::SessionRef| {
            s.sfu
                .end(who, SessionId(p.session_id), "ended_by_doctor")
                .await
                .map_err(|e| SignalError::new(signal_code(&e), e.message))
                .map(|()| done(p.session_id))
        },
    );
    register_recording(socket, state);
}

/// `start_recording` / `stop_recording`: the session's doctor turns recording on (consent
/// required) or off; everyone in the session hears `recording_started` / `recording_stopped`.
fn register_recording(socket: &SocketRef, state: &AppState) {
    on_signal(
        socket,
        state,
        incoming::START_RECORDING,
        async |s: AppState, _socket: SocketRef, who, p: events::StartRecording| {
            s.sfu
                .start_recording(who, SessionId(p.session_id), p.consent)
                .await
                .map_err(|e| SignalError::new(signal_code(&e), e.message))
                .map(|r| {
                    serde_json::json!({
                        "sessionId": p.session_id,
                        "startedAt": crate::clock::to_rfc3339(r.started_at),
                        "recordings": r.recordings,
                    })
                })
        },
    );
    on_signal(
        socket,
        state,
        incoming::STOP_RECORDING,
        async |s: AppState, _socket: SocketRef, who, p: events::SessionRef| {
            s.sfu
                .stop_recording(who, SessionId(p.session_id))
                .await
                .map_err(|e| SignalError::new(signal_code(&e), e.message))
                .map(|closed| {
                    serde_json::json!({
                        "sessionId": p.session_id,
                        "recordings": closed.iter().map(crate::http::recordings::recording_view).collect::<Vec<_>>(),
                    })
                })
        },
    );
}

/// Domain errors as signaling codes (`forbidden` for anyone but the session's doctor).
fn signal_code(e: &crate::messaging::DomainError) -> &'static str {
    match e.kind {
        crate::messaging::ErrorKind::Forbidden => "forbidden",
        _ => e.code,
    }
}
