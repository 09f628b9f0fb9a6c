//! `/api/messaging/webrtc`: consultations (create, read, end, stats) and join-code checks.
//! Answers use the seed's WebRTC envelope `{"status": "success", "data": …}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::envelope::webrtc;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller, ClientIp};
use crate::clock::to_rfc3339;
use crate::error::ErrorCode;
use crate::ids::{Identity, SessionId};
use crate::messaging::{DomainError, ErrorKind};
use crate::sessions::{CodeVerdict, ConversationRef};
use crate::state::AppState;
use crate::store::{SessionRecord, SessionType};
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

fn session_view(s: &SessionRecord) -> Value {
    json!({
        "id": s.id.0,
        "conversation_id": s.conversation_id.0,
        "session_type": s.session_type,
        "statut": s.statut,
    })
}

fn conference_link(base: &url::Url, id: SessionId, code: &str) -> Value {
    let root = base.as_str().trim_end_matches('/');
    let url = format!("{root}/conference/{id}");
    json!({
        "sessionId": id.0,
        "conferenceUrl": url,
        "joinCode": code,
        "fullLink": format!("{url}?code={code}"),
    })
}

/// Create a consultation (doctors only) with its conference link and join code.
#[utoipa::path(post, path = "/api/messaging/webrtc/sessions", tag = "webrtc",
    params(CreateSessionQuery), request_body = CreateSessionBody,
    responses((status = 201, description = "created: session and conference link"),
              (status = 403, description = "not a doctor, or not the initiator"),
              (status = 404, description = "unknown conversation")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<CreateSessionQuery>,
    ApiJson(body): ApiJson<CreateSessionBody>,
) -> ApiResult<Response> {
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
        Some(cluster) => Some(cluster.place(&state).await),
        None => None,
    };
    let (session, code) = state
        .sessions
        .create_on(
            caller.identity,
            conversation,
            body.session_type.unwrap_or(SessionType::AudioVideo),
            placed.as_ref().map(|n| n.id.to_string()),
        )
        .await?;
    let mut data = json!({ "session": session_view(&session) });
    let base = match &placed {
        Some(node) => {
            url::Url::parse(&node.public_base_url).unwrap_or_else(|_| state.public_base_url.clone())
        }
        None => state.public_base_url.clone(),
    };
    if q.generate_conference_link.unwrap_or(true) {
        data["conferenceLink"] = conference_link(&base, session.id, &code);
    }
    if let Some(node) = &placed {
        data["node"] = json!({ "id": node.id, "publicBaseUrl": node.public_base_url });
    }
    data["expiresAt"] = json!(to_rfc3339(session.code_expires_at));
    data["iceServers"] = ice_servers_for(&state, caller.identity)["iceServers"].take();
    Ok(webrtc(StatusCode::CREATED, data))
}

/// A consultation: for the members of its conversation and those who joined it.
#[utoipa::path(get, path = "/api/messaging/webrtc/sessions/{id}", tag = "webrtc",
    params(("id" = i64, Path)),
    responses((status = 200, description = "the session"), (status = 404, description = "unknown or not yours")),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    let s = state
        .sessions
        .get_for(caller.identity, SessionId(id))
        .await?;
    let participants = state.store.session_participants(s.id).await?;
    let mut view = session_view(&s);
    view["created_by"] = json!(UserRef::from(s.created_by));
    view["created_at"] = json!(to_rfc3339(s.created_at));
    view["started_at"] = json!(s.started_at.map(to_rfc3339));
    view["ended_at"] = json!(s.ended_at.map(to_rfc3339));
    view["end_reason"] = json!(s.end_reason);
    view["code_expires_at"] = json!(to_rfc3339(s.code_expires_at));
    view["node_id"] = json!(s.node_id);
    view["moved_from"] = json!(s.moved_from);
    view["moved_at"] = json!(s.moved_at.map(to_rfc3339));
    view["participants"] = json!(
        participants
            .iter()
            .map(|p| json!({
                "userId": p.who.id.0,
                "userType": p.who.role,
                "joined_at": to_rfc3339(p.joined_at),
                "left_at": p.left_at.map(to_rfc3339),
            }))
            .collect::<Vec<_>>()
    );
    Ok(webrtc(StatusCode::OK, json!({ "session": view })))
}

