//! `/api/messaging/conversations/{id}/messages`: history and sending.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use utoipa::IntoParams;

use super::envelope::{Success, ok};
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use super::views::{HistoryData, MessageData, Pagination};
use crate::ids::{ConversationId, MessageId};
use crate::messaging::views::{MessageView, SendMessageBody};
use crate::state::AppState;

#[derive(Debug, Clone, Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// Messages older than this id.
    pub before: Option<i64>,
    /// Messages newer than this id (catch-up after a reconnect), oldest first.
    pub after: Option<i64>,
    /// 1 to 100, default 50.
    pub limit: Option<u32>,
}

/// A page of history, oldest first.
#[utoipa::path(get, path = "/api/messaging/conversations/{id}/messages", tag = "messaging",
    params(("id" = i64, Path), HistoryQuery),
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "a page of messages", body = Success<HistoryData>),
              (status = 400, description = "invalid query", body = ErrorBody),
              (status = 404, description = "unknown or not mine", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn history(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Success<HistoryData>> {
    let page = state
        .messaging
        .history(
            caller.identity,
            ConversationId(id),
            q.before.map(MessageId),
            q.after.map(MessageId),
            q.limit.unwrap_or(50),
        )
        .await?;
    let messages: Vec<MessageView> = page.messages.iter().map(MessageView::from).collect();
    Ok(ok(HistoryData {
        messages,
        pagination: Pagination {
            has_more: page.has_more,
            oldest_id: page.messages.first().map(|m| m.id.0),
            newest_id: page.messages.last().map(|m| m.id.0),
        },
    }))
}

/// Send a message (the seed's body and answer). 201 when stored, 200 for a retry of a send
/// already stored (same client message id).
#[utoipa::path(post, path = "/api/messaging/conversations/{id}/messages", tag = "messaging",
    params(("id" = i64, Path)), request_body = SendMessageBody,
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 201, description = "stored and announced", body = Success<MessageData>),
              (status = 200, description = "retry of a stored send", body = Success<MessageData>),
              (status = 400, description = "invalid message", body = ErrorBody),
              (status = 404, description = "unknown or not mine", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn send(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    ApiJson(mut body): ApiJson<SendMessageBody>,
) -> ApiResult<(StatusCode, Success<MessageData>)> {
    if body.client_message_id.is_none() {
        body.client_message_id = headers
            .get("idempotency-key")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
    }
    let (message, is_new) = state
        .messaging
        .send(&caller, ConversationId(id), body.into_domain()?)
        .await?;
    let status = if is_new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        ok(MessageData {
            message: MessageView::from(&message),
        }),
    ))
}
