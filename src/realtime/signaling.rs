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

use super::SocketUser;
use super::events::{self, incoming};
use super::reply::Reply;
use crate::cluster::NodeId;
use crate::error::{ErrorCode, ErrorKind};
use crate::ids::SessionId;
use crate::sfu::{Caller, SfuReply, SfuRequest, SignalError};
use crate::state::AppState;

/// Signaling jobs waiting for one socket.
const QUEUE: usize = 64;

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

/// A client payload that names its session and is one request to the SFU.
trait IntoRequest {
    fn session_id(&self) -> SessionId;
    fn into_request(self) -> SfuRequest;
}

impl IntoRequest for events::ClientOffer {
    fn session_id(&self) -> SessionId {
        self.session_id
    }
    fn into_request(self) -> SfuRequest {
        SfuRequest::Publish {
            session: self.session_id,
            sdp: self.sdp_offer,
        }
    }
}

impl IntoRequest for events::RequestOffer {
    fn session_id(&self) -> SessionId {
        self.session_id
    }
    fn into_request(self) -> SfuRequest {
        SfuRequest::Join {
            session: self.session_id,
            code: self.code,
        }
    }
}

impl IntoRequest for events::ClientAnswer {
    fn session_id(&self) -> SessionId {
        self.session_id
    }
    fn into_request(self) -> SfuRequest {
        SfuRequest::Answer {
            session: self.session_id,
            sdp: self.sdp_answer,
        }
    }
}

impl IntoRequest for events::ClientCandidates {
    fn session_id(&self) -> SessionId {
        self.session_id
    }
    fn into_request(self) -> SfuRequest {
        SfuRequest::Candidates {
            session: self.session_id,
            candidates: self.candidates,
        }
    }
}

impl IntoRequest for events::StartRecording {
    fn session_id(&self) -> SessionId {
        self.session_id
    }
    fn into_request(self) -> SfuRequest {
        SfuRequest::StartRecording {
            session: self.session_id,
            consent: self.consent,
        }
    }
}

/// `admit_participant`, `decline_participant`, `remove_participant`: `{sessionId, user}`.
struct AboutParticipant<const OP: u8>(events::ParticipantRequest);

const ADMIT: u8 = 0;
const DECLINE: u8 = 1;
const REMOVE: u8 = 2;

impl<'de, const OP: u8> serde::Deserialize<'de> for AboutParticipant<OP> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        events::ParticipantRequest::deserialize(d).map(Self)
    }
}

impl<const OP: u8> IntoRequest for AboutParticipant<OP> {
    fn session_id(&self) -> SessionId {
        self.0.session_id
    }
    fn into_request(self) -> SfuRequest {
        let events::ParticipantRequest {
            session_id: session,
            user,
            reason,
        } = self.0;
        let user = crate::ids::Identity::new(user.user_type, user.user_id);
        match OP {
            ADMIT => SfuRequest::Admit { session, user },
            DECLINE => SfuRequest::Decline {
                session,
                user,
                reason,
            },
            _ => SfuRequest::Remove { session, user },
        }
    }
}

impl IntoRequest for events::SetAudioOnly {
    fn session_id(&self) -> SessionId {
        self.session_id
    }
    fn into_request(self) -> SfuRequest {
        SfuRequest::AudioOnly {
            session: self.session_id,
            on: self.audio_only,
            reason: self.reason,
        }
    }
}

/// `leave_session`, `end_session` and `stop_recording` carry only their session.
struct SessionOnly<const OP: u8>(events::SessionRef);

const LEAVE: u8 = 0;
const END: u8 = 1;
const STOP_RECORDING: u8 = 2;

impl<'de, const OP: u8> serde::Deserialize<'de> for SessionOnly<OP> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        events::SessionRef::deserialize(d).map(Self)
    }
}

impl<const OP: u8> IntoRequest for SessionOnly<OP> {
    fn session_id(&self) -> SessionId {
        self.0.session_id
    }
    fn into_request(self) -> SfuRequest {
        let session = self.0.session_id;
        match OP {
            LEAVE => SfuRequest::Leave { session },
            END => SfuRequest::End { session },
            _ => SfuRequest::StopRecording { session },
        }
    }
}

