//! What wraps every request before the router sees it: the client's address, and the
//! browser hardening headers.
//!
//! Invariants:
//! - [`client_addr`] runs outermost (REST, Socket.IO and the web client alike), so every layer
//!   reads the client from [`ClientAddr`] and never from forwarding headers itself;
//! - the Content-Security-Policy allows no inline script and no framing; HSTS is sent on the
//!   HTTPS listener only (a browser ignores it over HTTP, and it must not pin a plain-HTTP
//!   development set-up).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::limits::AddrKey;
use crate::net::ClientAddr;
use crate::state::AppState;

/// The web client's policy: its own scripts and styles only (no inline script, no eval),
/// attachments shown from `blob:` URLs, signaling and API on the same origin, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Two years, subdomains not included (the server does not know what else runs there).
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=63072000";

/// Resolves the client's address (through `http.trusted_proxies`) into a [`ClientAddr`]
/// extension.
pub async fn client_addr(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(peer) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    {
        let client = state.trusted_proxies.client(peer, request.headers());
        request.extensions_mut().insert(ClientAddr(client));
    }
    next.run(request).await
}

/// Whether a request comes from this machine: the TCP peer and the client behind any trusted
/// proxy are both loopback, and no forwarding header came from an untrusted peer (a reverse
/// proxy on this machine would otherwise make every client look local).
pub fn is_local(state: &AppState, parts: &axum::http::request::Parts) -> bool {
    let Some(peer) = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    else {
        return false;
    };
    let forwarded = parts.headers.contains_key(header::FORWARDED)
        || parts.headers.contains_key("x-forwarded-for");
    let client = super::extract::ClientIp::of(parts).0.unwrap_or(peer);
    AddrKey::of(peer).is_loopback()
        && AddrKey::of(client).is_loopback()
        && (!forwarded || state.trusted_proxies.trusts(peer))
}

/// Headers every response carries unless its handler set them.
pub fn hardening<S: Clone + Send + Sync + 'static>(router: axum::Router<S>) -> axum::Router<S> {
    router
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ))
}

/// HSTS, for the HTTPS listener's router.
pub fn strict_transport<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
) -> axum::Router<S> {
    router.layer(SetResponseHeaderLayer::overriding(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(STRICT_TRANSPORT_SECURITY),
    ))
}
