//! `/api/messaging/webrtc`: who may enter a consultation — its waiting room (list, admit,
//! decline, remove, the setting) and guest links (invite, list, revoke, and the exchange of a
//! guest code for a guest token, the one endpoint here that needs no token).
//!
//! Invariants: everything but the exchange is the session's doctor's (others who may see the
//! session get 403, anyone else 404); admission runs where the session's room lives
//! ([`crate::cluster::Router`]); a guest code is never logged nor answered twice.

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::envelope::{WebrtcSuccess, webrtc};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, Caller, ClientIp};
use super::views::SessionView;
use crate::audit::{Action, Entry, Target};
use crate::clock::to_rfc3339;
use crate::error::ErrorCode;
use crate::ids::{Identity, Role, SessionId};
use crate::messaging::{DomainError, ErrorKind};
use crate::sfu::{SfuReply, SfuRequest, WaitingView};
use crate::state::AppState;
use crate::store::GuestRecord;
use crate::wire::UserRef;

/// `{"user": {userId, userType}}`, with a reason for a decline.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ParticipantBody {
    pub user: UserRef,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `PATCH …/sessions/{id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionSettingsBody {
    pub waiting_room: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WaitingData {
    pub waiting: Vec<WaitingView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionSettingsData {
    pub session: SessionView,
}

/// `POST …/sessions/{id}/guests`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteGuestBody {
    /// How the guest appears (*Interprète*, *Fille de la patiente*): up to 80 characters.
    pub display_name: String,
    /// Validity of the link, 1 to `sessions.guest_link_max_ttl` minutes (default 60).
    #[serde(default)]
    pub expires_in_minutes: Option<u64>,
}

/// A guest link as its doctor sees it (the code only in the answer that created it).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GuestView {
    pub id: i64,
    pub display_name: String,
    pub expires_at: String,
    pub used: bool,
    pub revoked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl GuestView {
    fn of(g: &GuestRecord) -> Self {
        Self {
            id: g.id,
            display_name: g.display_name.clone(),
            expires_at: to_rfc3339(g.expires_at),
            used: g.used_at.is_some(),
            revoked: g.revoked_at.is_some(),
            code: None,
            url: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GuestData {
    pub guest: GuestView,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GuestsData {
    pub guests: Vec<GuestView>,
}

/// `POST …/webrtc/guest-token`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct GuestTokenBody {
    #[serde(rename = "sessionId", alias = "session_id")]
    pub session_id: i64,
    pub code: String,
}

/// A guest's token, bound to one session until the link expires.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GuestTokenData {
    pub token: String,
    pub user: UserRef,
    pub display_name: String,
    #[serde(rename = "sessionId")]
    pub session_id: i64,
    #[serde(rename = "expiresAt")]
    pub expires_at: String,
}

fn rest_caller(caller: &crate::auth::Principal, ip: Option<IpAddr>) -> crate::sfu::Caller {
    crate::sfu::Caller::rest(caller.identity, ip)
}

/// Writes a guest link's act to the audit trail (fail-open: the act stands). Never the code.
async fn audit_guest(
    state: &AppState,
    action: Action,
    actor: Option<Identity>,
    ip: Option<IpAddr>,
    guest: &GuestRecord,
) {
    let target = Target::Guest {
        session: guest.session_id,
        guest: guest.id,
    };
    let mut entry = Entry::new(action, target).ip(ip).detail(serde_json::json!({
        "expires_at": to_rfc3339(guest.expires_at),
    }));
    if let Some(actor) = actor {
        entry = entry.by(actor);
    }
    state.audit.note(entry).await;
}

fn unexpected(reply: SfuReply) -> ApiError {
    ApiError(DomainError::internal(anyhow::anyhow!(
        "unexpected reply: {reply:?}"
    )))
}

/// `{"status": "success", "data": data}`, 200.
fn webrtc_ok<T: Serialize>(data: T) -> WebrtcSuccess<T> {
    webrtc(StatusCode::OK, data).1
}

fn identity(user: UserRef) -> Identity {
    Identity::new(user.user_type, user.user_id)
}

async fn decide(
    state: &AppState,
    caller: &crate::auth::Principal,
    ip: Option<IpAddr>,
    request: SfuRequest,
) -> ApiResult<WebrtcSuccess<serde_json::Value>> {
    let session = request.session();
    match state.router.run(rest_caller(caller, ip), request).await? {
        SfuReply::Done => Ok(webrtc_ok(serde_json::json!({ "sessionId": session }))),
        other => Err(unexpected(other)),
    }
}

/// Who waits in the waiting room (the session's doctor).
#[utoipa::path(get, path = "/api/messaging/webrtc/sessions/{id}/waiting", tag = "webrtc",
    params(("id" = i64, Path)),
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "who waits, oldest first", body = WebrtcSuccess<WaitingData>),
              (status = 403, description = "not the session's doctor", body = ErrorBody),
              (status = 404, description = "unknown session", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn waiting(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ClientIp(ip): ClientIp,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<WebrtcSuccess<WaitingData>> {
    let request = SfuRequest::Waiting {
        session: SessionId(id),
    };
    match state.router.run(rest_caller(&caller, ip), request).await? {
        SfuReply::WaitingList(waiting) => Ok(webrtc_ok(WaitingData { waiting })),
        other => Err(unexpected(other)),
    }
}

/// Let a waiting person in (the session's doctor): they get `admitted`, then the server's offer.
#[utoipa::path(post, path = "/api/messaging/webrtc/sessions/{id}/admit", tag = "webrtc",
    params(("id" = i64, Path)), request_body = ParticipantBody,
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "admitted", body = Object),
              (status = 403, description = "not the session's doctor", body = ErrorBody),
              (status = 404, description = "unknown session", body = ErrorBody),
              (status = 409, description = "that person is not waiting (code not_waiting)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn admit(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ClientIp(ip): ClientIp,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<ParticipantBody>,
) -> ApiResult<WebrtcSuccess<serde_json::Value>> {
    let request = SfuRequest::Admit {
        session: SessionId(id),
        user: identity(body.user),
    };
    decide(&state, &caller, ip, request).await
}

/// Turn a waiting person away (the session's doctor): they get `declined` and cannot retry.
#[utoipa::path(post, path = "/api/messaging/webrtc/sessions/{id}/decline", tag = "webrtc",
    params(("id" = i64, Path)), request_body = ParticipantBody,
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "declined", body = Object),
              (status = 403, description = "not the session's doctor", body = ErrorBody),
              (status = 404, description = "unknown session", body = ErrorBody),
              (status = 409, description = "that person is not waiting (code not_waiting)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn decline(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ClientIp(ip): ClientIp,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<ParticipantBody>,
) -> ApiResult<WebrtcSuccess<serde_json::Value>> {
    let request = SfuRequest::Decline {
        session: SessionId(id),
        user: identity(body.user),
        reason: body.reason,
    };
    decide(&state, &caller, ip, request).await
}

/// Take someone out of the call or the waiting room (the session's doctor).
#[utoipa::path(post, path = "/api/messaging/webrtc/sessions/{id}/remove", tag = "webrtc",
    params(("id" = i64, Path)), request_body = ParticipantBody,
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "removed", body = Object),
              (status = 400, description = "the doctor cannot remove themselves", body = ErrorBody),
              (status = 403, description = "not the session's doctor, or that person is not in it", body = ErrorBody),
              (status = 404, description = "unknown session", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ClientIp(ip): ClientIp,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<ParticipantBody>,
) -> ApiResult<WebrtcSuccess<serde_json::Value>> {
    let request = SfuRequest::Remove {
        session: SessionId(id),
        user: identity(body.user),
    };
    decide(&state, &caller, ip, request).await
}

/// Change a session's settings (its doctor): the waiting room, for those who join from now.
#[utoipa::path(patch, path = "/api/messaging/webrtc/sessions/{id}", tag = "webrtc",
    params(("id" = i64, Path)), request_body = SessionSettingsBody,
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "the session", body = WebrtcSuccess<SessionSettingsData>),
              (status = 400, description = "invalid body", body = ErrorBody),
              (status = 403, description = "not the session's doctor", body = ErrorBody),
              (status = 404, description = "unknown session", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn settings(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<SessionSettingsBody>,
) -> ApiResult<WebrtcSuccess<SessionSettingsData>> {
    let session = state
        .sessions
        .set_waiting_room(caller.identity, SessionId(id), body.waiting_room)
        .await?;
    Ok(webrtc_ok(SessionSettingsData {
        session: SessionView::from(&session),
    }))
}

/// Invite a guest (the session's doctor): a link with its own code and expiry, shown once.
#[utoipa::path(post, path = "/api/messaging/webrtc/sessions/{id}/guests", tag = "webrtc",
    params(("id" = i64, Path)), request_body = InviteGuestBody,
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 201, description = "the guest link, with its code", body = WebrtcSuccess<GuestData>),
              (status = 400, description = "invalid name or validity", body = ErrorBody),
              (status = 403, description = "not the session's doctor", body = ErrorBody),
              (status = 404, description = "unknown session", body = ErrorBody),
              (status = 409, description = "session over", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn invite(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ClientIp(ip): ClientIp,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<InviteGuestBody>,
) -> ApiResult<(StatusCode, WebrtcSuccess<GuestData>)> {
    let max = state.config.sessions.guest_link_max_ttl;
    let minutes = body.expires_in_minutes.unwrap_or(60);
    let ttl = Duration::from_secs(minutes.saturating_mul(60));
    if minutes == 0 || ttl > max {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            ErrorCode::InvalidBody,
            format!(
                "expires_in_minutes must be between 1 and {}",
                max.as_secs() / 60
            ),
        ));
    }
    let (guest, code) = state
        .sessions
        .invite_guest(caller.identity, SessionId(id), &body.display_name, ttl)
        .await?;
    audit_guest(
        &state,
        Action::GuestInvited,
        Some(caller.identity),
        ip,
        &guest,
    )
    .await;
    let root = state.public_base_url.as_str().trim_end_matches('/');
    let mut view = GuestView::of(&guest);
    view.url = Some(format!("{root}/conference/{id}?guest={code}"));
    view.code = Some(code);
    Ok(webrtc(StatusCode::CREATED, GuestData { guest: view }))
}

/// The guest links of a session (its doctor), without their codes.
#[utoipa::path(get, path = "/api/messaging/webrtc/sessions/{id}/guests", tag = "webrtc",
    params(("id" = i64, Path)),
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "the guest links", body = WebrtcSuccess<GuestsData>),
              (status = 403, description = "not the session's doctor", body = ErrorBody),
              (status = 404, description = "unknown session", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn guests(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<WebrtcSuccess<GuestsData>> {
    let guests = state
        .sessions
        .guests(caller.identity, SessionId(id))
        .await?;
    Ok(webrtc_ok(GuestsData {
        guests: guests.iter().map(GuestView::of).collect(),
    }))
}

/// Revoke a guest link (its session's doctor): a guest in the call is removed from it.
#[utoipa::path(delete, path = "/api/messaging/webrtc/sessions/{id}/guests/{guest}", tag = "webrtc",
    params(("id" = i64, Path), ("guest" = i64, Path)),
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "revoked", body = WebrtcSuccess<GuestData>),
              (status = 403, description = "not the session's doctor", body = ErrorBody),
              (status = 404, description = "unknown session or guest link", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ClientIp(ip): ClientIp,
    ApiPath((id, guest)): ApiPath<(i64, i64)>,
) -> ApiResult<WebrtcSuccess<GuestData>> {
    let mut record = state
        .sessions
        .revoke_guest(caller.identity, SessionId(id), guest)
        .await?;
    record.revoked_at = Some(record.revoked_at.unwrap_or_else(|| state.clock.now_ms()));
    audit_guest(
        &state,
        Action::GuestRevoked,
        Some(caller.identity),
        ip,
        &record,
    )
    .await;
    // A guest who is in the call (or waits) goes now; one who is not is not an error.
    let request = SfuRequest::Remove {
        session: SessionId(id),
        user: Identity::new(Role::Invite, guest),
    };
    match state.router.run(rest_caller(&caller, ip), request).await {
        Ok(_) => {}
        Err(e) if matches!(e.code, ErrorCode::NotInSession | ErrorCode::NotWaiting) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(webrtc_ok(GuestData {
        guest: GuestView::of(&record),
    }))
}

/// Exchange a guest code for a guest token (no account needed; once per link; limited per
/// address like join codes).
#[utoipa::path(post, path = "/api/messaging/webrtc/guest-token", tag = "webrtc",
    request_body = GuestTokenBody,
    responses((status = 200, description = "the guest's token", body = WebrtcSuccess<GuestTokenData>),
              (status = 400, description = "invalid body", body = ErrorBody),
              (status = 403, description = "invalid or expired link", body = ErrorBody),
              (status = 404, description = "unknown session", body = ErrorBody),
              (status = 409, description = "link already used (guest_code_used), or session over", body = ErrorBody),
              (status = 429, description = "too many wrong codes", body = ErrorBody)))]
pub async fn guest_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<GuestTokenBody>,
) -> ApiResult<WebrtcSuccess<GuestTokenData>> {
    let guest = state
        .sessions
        .exchange_guest_code(ip, SessionId(body.session_id), &body.code)
        .await?;
    let expires_at = u64::try_from(guest.expires_at / 1000).unwrap_or(0);
    let token = state
        .verifier
        .mint_guest(guest.id, &guest.display_name, expires_at)
        .map_err(DomainError::internal)?;
    let guest_identity = Identity::new(Role::Invite, guest.id);
    audit_guest(
        &state,
        Action::GuestTokenIssued,
        Some(guest_identity),
        ip,
        &guest,
    )
    .await;
    Ok(webrtc_ok(GuestTokenData {
        token,
        user: Identity::new(Role::Invite, guest.id).into(),
        display_name: guest.display_name,
        session_id: body.session_id,
        expires_at: to_rfc3339(guest.expires_at),
    }))
}
