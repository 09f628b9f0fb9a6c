//! `/api/messaging/conversations/{id}/messages`: history and sending.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use super::envelope::{created, ok};
use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller};
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
    responses((status = 200, description = "a page of messages"), (status = 404, description = "unknown or not mine")),
    security(("bearer" = [])))]
pub async fn history(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Response> {
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
    Ok(ok(json!({
        "messages": messages,
        "pagination": {
            "has_more": page.has_more,
            "oldest_id": page.messages.first().map(|m| m.id.0),
            "newest_id": page.messages.last().map(|m| m.id.0),
        }
    })))
}

/// Send a message (the seed's body and answer). 201 when stored, 200 for a retry of a send
/// already stored (same client message id).
#[utoipa::path(post, path = "/api/messaging/conversations/{id}/messages", tag = "messaging",
    params(("id" = i64, Path)), request_body = SendMessageBody,
    responses((status = 201, description = "stored and announced", body = MessageView),
              (status = 200, description = "retry of a stored send"),
              (status = 400, description = "invalid message"), (status = 404, description = "unknown or not mine")),
    security(("bearer" = [])))]
pub async fn send(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    ApiJson(mut body): ApiJson<SendMessageBody>,
) -> ApiResult<Response> {
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
    let data = json!({ "message": MessageView::from(&message) });
    Ok(if is_new { created(data) } else { ok(data) })
}
