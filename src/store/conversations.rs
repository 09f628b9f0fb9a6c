//! Conversations and their participants.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::messages::{MESSAGE_COLUMNS, message_from_row};
use super::rows::{identity, private_key};
use super::{Message, Store, StoreError, StoreResult};
use crate::clock::Millis;
use crate::ids::{ConversationId, Identity, MessageId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversationKind {
    Private,
    Group,
}

impl ConversationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Private => "private",
            ConversationKind::Group => "group",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: ConversationId,
    pub kind: ConversationKind,
    pub created_by: Identity,
    pub created_at: Millis,
    /// Sorted by (role, id).
    pub participants: Vec<Identity>,
}

/// A conversation as listed for one participant.
#[derive(Debug, Clone)]
pub struct ConversationSummary {
    pub conversation: Conversation,
    pub last_message: Option<Message>,
    pub unread_count: i64,
    pub last_read_message_id: MessageId,
}

fn kind_from(s: &str) -> StoreResult<ConversationKind> {
    match s {
        "private" => Ok(ConversationKind::Private),
        "group" => Ok(ConversationKind::Group),
        _ => Err(StoreError::Corrupt("unknown conversation kind".into())),
    }
}

fn conversation_from_row(row: &AnyRow) -> StoreResult<Conversation> {
    let kind: String = row.try_get("kind")?;
    Ok(Conversation {
        id: ConversationId(row.try_get("id")?),
        kind: kind_from(&kind)?,
        created_by: identity(row, "created_by_role", "created_by_id")?,
        created_at: row.try_get("created_at")?,
        participants: Vec::new(),
    })
}

