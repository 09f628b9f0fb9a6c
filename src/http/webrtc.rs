//! `/api/messaging/webrtc`: consultations (create, read, end, stats) and join-code checks.
//! Answers use the seed's WebRTC envelope `{"status": "success", "data": …}`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::envelope::{WebrtcSuccess, webrtc};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller, ClientIp};
use super::views::{
    CodeCheckData, ConferenceLinkView, CreatedSessionData, IceServersData, PlacedNodeView,
    SessionData, SessionDetailData, SessionDetailView, SessionView, StatsData,
};
use crate::clock::to_rfc3339;
use crate::error::ErrorCode;
use crate::ids::{Identity, SessionId};
use crate::messaging::{DomainError, ErrorKind};
use crate::sessions::{CodeVerdict, ConversationRef};
use crate::state::AppState;
use crate::store::SessionType;
use crate::wire::UserRef;

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateSessionBody {
    /// A conversation number, or `temp_conv_{patientId}_{doctorId}`.
    #[schema(value_type = Object, example = "temp_conv_11_79")]
    pub conversation_id: Value,
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "audio_video")]
    pub session_type: Option<SessionType>,
    /// Always null at creation (SDP travels over Socket.IO).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub sdp_offer: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub initiator: Option<UserRef>,
    /// Newcomers wait for the doctor's admission (default: `sessions.waiting_room`, true).
    #[serde(default)]
    pub waiting_room: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
pub struct CreateSessionQuery {
    /// Include the conference link and join code in the answer.
    #[serde(default)]
    pub generate_conference_link: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ValidateCodeBody {
    pub code: String,
    #[serde(default, rename = "sessionId", alias = "session_id")]
    pub session_id: Option<i64>,
}

/// Create a consultation (doctors only) with its conference link and join code.
#[utoipa::path(post, path = "/api/messaging/webrtc/sessions", tag = "webrtc",
    params(CreateSessionQuery), request_body = CreateSessionBody,
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 201, description = "created: session and conference link", body = WebrtcSuccess<CreatedSessionData>),
              (status = 400, description = "invalid conversation id or body", body = ErrorBody),
              (status = 403, description = "not a doctor, or not the initiator", body = ErrorBody),
              (status = 404, description = "unknown conversation", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ClientIp(ip): ClientIp,
    ApiQuery(q): ApiQuery<CreateSessionQuery>,
    ApiJson(body): ApiJson<CreateSessionBody>,
) -> ApiResult<(StatusCode, WebrtcSuccess<CreatedSessionData>)> {
    if let Some(initiator) = body.initiator
        && Identity::new(initiator.user_type, initiator.user_id) != caller.identity
    {
        return Err(DomainError::forbidden(
            ErrorCode::InitiatorMismatch,
            "initiator must be the authenticated doctor",
        )
        .into());
    }
    let conversation = ConversationRef::parse(&body.conversation_id).ok_or_else(|| {
        ApiError::new(
            ErrorKind::BadRequest,
            ErrorCode::InvalidConversationId,
            "conversation_id must be a conversation number or temp_conv_{patientId}_{doctorId}",
        )
    })?;
    // Several nodes: the session lives on the least-loaded live node, and its link too.
    let placed = match &state.cluster {
        Some(cluster) => Some(cluster.place().await),
        None => None,
    };
    let (session, code) = state
        .sessions
        .create_on(
            caller.identity,
            ip,
            conversation,
            body.session_type.unwrap_or(SessionType::AudioVideo),
            placed.as_ref().map(|n| n.id.to_string()),
            body.waiting_room
                .unwrap_or(state.config.sessions.waiting_room),
        )
        .await?;
    let base = match &placed {
        Some(node) => {
            url::Url::parse(&node.public_base_url).unwrap_or_else(|_| state.public_base_url.clone())
        }
        None => state.public_base_url.clone(),
    };
    let data = CreatedSessionData {
        session: SessionView::from(&session),
        conference_link: q
            .generate_conference_link
            .unwrap_or(true)
            .then(|| ConferenceLinkView::new(&base, session.id.0, &code)),
        node: placed.as_ref().map(|node| PlacedNodeView {
            id: node.id.clone(),
            public_base_url: node.public_base_url.clone(),
        }),
        expires_at: to_rfc3339(session.code_expires_at),
        ice_servers: ice_servers_for(&state, caller.identity).ice_servers,
    };
    Ok(webrtc(StatusCode::CREATED, data))
}

