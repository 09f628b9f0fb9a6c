//! Messages: insertion (idempotent by client message id) and cursor pagination.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::attachments::attachment_from_row;
use super::rows::identity;
use super::{Attachment, Store, StoreError, StoreResult};
use crate::clock::Millis;
use crate::ids::{ConversationId, Identity, MessageId};

/// The seed's `type_message` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MessageType {
    #[serde(rename = "texte")]
    Text,
    #[serde(rename = "image")]
    Image,
    #[serde(rename = "file")]
    File,
    #[serde(rename = "audio")]
    Audio,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Text => "texte",
            MessageType::Image => "image",
            MessageType::File => "file",
            MessageType::Audio => "audio",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "texte" => Ok(Self::Text),
            "image" => Ok(Self::Image),
            "file" => Ok(Self::File),
            "audio" => Ok(Self::Audio),
            _ => Err(StoreError::Corrupt("unknown message type".into())),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub sender: Identity,
    pub sender_name: Option<String>,
    pub contenu: String,
    pub type_message: MessageType,
    /// The client's `metadata` object, stored as given (JSON text).
    pub metadata: Option<serde_json::Value>,
    pub client_message_id: Option<String>,
    pub attachment: Option<Attachment>,
    pub created_at: Millis,
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub conversation_id: ConversationId,
    pub sender: Identity,
    pub sender_name: Option<String>,
    pub contenu: String,
    pub type_message: MessageType,
    pub metadata: Option<serde_json::Value>,
    pub client_message_id: Option<String>,
    pub attachment_id: Option<String>,
    pub created_at: Millis,
}

/// One page of a conversation, oldest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub messages: Vec<Message>,
    /// More messages exist beyond this page in the direction that was asked.
    pub has_more: bool,
}

pub(super) const MESSAGE_COLUMNS: &str = "m.id, m.conversation_id, m.sender_role, m.sender_id, \
    m.sender_name, m.contenu, m.type_message, m.metadata, m.client_message_id, m.created_at, \
    a.id AS a_id, a.conversation_id AS a_conversation_id, a.uploader_role AS a_uploader_role, \
    a.uploader_id AS a_uploader_id, a.file_name AS a_file_name, a.content_type AS a_content_type, \
    a.size_bytes AS a_size_bytes, a.storage_name AS a_storage_name, a.sha256 AS a_sha256, \
    a.created_at AS a_created_at";

pub(super) fn message_from_row(row: &AnyRow) -> StoreResult<Message> {
    let type_message: String = row.try_get("type_message")?;
    let metadata: Option<String> = row.try_get("metadata")?;
    let attachment_id: Option<String> = row.try_get("a_id")?;
    Ok(Message {
        id: MessageId(row.try_get("id")?),
        conversation_id: ConversationId(row.try_get("conversation_id")?),
        sender: identity(row, "sender_role", "sender_id")?,
        sender_name: row.try_get("sender_name")?,
        contenu: row.try_get("contenu")?,
        type_message: MessageType::parse(&type_message)?,
        metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
        client_message_id: row.try_get("client_message_id")?,
        attachment: match attachment_id {
            Some(_) => Some(attachment_from_row(row, "a_")?),
            None => None,
        },
        created_at: row.try_get("created_at")?,
    })
}

/// `INSERT … RETURNING id` for one message; no row when the client message id was used.
pub(super) fn insert_statement(
    new: &NewMessage,
) -> sqlx::query::QueryScalar<'static, sqlx::Any, i64, sqlx::any::AnyArguments> {
    sqlx::query_scalar(
        "INSERT INTO messages (conversation_id, sender_role, sender_id, sender_name, contenu, \
             type_message, metadata, client_message_id, attachment_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(new.conversation_id.0)
    .bind(new.sender.role.as_str())
    .bind(new.sender.id.0)
    .bind(new.sender_name.clone())
    .bind(new.contenu.clone())
    .bind(new.type_message.as_str())
    .bind(new.metadata.as_ref().map(|m| m.to_string()))
    .bind(new.client_message_id.clone())
    .bind(new.attachment_id.clone())
    .bind(new.created_at)
}

impl Store {
    /// Stores a message. With a client message id already used by this sender in this
    /// conversation, returns the first message and `false` instead of storing a second one.
    pub async fn insert_message(&self, new: &NewMessage) -> StoreResult<(Message, bool)> {
        let id = match self.group_commit() {
            Some(writer) => writer.insert(new.clone()).await?,
            None => insert_statement(new).fetch_optional(self.writer()).await?,
        };
        if let Some(id) = id {
            let attachment = match &new.attachment_id {
                Some(a) => self.attachment(a).await?,
                None => None,
            };
            return Ok((
                Message {
                    id: MessageId(id),
                    conversation_id: new.conversation_id,
                    sender: new.sender,
                    sender_name: new.sender_name.clone(),
                    contenu: new.contenu.clone(),
                    type_message: new.type_message,
                    metadata: new.metadata.clone(),
                    client_message_id: new.client_message_id.clone(),
                    attachment,
                    created_at: new.created_at,
                },
                true,
            ));
        }
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m LEFT JOIN attachments a ON a.id = m.attachment_id \
             WHERE m.conversation_id = $1 AND m.sender_role = $2 AND m.sender_id = $3 \
               AND m.client_message_id = $4"
        );
        // Read from the writer: the row may be younger than the reader's snapshot.
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(new.conversation_id.0)
            .bind(new.sender.role.as_str())
            .bind(new.sender.id.0)
            .bind(new.client_message_id.clone())
            .fetch_optional(self.writer())
            .await?
            .ok_or_else(|| StoreError::Corrupt("insert conflicted on no visible row".into()))?;
        Ok((message_from_row(&row)?, false))
    }

    /// A page of messages. Without cursors: the newest `limit`. `before`: the newest older than
    /// it. `after`: the oldest newer than it (catch-up after a reconnect). Both: the oldest in
    /// between. Always returned oldest first.
    pub async fn messages(
        &self,
        conversation: ConversationId,
        before: Option<MessageId>,
        after: Option<MessageId>,
        limit: u32,
    ) -> StoreResult<Page> {
        let ascending = after.is_some();
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m LEFT JOIN attachments a ON a.id = m.attachment_id \
             WHERE m.conversation_id = $1 AND m.id < $2 AND m.id > $3 \
             ORDER BY m.id {} LIMIT $4",
            if ascending { "ASC" } else { "DESC" }
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(conversation.0)
            .bind(before.map(|m| m.0).unwrap_or(i64::MAX))
            .bind(after.map(|m| m.0).unwrap_or(0))
            .bind(i64::from(limit) + 1)
            .fetch_all(self.reader())
            .await?;
        let has_more = rows.len() > limit as usize;
        let mut messages = rows
            .iter()
            .take(limit as usize)
            .map(message_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        if !ascending {
            messages.reverse();
        }
        Ok(Page { messages, has_more })
    }
}
