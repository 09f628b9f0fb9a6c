//! [`Recordings`]: recordings as the rest of the server sees them — a row per recorded
//! participant, a file under `<media_dir>/recordings/<session>/`, a recorder thread while it
//! is written ([`super::worker`]), access for the session's doctor only, repair after a
//! crash, and retention.
//!
//! Invariants:
//! - a row exists before its file; it says `recording` exactly while a thread may write the
//!   file, and it is closed (finished/failed) by the task that waits for that thread, so a
//!   stop, a session end or a shutdown can wait until every row is final;
//! - rows still saying `recording` at start-up belong to a process that died: they become
//!   `interrupted`, with the duration and size read from the file (which plays up to its
//!   last complete cluster);
//! - only the session's doctor lists or downloads its recordings (others who may see the
//!   session get 403, everyone else 404, as for the session itself); file paths come from
//!   the server, never from a request.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, oneshot};

use super::worker::{self, RecordTap, Source, TrackSpec, WorkerCounters, WorkerHandle};
use super::{RecorderConfig, container_for, inspect};
use crate::audit::{Action, Entry, Target};
use crate::clock::{Millis, SharedClock};
use crate::codec::Codec;
use crate::config::RecordingConfig;
use crate::error::ErrorCode;
use crate::ids::{Identity, SessionId};
use crate::messaging::{DomainError, DomainResult};
use crate::metrics::{Metrics, ReasonLabels, StatusLabels};
use crate::sessions::Sessions;
use crate::store::{RecordingEnd, RecordingRecord, RecordingStatus, Store, StoreResult};

const DAY_MS: Millis = 86_400_000;
/// Rows the retention task handles per query.
const PURGE_BATCH: i64 = 500;

/// The doctor's confirmation that the participants agreed to be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consent {
    pub by: Identity,
    pub at: Millis,
}

/// Recordings of the whole server. Cheap to clone.
#[derive(Clone)]
pub struct Recordings {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: SharedClock,
    sessions: Sessions,
    dir: PathBuf,
    metrics: Arc<Metrics>,
    settings: RecordingConfig,
    recorder: RecorderConfig,
    in_flight: InFlight,
}

