//! The HTTP router: REST API, operations endpoints, OpenAPI, and (through the Socket.IO layer
//! added by [`crate::app`]) real-time signaling. The same router serves HTTP and HTTPS.
//!
//! Invariants:
//! - every `/api` handler authenticates with [`extract::Caller`] and checks object access in
//!   the domain layer; errors leave through [`error::ApiError`] only;
//! - JSON bodies are capped at `http.json_body_limit`, uploads at the attachment limit;
//! - request logs carry the route template, never a raw path or query.

pub mod attachments;
pub mod conn_limit;
pub mod conversations;
mod envelope;
pub mod error;
pub mod extract;
pub mod guard;
pub mod messages;
pub mod nodes;
mod openapi;
pub mod ops;
pub mod recordings;
pub mod web;
pub mod webrtc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::error::ErrorCode;
use crate::messaging::ErrorKind;
use crate::state::AppState;
use error::ApiError;

pub use envelope::{created, ok, webrtc};
pub use openapi::ApiDoc;

/// Multipart framing on top of the file itself.
const MULTIPART_OVERHEAD: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    let upload_limit = state.config.messaging.attachment_max_bytes as usize + MULTIPART_OVERHEAD;
    let api = Router::new()
        .route(
            "/conversations",
            post(conversations::create).get(conversations::list),
        )
        .route("/conversations/{id}", get(conversations::get))
        .route("/conversations/{id}/read", post(conversations::mark_read))
        .route(
            "/conversations/{id}/messages",
            get(messages::history).post(messages::send),
        )
        .route(
            "/conversations/{id}/attachments",
            post(attachments::upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/attachments/{id}", get(attachments::download))
        .route("/webrtc/sessions", post(webrtc::create))
        .route("/webrtc/sessions/{id}", get(webrtc::get))
        .route("/webrtc/sessions/{id}/end", post(webrtc::end))
        .route("/webrtc/sessions/{id}/stats", get(webrtc::stats))
        .route(
            "/webrtc/sessions/{id}/recording",
            post(recordings::start).delete(recordings::stop),
        )
        .route(
            "/webrtc/sessions/{id}/recording/stop",
            post(recordings::stop),
        )
        .route("/webrtc/sessions/{id}/recordings", get(recordings::list))
        .route("/webrtc/recordings/{id}", get(recordings::download))
        .route("/webrtc/validate-code", post(webrtc::validate_code))
        .route("/webrtc/ice-servers", get(webrtc::ice_servers))
        .route("/nodes", get(nodes::list))
        .fallback(api_not_found)
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));

    Router::new()
        .nest("/api/messaging", api)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api-docs/openapi.json", get(openapi::document))
        .route("/api/dev/token", post(web::dev_token).get(web::dev_mode))
        .route("/api/{*rest}", axum::routing::any(api_not_found))
        .fallback(web::client)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.http.json_body_limit))
        // A body (an upload) silent for this long fails the request.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            state.config.http.body_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::track,
        ))
        .with_state(state)
}

pub fn cors(origins: Vec<HeaderValue>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

async fn api_not_found() -> ApiError {
    ApiError::new(ErrorKind::NotFound, ErrorCode::NotFound, "no such endpoint")
}

async fn method_not_allowed() -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut r = ApiError::new(
        ErrorKind::BadRequest,
        ErrorCode::MethodNotAllowed,
        "method not allowed on this endpoint",
    )
    .into_response();
    *r.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    r
}
