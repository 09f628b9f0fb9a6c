//! WebRTC signaling events: the bridge between sockets and the SFU's rooms.
//!
//! Every event names its session; the caller's identity comes from the handshake. Failures are
//! answered with `webrtc_error {sessionId, code, message}` (and the acknowledgement, if asked).
//!
//! Invariant: one socket's signaling is handled in the order it was sent (socketioxide runs
//! each event in a task of its own, and candidates sent right after an offer must not overtake
//! it): every event takes a place on the socket's own bounded queue as its packet is read
//! ([`Place`]), and the jobs run one after the other in that order.
//! A client that floods the queue gets `webrtc_error {code: ErrorCode::TooManyRequests}`.
//!
//! Several nodes: a session's room lives on the node it was placed on. An event for a session
//! owned by another node is routed there ([`crate::cluster`]) and answered here with the
//! owner's outcome; the owner's room reaches this socket through the bus. One socket's events
//! still run one at a time, each waiting for the owner's answer, so order holds across nodes.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::socket::Sid;

use super::SocketUser;
use super::events::{self, incoming};
use super::reply::Reply;
use crate::cluster::NodeId;
use crate::error::ErrorCode;
use crate::ids::{Identity, SessionId};
use crate::sfu::SignalError;
use crate::state::AppState;

/// Signaling jobs waiting for one socket.
const QUEUE: usize = 64;

/// Not client events: another node asks for a session's media statistics, or to start or
/// stop its recording (REST), where its room is.
pub const INTERNAL_STATS: &str = "internal:session_stats";
pub const INTERNAL_RECORDING_START: &str = "internal:recording_start";
pub const INTERNAL_RECORDING_STOP: &str = "internal:recording_stop";

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A socket's signaling queue (kept in its extensions; the worker stops when it is dropped).
/// It holds places, not jobs: a place is taken while socketioxide reads the packet (in the
/// order packets arrive, see [`Place`]), and its job is handed over later by the event's task.
#[derive(Clone)]
pub(super) struct SignalQueue(tokio::sync::mpsc::Sender<tokio::sync::oneshot::Receiver<Job>>);

impl SignalQueue {
    pub(super) fn start() -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<tokio::sync::oneshot::Receiver<Job>>(QUEUE);
        tokio::spawn(async move {
            while let Some(place) = rx.recv().await {
                // A place whose handler went away without a job is skipped.
                if let Ok(job) = place.await {
                    job.await;
                }
            }
        });
        Self(tx)
    }
}

/// Extractor: the event's place in its socket's signaling queue. socketioxide runs extractors
/// synchronously as it reads each packet, then each handler in a task of its own; taking the
/// place here, not in the handler, keeps the client's order (an offer's task could otherwise
/// lose the race to the candidates sent right after it). `None` when the queue is full.
pub(super) struct Place(Option<tokio::sync::oneshot::Sender<Job>>);

