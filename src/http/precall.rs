//! `/api/messaging/webrtc/check`: the pre-call check ([`crate::sfu::check`]) for any signed-in
//! person: what to test against (the server's media and TURN ports, TURN credentials), and a
//! short-lived loopback PeerConnection on the media ports.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::envelope::{WebrtcSuccess, webrtc};
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, Caller, ClientIp};
use crate::sfu::check::{CheckStats, MediaPorts};
use crate::state::AppState;
use crate::turn::IceServer;

/// The server's ports a firewall must let through (from its configuration).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckPorts {
    /// Media over UDP (ICE, DTLS, SRTP): the best path.
    pub media_udp: Vec<u16>,
    /// Media over ICE-TCP.
    pub media_tcp: Vec<u16>,
    /// The embedded TURN server over UDP; null when TURN is off.
    pub turn_udp: Option<u16>,
    /// TURN over TCP; null when TURN is off.
    pub turn_tcp: Option<u16>,
    /// TURN over TLS (`turns:`), including the shared HTTPS port when it carries TURN.
    pub turn_tls: Vec<u16>,
}

/// What the check tests against.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckPlanData {
    pub ports: CheckPorts,
    /// The TURN server's URLs with fresh credentials (the browser's `RTCIceServer` shape); the
    /// page tries each URL alone with `iceTransportPolicy: "relay"`.
    pub ice_servers: Vec<IceServer>,
    /// How long a check's connection lives at most.
    pub duration_seconds: u64,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CheckOfferBody {
    /// The client's SDP offer: its camera and microphone, `sendrecv`.
    pub sdp: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CheckAnswerBody {
    /// The client's answer to the server's `offer`.
    pub sdp: String,
}

/// A started check.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStartedData {
    pub check_id: u64,
    /// The server's answer to the client's offer.
    pub answer: String,
    /// The server's next offer: the echo of each track the client sends, on the m-line it
    /// sends on. Apply `answer`, then this offer, and send the answer to
    /// `POST …/check/{id}/answer`.
    pub offer: String,
    /// The check closes by itself after this long.
    pub expires_in_seconds: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckIdData {
    pub check_id: u64,
}

/// The ports and TURN URLs the pre-call check tests (any signed-in person).
#[utoipa::path(get, path = "/api/messaging/webrtc/check", tag = "webrtc",
    responses((status = 200, description = "ports and TURN servers to test", body = WebrtcSuccess<CheckPlanData>),
              (status = 401, description = "no or bad token", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn plan(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> (StatusCode, WebrtcSuccess<CheckPlanData>) {
    let MediaPorts { udp, tcp } = state.sfu.media_ports();
    let (ice_servers, turn_udp, turn_tcp) = match &state.turn {
        Some(turn) => (
            turn.ice_servers(&caller.identity.key()).ice_servers,
            Some(turn.udp_addr().port()),
            Some(turn.tcp_addr().port()),
        ),
        None => (Vec::new(), None, None),
    };
    let mut turn_tls: Vec<u16> = ice_servers
        .iter()
        .flat_map(|s| s.urls.iter())
        .filter(|u| u.starts_with("turns:"))
        .filter_map(|u| url_port(u))
        .collect();
    turn_tls.sort_unstable();
    turn_tls.dedup();
    webrtc(
        StatusCode::OK,
        CheckPlanData {
            ports: CheckPorts {
                media_udp: udp,
                media_tcp: tcp,
                turn_udp,
                turn_tcp,
                turn_tls,
            },
            ice_servers,
            duration_seconds: crate::sfu::check::CHECK_DURATION.as_secs(),
        },
    )
}

/// `turns:host:5349?transport=tcp` → 5349 (IPv6 hosts in brackets).
fn url_port(url: &str) -> Option<u16> {
    let rest = url.split_once(':')?.1;
    let hostport = rest.split('?').next()?;
    hostport.rsplit_once(':')?.1.parse().ok()
}

/// Start a check: a loopback PeerConnection that sends back what it receives, for 20 seconds
/// at most. At most 2 at once per person (429 `too_many_checks` beyond, or after 20 starts in
/// ten minutes).
#[utoipa::path(post, path = "/api/messaging/webrtc/check", tag = "webrtc",
    request_body = CheckOfferBody,
    responses((status = 201, description = "the server's answer and echo offer", body = WebrtcSuccess<CheckStartedData>),
              (status = 400, description = "not an SDP offer, or one that sends no media (`bad_sdp`)", body = ErrorBody),
              (status = 401, description = "no or bad token", body = ErrorBody),
              (status = 429, description = "too many checks (`too_many_checks`)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<CheckOfferBody>,
) -> ApiResult<(StatusCode, WebrtcSuccess<CheckStartedData>)> {
    let started = state.sfu.start_check(caller.identity, ip, body.sdp).await?;
    Ok(webrtc(
        StatusCode::CREATED,
        CheckStartedData {
            check_id: started.id,
            answer: started.answer,
            offer: started.offer,
            expires_in_seconds: started.expires_in.as_secs(),
        },
    ))
}

/// The client's answer to the check's echo offer.
#[utoipa::path(post, path = "/api/messaging/webrtc/check/{id}/answer", tag = "webrtc",
    params(("id" = u64, Path)), request_body = CheckAnswerBody,
    responses((status = 200, description = "applied: the echo starts", body = WebrtcSuccess<CheckIdData>),
              (status = 400, description = "not an SDP answer to the offer (`bad_sdp`)", body = ErrorBody),
              (status = 401, description = "no or bad token", body = ErrorBody),
              (status = 404, description = "no such check of yours (`check_not_found`)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn answer(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<CheckAnswerBody>,
) -> ApiResult<(StatusCode, WebrtcSuccess<CheckIdData>)> {
    state
        .sfu
        .check_answer(caller.identity, id, body.sdp)
        .await?;
    Ok(webrtc(StatusCode::OK, CheckIdData { check_id: id }))
}

/// What the server received from the client (its upload) and echoed back.
#[utoipa::path(get, path = "/api/messaging/webrtc/check/{id}", tag = "webrtc",
    params(("id" = u64, Path)),
    responses((status = 200, description = "the server's side of the check", body = WebrtcSuccess<CheckStats>),
              (status = 401, description = "no or bad token", body = ErrorBody),
              (status = 404, description = "no such check of yours (`check_not_found`)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn stats(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<(StatusCode, WebrtcSuccess<CheckStats>)> {
    let s = state.sfu.check_stats(caller.identity, id).await?;
    Ok(webrtc(StatusCode::OK, s))
}

/// Close a check now (it closes by itself after 20 seconds).
#[utoipa::path(delete, path = "/api/messaging/webrtc/check/{id}", tag = "webrtc",
    params(("id" = u64, Path)),
    responses((status = 200, description = "closed", body = WebrtcSuccess<CheckIdData>),
              (status = 401, description = "no or bad token", body = ErrorBody),
              (status = 404, description = "no such check of yours (`check_not_found`)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn close(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<(StatusCode, WebrtcSuccess<CheckIdData>)> {
    state.sfu.close_check(caller.identity, id).await?;
    Ok(webrtc(StatusCode::OK, CheckIdData { check_id: id }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_turn_url_gives_its_port() {
        assert_eq!(
            super::url_port("turns:relais.example:5349?transport=tcp"),
            Some(5349)
        );
        assert_eq!(
            super::url_port("turns:[2001:db8::1]:443?transport=tcp"),
            Some(443)
        );
        assert_eq!(super::url_port("turn:10.0.0.1:3478"), Some(3478));
        assert_eq!(super::url_port("turns:no-port"), None);
    }
}
