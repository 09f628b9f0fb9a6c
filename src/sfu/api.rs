//! What the SFU can be asked, as values: a [`Caller`] and an [`SfuRequest`], answered with an
//! [`SfuReply`] or a [`DomainError`]. Socket.IO handlers and REST handlers build requests; the
//! cluster's router runs them here or on the node that owns the session, whose answer comes
//! back as the same types (they cross nodes as JSON, nothing else does).
//!
//! Invariants:
//! - every request names its session, and [`Sfu::handle`] checks the caller may touch it
//!   (the methods it calls do: membership, code admission, doctor-only operations);
//! - a request that needs a signaling socket and has none (made over REST) is refused with
//!   `invalid_request`, never run half-way.

use std::net::IpAddr;

use rtc::peer_connection::transport::RTCIceCandidateInit;
use serde::{Deserialize, Serialize};

use super::Sfu;
use super::room::recording::RecordingStarted;
use super::room::{Admission, ParticipantStats};
use crate::error::{DomainError, DomainResult, ErrorCode, ErrorKind, SignalError};
use crate::ids::{Identity, SessionId, SocketId};
use crate::store::RecordingRecord;

/// Who asks: the person, their signaling socket (`None` over REST) and their address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Caller {
    pub who: Identity,
    pub socket: Option<SocketId>,
    pub ip: Option<IpAddr>,
    /// The display name the caller's token carries (shown to the doctor in the waiting room).
    #[serde(default)]
    pub name: Option<String>,
}

impl Caller {
    /// A REST caller: no socket.
    pub fn rest(who: Identity, ip: Option<IpAddr>) -> Self {
        Self {
            who,
            socket: None,
            ip,
            name: None,
        }
    }

    fn socket(&self) -> DomainResult<SocketId> {
        self.socket.ok_or_else(|| {
            DomainError::bad_request(ErrorCode::InvalidRequest, "this needs a socket")
        })
    }
}

/// A request to the SFU about one session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SfuRequest {
    /// `webrtc_offer`: the caller publishes (or renegotiates).
    Publish { session: SessionId, sdp: String },
    /// `request_webrtc_offer` with the join code: admission, then the server's offer.
    Join { session: SessionId, code: String },
    /// `webrtc_answer` to the server's offer.
    Answer { session: SessionId, sdp: String },
    /// `webrtc_ice_candidates`.
    Candidates {
        session: SessionId,
        candidates: Vec<RTCIceCandidateInit>,
    },
    /// `leave_session`.
    Leave { session: SessionId },
    /// `end_session` (its doctor only).
    End { session: SessionId },
    /// `start_recording` or `POST …/recording` (its doctor only, with consent).
    StartRecording {
        session: SessionId,
        consent: Option<bool>,
    },
    /// `stop_recording` or `DELETE …/recording`: answered once the files are finished.
    StopRecording { session: SessionId },
    /// Live media statistics (`GET …/stats`; the handler checked the caller is its doctor).
    Stats { session: SessionId },
    /// `admit_participant` or `POST …/admit` (its doctor only).
    Admit { session: SessionId, user: Identity },
    /// `decline_participant` or `POST …/decline` (its doctor only).
    Decline {
        session: SessionId,
        user: Identity,
        reason: Option<String>,
    },
    /// `remove_participant` or `POST …/remove` (its doctor only).
    Remove { session: SessionId, user: Identity },
    /// `set_audio_only`.
    AudioOnly {
        session: SessionId,
        on: bool,
        reason: Option<String>,
    },
    /// `GET …/waiting` (its doctor only).
    Waiting { session: SessionId },
}

impl SfuRequest {
    pub fn session(&self) -> SessionId {
        match self {
            SfuRequest::Publish { session, .. }
            | SfuRequest::Join { session, .. }
            | SfuRequest::Answer { session, .. }
            | SfuRequest::Candidates { session, .. }
            | SfuRequest::Leave { session }
            | SfuRequest::End { session }
            | SfuRequest::StartRecording { session, .. }
            | SfuRequest::StopRecording { session }
            | SfuRequest::Stats { session }
            | SfuRequest::Admit { session, .. }
            | SfuRequest::Decline { session, .. }
            | SfuRequest::Remove { session, .. }
            | SfuRequest::AudioOnly { session, .. }
            | SfuRequest::Waiting { session } => *session,
        }
    }
}

/// What a request answers when it succeeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", content = "data", rename_all = "snake_case")]
pub enum SfuReply {
    Done,
    /// Candidates taken (those the server does not need are dropped quietly).
    Accepted(usize),
    RecordingStarted(RecordingStarted),
    /// The recordings the stop closed, finished.
    RecordingStopped(Vec<RecordingRecord>),
    Stats(Vec<ParticipantStats>),
    /// A join that waits for the doctor's admission.
    Waiting,
    /// Who waits in the waiting room.
    WaitingList(Vec<WaitingView>),
}

/// A person in the waiting room, as the doctor sees them.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WaitingView {
    pub user: crate::wire::UserRef,
    pub name: Option<String>,
    /// RFC 3339.
    pub since: String,
}

/// A failed request as it crosses nodes: the domain error without its internal cause (the
/// owner logged that).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteError {
    pub kind: ErrorKind,
    pub code: ErrorCode,
    pub message: String,
}

impl From<&DomainError> for RemoteError {
    fn from(e: &DomainError) -> Self {
        Self {
            kind: e.kind,
            code: e.code,
            message: e.message.clone(),
        }
    }
}

