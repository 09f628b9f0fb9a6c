//! Success envelopes: messaging answers `{"success": true, "data": …}`, WebRTC answers
//! `{"status": "success", "data": …}` (as the seed document writes them).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

pub fn ok<T: Serialize>(data: T) -> Response {
    Json(json!({ "success": true, "data": data })).into_response()
}

pub fn created<T: Serialize>(data: T) -> Response {
    (
        StatusCode::CREATED,
        Json(json!({ "success": true, "data": data })),
    )
        .into_response()
}

pub fn webrtc<T: Serialize>(status: StatusCode, data: T) -> Response {
    (status, Json(json!({ "status": "success", "data": data }))).into_response()
}
