//! Attachments: multipart upload into a conversation, download by its participants.

use axum::body::Body;
use axum::extract::{Multipart, Request, State};
use axum::http::StatusCode;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tower::ServiceExt;

use super::envelope::{Success, created};
use super::error::{ApiError, ApiResult, ErrorBody, multipart_error};
use super::extract::{ApiPath, Caller, ClientIp};
use super::views::{AttachmentData, FileBytes};
use crate::audit::{Action, Entry, Target};
use crate::error::ErrorCode;
use crate::ids::ConversationId;
use crate::messaging::views::AttachmentView;
use crate::messaging::{DomainError, ErrorKind};
use crate::state::AppState;

/// Upload a file (multipart field `file`). Its type is sniffed from the content; images, audio,
/// PDF, office documents and plain text are accepted, up to `messaging.attachment_max_bytes`.
#[utoipa::path(post, path = "/api/messaging/conversations/{id}/attachments", tag = "messaging",
    params(("id" = i64, Path)),
    request_body(content_type = "multipart/form-data", description = "field `file`"),
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 201, description = "stored", body = Success<AttachmentData>),
              (status = 400, description = "no `file` field, or a malformed body", body = ErrorBody),
              (status = 413, description = "too large", body = ErrorBody),
              (status = 415, description = "type not accepted", body = ErrorBody),
              (status = 404, description = "unknown or not mine", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<i64>,
    mut multipart: Multipart,
) -> ApiResult<(StatusCode, Success<AttachmentData>)> {
    let conversation = ConversationId(id);
    // Refuse before reading the body when the caller may not post here.
    state
        .messaging
        .ensure_participant(caller.identity, conversation)
        .await?;
    while let Some(field) = multipart.next_field().await? {
        if field.name() != Some("file") {
            continue;
        }
        let file_name = field.file_name().unwrap_or("fichier").to_string();
        let body = field.map(|chunk| chunk.map_err(multipart_error));
        let staged = state.messaging.uploads().stage(&file_name, body).await?;
        let attachment = state
            .messaging
            .store_attachment(caller.identity, conversation, staged)
            .await?;
        return Ok(created(AttachmentData {
            attachment: AttachmentView::from(&attachment),
        }));
    }
    Err(ApiError::new(
        ErrorKind::BadRequest,
        ErrorCode::MissingFile,
        "multipart field `file` is missing",
    ))
}

/// Download an attachment (participants of its conversation only). Range requests honoured.
#[utoipa::path(get, path = "/api/messaging/attachments/{id}", tag = "messaging",
    params(("id" = String, Path)),
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "the file (its stored type)", content_type = "application/octet-stream", body = FileBytes),
              (status = 206, description = "a range", content_type = "application/octet-stream", body = FileBytes),
              (status = 404, description = "unknown or not mine", body = ErrorBody),
              (status = 416, description = "range not satisfiable")),
    security(("bearer" = [])))]
pub async fn download(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ClientIp(ip): ClientIp,
    ApiPath(id): ApiPath<String>,
    request: Request,
) -> ApiResult<Response> {
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(
            DomainError::not_found(ErrorCode::AttachmentNotFound, "attachment not found").into(),
        );
    }
    let (attachment, path) = state.messaging.attachment(caller.identity, &id).await?;
    // Fails closed: no byte leaves unless the download is in the audit trail.
    let entry = Entry::new(
        Action::AttachmentDownloaded,
        Target::Attachment {
            conversation: attachment.conversation_id,
            id: attachment.id.clone(),
        },
    )
    .by(caller.identity)
    .ip(ip)
    .detail(serde_json::json!({
        "content_type": attachment.content_type,
        "size_bytes": attachment.size_bytes,
        "range": requested_range(&request),
    }));
    state.audit.record(entry).await?;
    let disposition = if attachment.content_type.starts_with("image/")
        || attachment.content_type.starts_with("audio/")
    {
        "inline"
    } else {
        "attachment"
    };
    serve_file(
        request,
        &path,
        &attachment.content_type,
        &content_disposition(disposition, &attachment.file_name),
    )
    .await
}

/// The `Range` header of a download (`bytes=0-1023`), for the audit trail: what part of a
/// file was read. Anything that is not a plain byte range is left out.
pub fn requested_range(request: &Request) -> Option<String> {
    let value = request.headers().get(header::RANGE)?.to_str().ok()?;
    let ok = value.len() <= 64
        && value.starts_with("bytes=")
        && value[6..]
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | ',' | ' '));
    ok.then(|| value.to_string())
}

/// `inline; filename="scan.pdf"; filename*=UTF-8''scan.pdf`.
pub fn content_disposition(kind: &str, file_name: &str) -> String {
    let ascii: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .filter(|c| *c != '"' && *c != '\\')
        .collect();
    let encoded: String = url::form_urlencoded::byte_serialize(file_name.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// Serves a file with Range support and the given type and disposition.
pub async fn serve_file(
    request: Request,
    path: &std::path::Path,
    content_type: &str,
    disposition: &str,
) -> ApiResult<Response> {
    let (parts, _) = request.into_parts();
    let request = Request::from_parts(parts, Body::empty());
    let response = tower_http::services::ServeFile::new(path)
        .oneshot(request)
        .await
        .map_err(|e| ApiError(DomainError::internal(e)))?;
    if response.status() == axum::http::StatusCode::NOT_FOUND {
        return Err(DomainError::internal(anyhow::anyhow!("stored file missing on disk")).into());
    }
    let mut response = response.into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(response)
}
