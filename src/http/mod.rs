//! The HTTP router: REST API, operations endpoints, OpenAPI, and (through the Socket.IO layer
//! added by [`crate::app`]) real-time signaling. The same router serves HTTP and HTTPS.
//!
//! Invariants:
//! - every `/api` handler authenticates with [`extract::Caller`] and checks object access in
//!   the domain layer; errors leave through [`error::ApiError`] only;
//! - every success body is a typed view ([`views`], in an `envelope`) that the OpenAPI
//!   document names, for every endpoint of [`api_endpoints`] and [`root_endpoints`]
//!   (`tests/suite/openapi.rs` checks the router, the document and real answers agree);
//! - JSON bodies are capped at `http.json_body_limit`, uploads at the attachment limit;
//! - request logs carry the route template, never a raw path or query.

pub mod admission;
pub mod attachments;
pub mod audit;
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
pub mod precall;
pub mod recordings;
pub mod views;
pub mod web;
pub mod webrtc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{MethodRouter, get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::error::ErrorCode;
use crate::messaging::ErrorKind;
use crate::state::AppState;
use error::ApiError;

pub use envelope::{Success, WebrtcSuccess, created, ok, webrtc};
pub use error::ErrorBody;
pub use openapi::ApiDoc;

/// Multipart framing on top of the file itself.
const MULTIPART_OVERHEAD: usize = 64 * 1024;

/// Where the REST API ([`api_endpoints`]) is mounted.
pub const API_PREFIX: &str = "/api/messaging";

/// An endpoint: its path and its handlers. [`router`] registers exactly the endpoints of
/// [`api_endpoints`] and [`root_endpoints`] (plus the `/api` catch-all and the browser client
/// as fallbacks); `tests/suite/openapi.rs` checks each against the OpenAPI document.
pub type Endpoint = (&'static str, MethodRouter<AppState>);

/// The REST API, under [`API_PREFIX`].
pub fn api_endpoints(upload_limit: usize) -> Vec<Endpoint> {
    vec![
        (
            "/conversations",
            post(conversations::create).get(conversations::list),
        ),
        ("/conversations/{id}", get(conversations::get)),
        ("/conversations/{id}/read", post(conversations::mark_read)),
        (
            "/conversations/{id}/messages",
            get(messages::history).post(messages::send),
        ),
        (
            "/conversations/{id}/attachments",
            post(attachments::upload).layer(DefaultBodyLimit::max(upload_limit)),
        ),
        ("/attachments/{id}", get(attachments::download)),
        ("/webrtc/sessions", post(webrtc::create)),
        (
            "/webrtc/sessions/{id}",
            get(webrtc::get).patch(admission::settings),
        ),
        ("/webrtc/sessions/{id}/waiting", get(admission::waiting)),
        ("/webrtc/sessions/{id}/admit", post(admission::admit)),
        ("/webrtc/sessions/{id}/decline", post(admission::decline)),
        ("/webrtc/sessions/{id}/remove", post(admission::remove)),
        (
            "/webrtc/sessions/{id}/guests",
            post(admission::invite).get(admission::guests),
        ),
        (
            "/webrtc/sessions/{id}/guests/{guest}",
            axum::routing::delete(admission::revoke),
        ),
        ("/webrtc/guest-token", post(admission::guest_token)),
        ("/webrtc/sessions/{id}/end", post(webrtc::end)),
        ("/webrtc/sessions/{id}/stats", get(webrtc::stats)),
        (
            "/webrtc/sessions/{id}/recording",
            post(recordings::start).delete(recordings::stop),
        ),
        (
            "/webrtc/sessions/{id}/recording/stop",
            post(recordings::stop_by_post),
        ),
        ("/webrtc/sessions/{id}/recordings", get(recordings::list)),
        ("/webrtc/recordings/{id}", get(recordings::download)),
        ("/webrtc/validate-code", post(webrtc::validate_code)),
        ("/webrtc/ice-servers", get(webrtc::ice_servers)),
        ("/webrtc/check", get(precall::plan).post(precall::start)),
        (
            "/webrtc/check/{id}",
            get(precall::stats).delete(precall::close),
        ),
        ("/webrtc/check/{id}/answer", post(precall::answer)),
        ("/nodes", get(nodes::list)),
        ("/audit", get(audit::list)),
    ]
}

/// Operations, the OpenAPI document and development sign-in, at the root.
pub fn root_endpoints() -> Vec<Endpoint> {
    vec![
        ("/healthz", get(ops::healthz)),
        ("/readyz", get(ops::readyz)),
        ("/metrics", get(ops::metrics)),
        ("/api-docs/openapi.json", get(openapi::document)),
        ("/api/dev/token", post(web::dev_token).get(web::dev_mode)),
    ]
}

fn with_endpoints(router: Router<AppState>, endpoints: Vec<Endpoint>) -> Router<AppState> {
    endpoints
        .into_iter()
        .fold(router, |router, (path, handlers)| {
            router.route(path, handlers)
        })
}

pub fn router(state: AppState) -> Router {
    let upload_limit = state.config.messaging.attachment_max_bytes as usize + MULTIPART_OVERHEAD;
    let api = with_endpoints(Router::new(), api_endpoints(upload_limit))
        .fallback(api_not_found)
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));

    with_endpoints(Router::new().nest(API_PREFIX, api), root_endpoints())
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
