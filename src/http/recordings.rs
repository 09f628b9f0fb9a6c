//! `/api/messaging/webrtc/…/recording(s)`: start and stop recording a consultation, list its
//! recordings, download one (Range requests honoured). The session's doctor only; answers in
//! the WebRTC envelope `{"status": "success", "data": …}`.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::attachments::requested_range;
use super::attachments::{content_disposition, serve_file};
use super::envelope::{WebrtcSuccess, webrtc};
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, Caller, ClientIp};
use super::views::{FileBytes, RecordingsData};
use crate::audit::{Action, Entry, Target};
use crate::clock::to_rfc3339;
use crate::ids::SessionId;
use crate::realtime::views::{RecordingStartedView, RecordingStoppedView, RecordingView};
use crate::sfu::{SfuReply, SfuRequest};
use crate::state::AppState;

/// `POST …/recording`: the consent flag is required and must be true.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct StartRecordingBody {
    /// The doctor confirms every participant agreed to be recorded.
    #[serde(default)]
    pub consent: Option<bool>,
}

/// Start recording a live consultation (its doctor only): every participant who publishes
/// is recorded into a file of their own; everyone gets `recording_started`.
#[utoipa::path(post, path = "/api/messaging/webrtc/sessions/{id}/recording", tag = "recording",
    params(("id" = i64, Path)), request_body = StartRecordingBody,
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 201, description = "recording", body = WebrtcSuccess<RecordingStartedView>),
              (status = 400, description = "no consent", body = ErrorBody),
              (status = 403, description = "not the session's doctor", body = ErrorBody),
              (status = 404, description = "unknown session", body = ErrorBody),
              (status = 409, description = "already recording, nobody connected, or session over", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ClientIp(ip): ClientIp,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<StartRecordingBody>,
) -> ApiResult<(StatusCode, WebrtcSuccess<RecordingStartedView>)> {
    let request = SfuRequest::StartRecording {
        session: SessionId(id),
        consent: body.consent,
    };
    match state.router.run(rest_caller(&caller, ip), request).await? {
        SfuReply::RecordingStarted(started) => Ok(webrtc(
            StatusCode::CREATED,
            RecordingStartedView::new(id, &started),
        )),
        other => Err(unexpected(other)),
    }
}

/// The SFU's caller for a REST request: the person and their address, no socket.
fn rest_caller(caller: &crate::auth::Principal, ip: Option<IpAddr>) -> crate::sfu::Caller {
    crate::sfu::Caller::rest(caller.identity, ip)
}

/// A reply of another kind than the request's (a bug on the node that answered).
fn unexpected(reply: SfuReply) -> super::error::ApiError {
    super::error::ApiError(crate::messaging::DomainError::internal(anyhow::anyhow!(
        "unexpected reply: {reply:?}"
    )))
}

/// Stop recording (its doctor only): files are finished before the answer, which lists them.
#[utoipa::path(delete, path = "/api/messaging/webrtc/sessions/{id}/recording", tag = "recording",
    params(("id" = i64, Path)),
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "stopped: the recordings it closed", body = WebrtcSuccess<RecordingStoppedView>),
              (status = 403, description = "not the session's doctor", body = ErrorBody),
              (status = 404, description = "unknown session", body = ErrorBody),
              (status = 409, description = "not recording", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn stop(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ClientIp(ip): ClientIp,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<(StatusCode, WebrtcSuccess<RecordingStoppedView>)> {
    let request = SfuRequest::StopRecording {
        session: SessionId(id),
    };
    match state.router.run(rest_caller(&caller, ip), request).await? {
        SfuReply::RecordingStopped(closed) => Ok(webrtc(
            StatusCode::OK,
            RecordingStoppedView::new(id, &closed),
        )),
        other => Err(unexpected(other)),
    }
}

/// Stop recording, for clients that do not send DELETE: the same as `DELETE …/recording`.
#[utoipa::path(post, path = "/api/messaging/webrtc/sessions/{id}/recording/stop", tag = "recording",
    params(("id" = i64, Path)),
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "stopped: the recordings it closed", body = WebrtcSuccess<RecordingStoppedView>),
              (status = 403, description = "not the session's doctor", body = ErrorBody),
              (status = 404, description = "unknown session", body = ErrorBody),
              (status = 409, description = "not recording", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn stop_by_post(
    state: State<AppState>,
    caller: Caller,
    ip: ClientIp,
    id: ApiPath<i64>,
) -> ApiResult<(StatusCode, WebrtcSuccess<RecordingStoppedView>)> {
    stop(state, caller, ip, id).await
}

/// A consultation's recordings, oldest first (its doctor only).
#[utoipa::path(get, path = "/api/messaging/webrtc/sessions/{id}/recordings", tag = "recording",
    params(("id" = i64, Path)),
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "`recordings`", body = WebrtcSuccess<RecordingsData>),
              (status = 403, description = "not the session's doctor", body = ErrorBody),
              (status = 404, description = "unknown session", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<(StatusCode, WebrtcSuccess<RecordingsData>)> {
    let rows = state
        .recordings
        .list_for(caller.identity, SessionId(id))
        .await?;
    Ok(webrtc(
        StatusCode::OK,
        RecordingsData {
            recordings: rows.iter().map(RecordingView::from).collect(),
        },
    ))
}

/// Download a recording (the session's doctor only): WebM or Matroska, Range requests
/// honoured (206 with Content-Range, 416 past the end).
#[utoipa::path(get, path = "/api/messaging/webrtc/recordings/{id}", tag = "recording",
    params(("id" = String, Path)),
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "the file", content(
                  (FileBytes = "video/webm"), (FileBytes = "video/x-matroska"))),
              (status = 206, description = "a range", content(
                  (FileBytes = "video/webm"), (FileBytes = "video/x-matroska"))),
              (status = 403, description = "not the session's doctor", body = ErrorBody),
              (status = 404, description = "unknown", body = ErrorBody),
              (status = 409, description = "still being written", body = ErrorBody),
              (status = 416, description = "range not satisfiable")),
    security(("bearer" = [])))]
pub async fn download(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ClientIp(ip): ClientIp,
    ApiPath(id): ApiPath<String>,
    request: Request,
) -> ApiResult<Response> {
    let (r, path) = state.recordings.file_for(caller.identity, &id).await?;
    // Fails closed: no byte leaves unless the download is in the audit trail.
    let entry = Entry::new(
        Action::RecordingDownloaded,
        Target::Recording {
            session: r.session_id,
            id: r.id.clone(),
        },
    )
    .by(caller.identity)
    .ip(ip)
    .detail(json!({ "range": requested_range(&request) }));
    state.audit.record(entry).await?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("webm");
    let day = to_rfc3339(r.started_at);
    let name = format!(
        "consultation-{}-{}-{}-{}.{ext}",
        r.session_id.0,
        r.participant.role,
        r.participant.id.0,
        day.get(..10).unwrap_or("recording")
    );
    serve_file(
        request,
        &path,
        &r.content_type,
        &content_disposition("attachment", &name),
    )
    .await
}