/// Registers `event`: payload parsed, caller identified, the request run in order on the
/// socket's queue where the session lives ([`crate::cluster::Router`]), answered with an ack
/// and `webrtc_error` on failure.
fn on_signal<A, T>(socket: &SocketRef<A>, state: &AppState, event: &'static str)
where
    A: Adapter,
    T: serde::de::DeserializeOwned + IntoRequest + Send + Sync + 'static,
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
            let session_id = parsed.as_ref().ok().map(IntoRequest::session_id);
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
            let (job_state, job_socket) = (state.clone(), socket.clone());
            let job: Job = Box::pin(async move {
                let r = async {
                    let p = parsed?;
                    let session_id = p.session_id();
                    let principal = user(&job_socket)?.principal;
                    let caller = Caller {
                        who: principal.identity,
                        socket: Some(job_socket.id.into()),
                        ip: client_ip(&job_socket),
                        name: principal.name,
                    };
                    let request = p.into_request();
                    let doctor_only = matches!(
                        request,
                        SfuRequest::End { .. }
                            | SfuRequest::StartRecording { .. }
                            | SfuRequest::StopRecording { .. }
                            | SfuRequest::Admit { .. }
                            | SfuRequest::Decline { .. }
                            | SfuRequest::Remove { .. }
                    );
                    let routed = job_state.router.route(caller, request).await;
                    if let Some(node) = &routed.via {
                        remember_route(&job_socket, node);
                    }
                    match routed.outcome {
                        Ok(reply) => Ok(ack(session_id, reply)),
                        // The doctor's operations: anyone else hears `forbidden`, whatever
                        // the precise refusal.
                        Err(e) if doctor_only && e.kind == ErrorKind::Forbidden => {
                            Err(SignalError::new(ErrorCode::Forbidden, e.message))
                        }
                        Err(e) => Err(SignalError::from(e)),
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

/// The acknowledgement of a signaling event that succeeded, as the seed's clients read it.
fn ack(session_id: SessionId, reply: SfuReply) -> Value {
    match reply {
        SfuReply::Done => serde_json::json!({ "sessionId": session_id }),
        SfuReply::Accepted(n) => serde_json::json!({ "sessionId": session_id, "accepted": n }),
        SfuReply::RecordingStarted(r) => serde_json::json!({
            "sessionId": session_id,
            "startedAt": crate::clock::to_rfc3339(r.started_at),
            "recordings": r.recordings,
        }),
        SfuReply::RecordingStopped(closed) => serde_json::json!({
            "sessionId": session_id,
            "recordings": closed
                .iter()
                .map(super::views::recording_view)
                .collect::<Vec<_>>(),
        }),
        SfuReply::Stats(participants) => serde_json::json!({
            "sessionId": session_id,
            "participants": participants,
        }),
        SfuReply::Waiting => serde_json::json!({ "sessionId": session_id, "waiting": true }),
        SfuReply::WaitingList(waiting) => serde_json::json!({
            "sessionId": session_id,
            "waiting": waiting,
        }),
    }
}

pub(super) fn register<A: Adapter>(socket: &SocketRef<A>, state: &AppState) {
    on_signal::<A, events::ClientOffer>(socket, state, incoming::WEBRTC_OFFER);
    on_signal::<A, events::RequestOffer>(socket, state, incoming::REQUEST_WEBRTC_OFFER);
    on_signal::<A, events::ClientAnswer>(socket, state, incoming::WEBRTC_ANSWER);
    on_signal::<A, events::ClientCandidates>(socket, state, incoming::WEBRTC_ICE_CANDIDATES);
    on_signal::<A, SessionOnly<LEAVE>>(socket, state, incoming::LEAVE_SESSION);
    on_signal::<A, SessionOnly<END>>(socket, state, incoming::END_SESSION);
    on_signal::<A, events::StartRecording>(socket, state, incoming::START_RECORDING);
    on_signal::<A, SessionOnly<STOP_RECORDING>>(socket, state, incoming::STOP_RECORDING);
    on_signal::<A, AboutParticipant<ADMIT>>(socket, state, incoming::ADMIT_PARTICIPANT);
    on_signal::<A, AboutParticipant<DECLINE>>(socket, state, incoming::DECLINE_PARTICIPANT);
    on_signal::<A, AboutParticipant<REMOVE>>(socket, state, incoming::REMOVE_PARTICIPANT);
    on_signal::<A, events::SetAudioOnly>(socket, state, incoming::SET_AUDIO_ONLY);
}
