//! HTTP errors: the one place a domain error becomes a status and an envelope.
//!
//! Body: `{"success": false, "status": "error", "error": {"code", "message"}}` (both envelope
//! flags, so messaging clients reading `success` and WebRTC clients reading `status` agree).
//! Internal causes are logged here once and never sent.

use axum::extract::multipart::MultipartError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ErrorCode;
use crate::messaging::{DomainError, ErrorKind};
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError(pub DomainError);

impl ApiError {
    pub fn new(kind: ErrorKind, code: ErrorCode, message: impl Into<String>) -> Self {
        Self(DomainError::new(kind, code, message))
    }
}

/// Every error's body: `{"success": false, "status": "error", "error": {code, message}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    pub status: ErrorStatus,
    pub error: ErrorDetail,
}

/// `"error"`, the WebRTC envelope's `status` on a failure.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErrorStatus {
    Error,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`not_found`, `invalid_body`, `session_not_found`, …).
    #[schema(value_type = String)]
    pub code: ErrorCode,
    /// For people; never holds internal causes.
    pub message: String,
}

pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        if e.kind == ErrorKind::Internal {
            tracing::error!(error = ?e.source, "request failed");
        }
        let status = status_of(e.kind);
        let body = ErrorBody {
            success: false,
            status: ErrorStatus::Error,
            error: ErrorDetail {
                code: e.code,
                message: e.message,
            },
        };
        let mut response = super::envelope::json_response(status, &body);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        Self(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self(e.into())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let (kind, code) = match &r {
            JsonRejection::JsonDataError(_) => (ErrorKind::BadRequest, ErrorCode::InvalidBody),
            JsonRejection::JsonSyntaxError(_) => (ErrorKind::BadRequest, ErrorCode::InvalidJson),
            JsonRejection::MissingJsonContentType(_) => {
                (ErrorKind::UnsupportedMedia, ErrorCode::UnsupportedMediaType)
            }
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (ErrorKind::TooLarge, ErrorCode::PayloadTooLarge)
            }
            _ => (ErrorKind::BadRequest, ErrorCode::InvalidBody),
        };
        let message = match &r {
            JsonRejection::MissingJsonContentType(_) => {
                "expected Content-Type: application/json".to_string()
            }
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => "request body is too large".into(),
            _ => r.body_text(),
        };
        Self::new(kind, code, message)
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(ErrorKind::BadRequest, ErrorCode::InvalidPath, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(
            ErrorKind::BadRequest,
            ErrorCode::InvalidQuery,
            r.body_text(),
        )
    }
}

impl From<MultipartError> for ApiError {
    fn from(e: MultipartError) -> Self {
        Self(multipart_error(e))
    }
}

pub fn multipart_error(e: MultipartError) -> DomainError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        DomainError::new(
            ErrorKind::TooLarge,
            ErrorCode::PayloadTooLarge,
            "request body is too large",
        )
    } else {
        DomainError::bad_request(ErrorCode::InvalidMultipart, e.body_text())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
