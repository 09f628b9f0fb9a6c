//! A [`Recorder`] on a thread of its own, fed by the SFU without ever blocking it.
//!
//! Two queues reach the thread:
//! - **media** (bounded): RTP packets and Sender Reports, pushed with `try_send` by the
//!   publisher's task through a [`RecordTap`]; when the queue is full the packet is dropped
//!   and counted (the jitter buffer then sees a loss and the recorder asks for a keyframe);
//! - **control** (unbounded, a handful of messages per recording): tracks coming and going,
//!   and stop. Control is read before media, so a track is known before its first packet.
//!
//! Tracks are keyed by the SFU's track id (the *source*). When a participant's connection is
//! replaced, its new tracks take the place of the old ones of the same codec: the file keeps
//! one audio and one video track and the recorder sees a source change.
//!
//! Start of a file: the recorder asks for a keyframe at once (`keyframe_request_due`, which
//! becomes a PLI to the publisher) and starts the file when it comes, audio with it.
//!
//! Invariants: the thread owns the recorder and its file; it never blocks on anything but its
//! own queues and its own disk writes; whatever ends it (stop, every sender gone, a write
//! error) finishes the file and reports a [`WorkerOutcome`] exactly once.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::oneshot;

use super::{Recorder, RecorderConfig, RecorderStats, RecordingSummary, TrackId};
use crate::codec::Codec;

/// How long the thread sleeps on a quiet queue before it lets time pass in the recorder.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Media messages handled in one go before control is looked at again.
const BATCH: usize = 256;

/// The SFU's id of a published track.
pub type Source = u64;

/// What a publisher's task pushes.
pub enum Media {
    Rtp {
        source: Source,
        packet: rtc::rtp::Packet,
        arrival: Instant,
    },
    SenderReport {
        source: Source,
        ssrc: u32,
        ntp: u64,
        rtp: u32,
    },
    /// Nothing to record: look at the control queue now.
    Wake,
}

/// A track to record, as the SFU knows it.
pub struct TrackSpec {
    pub source: Source,
    pub codec: Codec,
    pub clock_rate: u32,
    pub channels: u16,
    /// Asks the publisher for a keyframe of this track; false once the publisher is gone.
    pub request_keyframe: Box<dyn Fn() -> bool + Send>,
}

enum Control {
    AddTrack(TrackSpec),
    RemoveTrack(Source),
    Stop(&'static str),
}

/// Why a push into a tap did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapError {
    /// The queue is full: dropped (and counted).
    Full,
    /// The recording ended: drop the tap.
    Closed,
}

/// Where a publisher's task pushes the packets of one recorded participant. Cheap to clone;
/// never blocks.
#[derive(Clone)]
pub struct RecordTap {
    tx: SyncSender<Media>,
    dropped: Counter,
}

impl std::fmt::Debug for RecordTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordTap")
    }
}

impl RecordTap {
    fn push(&self, m: Media) -> Result<(), TapError> {
        match self.tx.try_send(m) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.dropped.inc();
                Err(TapError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(TapError::Closed),
        }
    }

    /// One RTP packet of `source`, received at `arrival`.
    pub fn rtp(
        &self,
        source: Source,
        packet: &rtc::rtp::Packet,
        arrival: Instant,
    ) -> Result<(), TapError> {
        self.push(Media::Rtp {
            source,
            packet: packet.clone(),
            arrival,
        })
    }

    /// A Sender Report of `source`'s sender `ssrc`: NTP time `ntp` is RTP time `rtp`.
    pub fn sender_report(
        &self,
        source: Source,
        ssrc: u32,
        ntp: u64,
        rtp: u32,
    ) -> Result<(), TapError> {
        self.push(Media::SenderReport {
            source,
            ssrc,
            ntp,
            rtp,
        })
    }
}

/// Counters the thread moves as it goes.
#[derive(Clone, Default)]
pub struct WorkerCounters {
    pub packets: Counter,
    pub bytes_written: Counter,
    pub keyframe_requests: Counter,
    /// Media dropped because the recording queue was full.
    pub queue_full: Counter,
}

/// What the thread needs to start.
pub struct WorkerSpec {
    pub path: PathBuf,
    /// Wall-clock start (the file's DateUTC).
    pub start: SystemTime,
    /// Media queue capacity, in messages.
    pub queue: usize,
    pub config: RecorderConfig,
    pub counters: WorkerCounters,
    /// Thread name (shows in `top -H`).
    pub name: String,
}