impl From<RemoteError> for DomainError {
    fn from(e: RemoteError) -> Self {
        DomainError::new(e.kind, e.code, e.message)
    }
}

/// Signaling failures in the domain's terms: the kind a REST caller would get for that code.
impl From<SignalError> for DomainError {
    fn from(e: SignalError) -> Self {
        let kind = match e.code {
            ErrorCode::BadSdp
            | ErrorCode::BadCandidate
            | ErrorCode::InvalidPayload
            | ErrorCode::InvalidRequest
            | ErrorCode::ConsentRequired => ErrorKind::BadRequest,
            ErrorCode::SessionNotFound | ErrorCode::RecordingNotFound => ErrorKind::NotFound,
            ErrorCode::Forbidden | ErrorCode::DoctorOnly | ErrorCode::NotInSession => {
                ErrorKind::Forbidden
            }
            ErrorCode::Unauthenticated => ErrorKind::Unauthorized,
            ErrorCode::TooManyRequests | ErrorCode::TooManyAttempts => ErrorKind::TooManyRequests,
            ErrorCode::InternalError => ErrorKind::Internal,
            _ => ErrorKind::Conflict,
        };
        DomainError::new(kind, e.code, e.message)
    }
}

/// A domain error as signaling tells it: same code, same message (the cause stays here).
impl From<DomainError> for SignalError {
    fn from(e: DomainError) -> Self {
        SignalError::new(e.code, e.message)
    }
}

impl Sfu {
    /// Runs one request on this node (which must own the session's room, or create it).
    pub async fn handle(&self, caller: &Caller, request: SfuRequest) -> DomainResult<SfuReply> {
        let who = caller.who;
        match request {
            SfuRequest::Publish { session, sdp } => {
                self.publish(who, caller.socket()?, session, sdp).await?;
                Ok(SfuReply::Done)
            }
            SfuRequest::Join { session, code } => {
                let waiting = self
                    .join(
                        who,
                        caller.name.clone(),
                        caller.ip,
                        caller.socket()?,
                        session,
                        &code,
                    )
                    .await?;
                Ok(if waiting {
                    SfuReply::Waiting
                } else {
                    SfuReply::Done
                })
            }
            SfuRequest::Admit { session, user } => {
                self.admission(who, caller.ip, session, user, Admission::Admit)
                    .await?;
                Ok(SfuReply::Done)
            }
            SfuRequest::Decline {
                session,
                user,
                reason,
            } => {
                self.admission(who, caller.ip, session, user, Admission::Decline { reason })
                    .await?;
                Ok(SfuReply::Done)
            }
            SfuRequest::Remove { session, user } => {
                self.admission(who, caller.ip, session, user, Admission::Remove)
                    .await?;
                Ok(SfuReply::Done)
            }
            SfuRequest::AudioOnly {
                session,
                on,
                reason,
            } => {
                self.audio_only(who, caller.ip, session, on, reason).await?;
                Ok(SfuReply::Done)
            }
            SfuRequest::Waiting { session } => Ok(SfuReply::WaitingList(
                self.waiting(who, session)
                    .await?
                    .into_iter()
                    .map(|w| WaitingView {
                        user: w.who.into(),
                        name: w.name,
                        since: crate::clock::to_rfc3339(w.since),
                    })
                    .collect(),
            )),
            SfuRequest::Answer { session, sdp } => {
                self.answer(who, session, sdp).await?;
                Ok(SfuReply::Done)
            }
            SfuRequest::Candidates {
                session,
                candidates,
            } => Ok(SfuReply::Accepted(
                self.candidates(who, session, candidates).await?,
            )),
            SfuRequest::Leave { session } => {
                self.leave(who, session).await?;
                Ok(SfuReply::Done)
            }
            SfuRequest::End { session } => {
                self.end(who, session, "ended_by_doctor").await?;
                Ok(SfuReply::Done)
            }
            SfuRequest::StartRecording { session, consent } => Ok(SfuReply::RecordingStarted(
                self.start_recording(who, caller.ip, session, consent)
                    .await?,
            )),
            SfuRequest::StopRecording { session } => Ok(SfuReply::RecordingStopped(
                self.stop_recording(who, caller.ip, session).await?,
            )),
            SfuRequest::Stats { session } => Ok(SfuReply::Stats(self.stats(session).await)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Role;

    #[test]
    fn requests_and_replies_cross_nodes_as_json() {
        let r = SfuRequest::Candidates {
            session: SessionId(4),
            candidates: vec![RTCIceCandidateInit {
                candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
                ..Default::default()
            }],
        };
        let back: SfuRequest = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back.session(), SessionId(4));
        let reply = SfuReply::Accepted(2);
        let back: SfuReply = serde_json::from_slice(&serde_json::to_vec(&reply).unwrap()).unwrap();
        assert!(matches!(back, SfuReply::Accepted(2)));
        let who = Identity::new(Role::Patient, 3);
        let c = Caller::rest(who, None);
        assert!(c.socket().is_err());
    }

    #[test]
    fn codes_survive_the_trip_between_signaling_and_domain_errors() {
        for code in [
            ErrorCode::NotInSession,
            ErrorCode::BadSdp,
            ErrorCode::SessionEnded,
        ] {
            let back = SignalError::from(DomainError::from(SignalError::new(code, "x")));
            assert_eq!(back.code, code);
        }
        let back = DomainError::from(SignalError::bad_sdp("x"));
        assert_eq!(back.kind, ErrorKind::BadRequest);
    }
}
