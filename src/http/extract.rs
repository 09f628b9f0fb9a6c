//! Request extractors that answer bad input with the API's error envelope.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::request::Parts;

use super::error::ApiError;
use crate::auth::Principal;
use crate::messaging::ErrorKind;
use crate::metrics::TransportLabels;
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

/// The client's address, when the server knows it (it always does when serving sockets).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// The authenticated caller (`Authorization: Bearer …`).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(ip) = ip
            && state.auth_limiter.is_blocked(ip)
        {
            return Err(ApiError::new(
                ErrorKind::TooManyRequests,
                "too_many_auth_failures",
                "too many failed authentication attempts, retry in a minute",
            ));
        }
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .unwrap_or("");
        match state.verifier.verify(token) {
            Ok(principal) => Ok(Caller(principal)),
            Err(e) => {
                state
                    .metrics
                    .auth_failures
                    .get_or_create(&TransportLabels { transport: "http" })
                    .inc();
                if let Some(ip) = ip {
                    state.auth_limiter.record_failure(ip);
                }
                Err(ApiError::new(
                    ErrorKind::Unauthorized,
                    "unauthorized",
                    e.to_string(),
                ))
            }
        }
    }
}