/// How the thread ended.
#[derive(Debug)]
pub struct WorkerOutcome {
    /// The finished file, or why there is none (creation or a write failed).
    pub result: std::io::Result<RecordingSummary>,
    pub stats: RecorderStats,
    /// Why it stopped: the reason given to [`WorkerHandle::stop`], or `closed`.
    pub reason: &'static str,
}

/// The SFU's side of a running recorder thread.
pub struct WorkerHandle {
    control: Sender<Control>,
    media: SyncSender<Media>,
    dropped: Counter,
}

impl WorkerHandle {
    /// A tap for the publisher's task.
    pub fn tap(&self) -> RecordTap {
        RecordTap {
            tx: self.media.clone(),
            dropped: self.dropped.clone(),
        }
    }

    pub fn add_track(&self, spec: TrackSpec) {
        let _ = self.control.send(Control::AddTrack(spec));
    }

    pub fn remove_track(&self, source: Source) {
        let _ = self.control.send(Control::RemoveTrack(source));
    }

    /// Asks the thread to finish the file; its outcome arrives on the channel given to
    /// [`spawn`].
    pub fn stop(&self, reason: &'static str) {
        let _ = self.control.send(Control::Stop(reason));
        let _ = self.media.try_send(Media::Wake);
    }
}

/// Starts the thread: it creates the file, records until stopped, finishes the file and
/// sends its outcome on `done`.
pub fn spawn(
    spec: WorkerSpec,
    done: oneshot::Sender<WorkerOutcome>,
) -> std::io::Result<WorkerHandle> {
    let (control_tx, control_rx) = mpsc::channel();
    let (media_tx, media_rx) = mpsc::sync_channel(spec.queue.max(16));
    let handle = WorkerHandle {
        control: control_tx,
        media: media_tx,
        dropped: spec.counters.queue_full.clone(),
    };
    std::thread::Builder::new()
        .name(spec.name.clone())
        .spawn(move || {
            let outcome = run(spec, control_rx, media_rx);
            let _ = done.send(outcome);
        })?;
    Ok(handle)
}

struct Bound {
    id: TrackId,
    codec: Codec,
    source: Option<Source>,
    request_keyframe: Option<Box<dyn Fn() -> bool + Send>>,
}

struct Worker {
    recorder: Recorder,
    tracks: Vec<Bound>,
    counters: WorkerCounters,
    last_poll: Instant,
    bytes_reported: u64,
    stop: Option<&'static str>,
    failed: Option<std::io::Error>,
}

