//! `/api/messaging/conversations`: create, list mine, read one, mark read.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::envelope::{Success, ok};
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, Caller};
use super::views::{ConversationData, ConversationsData, ReadMarkerData};
use crate::ids::{ConversationId, Identity, MessageId, Role};
use crate::messaging::views::{ConversationSummaryView, ConversationView};
use crate::state::AppState;
use crate::store::ConversationKind;
use crate::wire::flexible_id;

/// A participant as clients write one: `{"role": "patient", "id": 123}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ParticipantInput {
    #[serde(alias = "type", alias = "userType")]
    pub role: Role,
    #[serde(alias = "userId", deserialize_with = "flexible_id")]
    pub id: i64,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateConversationBody {
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "private")]
    pub kind: ConversationKind,
    pub participants: Vec<ParticipantInput>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct MarkReadBody {
    #[serde(
        alias = "message_id",
        rename = "messageId",
        deserialize_with = "flexible_id"
    )]
    pub message_id: i64,
}

/// Create a conversation (the caller always takes part). 201 when created, 200 when the private
/// conversation between the two already existed.
#[utoipa::path(post, path = "/api/messaging/conversations", tag = "messaging",
    request_body = CreateConversationBody,
    responses((status = 201, description = "created", body = Success<ConversationData>),
              (status = 200, description = "existing private conversation", body = Success<ConversationData>),
              (status = 400, description = "invalid participants", body = ErrorBody),
              (status = 401, description = "no valid token", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<CreateConversationBody>,
) -> ApiResult<(StatusCode, Success<ConversationData>)> {
    let others: Vec<Identity> = body
        .participants
        .iter()
        .map(|p| Identity::new(p.role, p.id))
        .collect();
    let (conversation, is_new) = state
        .messaging
        .create_conversation(caller.identity, body.kind, &others)
        .await?;
    let status = if is_new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        ok(ConversationData {
            conversation: ConversationView::from(&conversation),
        }),
    ))
}

/// My conversations, most recently active first, with the last message and unread count.
#[utoipa::path(get, path = "/api/messaging/conversations", tag = "messaging",
    responses((status = 200, description = "my conversations", body = Success<ConversationsData>),
              (status = 401, description = "no valid token", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<Success<ConversationsData>> {
    let list = state.messaging.conversations(caller.identity).await?;
    let conversations: Vec<ConversationSummaryView> = list.iter().map(Into::into).collect();
    Ok(ok(ConversationsData { conversations }))
}

/// One conversation I belong to (404 otherwise).
#[utoipa::path(get, path = "/api/messaging/conversations/{id}", tag = "messaging",
    params(("id" = i64, Path)),
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "the conversation", body = Success<ConversationData>),
              (status = 404, description = "unknown or not mine", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Success<ConversationData>> {
    let c = state
        .messaging
        .conversation(caller.identity, ConversationId(id))
        .await?;
    Ok(ok(ConversationData {
        conversation: ConversationView::from(&c),
    }))
}

/// Move my read marker forward to a message; the conversation receives `message_read`.
#[utoipa::path(post, path = "/api/messaging/conversations/{id}/read", tag = "messaging",
    params(("id" = i64, Path)), request_body = MarkReadBody,
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "marker stored", body = Success<ReadMarkerData>),
              (status = 404, description = "unknown conversation or message", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn mark_read(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<MarkReadBody>,
) -> ApiResult<Success<ReadMarkerData>> {
    state
        .messaging
        .mark_read(
            caller.identity,
            ConversationId(id),
            MessageId(body.message_id),
        )
        .await?;
    Ok(ok(ReadMarkerData {
        conversation_id: id,
        message_id: body.message_id,
    }))
}
