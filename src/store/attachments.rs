//! Attachment records (the bytes live under `media/uploads/`, named by the server).

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::rows::identity;
use super::{Store, StoreResult};
use crate::clock::Millis;
use crate::ids::{ConversationId, Identity};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Random, unguessable (UUID v4).
    pub id: String,
    pub conversation_id: ConversationId,
    pub uploader: Identity,
    /// The client's file name, sanitized; only ever shown, never used as a path.
    pub file_name: String,
    /// Sniffed from the content, not taken from the client.
    pub content_type: String,
    pub size_bytes: i64,
    /// File name under the uploads directory.
    pub storage_name: String,
    pub sha256: String,
    pub created_at: Millis,
}

pub type NewAttachment = Attachment;

const COLUMNS: &str = "id, conversation_id, uploader_role, uploader_id, file_name, content_type, \
    size_bytes, storage_name, sha256, created_at";

/// Reads an attachment from columns named with `prefix` (`""` or `"a_"` in a join).
pub(super) fn attachment_from_row(row: &AnyRow, prefix: &str) -> StoreResult<Attachment> {
    let col = |c: &str| format!("{prefix}{c}");
    Ok(Attachment {
        id: row.try_get(col("id").as_str())?,
        conversation_id: ConversationId(row.try_get(col("conversation_id").as_str())?),
        uploader: identity(row, &col("uploader_role"), &col("uploader_id"))?,
        file_name: row.try_get(col("file_name").as_str())?,
        content_type: row.try_get(col("content_type").as_str())?,
        size_bytes: row.try_get(col("size_bytes").as_str())?,
        storage_name: row.try_get(col("storage_name").as_str())?,
        sha256: row.try_get(col("sha256").as_str())?,
        created_at: row.try_get(col("created_at").as_str())?,
    })
}

impl Store {
    pub async fn insert_attachment(&self, a: &NewAttachment) -> StoreResult<()> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO attachments ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        )))
        .bind(a.id.clone())
        .bind(a.conversation_id.0)
        .bind(a.uploader.role.as_str())
        .bind(a.uploader.id.0)
        .bind(a.file_name.clone())
        .bind(a.content_type.clone())
        .bind(a.size_bytes)
        .bind(a.storage_name.clone())
        .bind(a.sha256.clone())
        .bind(a.created_at)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    pub async fn attachment(&self, id: &str) -> StoreResult<Option<Attachment>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM attachments WHERE id = $1"
        )))
        .bind(id.to_string())
        .fetch_optional(self.writer())
        .await?;
        row.map(|r| attachment_from_row(&r, "")).transpose()
    }
}
