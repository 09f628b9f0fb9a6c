//! Deleting expired messages and attachments (`messaging.retention_days`), in bounded batches.
//! Conversation summaries (last message, unread counts) are computed from the rows that remain,
//! so deleting rows is all it takes to keep them right.

use sqlx::AssertSqlSafe;

use super::attachments::attachment_from_row;
use super::{Attachment, Store, StoreResult};
use crate::clock::Millis;

const ATTACHMENT_COLUMNS: &str = "a.id, a.conversation_id, a.uploader_role, a.uploader_id, \
    a.file_name, a.content_type, a.size_bytes, a.storage_name, a.sha256, a.created_at";

impl Store {
    /// Deletes up to `limit` messages created before `cutoff`, oldest first. Returns how many.
    pub async fn delete_messages_before(&self, cutoff: Millis, limit: i64) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM messages WHERE id IN \
             (SELECT id FROM messages WHERE created_at < $1 ORDER BY id LIMIT $2)",
        )
        .bind(cutoff)
        .bind(limit)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected())
    }

    /// Up to `limit` attachments uploaded before `cutoff` that no message refers to (those of
    /// expired messages, and uploads never sent).
    pub async fn unreferenced_attachments_before(
        &self,
        cutoff: Millis,
        limit: i64,
    ) -> StoreResult<Vec<Attachment>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ATTACHMENT_COLUMNS} FROM attachments a \
             WHERE a.created_at < $1 \
               AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.attachment_id = a.id) \
             ORDER BY a.created_at, a.id LIMIT $2"
        )))
        .bind(cutoff)
        .bind(limit)
        .fetch_all(self.writer())
        .await?;
        rows.iter().map(|r| attachment_from_row(r, "")).collect()
    }

    /// Deletes an attachment's row unless a message refers to it again. True when deleted.
    pub async fn delete_unreferenced_attachment(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "DELETE FROM attachments WHERE id = $1 \
             AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.attachment_id = $1)",
        )
        .bind(id.to_string())
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