fn run(spec: WorkerSpec, control: Receiver<Control>, media: Receiver<Media>) -> WorkerOutcome {
    let created = spec
        .path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| Recorder::create_with(&spec.path, spec.start, spec.config.clone()));
    let recorder = match created {
        Ok(r) => r,
        Err(e) => {
            return WorkerOutcome {
                result: Err(e),
                stats: RecorderStats::default(),
                reason: "create_failed",
            };
        }
    };
    let mut w = Worker {
        recorder,
        tracks: Vec::new(),
        counters: spec.counters,
        last_poll: Instant::now(),
        bytes_reported: 0,
        stop: None,
        failed: None,
    };
    loop {
        if w.read_control(&control) {
            break;
        }
        match media.recv_timeout(POLL_INTERVAL) {
            Ok(m) => {
                w.on_media(m, &control);
                for m in media.try_iter().take(BATCH) {
                    w.on_media(m, &control);
                    if w.failed.is_some() {
                        break;
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Every tap and the handle are gone: nobody will stop us otherwise.
            Err(RecvTimeoutError::Disconnected) => {
                w.stop.get_or_insert("closed");
                break;
            }
        }
        if w.failed.is_some() {
            break;
        }
        w.maybe_poll(Instant::now());
    }
    if w.stop.is_some() && w.failed.is_none() {
        // What was queued before the stop still belongs to the recording.
        for m in media.try_iter() {
            w.on_media(m, &control);
            if w.failed.is_some() {
                break;
            }
        }
    }
    w.finish()
}

impl Worker {
    /// Applies pending control messages; true when the thread should stop.
    fn read_control(&mut self, control: &Receiver<Control>) -> bool {
        loop {
            match control.try_recv() {
                Ok(Control::AddTrack(spec)) => self.add_track(spec),
                Ok(Control::RemoveTrack(source)) => {
                    if let Some(t) = self.tracks.iter_mut().find(|t| t.source == Some(source)) {
                        t.source = None;
                        t.request_keyframe = None;
                    }
                }
                Ok(Control::Stop(reason)) => {
                    self.stop = Some(reason);
                    return true;
                }
                Err(mpsc::TryRecvError::Empty) => return false,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.stop.get_or_insert("closed");
                    return true;
                }
            }
        }
    }

    fn add_track(&mut self, spec: TrackSpec) {
        if self.tracks.iter().any(|t| t.source == Some(spec.source)) {
            return;
        }
        // A replaced connection's track continues the old one of the same codec.
        if let Some(t) = self
            .tracks
            .iter_mut()
            .find(|t| t.source.is_none() && t.codec == spec.codec)
        {
            t.source = Some(spec.source);
            t.request_keyframe = Some(spec.request_keyframe);
            return;
        }
        match self
            .recorder
            .add_track(spec.codec, spec.clock_rate, spec.channels)
        {
            Ok(id) => self.tracks.push(Bound {
                id,
                codec: spec.codec,
                source: Some(spec.source),
                request_keyframe: Some(spec.request_keyframe),
            }),
            Err(e) => tracing::warn!(error = %e, "a track is not recorded"),
        }
    }

    fn bound(&self, source: Source) -> Option<usize> {
        self.tracks.iter().position(|t| t.source == Some(source))
    }

    fn on_media(&mut self, m: Media, control: &Receiver<Control>) {
        match m {
            Media::Rtp {
                source,
                packet,
                arrival,
            } => {
                let index = match self.bound(source) {
                    Some(i) => Some(i),
                    // Its track may be announced right behind it.
                    None => {
                        if self.read_control(control) {
                            // Stop seen: the caller drains and finishes.
                        }
                        self.bound(source)
                    }
                };
                let Some(i) = index else { return };
                let (id, video) = (self.tracks[i].id, self.tracks[i].codec.is_video());
                self.counters.packets.inc();
                if let Err(e) = self.recorder.push_rtp(id, &packet, arrival) {
                    self.failed = Some(e);
                    return;
                }
                if video {
                    self.request_keyframe_if_due(i, Instant::now());
                }
            }
            Media::SenderReport {
                source,
                ssrc,
                ntp,
                rtp,
            } => {
                if let Some(i) = self.bound(source) {
                    self.recorder
                        .push_sender_report(self.tracks[i].id, ssrc, ntp, rtp);
                }
            }
            Media::Wake => {}
        }
    }

    fn request_keyframe_if_due(&mut self, i: usize, now: Instant) {
        let t = &self.tracks[i];
        if t.request_keyframe.is_none() || !self.recorder.keyframe_request_due(t.id, now) {
            return;
        }
        self.counters.keyframe_requests.inc();
        let t = &mut self.tracks[i];
        if let Some(ask) = &t.request_keyframe
            && !ask()
        {
            t.request_keyframe = None;
        }
    }

    fn maybe_poll(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_poll) < POLL_INTERVAL {
            return;
        }
        self.last_poll = now;
        if let Err(e) = self.recorder.poll(now) {
            self.failed = Some(e);
            return;
        }
        for i in 0..self.tracks.len() {
            if self.tracks[i].codec.is_video() {
                self.request_keyframe_if_due(i, now);
            }
        }
        self.report_bytes();
    }

    fn report_bytes(&mut self) {
        let written = self.recorder.written_bytes();
        if written > self.bytes_reported {
            self.counters
                .bytes_written
                .inc_by(written - self.bytes_reported);
            self.bytes_reported = written;
        }
    }

    fn finish(mut self) -> WorkerOutcome {
        let stats = self.recorder.stats();
        let reason = self.stop.unwrap_or("write_failed");
        let result = match self.failed.take() {
            Some(e) => {
                // Close what can be closed; the error is what counts.
                drop(self.recorder);
                Err(e)
            }
            None => {
                let bytes_before = self.bytes_reported;
                let r = self.recorder.finish();
                if let Ok(s) = &r
                    && s.size_bytes > bytes_before
                {
                    self.counters
                        .bytes_written
                        .inc_by(s.size_bytes - bytes_before);
                }
                r
            }
        };
        WorkerOutcome {
            result,
            stats,
            reason,
        }
    }
}
