//! The Socket.IO handshake: `auth: {token, userType, userId, role}` checked against the token.

use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use crate::auth::Principal;
use crate::ids::Role;
use crate::limits::AddrKey;
use crate::metrics::TransportLabels;
use crate::sio::limits::Refused;
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
    #[error("too many connections of yours: close another tab or device first")]
    TooManyOfYours,
    #[error("too many connections from this address")]
    TooManyFromAddress,
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

/// Verifies the handshake; on success the socket carries its [`SocketUser`] extension and its
/// places ([`SocketPlaces`]). A valid token is accepted whatever others failed from the same
/// address; an invalid one past `http.auth_failures_per_minute` is told to retry later.
pub(super) fn authenticate<A: Adapter>(
    socket: &SocketRef<A>,
    auth: Option<Value>,
    state: &AppState,
) -> Result<SocketUser, Refusal> {
    let ip = crate::net::client_ip(&socket.req_parts().extensions);
    let key = ip.map(AddrKey::of);
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
            let places = state
                .socket_limits
                .connect(principal.identity, key)
                .map_err(|r| match r {
                    Refused::UserSockets => Refusal::TooManyOfYours,
                    _ => Refusal::TooManyFromAddress,
                })
                .inspect_err(|r| {
                    if let Some(suppressed) = state.log_budget.admit("socket_cap") {
                        tracing::info!(reason = %r, suppressed, "socket.io connection refused");
                    }
                })?;
            let user = SocketUser { principal };
            socket.extensions.insert(user.clone());
            socket.extensions.insert(places);
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
            let over = key.is_some_and(|k| {
                let before = state.auth_limiter.is_over(&k);
                state.auth_limiter.record(k);
                before
            });
            if let Some(suppressed) = state.log_budget.admit("socket_auth_failure") {
                tracing::info!(reason = %refusal, suppressed, "socket.io connection refused");
            }
            Err(if over { Refusal::RateLimited } else { refusal })
        }
    }
}