/// End a consultation (its doctor only): everyone gets `session_ended`, media closes.
#[utoipa::path(post, path = "/api/messaging/webrtc/sessions/{id}/end", tag = "webrtc",
    params(("id" = i64, Path)),
    responses((status = 200, description = "ended"), (status = 403, description = "not its doctor"),
              (status = 409, description = "already ended")),
    security(("bearer" = [])))]
pub async fn end(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
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
        json!({ "session": session_view(&s) }),
    ))
}

/// Live media statistics per participant and track (the session's doctor only).
#[utoipa::path(get, path = "/api/messaging/webrtc/sessions/{id}/stats", tag = "webrtc",
    params(("id" = i64, Path)),
    responses((status = 200, description = "statistics"), (status = 403, description = "not its doctor")),
    security(("bearer" = [])))]
pub async fn stats(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    let s = state
        .sessions
        .require_owner(caller.identity, SessionId(id))
        .await?;
    let participants = match &state.cluster {
        Some(cluster) => match cluster.owner_of(&state, s.id).await {
            Ok(Some(node)) => {
                let caller = crate::realtime::signaling::Caller {
                    who: caller.identity,
                    sid: None,
                    ip: None,
                };
                let payload = json!({ "sessionId": s.id.0 });
                cluster
                    .forward(
                        &node,
                        crate::realtime::signaling::INTERNAL_STATS,
                        caller,
                        payload,
                    )
                    .await
                    .unwrap_or_else(|_| json!([]))
            }
            _ => json!(state.sfu.stats(s.id).await),
        },
        None => json!(state.sfu.stats(s.id).await),
    };
    Ok(webrtc(
        StatusCode::OK,
        json!({ "sessionId": s.id.0, "statut": s.statut, "participants": participants }),
    ))
}

/// Check a join code (the seed's validation object), for a session or among the caller's
/// own. A code is valid only for the people of its session's conversation; wrong codes are
/// limited per person, per address and overall (429 past the limit, for those who failed).
#[utoipa::path(post, path = "/api/messaging/webrtc/validate-code", tag = "webrtc",
    request_body = ValidateCodeBody,
    responses((status = 200, description = "`isValid` and, when valid, the session"),
              (status = 429, description = "too many wrong codes")),
    security(("bearer" = [])))]
pub async fn validate_code(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<ValidateCodeBody>,
) -> ApiResult<Response> {
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
    let mut data = json!({
        "conferenceCode": check.code,
        "sessionId": check.session.as_ref().map(|s| s.id.0),
        "isValid": valid,
        "expiresAt": check.session.as_ref().map(|s| to_rfc3339(s.code_expires_at)),
        "createdBy": check.session.as_ref().map(|s| UserRef::from(s.created_by)),
    });
    if valid {
        data["iceServers"] = ice_servers_for(&state, caller.identity)["iceServers"].take();
    } else {
        data["reason"] = json!(check.verdict.error_code());
    }
    Ok(webrtc(StatusCode::OK, data))
}

/// `{iceServers, ttl, expiresAt}` for `who`: the embedded TURN server's URLs with fresh
/// time-limited credentials, or no server when TURN is off.
fn ice_servers_for(state: &AppState, who: Identity) -> Value {
    match &state.turn {
        Some(turn) => json!(turn.ice_servers(&who.key())),
        None => json!({ "iceServers": [], "ttl": 0, "expiresAt": null }),
    }
}

/// TURN credentials for the caller: `iceServers` in the browser's `RTCIceServer` shape
/// (`turn:` over UDP and TCP, `turns:` over TLS), valid for `ttl` seconds.
#[utoipa::path(get, path = "/api/messaging/webrtc/ice-servers", tag = "webrtc",
    responses((status = 200, description = "`iceServers`, `ttl`, `expiresAt`", body = crate::turn::IceServers),
              (status = 401, description = "no or bad token")),
    security(("bearer" = [])))]
pub async fn ice_servers(State(state): State<AppState>, Caller(caller): Caller) -> Response {
    webrtc(StatusCode::OK, ice_servers_for(&state, caller.identity))
}
