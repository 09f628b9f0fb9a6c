//! Success envelopes: messaging answers `{"success": true, "data": …}`, WebRTC answers
//! `{"status": "success", "data": …}` (as the seed document writes them).
//!
//! Invariant: every REST body leaves through [`json_response`], which writes a
//! `serde_json::Value`: keys leave sorted at every level (serde_json without `preserve_order`),
//! as they always have, whatever the field order of the view structs.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::messaging::DomainError;

/// The messaging envelope: `{"success": true, "data": …}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Success<T> {
    /// Always `true` (errors carry `false`).
    pub success: bool,
    pub data: T,
}

/// `"success"`, the only value of the WebRTC envelope's `status` on a success.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SuccessStatus {
    Success,
}

/// The WebRTC envelope: `{"status": "success", "data": …}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebrtcSuccess<T> {
    pub status: SuccessStatus,
    pub data: T,
}

/// `{"success": true, "data": data}`, 200.
pub fn ok<T: Serialize>(data: T) -> Success<T> {
    Success {
        success: true,
        data,
    }
}

/// `{"success": true, "data": data}`, 201.
pub fn created<T: Serialize>(data: T) -> (StatusCode, Success<T>) {
    (StatusCode::CREATED, ok(data))
}

/// `{"status": "success", "data": data}` with `status`.
pub fn webrtc<T: Serialize>(status: StatusCode, data: T) -> (StatusCode, WebrtcSuccess<T>) {
    (
        status,
        WebrtcSuccess {
            status: SuccessStatus::Success,
            data,
        },
    )
}

impl<T: Serialize> IntoResponse for Success<T> {
    fn into_response(self) -> Response {
        json_response(StatusCode::OK, &self)
    }
}

impl<T: Serialize> IntoResponse for WebrtcSuccess<T> {
    fn into_response(self) -> Response {
        json_response(StatusCode::OK, &self)
    }
}

/// A JSON body with its keys sorted (see the module invariant). A view that cannot be
/// written as JSON (a map with non-string keys: a bug) answers 500.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_value(body) {
        Ok(value) => (status, Json(value)).into_response(),
        Err(e) => super::error::ApiError(DomainError::internal(e)).into_response(),
    }
}