impl<A: Adapter> socketioxide::handler::FromMessageParts<A> for Place {
    type Error = std::convert::Infallible;
    fn from_message_parts(
        s: &Arc<socketioxide::socket::Socket<A>>,
        _: &mut socketioxide::handler::Value,
        _: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        let Some(queue) = s.extensions.get::<SignalQueue>() else {
            return Ok(Self(None));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        Ok(Self(queue.0.try_send(rx).is_ok().then_some(tx)))
    }
}

/// The nodes a socket's signaling was routed to (several nodes), told when it disconnects.
#[derive(Clone, Default)]
struct RoutedNodes(Arc<parking_lot::Mutex<HashSet<NodeId>>>);

/// The nodes `socket`'s signaling went to.
pub(super) fn routed_nodes<A: Adapter>(socket: &SocketRef<A>) -> Vec<NodeId> {
    socket
        .extensions
        .get::<RoutedNodes>()
        .map(|r| r.0.lock().iter().cloned().collect())
        .unwrap_or_default()
}

fn remember_route<A: Adapter>(socket: &SocketRef<A>, node: &NodeId) {
    let routed = match socket.extensions.get::<RoutedNodes>() {
        Some(r) => r,
        None => {
            let r = RoutedNodes::default();
            socket.extensions.insert(r.clone());
            r
        }
    };
    routed.0.lock().insert(node.clone());
}

fn payload_error(e: impl std::fmt::Display) -> SignalError {
    SignalError::new(ErrorCode::InvalidPayload, format!("invalid payload: {e}"))
}

fn user<A: Adapter>(socket: &SocketRef<A>) -> Result<SocketUser, SignalError> {
    socket
        .extensions
        .get::<SocketUser>()
        .ok_or_else(|| SignalError::new(ErrorCode::Unauthenticated, "socket is not authenticated"))
}

fn client_ip<A: Adapter>(socket: &SocketRef<A>) -> Option<std::net::IpAddr> {
    crate::net::client_ip(&socket.req_parts().extensions)
}

/// Who sent a signaling event, wherever their socket is (this node or another that routed
/// the event here).
#[derive(Debug, Clone)]
pub struct Caller {
    pub who: Identity,
    /// `None` for requests that come from REST rather than a socket.
    pub sid: Option<Sid>,
    pub ip: Option<std::net::IpAddr>,
}

impl Caller {
    fn socket(&self) -> Result<Sid, SignalError> {
        self.sid
            .ok_or_else(|| SignalError::new(ErrorCode::InvalidRequest, "this needs a socket"))
    }
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

type Outcome = Result<Value, SignalError>;

/// Registers `handle` for `event`: payload parsed, caller identified, run in order on the
/// socket's queue (on the node that owns the session), answered with an ack and
/// `webrtc_error` on failure.
fn on_signal<A, T, F, Fut>(socket: &SocketRef<A>, state: &AppState, event: &'static str, handle: F)
where
    A: Adapter,
    T: serde::de::DeserializeOwned + Sessioned + Send + Sync + 'static,
    F: Fn(AppState, Caller, T) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let state = state.clone();
    socket.on(
        event,
        async move |socket: SocketRef<A>,
                    place: Place,
                    reply: Reply<A>,
                    TryData(raw): TryData<Value>| {
            let parsed = raw
                .as_ref()
                .map_err(payload_error)
                .and_then(|v| T::deserialize(v).map_err(payload_error));
            let session_id = parsed.as_ref().ok().map(Sessioned::session_id);
            // The socket's and its person's event buckets first: a refused event costs no
            // queue place and reaches no room.
            if let Ok(u) = user(&socket)
                && let Err(retry_after_ms) =
                    super::limits::admit_event(&state, socket.id, u.principal.identity, event)
            {
                let e = super::limits::rate_limited(retry_after_ms);
                reply.signal::<()>(
                    session_id,
                    Err(SignalError::new(e.code, e.message)),
                    &state.sfu,
                );
                return;
            }
            let (handle, job_state, job_socket) = (handle.clone(), state.clone(), socket.clone());
            let job: Job = Box::pin(async move {
                let r = async {
                    let p = parsed?;
                    let caller = Caller {
                        who: user(&job_socket)?.principal.identity,
                        sid: Some(job_socket.id),
                        ip: client_ip(&job_socket),
                    };
                    let session = SessionId(p.session_id());
                    match owner(&job_state, session).await? {
                        None => handle(job_state.clone(), caller, p).await,
                        Some(node) => {
                            remember_route(&job_socket, &node);
                            let raw = raw.unwrap_or(Value::Null);
                            forward(&job_state, &node, event, caller, raw).await
                        }
                    }
                }
                .await;
                reply.signal(session_id, r, &job_state.sfu);
            });
            // `reply` moved into the job; a refused job answers through a fresh one.
            let refused = match place.0 {
                Some(place) => place.send(job).is_err(),
                None => true,
            };
            if refused {
                state.sfu.count_signal_error(ErrorCode::TooManyRequests);
                let ev = events::Outgoing::WebrtcError(events::WebrtcError {
                    session_id,
                    code: ErrorCode::TooManyRequests,
                    message: "too many signaling messages at once; slow down".into(),
                });
                let _ = socket.emit(ev.name(), &ev);
            }
        },
    );
}

/// The node that owns `session` when it is another one (several nodes); `None`: handle here.
async fn owner(state: &AppState, session: SessionId) -> Result<Option<NodeId>, SignalError> {
    match &state.cluster {
        None => Ok(None),
        Some(cluster) => cluster.owner_of(state, session).await,
    }
}

async fn forward(
    state: &AppState,
    node: &NodeId,
    event: &str,
    caller: Caller,
    payload: Value,
) -> Outcome {
    match &state.cluster {
        Some(cluster) => cluster.forward(node, event, caller, payload).await,
        None => Err(SignalError::internal()),
    }
}

fn done(session_id: i64) -> Value {
    serde_json::json!({ "sessionId": session_id })
}

async fn offer(s: AppState, c: Caller, p: events::ClientOffer) -> Outcome {
    s.sfu
        .publish(
            c.who,
            c.socket()?.into(),
            SessionId(p.session_id),
            p.sdp_offer,
        )
        .await
        .map(|()| done(p.session_id))
}

async fn request_offer(s: AppState, c: Caller, p: events::RequestOffer) -> Outcome {
    s.sfu
        .join(
            c.who,
            c.ip,
            c.socket()?.into(),
            SessionId(p.session_id),
            &p.code,
        )
        .await
        .map(|()| done(p.session_id))
}

async fn answer(s: AppState, c: Caller, p: events::ClientAnswer) -> Outcome {
    s.sfu
        .answer(c.who, SessionId(p.session_id), p.sdp_answer)
        .await
        .map(|()| done(p.session_id))
}

async fn candidates(s: AppState, c: Caller, p: events::ClientCandidates) -> Outcome {
    s.sfu
        .candidates(c.who, SessionId(p.session_id), p.candidates)
        .await
        .map(|n| serde_json::json!({ "sessionId": p.session_id, "accepted": n }))
}

async fn leave(s: AppState, c: Caller, p: events::SessionRef) -> Outcome {
    s.sfu
        .leave(c.who, SessionId(p.session_id))
        .await
        .map(|()| done(p.session_id))
}

async fn end(s: AppState, c: Caller, p: events::SessionRef) -> Outcome {
    s.sfu
        .end(c.who, SessionId(p.session_id), "ended_by_doctor")
        .await
        .map_err(|e| SignalError::new(signal_code(&e), e.message))
        .map(|()| done(p.session_id))
}

/// `start_recording`: the session's doctor turns recording on (consent required); everyone
/// in the session hears `recording_started`. Runs on the node that owns the session.
async fn start_recording(s: AppState, c: Caller, p: events::StartRecording) -> Outcome {
    s.sfu
        .start_recording(c.who, SessionId(p.session_id), p.consent)
        .await
        .map_err(|e| SignalError::new(signal_code(&e), e.message))
        .map(|r| {
            serde_json::json!({
                "sessionId": p.session_id,
                "startedAt": crate::clock::to_rfc3339(r.started_at),
                "recordings": r.recordings,
            })
        })
}

/// `stop_recording`: the doctor turns it off; everyone hears `recording_stopped`.
async fn stop_recording(s: AppState, c: Caller, p: events::SessionRef) -> Outcome {
    s.sfu
        .stop_recording(c.who, SessionId(p.session_id))
        .await
        .map_err(|e| SignalError::new(signal_code(&e), e.message))
        .map(|closed| {
            serde_json::json!({
                "sessionId": p.session_id,
                "recordings": closed
                    .iter()
                    .map(super::views::recording_view)
                    .collect::<Vec<_>>(),
            })
        })
}

/// REST recording start routed here: the REST answer, errors with their domain codes.
async fn rest_recording_start(s: AppState, c: Caller, p: events::StartRecording) -> Outcome {
    s.sfu
        .start_recording(c.who, SessionId(p.session_id), p.consent)
        .await
        .map_err(|e| SignalError::new(e.code, e.message))
        .map(|r| super::views::started_view(p.session_id, &r))
}

async fn rest_recording_stop(s: AppState, c: Caller, p: events::SessionRef) -> Outcome {
    s.sfu
        .stop_recording(c.who, SessionId(p.session_id))
        .await
        .map_err(|e| SignalError::new(e.code, e.message))
        .map(|closed| super::views::stopped_view(p.session_id, &closed))
}

/// Media statistics of a session whose room is here (asked by another node for REST).
async fn stats(s: AppState, _c: Caller, p: events::SessionRef) -> Outcome {
    let participants = s.sfu.stats(SessionId(p.session_id)).await;
    serde_json::to_value(participants).map_err(|_| SignalError::internal())
}

pub(super) fn register<A: Adapter>(socket: &SocketRef<A>, state: &AppState) {
    on_signal(socket, state, incoming::WEBRTC_OFFER, offer);
    on_signal(socket, state, incoming::REQUEST_WEBRTC_OFFER, request_offer);
    on_signal(socket, state, incoming::WEBRTC_ANSWER, answer);
    on_signal(socket, state, incoming::WEBRTC_ICE_CANDIDATES, candidates);
    on_signal(socket, state, incoming::LEAVE_SESSION, leave);
    on_signal(socket, state, incoming::END_SESSION, end);
    on_signal(socket, state, incoming::START_RECORDING, start_recording);
    on_signal(socket, state, incoming::STOP_RECORDING, stop_recording);
}

async fn run<T, F, Fut>(state: &AppState, caller: Caller, payload: Value, handle: F) -> Outcome
where
    T: serde::de::DeserializeOwned,
    F: Fn(AppState, Caller, T) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let p = serde_json::from_value::<T>(payload).map_err(payload_error)?;
    handle(state.clone(), caller, p).await
}

/// Handles a signaling event another node routed here because this node owns the session.
/// Unknown events are refused (never trusted to exist).
pub async fn dispatch(state: &AppState, event: &str, caller: Caller, payload: Value) -> Outcome {
    match event {
        incoming::WEBRTC_OFFER => run(state, caller, payload, offer).await,
        incoming::REQUEST_WEBRTC_OFFER => run(state, caller, payload, request_offer).await,
        incoming::WEBRTC_ANSWER => run(state, caller, payload, answer).await,
        incoming::WEBRTC_ICE_CANDIDATES => run(state, caller, payload, candidates).await,
        incoming::LEAVE_SESSION => run(state, caller, payload, leave).await,
        incoming::END_SESSION => run(state, caller, payload, end).await,
        incoming::START_RECORDING => run(state, caller, payload, start_recording).await,
        incoming::STOP_RECORDING => run(state, caller, payload, stop_recording).await,
        INTERNAL_STATS => run(state, caller, payload, stats).await,
        INTERNAL_RECORDING_START => run(state, caller, payload, rest_recording_start).await,
        INTERNAL_RECORDING_STOP => run(state, caller, payload, rest_recording_stop).await,
        _ => Err(SignalError::new(
            ErrorCode::UnknownEvent,
            "this server does not handle that event",
        )),
    }
}

/// Domain errors as signaling codes (`forbidden` for anyone but the session's doctor).
fn signal_code(e: &crate::messaging::DomainError) -> ErrorCode {
    match e.kind {
        crate::messaging::ErrorKind::Forbidden => ErrorCode::Forbidden,
        _ => e.code,
    }
}
