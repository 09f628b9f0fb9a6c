//! Errors as every layer sees them: a kind the transports map once (HTTP status, Socket.IO
//! ack), a stable machine code from one enum, and a message safe to show.
//!
//! Invariants:
//! - a code is spelled once, here: [`ErrorCode`] is what REST bodies, acknowledgements,
//!   `webrtc_error` and the bus between nodes carry, as its snake_case name;
//! - a code from another node that this build does not know becomes
//!   [`ErrorCode::RemoteError`] (a bounded set: nothing is interned or leaked);
//! - internal causes ([`DomainError::source`]) are logged once by the transport and never sent.

use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// How a failure is classified for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    UnsupportedMedia,
    TooManyRequests,
    Internal,
}

macro_rules! error_codes {
    ($($variant:ident = $name:literal,)*) => {
        /// Every machine-readable error code relais answers with (stable API).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ErrorCode {
            $(#[serde(rename = $name)] $variant,)*
            /// A code another node sent that this build does not know.
            #[serde(rename = "remote_error", other)]
            RemoteError,
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)* ErrorCode::RemoteError];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                    ErrorCode::RemoteError => "remote_error",
                }
            }
        }
    };
}

error_codes! {
    AdminOnly = "admin_only",
    AlreadyRecording = "already_recording",
    AttachmentNotFound = "attachment_not_found",
    AttachmentRequired = "attachment_required",
    AttachmentTooLarge = "attachment_too_large",
    AttachmentTypeMismatch = "attachment_type_mismatch",
    AuditUnavailable = "audit_unavailable",
    BadCandidate = "bad_candidate",
    BadSdp = "bad_sdp",
    CheckNotFound = "check_not_found",
    CodecUnsupported = "codec_unsupported",
    ConsentRequired = "consent_required",
    ConversationNotFound = "conversation_not_found",
    Declined = "declined",
    DevSignInLocalOnly = "dev_sign_in_local_only",
    DoctorOnly = "doctor_only",
    DoctorRequired = "doctor_required",
    DtlsFailed = "dtls_failed",
    EmptyAttachment = "empty_attachment",
    EmptyMessage = "empty_message",
    ExpiredCode = "expired_code",
    Forbidden = "forbidden",
    GuestCodeUsed = "guest_code_used",
    GuestNotAllowed = "guest_not_allowed",
    IceFailed = "ice_failed",
    InitiatorMismatch = "initiator_mismatch",
    InternalError = "internal_error",
    InvalidBody = "invalid_body",
    InvalidClientMessageId = "invalid_client_message_id",
    InvalidCode = "invalid_code",
    InvalidConversationId = "invalid_conversation_id",
    InvalidId = "invalid_id",
    InvalidJson = "invalid_json",
    InvalidLimit = "invalid_limit",
    InvalidMetadata = "invalid_metadata",
    InvalidMultipart = "invalid_multipart",
    InvalidParticipants = "invalid_participants",
    InvalidPath = "invalid_path",
    InvalidPayload = "invalid_payload",
    InvalidQuery = "invalid_query",
    InvalidRequest = "invalid_request",
    MessageNotFound = "message_not_found",
    MessageTooLong = "message_too_long",
    MethodNotAllowed = "method_not_allowed",
    MissingFile = "missing_file",
    NegotiationInProgress = "negotiation_in_progress",
    NoOfferOutstanding = "no_offer_outstanding",
    NodeUnavailable = "node_unavailable",
    NotFound = "not_found",
    NotInSession = "not_in_session",
    NotJoined = "not_joined",
    NotRecording = "not_recording",
    NotWaiting = "not_waiting",
    PatientsAddDoctorsOnly = "patients_add_doctors_only",
    PayloadTooLarge = "payload_too_large",
    PeerGone = "peer_gone",
    RateLimited = "rate_limited",
    RecordingInProgress = "recording_in_progress",
    RecordingNotFound = "recording_not_found",
    RecordingUnavailable = "recording_unavailable",
    Removed = "removed",
    SessionEnded = "session_ended",
    SessionNotFound = "session_not_found",
    SessionNotLive = "session_not_live",
    Timeout = "timeout",
    TooManyAttempts = "too_many_attempts",
    TooManyAuthFailures = "too_many_auth_failures",
    TooManyChecks = "too_many_checks",
    TooManyParticipants = "too_many_participants",
    TooManyRequests = "too_many_requests",
    TooManyTracks = "too_many_tracks",
    TrackRefused = "track_refused",
    Unauthenticated = "unauthenticated",
    Unauthorized = "unauthorized",
    UnbundledTransports = "unbundled_transports",
    UnexpectedAttachment = "unexpected_attachment",
    UnknownEvent = "unknown_event",
    UnsupportedAttachmentType = "unsupported_attachment_type",
    UnsupportedMediaType = "unsupported_media_type",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A code equals its wire name (`ErrorCode::BadSdp == "bad_sdp"`).
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {}

/// An error a caller can act on. `code` is stable API; `message` is for people.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DomainError {
    pub kind: ErrorKind,
    pub code: ErrorCode,
    pub message: String,
    /// Internal cause, logged once by the transport and never sent to the client.
    #[source]
    pub source: Option<anyhow::Error>,
}

impl DomainError {
    pub fn new(kind: ErrorKind, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            source: None,
        }
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, message)
    }

    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, code, message)
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, code, message)
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        Self {
            kind: ErrorKind::Internal,
            code: ErrorCode::InternalError,
            message: "internal error".into(),
            source: Some(source.into()),
        }
    }

    /// The conversation does not exist or the caller is not in it: the same answer for both,
    /// so ids cannot be probed.
    pub fn conversation_not_found() -> Self {
        Self::not_found(ErrorCode::ConversationNotFound, "conversation not found")
    }
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        Self::internal(e)
    }
}

pub type DomainResult<T> = Result<T, DomainError>;

/// A signaling failure, sent to the client as `webrtc_error {code, message}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{code}: {message}")]
pub struct SignalError {
    pub code: ErrorCode,
    pub message: String,
}

impl SignalError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_sdp(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadSdp, message)
    }

    pub fn internal() -> Self {
        Self::new(
            ErrorCode::InternalError,
            "the media server could not do this",
        )
    }
}

pub type SignalResult<T> = Result<T, SignalError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_travel_as_their_snake_case_names_and_unknown_ones_are_remote_errors() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::json!(code.as_str()));
            assert_eq!(serde_json::from_value::<ErrorCode>(json).unwrap(), *code);
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
        }
        let unknown: ErrorCode = serde_json::from_str("\"a_code_of_tomorrow\"").unwrap();
        assert_eq!(unknown, ErrorCode::RemoteError);
        assert_eq!(ErrorCode::TooManyRequests.to_string(), "too_many_requests");
    }
}