impl Recordings {
    /// `dir` is the recordings directory (`<media_dir>/recordings`).
    pub fn new(
        store: Store,
        clock: SharedClock,
        sessions: Sessions,
        dir: PathBuf,
        metrics: Arc<Metrics>,
        settings: RecordingConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                sessions,
                dir,
                metrics,
                settings,
                recorder: RecorderConfig::default(),
                in_flight: InFlight::default(),
            }),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The server's time (its clock, which tests may drive).
    pub fn now(&self) -> Millis {
        self.inner.clock.now_ms()
    }

    /// Starts recording `who` in `session`: a row, then a recorder thread that creates the
    /// file. `codecs`: what the participant publishes now (names the container; tracks
    /// are added with [`ActiveRecording::add_track`]).
    pub async fn start(
        &self,
        session: SessionId,
        who: Identity,
        stream: &str,
        consent: Consent,
        codecs: &[Codec],
    ) -> DomainResult<ActiveRecording> {
        let id = uuid::Uuid::new_v4().to_string();
        let (ext, content_type) = container_for(codecs.iter().copied());
        // `medecin-79-<id>`, `medecin-79.2-<id>` for a second stream (a shared screen).
        let file_path = format!("{}/{stream}-{id}.{ext}", session.0);
        let started_at = self.now();
        let record = RecordingRecord {
            id: id.clone(),
            session_id: session,
            participant: who,
            consent_by: consent.by,
            consent_at: consent.at,
            started_at,
            ended_at: None,
            duration_ms: None,
            size_bytes: None,
            content_type: content_type.to_string(),
            file_path: file_path.clone(),
            status: RecordingStatus::Recording,
            end_reason: None,
            stream: Some(stream.to_string()),
        };
        self.inner.store.insert_recording(&record).await?;
        let m = &self.inner.metrics.recording;
        let counters = WorkerCounters {
            packets: m.packets.clone(),
            bytes_written: m.bytes_written.clone(),
            keyframe_requests: m.keyframe_requests.clone(),
            queue_full: m
                .dropped
                .get_or_create(&ReasonLabels {
                    reason: "queue_full",
                })
                .clone(),
        };
        let spec = worker::WorkerSpec {
            path: self.inner.dir.join(&file_path),
            start: UNIX_EPOCH + Duration::from_millis(started_at.max(0) as u64),
            queue: self.inner.settings.queue_packets,
            config: self.inner.recorder.clone(),
            counters,
            name: format!("rec-{}", &id[..8]),
        };
        let (done_tx, done_rx) = oneshot::channel();
        let handle = match worker::spawn(spec, done_tx) {
            Ok(h) => h,
            Err(e) => {
                let end = self.end_of(RecordingStatus::Failed, "thread_failed", 0, 0, content_type);
                let _ = self.inner.store.end_recording(&id, &end).await;
                return Err(DomainError::internal(e));
            }
        };
        m.active.inc();
        let (closed_tx, closed_rx) = oneshot::channel();
        let guard = self.inner.in_flight.enter();
        let this = self.clone();
        let rec_id = id.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let outcome = done_rx.await;
            this.close(&rec_id, content_type, outcome).await;
            let _ = closed_tx.send(());
        });
        tracing::info!(recording = %id, session = %session, participant = %who, "recording started");
        Ok(ActiveRecording {
            id,
            who,
            handle,
            closed: Some(closed_rx),
        })
    }

    fn end_of(
        &self,
        status: RecordingStatus,
        reason: &str,
        duration_ms: i64,
        size_bytes: i64,
        content_type: &str,
    ) -> RecordingEnd {
        RecordingEnd {
            status,
            ended_at: self.now(),
            duration_ms,
            size_bytes,
            content_type: content_type.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Closes the row of a recording whose thread ended.
    async fn close(
        &self,
        id: &str,
        content_type: &'static str,
        outcome: Result<worker::WorkerOutcome, oneshot::error::RecvError>,
    ) {
        let m = &self.inner.metrics.recording;
        m.active.dec();
        let path = match self.inner.store.recording(id).await {
            Ok(Some(r)) => self.path_of(&r),
            _ => None,
        };
        if let Ok(o) = &outcome {
            m.packets_lost.inc_by(o.stats.lost);
            m.frames_dropped.inc_by(o.stats.frames_dropped);
        }
        let end = match outcome {
            Ok(o) => match o.result {
                Ok(s) if s.duration_ms > 0 => {
                    tracing::info!(recording = %id, reason = o.reason, duration_ms = s.duration_ms,
                        bytes = s.size_bytes, stats = ?o.stats, "recording finished");
                    self.end_of(
                        RecordingStatus::Finished,
                        o.reason,
                        s.duration_ms as i64,
                        s.size_bytes as i64,
                        s.content_type,
                    )
                }
                Ok(_) => {
                    // Nothing reached the file (no media, or no keyframe before it ended).
                    if let Some(p) = &path {
                        let _ = std::fs::remove_file(p);
                    }
                    tracing::info!(recording = %id, reason = o.reason, "recording ended with no media");
                    self.end_of(RecordingStatus::Failed, "no_media", 0, 0, content_type)
                }
                Err(e) => {
                    tracing::error!(recording = %id, error = %e, "recording failed");
                    let size = path
                        .as_deref()
                        .and_then(|p| std::fs::metadata(p).ok())
                        .map_or(0, |md| md.len() as i64);
                    self.end_of(RecordingStatus::Failed, o.reason, 0, size, content_type)
                }
            },
            Err(_) => {
                tracing::error!(recording = %id, "recorder thread vanished");
                self.end_of(RecordingStatus::Failed, "worker_lost", 0, 0, content_type)
            }
        };
        m.closed
            .get_or_create(&StatusLabels {
                status: end.status.as_str(),
            })
            .inc();
        if let Err(e) = self.inner.store.end_recording(id, &end).await {
            tracing::error!(recording = %id, error = %e, "could not close a recording row");
        }
    }

    /// The file of a row, when its stored path is a plain relative path.
    fn path_of(&self, r: &RecordingRecord) -> Option<PathBuf> {
        let rel = Path::new(&r.file_path);
        let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
        (plain && !r.file_path.is_empty()).then(|| self.inner.dir.join(rel))
    }

    /// Waits (at most `timeout`) until every recording started so far has its row closed.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        self.inner.in_flight.wait(timeout).await
    }

    /// Rows left `recording` by a process that died become `interrupted`, with what their
    /// file holds. Run at start-up, before any recording starts. Returns how many.
    pub async fn repair(&self) -> StoreResult<usize> {
        self.repair_where(|_| true).await
    }

    /// [`repair`](Self::repair) for the rows `dead` picks. Several nodes share the database:
    /// a node repairs only what no live node is still writing (the cluster decides, by the
    /// node each session is on).
    pub async fn repair_where(
        &self,
        dead: impl Fn(&RecordingRecord) -> bool,
    ) -> StoreResult<usize> {
        let rows = self.inner.store.recordings_in_progress().await?;
        let mut repaired = 0;
        for r in rows.into_iter().filter(|r| dead(r)) {
            let path = self.path_of(&r);
            let (status, duration_ms, size, content_type, ended_at) = match path
                .as_deref()
                .map(|p| (std::fs::metadata(p), inspect::read(p)))
            {
                Some((Ok(md), Ok(Some(info)))) if info.duration_ms > 0 => {
                    let ended = md
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map_or(self.now(), |d| d.as_millis() as Millis);
                    (
                        RecordingStatus::Interrupted,
                        info.duration_ms as i64,
                        md.len() as i64,
                        info.content_type().to_string(),
                        ended,
                    )
                }
                Some((Ok(md), _)) => (
                    RecordingStatus::Failed,
                    0,
                    md.len() as i64,
                    r.content_type.clone(),
                    self.now(),
                ),
                _ => (
                    RecordingStatus::Failed,
                    0,
                    0,
                    r.content_type.clone(),
                    self.now(),
                ),
            };
            let end = RecordingEnd {
                status,
                ended_at: ended_at.max(r.started_at),
                duration_ms,
                size_bytes: size,
                content_type,
                reason: "server_stopped".into(),
            };
            if self.inner.store.end_recording(&r.id, &end).await? {
                repaired += 1;
                self.inner
                    .metrics
                    .recording
                    .closed
                    .get_or_create(&StatusLabels {
                        status: status.as_str(),
                    })
                    .inc();
                tracing::warn!(recording = %r.id, session = %r.session_id, status = status.as_str(),
                    duration_ms, bytes = size, "recording left open by an earlier process repaired");
            }
        }
        Ok(repaired)
    }

    /// Deletes recordings (files, then rows) that started more than `recording.retention_days`
    /// ago; nothing when the setting is 0. Returns how many.
    pub async fn purge_expired(&self) -> StoreResult<usize> {
        let days = self.inner.settings.retention_days;
        if days == 0 {
            return Ok(0);
        }
        let cutoff = self.now() - Millis::from(days) * DAY_MS;
        let mut deleted = 0;
        loop {
            let rows = self
                .inner
                .store
                .recordings_started_before(cutoff, PURGE_BATCH)
                .await?;
            let full = rows.len() as i64 == PURGE_BATCH;
            let mut progressed = false;
            for r in rows {
                if let Some(path) = self.path_of(&r) {
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            // Keep the row: it still points at the bytes on disk.
                            tracing::error!(recording = %r.id, error = %e, "cannot delete an expired recording");
                            continue;
                        }
                    }
                    if let Some(dir) = path.parent() {
                        // Only succeeds once the session's directory is empty.
                        let _ = std::fs::remove_dir(dir);
                    }
                }
                if self.inner.store.delete_recording(&r.id).await? {
                    deleted += 1;
                    progressed = true;
                    self.inner.metrics.recording.expired.inc();
                    let entry = Entry::new(
                        Action::RecordingDeleted,
                        Target::Recording {
                            session: r.session_id,
                            id: r.id.clone(),
                        },
                    )
                    .detail(serde_json::json!({
                        "reason": "retention",
                        "retention_days": days,
                        "participant": r.participant.to_string(),
                        "started_at": crate::clock::to_rfc3339(r.started_at),
                    }));
                    self.inner.sessions.audit().note(entry).await;
                }
            }
            if !full || !progressed {
                break;
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, days, "expired recordings deleted");
        }
        Ok(deleted)
    }

    /// Applies the retention setting every `recording.retention_interval` (when set).
    pub fn spawn_retention(&self) -> Option<tokio::task::JoinHandle<()>> {
        if self.inner.settings.retention_days == 0 {
            return None;
        }
        let this = self.clone();
        let every = self.inner.settings.retention_interval;
        Some(tokio::spawn(async move {
            loop {
                if let Err(e) = this.purge_expired().await {
                    tracing::error!(error = %e, "retention of recordings failed");
                }
                tokio::time::sleep(every).await;
            }
        }))
    }

    /// A session's recordings, for its doctor.
    pub async fn list_for(
        &self,
        caller: Identity,
        session: SessionId,
    ) -> DomainResult<Vec<RecordingRecord>> {
        self.inner.sessions.require_owner(caller, session).await?;
        Ok(self.inner.store.session_recordings(session).await?)
    }

    /// The recordings with these ids in `session` (what a stop just closed).
    pub async fn in_session(
        &self,
        session: SessionId,
        ids: &[String],
    ) -> DomainResult<Vec<RecordingRecord>> {
        let all = self.inner.store.session_recordings(session).await?;
        Ok(all.into_iter().filter(|r| ids.contains(&r.id)).collect())
    }

    /// One recording and its file, for the session's doctor. Unknown ids and recordings of
    /// sessions the caller cannot see are both "not found".
    pub async fn file_for(
        &self,
        caller: Identity,
        id: &str,
    ) -> DomainResult<(RecordingRecord, PathBuf)> {
        let not_found =
            || DomainError::not_found(ErrorCode::RecordingNotFound, "recording not found");
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(not_found());
        }
        let r = self
            .inner
            .store
            .recording(id)
            .await?
            .ok_or_else(not_found)?;
        self.inner
            .sessions
            .require_owner(caller, r.session_id)
            .await
            .map_err(|e| {
                if e.kind == crate::messaging::ErrorKind::NotFound {
                    not_found()
                } else {
                    e
                }
            })?;
        match r.status {
            RecordingStatus::Recording => {
                return Err(DomainError::conflict(
                    ErrorCode::RecordingInProgress,
                    "this recording is still being written; stop it first",
                ));
            }
            RecordingStatus::Failed => {
                return Err(DomainError::not_found(
                    ErrorCode::RecordingUnavailable,
                    "this recording holds no media",
                ));
            }
            _ => {}
        }
        let path = self.path_of(&r).ok_or_else(not_found)?;
        if !path.is_file() {
            return Err(DomainError::not_found(
                ErrorCode::RecordingUnavailable,
                "this recording's file is gone",
            ));
        }
        Ok((r, path))
    }
}

