//! `messaging.retention_days`: messages older than that are deleted, with their attachments
//! (file first, then row), by a periodic job like the recordings' retention; each run that
//! deleted something leaves one `messages_expired` record in the audit trail (counts only).
//!
//! Invariants:
//! - work is done in bounded batches (a run never loads or deletes more than
//!   [`BATCH`] rows per statement), so a first run over years of history does not hold the
//!   database;
//! - an attachment goes only once no message refers to it; its row stays while its file
//!   could not be deleted (the row is what points at the bytes);
//! - off by default: without the setting nothing is ever deleted.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::{Action, Audit, Entry, Target};
use crate::clock::{Millis, SharedClock};
use crate::metrics::Metrics;
use crate::store::{Store, StoreResult};

use super::Uploads;

const DAY_MS: Millis = 86_400_000;
/// Rows per statement.
const BATCH: i64 = 500;

/// What one run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    pub messages: u64,
    pub attachments: u64,
}

/// The retention of messages and attachments. Cheap to clone.
#[derive(Clone)]
pub struct MessageRetention {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: SharedClock,
    uploads: Uploads,
    audit: Audit,
    metrics: Arc<Metrics>,
    days: Option<u32>,
    every: Duration,
}

impl MessageRetention {
    pub fn new(
        store: Store,
        clock: SharedClock,
        uploads: Uploads,
        audit: Audit,
        metrics: Arc<Metrics>,
        days: Option<u32>,
        every: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                uploads,
                audit,
                metrics,
                days,
                every,
            }),
        }
    }

    /// Deletes what is older than the setting; nothing when it is unset.
    pub async fn purge_expired(&self) -> StoreResult<Expired> {
        let Some(days) = self.inner.days else {
            return Ok(Expired::default());
        };
        let cutoff = self.inner.clock.now_ms() - Millis::from(days) * DAY_MS;
        let store = &self.inner.store;
        let mut expired = Expired::default();
        loop {
            let n = store.delete_messages_before(cutoff, BATCH).await?;
            expired.messages += n;
            self.inner.metrics.messages_expired.inc_by(n);
            if n < BATCH as u64 {
                break;
            }
        }
        loop {
            let batch = store.unreferenced_attachments_before(cutoff, BATCH).await?;
            let full = batch.len() as i64 == BATCH;
            let mut progressed = false;
            for a in batch {
                let path = self.inner.uploads.path_of(&a.storage_name);
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::error!(attachment = %a.id, error = %e, "cannot delete an expired attachment's file");
                        continue;
                    }
                }
                if store.delete_unreferenced_attachment(&a.id).await? {
                    expired.attachments += 1;
                    progressed = true;
                    self.inner.metrics.attachments_expired.inc();
                }
            }
            if !full || !progressed {
                break;
            }
        }
        if expired != Expired::default() {
            tracing::info!(
                messages = expired.messages,
                attachments = expired.attachments,
                days,
                "expired messages deleted"
            );
            self.inner
                .audit
                .note(
                    Entry::new(Action::MessagesExpired, Target::Messages).detail(
                        serde_json::json!({
                            "messages": expired.messages,
                            "attachments": expired.attachments,
                            "retention_days": days,
                            "before": crate::clock::to_rfc3339(cutoff),
                        }),
                    ),
                )
                .await;
        }
        Ok(expired)
    }

    /// Applies the setting every `messaging.retention_interval` (when set).
    pub fn spawn(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.inner.days?;
        let this = self.clone();
        Some(tokio::spawn(async move {
            loop {
                if let Err(e) = this.purge_expired().await {
                    tracing::error!(error = %e, "retention of messages failed");
                }
                tokio::time::sleep(this.inner.every).await;
            }
        }))
    }
}
