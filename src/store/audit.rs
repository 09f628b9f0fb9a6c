//! The audit trail's table (`audit_log`): appends one at a time, reads in both orders. The
//! hashing is not done here ([`crate::audit`] passes a function that seals the next record from
//! the newest one); this module only guarantees that the newest record it hands that function
//! is still the newest when the new one is inserted.
//!
//! Invariants:
//! - appends are serialized: on PostgreSQL by a transaction-scoped advisory lock (every node
//!   sharing the database waits for it), on SQLite by a process-wide lock around the
//!   transaction (one process writes a SQLite file);
//! - rows are never updated or deleted by relais (the migrations add triggers refusing both).

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Backend, Store, StoreResult};
use crate::clock::Millis;

/// The advisory lock key of audit appends (`pg_advisory_xact_lock`): "relais-audit" as bytes.
const PG_LOCK_KEY: i64 = 0x7265_6c61_6973_6175;

/// Serializes SQLite appends in this process, across every `Store` of the file. A tokio mutex
/// because it is held across the transaction's awaits (it never guards media-path data).
static SQLITE_APPEND: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One row of `audit_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub at: Millis,
    pub actor_role: Option<String>,
    pub actor_id: Option<i64>,
    pub ip: Option<String>,
    pub action: String,
    pub target_kind: String,
    pub target_id: Option<String>,
    pub session_id: Option<i64>,
    pub conversation_id: Option<i64>,
    /// JSON text, hashed as stored.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The newest row's number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
}

/// Filters of a page of the trail, newest first. Every `Some` narrows.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub action: Option<String>,
    /// `Some(None)`: acts of the system (no actor).
    pub actor_role: Option<Option<String>>,
    pub actor_id: Option<i64>,
    pub session_id: Option<i64>,
    pub conversation_id: Option<i64>,
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    /// `at >= since`.
    pub since: Option<Millis>,
    /// `at <= until`.
    pub until: Option<Millis>,
    /// `seq < before`.
    pub before: Option<i64>,
    pub limit: i64,
}

const COLUMNS: &str = "seq, at, actor_role, actor_id, ip, action, target_kind, target_id, \
    session_id, conversation_id, detail, prev_hash, hash";

fn row_of(row: &AnyRow) -> StoreResult<AuditRow> {
    Ok(AuditRow {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        actor_role: row.try_get("actor_role")?,
        actor_id: row.try_get("actor_id")?,
        ip: row.try_get("ip")?,
        action: row.try_get("action")?,
        target_kind: row.try_get("target_kind")?,
        target_id: row.try_get("target_id")?,
        session_id: row.try_get("session_id")?,
        conversation_id: row.try_get("conversation_id")?,
        detail: row.try_get("detail")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

enum Bind {
    Int(i64),
    Text(String),
}

impl Store {
    /// Appends the row `seal` makes from the newest one (`None`: the trail is empty), with no
    /// other append in between, on this node or another.
    pub async fn append_audit(
        &self,
        seal: impl FnOnce(Option<AuditHead>) -> AuditRow,
    ) -> StoreResult<AuditRow> {
        let _local = match self.backend() {
            Backend::Sqlite => Some(SQLITE_APPEND.lock().await),
            Backend::Postgres => None,
        };
        let mut tx = self.writer().begin().await?;
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| -> StoreResult<AuditHead> {
                Ok(AuditHead {
                    seq: r.try_get("seq")?,
                    hash: r.try_get("hash")?,
                })
            })
            .transpose()?;
        let row = seal(head);
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO audit_log ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        )))
        .bind(row.seq)
        .bind(row.at)
        .bind(row.actor_role.clone())
        .bind(row.actor_id)
        .bind(row.ip.clone())
        .bind(row.action.clone())
        .bind(row.target_kind.clone())
        .bind(row.target_id.clone())
        .bind(row.session_id)
        .bind(row.conversation_id)
        .bind(row.detail.clone())
        .bind(row.prev_hash.clone())
        .bind(row.hash.clone())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Up to `limit` rows after `after_seq`, oldest first (verification reads the whole
    /// trail this way, a batch at a time).
    pub async fn audit_after(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<AuditRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq ASC LIMIT $2"
        )))
        .bind(after_seq)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(row_of).collect()
    }

    /// A page of the trail, newest first.
    pub async fn audit_page(&self, q: &AuditQuery) -> StoreResult<Vec<AuditRow>> {
        let mut clauses: Vec<String> = Vec::new();
        let mut binds: Vec<Bind> = Vec::new();
        let mut add = |clause: &str, bind: Option<Bind>| {
            match bind {
                Some(b) => {
                    binds.push(b);
                    clauses.push(clause.replace('?', &format!("${}", binds.len())));
                }
                None => clauses.push(clause.to_string()),
            };
        };
        if let Some(a) = &q.action {
            add("action = ?", Some(Bind::Text(a.clone())));
        }
        match &q.actor_role {
            Some(Some(role)) => add("actor_role = ?", Some(Bind::Text(role.clone()))),
            Some(None) => add("actor_role IS NULL", None),
            None => {}
        }
        if let Some(id) = q.actor_id {
            add("actor_id = ?", Some(Bind::Int(id)));
        }
        if let Some(id) = q.session_id {
            add("session_id = ?", Some(Bind::Int(id)));
        }
        if let Some(id) = q.conversation_id {
            add("conversation_id = ?", Some(Bind::Int(id)));
        }
        if let Some(k) = &q.target_kind {
            add("target_kind = ?", Some(Bind::Text(k.clone())));
        }
        if let Some(id) = &q.target_id {
            add("target_id = ?", Some(Bind::Text(id.clone())));
        }
        if let Some(t) = q.since {
            add("at >= ?", Some(Bind::Int(t)));
        }
        if let Some(t) = q.until {
            add("at <= ?", Some(Bind::Int(t)));
        }
        if let Some(seq) = q.before {
            add("seq < ?", Some(Bind::Int(seq)));
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log {filter} ORDER BY seq DESC LIMIT ${}",
            binds.len() + 1
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            query = match b {
                Bind::Int(i) => query.bind(i),
                Bind::Text(s) => query.bind(s),
            };
        }
        let rows = query.bind(q.limit).fetch_all(self.reader()).await?;
        rows.iter().map(row_of).collect()
    }
}
