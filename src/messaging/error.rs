//! The messaging layer's error: a stable machine code, a message safe to show, and a kind
//! that transports (HTTP status, Socket.IO ack) map once.

use crate::store::StoreError;

/// How a failure is classified for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// An error a caller can act on. `code` is stable API; `message` is for people.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DomainError {
    pub kind: ErrorKind,
    pub code: &'static str,
    pub message: String,
    /// Internal cause, logged once by the transport and never sent to the client.
    #[source]
    pub source: Option<anyhow::Error>,
}

impl DomainError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            source: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        Self {
            kind: ErrorKind::Internal,
            code: "internal_error",
            message: "internal error".into(),
            source: Some(source.into()),
        }
    }

    /// The conversation does not exist or the caller is not in it: the same answer for both,
    /// so ids cannot be probed.
    pub fn conversation_not_found() -> Self {
        Self::not_found("conversation_not_found", "conversation not found")
    }
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        Self::internal(e)
    }
}

pub type DomainResult<T> = Result<T, DomainError>;