/// A consultation: for the members of its conversation and those who joined it.
#[utoipa::path(get, path = "/api/messaging/webrtc/sessions/{id}", tag = "webrtc",
    params(("id" = i64, Path)),
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "the session", body = WebrtcSuccess<SessionDetailData>),
              (status = 404, description = "unknown or not yours", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<(StatusCode, WebrtcSuccess<SessionDetailData>)> {
    let s = state
        .sessions
        .get_for(caller.identity, SessionId(id))
        .await?;
    let participants = state.store.session_participants(s.id).await?;
    Ok(webrtc(
        StatusCode::OK,
        SessionDetailData {
            session: SessionDetailView::new(&s, &participants),
        },
    ))
}

/// End a consultation (its doctor only): everyone gets `session_ended`, media closes.
#[utoipa::path(post, path = "/api/messaging/webrtc/sessions/{id}/end", tag = "webrtc",
    params(("id" = i64, Path)),
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "ended", body = WebrtcSuccess<SessionData>),
              (status = 403, description = "not its doctor", body = ErrorBody),
              (status = 404, description = "unknown session", body = ErrorBody),
              (status = 409, description = "already ended", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn end(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<(StatusCode, WebrtcSuccess<SessionData>)> {
    state
        .sfu
        .end(caller.identity, SessionId(id), "ended_by_doctor")
        .await?;
    if let Some(cluster) = &state.cluster {
        // Its room may be on another node.
        cluster.session_ended(SessionId(id));
    }
    let s = state.sessions.load(SessionId(id)).await?;
    Ok(webrtc(
        StatusCode::OK,
        SessionData {
            session: SessionView::from(&s),
        },
    ))
}

/// Live media statistics per participant and track (the session's doctor only).
#[utoipa::path(get, path = "/api/messaging/webrtc/sessions/{id}/stats", tag = "webrtc",
    params(("id" = i64, Path)),
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "statistics", body = WebrtcSuccess<StatsData>),
              (status = 403, description = "not its doctor", body = ErrorBody),
              (status = 404, description = "unknown session", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn stats(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<(StatusCode, WebrtcSuccess<StatsData>)> {
    let s = state
        .sessions
        .require_owner(caller.identity, SessionId(id))
        .await?;
    // Where the room is (here or its owner node); no statistics while nobody is connected
    // or when the owner does not answer.
    let request = crate::sfu::SfuRequest::Stats { session: s.id };
    let rest = crate::sfu::Caller::rest(caller.identity, None);
    let participants = match state.router.run(rest, request).await {
        Ok(crate::sfu::SfuReply::Stats(p)) => p,
        _ => Vec::new(),
    };
    Ok(webrtc(
        StatusCode::OK,
        StatsData {
            session_id: s.id.0,
            statut: s.statut,
            participants,
        },
    ))
}

/// Check a join code (the seed's validation object), for a session or among the caller's
/// own. A code is valid only for the people of its session's conversation; wrong codes are
/// limited per person, per address and overall (429 past the limit, for those who failed).
#[utoipa::path(post, path = "/api/messaging/webrtc/validate-code", tag = "webrtc",
    request_body = ValidateCodeBody,
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "`isValid` and, when valid, the session", body = WebrtcSuccess<CodeCheckData>),
              (status = 400, description = "invalid body", body = ErrorBody),
              (status = 429, description = "too many wrong codes", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn validate_code(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<ValidateCodeBody>,
) -> ApiResult<(StatusCode, WebrtcSuccess<CodeCheckData>)> {
    let check = state
        .sessions
        .check_code(
            caller.identity,
            ip,
            &body.code,
            body.session_id.map(SessionId),
        )
        .await?;
    let valid = check.verdict == CodeVerdict::Valid;
    let data = CodeCheckData {
        session_id: check.session.as_ref().map(|s| s.id.0),
        is_valid: valid,
        expires_at: check
            .session
            .as_ref()
            .map(|s| to_rfc3339(s.code_expires_at)),
        created_by: check.session.as_ref().map(|s| UserRef::from(s.created_by)),
        ice_servers: valid.then(|| ice_servers_for(&state, caller.identity).ice_servers),
        reason: check.verdict.error_code(),
        conference_code: check.code,
    };
    Ok(webrtc(StatusCode::OK, data))
}

/// `{iceServers, ttl, expiresAt}` for `who`: the embedded TURN server's URLs with fresh
/// time-limited credentials, or no server when TURN is off.
fn ice_servers_for(state: &AppState, who: Identity) -> IceServersData {
    match &state.turn {
        Some(turn) => turn.ice_servers(&who.key()).into(),
        None => IceServersData::none(),
    }
}

/// TURN credentials for the caller: `iceServers` in the browser's `RTCIceServer` shape
/// (`turn:` over UDP and TCP, `turns:` over TLS), valid for `ttl` seconds.
#[utoipa::path(get, path = "/api/messaging/webrtc/ice-servers", tag = "webrtc",
    responses((status = 200, description = "`iceServers`, `ttl`, `expiresAt`", body = WebrtcSuccess<IceServersData>),
              (status = 401, description = "no or bad token", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn ice_servers(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> (StatusCode, WebrtcSuccess<IceServersData>) {
    webrtc(StatusCode::OK, ice_servers_for(&state, caller.identity))
}
