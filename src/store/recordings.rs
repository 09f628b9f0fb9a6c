//! Recording rows: one per recorded participant and recording run (the bytes live under
//! `media/recordings/`, at `file_path` relative to that directory).

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::rows::identity;
use super::{Store, StoreError, StoreResult};
use crate::clock::Millis;
use crate::ids::{Identity, SessionId};

/// Where a recording is in its life.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RecordingStatus {
    /// Being written.
    Recording,
    /// Closed by the server (stop, participant left, session ended, shutdown).
    Finished,
    /// The process stopped while writing; repaired from the file at the next start.
    Interrupted,
    /// Nothing usable was written (the file could not be created or written).
    Failed,
}

impl RecordingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::Recording => "recording",
            RecordingStatus::Finished => "finished",
            RecordingStatus::Interrupted => "interrupted",
            RecordingStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "recording" => Ok(Self::Recording),
            "finished" => Ok(Self::Finished),
            "interrupted" => Ok(Self::Interrupted),
            "failed" => Ok(Self::Failed),
            _ => Err(StoreError::Corrupt("unknown recording status".into())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordingRecord {
    /// UUID v4.
    pub id: String,
    pub session_id: SessionId,
    pub participant: Identity,
    pub consent_by: Identity,
    pub consent_at: Millis,
    pub started_at: Millis,
    pub ended_at: Option<Millis>,
    pub duration_ms: Option<i64>,
    pub size_bytes: Option<i64>,
    pub content_type: String,
    /// Relative to the recordings directory.
    pub file_path: String,
    pub status: RecordingStatus,
    pub end_reason: Option<String>,
    /// The participant's stream it holds (`medecin-79`, or `medecin-79.2` for a shared
    /// screen); `None` in rows from before streams were recorded apart.
    pub stream: Option<String>,
}

/// How a recording ended, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingEnd {
    pub status: RecordingStatus,
    pub ended_at: Millis,
    pub duration_ms: i64,
    pub size_bytes: i64,
    pub content_type: String,
    pub reason: String,
}

const COLUMNS: &str = "id, session_id, participant_role, participant_id, consent_by_role, \
    consent_by_id, consent_at, started_at, ended_at, duration_ms, size_bytes, content_type, \
    file_path, status, end_reason, stream";

fn recording_from_row(row: &AnyRow) -> StoreResult<RecordingRecord> {
    let status: String = row.try_get("status")?;
    Ok(RecordingRecord {
        id: row.try_get("id")?,
        session_id: SessionId(row.try_get("session_id")?),
        participant: identity(row, "participant_role", "participant_id")?,
        consent_by: identity(row, "consent_by_role", "consent_by_id")?,
        consent_at: row.try_get("consent_at")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        duration_ms: row.try_get("duration_ms")?,
        size_bytes: row.try_get("size_bytes")?,
        content_type: row.try_get("content_type")?,
        file_path: row.try_get("file_path")?,
        status: RecordingStatus::parse(&status)?,
        end_reason: row.try_get("end_reason")?,
        stream: row.try_get("stream")?,
    })
}

impl Store {
    /// Stores a recording that starts now (`status` recording, no end yet).
    pub async fn insert_recording(&self, r: &RecordingRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO recordings (id, session_id, participant_role, participant_id, \
                 consent_by_role, consent_by_id, consent_at, started_at, content_type, file_path, \
                 status, stream) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(r.id.clone())
        .bind(r.session_id.0)
        .bind(r.participant.role.as_str())
        .bind(r.participant.id.0)
        .bind(r.consent_by.role.as_str())
        .bind(r.consent_by.id.0)
        .bind(r.consent_at)
        .bind(r.started_at)
        .bind(r.content_type.clone())
        .bind(r.file_path.clone())
        .bind(r.status.as_str())
        .bind(r.stream.clone())
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Closes a recording that is still `recording`; false when it was already closed.
    pub async fn end_recording(&self, id: &str, end: &RecordingEnd) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE recordings SET status = $1, ended_at = $2, duration_ms = $3, size_bytes = $4, \
                 content_type = $5, end_reason = $6 \
             WHERE id = $7 AND status = 'recording'",
        )
        .bind(end.status.as_str())
        .bind(end.ended_at)
        .bind(end.duration_ms)
        .bind(end.size_bytes)
        .bind(end.content_type.clone())
        .bind(end.reason.clone())
        .bind(id.to_string())
        .execute(self.writer())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn recording(&self, id: &str) -> StoreResult<Option<RecordingRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM recordings WHERE id = $1"
        )))
        .bind(id.to_string())
        .fetch_optional(self.writer())
        .await?;
        row.map(|r| recording_from_row(&r)).transpose()
    }

    /// A session's recordings, oldest first.
    pub async fn session_recordings(
        &self,
        session: SessionId,
    ) -> StoreResult<Vec<RecordingRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM recordings WHERE session_id = $1 ORDER BY started_at, id"
        )))
        .bind(session.0)
        .fetch_all(self.writer())
        .await?;
        rows.iter().map(recording_from_row).collect()
    }

    /// Recordings still marked as being written (after a crash: none is, really).
    pub async fn recordings_in_progress(&self) -> StoreResult<Vec<RecordingRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM recordings WHERE status = 'recording' ORDER BY started_at"
        )))
        .fetch_all(self.writer())
        .await?;
        rows.iter().map(recording_from_row).collect()
    }

    /// Closed recordings that started before `before`, at most `limit` of them, oldest first.
    pub async fn recordings_started_before(
        &self,
        before: Millis,
        limit: i64,
    ) -> StoreResult<Vec<RecordingRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM recordings WHERE started_at < $1 AND status <> 'recording' \
             ORDER BY started_at LIMIT $2"
        )))
        .bind(before)
        .bind(limit)
        .fetch_all(self.writer())
        .await?;
        rows.iter().map(recording_from_row).collect()
    }

    pub async fn delete_recording(&self, id: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM recordings WHERE id = $1")
            .bind(id.to_string())
            .execute(self.writer())
            .await?;
        Ok(r.rows_affected() == 1)
    }
}