/// One participant being recorded: the SFU's handle on the recorder thread.
pub struct ActiveRecording {
    id: String,
    who: Identity,
    handle: WorkerHandle,
    /// Resolves once the row is closed.
    closed: Option<oneshot::Receiver<()>>,
}

/// Resolves once a stopped recording's row is final (finished or failed).
#[derive(Debug)]
pub struct Closing(Option<oneshot::Receiver<()>>);

impl Closing {
    pub async fn wait(self) {
        if let Some(rx) = self.0 {
            let _ = rx.await;
        }
    }
}

impl ActiveRecording {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn who(&self) -> Identity {
        self.who
    }

    /// A tap for the publisher's task (one per recorded track).
    pub fn tap(&self) -> RecordTap {
        self.handle.tap()
    }

    pub fn add_track(&self, spec: TrackSpec) {
        self.handle.add_track(spec);
    }

    pub fn remove_track(&self, source: Source) {
        self.handle.remove_track(source);
    }

    /// Finishes the file; the returned [`Closing`] resolves when the row is final.
    pub fn stop(mut self, reason: &'static str) -> Closing {
        self.handle.stop(reason);
        Closing(self.closed.take())
    }
}

impl Drop for ActiveRecording {
    fn drop(&mut self) {
        if self.closed.is_some() {
            // Dropped without stop (its room went away): the file is finished all the same.
            self.handle.stop("closed");
        }
    }
}

/// Counts recordings whose row is not closed yet, to wait for them at shutdown.
#[derive(Default)]
struct InFlight {
    count: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

struct InFlightGuard {
    count: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

impl InFlight {
    fn enter(&self) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard {
            count: self.count.clone(),
            idle: self.idle.clone(),
        }
    }

    async fn wait(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count.load(Ordering::SeqCst) == 0;
            }
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }
}
