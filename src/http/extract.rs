//! Request extractors that answer bad input with the API's error envelope.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;

use super::error::ApiError;
use crate::auth::Principal;
use crate::error::ErrorCode;
use crate::limits::AddrKey;
use crate::messaging::ErrorKind;
use crate::metrics::TransportLabels;
use crate::net::client_ip;
use crate::state::AppState;

/// A JSON body; malformed JSON, wrong types, wrong content type and oversize get API errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Path parameters; non-numeric ids get `invalid_path`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query parameters; wrong types get `invalid_query`.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The client's address, when the server knows it (it always does when serving sockets):
/// resolved through the trusted proxies ([`crate::net::ClientAddr`]), else the TCP peer.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl ClientIp {
    pub fn of(parts: &Parts) -> Self {
        Self(client_ip(&parts.extensions))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts))
    }
}

/// The authenticated caller (`Authorization: Bearer …`). A valid token is always accepted; an
/// invalid one counts against the client's address, and past `http.auth_failures_per_minute`
/// the answer is 429 instead of 401.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .unwrap_or("");
        let e = match state.verifier.verify(token) {
            Ok(principal) => return Ok(Caller(principal)),
            Err(e) => e,
        };
        state
            .metrics
            .auth_failures
            .get_or_create(&TransportLabels { transport: "http" })
            .inc();
        let key = ClientIp::of(parts).0.map(AddrKey::of);
        let over = key.is_some_and(|k| {
            let before = state.auth_limiter.is_over(&k);
            state.auth_limiter.record(k);
            before
        });
        if let Some(suppressed) = state.log_budget.admit("http_auth_failure") {
            tracing::info!(reason = %e, client = ?key.map(|k| k.to_string()), suppressed, "http authentication refused");
        }
        if over {
            return Err(ApiError::new(
                ErrorKind::TooManyRequests,
                ErrorCode::TooManyAuthFailures,
                "too many failed authentication attempts from this address, retry in a minute",
            ));
        }
        Err(ApiError::new(
            ErrorKind::Unauthorized,
            ErrorCode::Unauthorized,
            e.to_string(),
        ))
    }
}
