//! The Socket.IO handshake: `auth: {token, userType, userId, role}` checked against the token.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use crate::auth::Principal;
use crate::ids::Role;
use crate::metrics::TransportLabels;
use crate::state::AppState;

/// Who a connected socket speaks for; set by the handshake, read by every handler.
#[derive(Debug, Clone)]
pub struct SocketUser {
    pub principal: Principal,
}

/// Why a connection was refused; becomes the `connect_error` message.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("too many failed authentication attempts, retry in a minute")]
    RateLimited,
    #[error("authentication failed: {0}")]
    Token(#[from] crate::auth::AuthError),
    #[error("authentication failed: {0} does not match the token")]
    Mismatch(&'static str),
}

fn token_from<A: Adapter>(auth: Option<&Value>, socket: &SocketRef<A>) -> String {
    let from_auth = auth.and_then(|a| {
        ["token", "jwt"]
            .iter()
            .find_map(|k| a.get(*k).and_then(Value::as_str))
    });
    let from_header = || {
        socket
            .req_parts()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
    };
    from_auth
        .or_else(from_header)
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Handshake values, when present, must name the token's person.
fn check_claims(auth: Option<&Value>, principal: &Principal) -> Result<(), Refusal> {
    let Some(auth) = auth else { return Ok(()) };
    for key in ["userType", "role"] {
        if let Some(v) = auth.get(key).filter(|v| !v.is_null()) {
            let role = v.as_str().and_then(|s| s.parse::<Role>().ok());
            if role != Some(principal.identity.role) {
                return Err(Refusal::Mismatch(if key == "role" {
                    "role"
                } else {
                    "userType"
                }));
            }
        }
    }
    if let Some(v) = auth.get("userId").filter(|v| !v.is_null()) {
        let id = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        if id != Some(principal.identity.id.0) {
            return Err(Refusal::Mismatch("userId"));
        }
    }
    Ok(())
}

/// Verifies the handshake; on success the socket carries its [`SocketUser`] extension.
pub(super) fn authenticate<A: Adapter>(
    socket: &SocketRef<A>,
    auth: Option<Value>,
    state: &AppState,
) -> Result<SocketUser, Refusal> {
    let ip = socket
        .req_parts()
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = ip
        && state.auth_limiter.is_blocked(ip)
    {
        return Err(Refusal::RateLimited);
    }
    let result = state
        .verifier
        .verify(&token_from(auth.as_ref(), socket))
        .map_err(Refusal::from)
        .and_then(|principal| {
            check_claims(auth.as_ref(), &principal)?;
            Ok(principal)
        });
    match result {
        Ok(principal) => {
            let user = SocketUser { principal };
            socket.extensions.insert(user.clone());
            Ok(user)
        }
        Err(refusal) => {
            state
                .metrics
                .auth_failures
                .get_or_create(&TransportLabels {
                    transport: "socketio",
                })
                .inc();
            if let Some(ip) = ip {
                state.auth_limiter.record_failure(ip);
            }
            tracing::info!(reason = %refusal, "socket.io connection refused");
            Err(refusal)
        }
    }
}