impl Store {
    /// Creates a conversation. `participants` holds every member, the creator included, without
    /// duplicates. A private conversation between two people exists once: asking again returns
    /// the existing one with `false`.
    pub async fn create_conversation(
        &self,
        kind: ConversationKind,
        created_by: Identity,
        participants: &[Identity],
        now: Millis,
    ) -> StoreResult<(Conversation, bool)> {
        let key = match (kind, participants) {
            (ConversationKind::Private, [a, b]) => Some(private_key(*a, *b)),
            (ConversationKind::Private, _) => {
                return Err(StoreError::Corrupt(
                    "a private conversation has two members".into(),
                ));
            }
            (ConversationKind::Group, _) => None,
        };
        let mut tx = self.writer().begin().await?;
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO conversations (kind, private_key, created_by_role, created_by_id, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(kind.as_str())
        .bind(key.clone())
        .bind(created_by.role.as_str())
        .bind(created_by.id.0)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = inserted else {
            tx.rollback().await?;
            let id: i64 = sqlx::query_scalar("SELECT id FROM conversations WHERE private_key = $1")
                .bind(key)
                .fetch_one(self.writer())
                .await?;
            let existing = self
                .conversation(ConversationId(id))
                .await?
                .ok_or_else(|| StoreError::Corrupt("private conversation vanished".into()))?;
            return Ok((existing, false));
        };
        for p in participants {
            sqlx::query(
                "INSERT INTO conversation_participants (conversation_id, role, user_id, joined_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(p.role.as_str())
            .bind(p.id.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let mut members = participants.to_vec();
        members.sort();
        Ok((
            Conversation {
                id: ConversationId(id),
                kind,
                created_by,
                created_at: now,
                participants: members,
            },
            true,
        ))
    }

    /// The private conversation between two people, if it exists.
    pub async fn private_conversation_between(
        &self,
        a: Identity,
        b: Identity,
    ) -> StoreResult<Option<Conversation>> {
        let id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM conversations WHERE private_key = $1")
                .bind(private_key(a, b))
                .fetch_optional(self.reader())
                .await?;
        match id {
            Some(id) => self.conversation(ConversationId(id)).await,
            None => Ok(None),
        }
    }

    pub async fn conversation(&self, id: ConversationId) -> StoreResult<Option<Conversation>> {
        let row = sqlx::query(
            "SELECT id, kind, created_by_role, created_by_id, created_at FROM conversations WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(self.reader())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut conversation = conversation_from_row(&row)?;
        conversation.participants = self.participants(id).await?;
        Ok(Some(conversation))
    }

    /// Members of a conversation, sorted by (role, id).
    pub async fn participants(&self, id: ConversationId) -> StoreResult<Vec<Identity>> {
        let rows = sqlx::query(
            "SELECT role, user_id FROM conversation_participants WHERE conversation_id = $1",
        )
        .bind(id.0)
        .fetch_all(self.reader())
        .await?;
        let mut out = rows
            .iter()
            .map(|r| identity(r, "role", "user_id"))
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort();
        Ok(out)
    }

    pub async fn is_participant(&self, id: ConversationId, who: Identity) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM conversation_participants WHERE conversation_id = $1 AND role = $2 AND user_id = $3",
        )
        .bind(id.0)
        .bind(who.role.as_str())
        .bind(who.id.0)
        .fetch_optional(self.reader())
        .await?;
        Ok(found.is_some())
    }

    /// Every conversation `who` belongs to, most recently active first, with the last message
    /// and the number of messages from others after their read marker.
    pub async fn conversations_of(&self, who: Identity) -> StoreResult<Vec<ConversationSummary>> {
        let rows = sqlx::query(
            "SELECT c.id, c.kind, c.created_by_role, c.created_by_id, c.created_at, \
                    p.last_read_message_id, \
                    (SELECT MAX(m.id) FROM messages m WHERE m.conversation_id = c.id) AS last_id, \
                    (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id \
                        AND m.id > p.last_read_message_id \
                        AND NOT (m.sender_role = p.role AND m.sender_id = p.user_id)) AS unread \
             FROM conversation_participants p JOIN conversations c ON c.id = p.conversation_id \
             WHERE p.role = $1 AND p.user_id = $2",
        )
        .bind(who.role.as_str())
        .bind(who.id.0)
        .fetch_all(self.reader())
        .await?;
        let mut summaries = Vec::with_capacity(rows.len());
        let mut last_ids = Vec::new();
        for row in &rows {
            let last_id: Option<i64> = row.try_get("last_id")?;
            if let Some(id) = last_id {
                last_ids.push(id);
            }
            summaries.push((
                ConversationSummary {
                    conversation: conversation_from_row(row)?,
                    last_message: None,
                    unread_count: row.try_get("unread")?,
                    last_read_message_id: MessageId(row.try_get("last_read_message_id")?),
                },
                last_id,
            ));
        }

        let members = sqlx::query(
            "SELECT conversation_id, role, user_id FROM conversation_participants \
             WHERE conversation_id IN (SELECT conversation_id FROM conversation_participants \
                                       WHERE role = $1 AND user_id = $2)",
        )
        .bind(who.role.as_str())
        .bind(who.id.0)
        .fetch_all(self.reader())
        .await?;
        let mut by_conversation: std::collections::HashMap<i64, Vec<Identity>> = Default::default();
        for row in &members {
            by_conversation
                .entry(row.try_get("conversation_id")?)
                .or_default()
                .push(identity(row, "role", "user_id")?);
        }

        let mut last_messages: std::collections::HashMap<i64, Message> = Default::default();
        for chunk in last_ids.chunks(200) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages m LEFT JOIN attachments a ON a.id = m.attachment_id \
                 WHERE m.id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(self.reader()).await? {
                let message = message_from_row(&row)?;
                last_messages.insert(message.id.0, message);
            }
        }

        let mut out: Vec<ConversationSummary> = summaries
            .into_iter()
            .map(|(mut s, last_id)| {
                let mut members = by_conversation
                    .remove(&s.conversation.id.0)
                    .unwrap_or_default();
                members.sort();
                s.conversation.participants = members;
                s.last_message = last_id.and_then(|id| last_messages.remove(&id));
                s
            })
            .collect();
        out.sort_by_key(|s| {
            std::cmp::Reverse(
                s.last_message
                    .as_ref()
                    .map(|m| m.created_at)
                    .unwrap_or(s.conversation.created_at),
            )
        });
        Ok(out)
    }

    /// Moves `who`'s read marker forward to `message` (never backward). False when the message
    /// is not in that conversation.
    /// Whether `message` is one of `conversation`'s (a read on the reader pool).
    pub async fn message_in(
        &self,
        conversation: ConversationId,
        message: MessageId,
    ) -> StoreResult<bool> {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT id FROM messages WHERE id = $1 AND conversation_id = $2")
                .bind(message.0)
                .bind(conversation.0)
                .fetch_optional(self.reader())
                .await?;
        Ok(exists.is_some())
    }

    pub async fn mark_read(
        &self,
        conversation: ConversationId,
        who: Identity,
        message: MessageId,
    ) -> StoreResult<bool> {
        if !self.message_in(conversation, message).await? {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE conversation_participants SET last_read_message_id = $1 \
             WHERE conversation_id = $2 AND role = $3 AND user_id = $4 AND last_read_message_id < $1",
        )
        .bind(message.0)
        .bind(conversation.0)
        .bind(who.role.as_str())
        .bind(who.id.0)
        .execute(self.writer())
        .await?;
        Ok(true)
    }
}
