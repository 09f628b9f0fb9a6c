//! Persistent state through sqlx's `Any` driver: SQLite (default) or PostgreSQL.
//!
//! Invariants:
//! - SQL is written once, in the dialect both engines accept: `$N` placeholders, `RETURNING`,
//!   `ON CONFLICT DO NOTHING`, integer timestamps (epoch ms), no engine-specific types;
//! - with SQLite every write goes through a one-connection pool, so writers queue in-process
//!   instead of sleeping in SQLite's busy handler (which costs milliseconds under load);
//!   reads use a separate pool that WAL lets run beside the writer;
//! - schema changes are migrations under `migrations/<engine>/`, applied at start.

mod attachments;
mod audit;
mod conversations;
mod group_commit;
mod messages;
mod recordings;
mod retention;
mod rows;
mod sessions;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use attachments::{Attachment, NewAttachment};
pub use audit::{AuditHead, AuditQuery, AuditRow};
pub use conversations::{Conversation, ConversationKind, ConversationSummary};
pub use messages::{Message, MessageType, NewMessage, Page};
pub use recordings::{RecordingEnd, RecordingRecord, RecordingStatus};
pub use sessions::{
    GuestRecord, NewGuest, NewSession, PlacedSession, SessionParticipant, SessionRecord,
    SessionStatus, SessionType,
};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    read: AnyPool,
    write: AnyPool,
    backend: Backend,
    /// SQLite only: message inserts batched into shared transactions.
    group_commit: Option<group_commit::GroupCommit>,
}

impl Store {
    /// Connects (creating the SQLite file and its directory when needed). Does not migrate.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let options = AnyConnectOptions::from_str(url)?;
        match backend {
            Backend::Sqlite => {
                if let Some(dir) = sqlite_file(url).and_then(|p| p.parent().map(Path::to_path_buf))
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(&dir).map_err(sqlx::Error::Io)?;
                }
                let write = sqlite_pool(1).connect_with(options.clone()).await?;
                let read = sqlite_pool(4).connect_with(options).await?;
                Ok(Self {
                    read,
                    group_commit: Some(group_commit::GroupCommit::start(write.clone())),
                    write,
                    backend,
                })
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .min_connections(1)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?;
                Ok(Self {
                    read: pool.clone(),
                    write: pool,
                    backend,
                    group_commit: None,
                })
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.write).await?;
        Ok(())
    }

    /// A round trip to the database, for readiness.
    pub async fn ping(&self) -> StoreResult<()> {
        self.read.execute("SELECT 1").await?;
        Ok(())
    }

    /// (pool, connections open, idle) for metrics.
    pub fn pool_stats(&self) -> Vec<(&'static str, u32, usize)> {
        let mut out = vec![("write", self.write.size(), self.write.num_idle())];
        if self.backend == Backend::Sqlite {
            out.push(("read", self.read.size(), self.read.num_idle()));
        }
        out
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    pub(crate) fn reader(&self) -> &AnyPool {
        &self.read
    }

    pub(crate) fn writer(&self) -> &AnyPool {
        &self.write
    }

    fn group_commit(&self) -> Option<&group_commit::GroupCommit> {
        self.group_commit.as_ref()
    }
}

fn sqlite_pool(max: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                // WAL lets readers run beside the writer; NORMAL syncs at checkpoints, which
                // keeps committed data safe from a process crash (not from power loss).
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                )
                .await?;
                Ok(())
            })
        })
}

fn sqlite_file(url: &str) -> Option<&Path> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| Path::new(path))
}
