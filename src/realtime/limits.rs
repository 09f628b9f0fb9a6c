//! The Socket.IO handlers' side of the socket limits ([`crate::sio::limits`]): an event over
//! its budget is answered `rate_limited`, and counted and logged at a bounded rate.

use socketioxide::socket::Sid;

use crate::clock::Millis;
use crate::ids::Identity;
use crate::sio::limits::Refused;

/// Takes an event's tokens; logs refusals at a bounded rate. `Err`: milliseconds to wait.
pub(super) fn admit_event(
    state: &crate::state::AppState,
    sid: Sid,
    who: Identity,
    event: &'static str,
) -> Result<(), Millis> {
    match state.socket_limits.event(sid, who) {
        Ok(()) => Ok(()),
        Err(Refused::Events { retry_after_ms }) => {
            state.metrics.count_limited("socketio_event");
            if let Some(suppressed) = state.log_budget.admit("socket_rate_limited") {
                tracing::info!(event, %who, suppressed, "socket.io events over the rate limit");
            }
            Err(retry_after_ms)
        }
        Err(_) => Ok(()),
    }
}

/// The answer to an event over the limit.
pub(super) fn rate_limited(retry_after_ms: Millis) -> crate::messaging::DomainError {
    crate::messaging::DomainError::new(
        crate::messaging::ErrorKind::TooManyRequests,
        crate::error::ErrorCode::RateLimited,
        format!(
            "too many events: slow down (the next is accepted in {} ms)",
            retry_after_ms.clamp(1, 60_000)
        ),
    )
}
