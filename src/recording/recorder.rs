//! The [`Recorder`]: tracks in, one file out. See the module docs of [`super`].

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::Path;
use std::time::{Instant, SystemTime};

use super::depack::{self, Depacketizer, Output};
use super::jitter::{JitterBuffer, Released};
use super::mkv::{self, DocType, EntryKind, MkvWriter, Sink, TrackEntry};
use super::sync::{SenderClock, SourceClock};
use super::{AddTrackError, MAX_TRACKS, RecorderConfig, RecorderStats, RecordingSummary, TrackId};
use crate::codec::Codec;

struct PendingFrame {
    /// Unwrapped RTP timestamp, mapped to time when written (reports may still move it).
    rtp_ext: i64,
    /// The track's source generation it came from; an older one uses `ts_us`.
    generation: u32,
    /// Local time as mapped when the frame was queued.
    ts_us: i64,
    keyframe: bool,
    /// Opus: the packet's duration; video: 0 (estimated from the next frame).
    duration_us: i64,
    data: Vec<u8>,
}

struct Track {
    codec: Codec,
    clock_rate: u32,
    channels: u8,
    jitter: JitterBuffer,
    depack: Depacketizer,
    ssrc: Option<u32>,
    /// Bumped at every source change.
    generation: u32,
    clock: SourceClock,
    /// The latest Sender Report (ssrc, ntp, rtp) not applied yet.
    report: Option<(u32, u64, u32)>,
    waiting_keyframe: bool,
    last_request: Option<Instant>,
    pending: VecDeque<PendingFrame>,
    /// Track number in the file once its first block was written.
    number: Option<u64>,
    uid: u64,
    entry_dims: Option<(u16, u16)>,
    entry_private: Option<Vec<u8>>,
    last_written_ms: Option<i64>,
    /// The unwrapped RTP timestamp and source generation of the frame written last.
    last_written_rtp: Option<(i64, u32)>,
    /// Estimated duration of the last written frame.
    last_duration_ms: i64,
    end_ms: i64,
}

impl Track {
    fn is_video(&self) -> bool {
        self.codec.is_video()
    }
}

/// Records one participant's tracks into one file. See the module docs.
pub struct Recorder<S: Sink = File> {
    config: RecorderConfig,
    writer: MkvWriter<S>,
    tracks: Vec<Track>,
    sender: SenderClock,
    /// The first arrival: zero of the local timeline.
    origin: Option<Instant>,
    now_us: i64,
    /// Local time of the first written frame: zero of the file's timeline.
    file_origin_us: Option<i64>,
    last_sync_us: i64,
    pool: Vec<Vec<u8>>,
    pending_frames: usize,
    stats: RecorderStats,
    failed: Option<io::ErrorKind>,
    done: bool,
}

/// Frame buffers kept for reuse (enough for the frames a jitter buffer holds); more are freed.
const POOL_MAX: usize = 32;
/// A buffer that grew past this (a keyframe) is freed rather than kept: a pool of buffers
/// each the size of the largest frame seen cost ~8 MiB per recorded participant.
const POOL_BUFFER_MAX: usize = 16 << 10;

/// Keeps `data` for reuse when the pool has room and it is not oversized.
fn recycle(pool: &mut Vec<Vec<u8>>, data: Vec<u8>) {
    if pool.len() < POOL_MAX && data.capacity() <= POOL_BUFFER_MAX {
        pool.push(data);
    }
}
/// Clusters never span more than this (block timestamps are 16-bit relative).
const CLUSTER_MAX_MS: i64 = 30_000;
/// A cluster in memory is written once it holds this much, whatever its duration.
const CLUSTER_MAX_BYTES: usize = 8 << 20;

impl Recorder<File> {
    /// Creates (truncates) the file at `path`. `start` is the wall-clock start of the
    /// recording (the file's DateUTC). Nothing is written before the first cluster: a
    /// recording that never received media leaves an empty file.
    pub fn create(path: &Path, start: SystemTime) -> io::Result<Self> {
        Self::create_with(path, start, RecorderConfig::default())
    }

    pub fn create_with(path: &Path, start: SystemTime, config: RecorderConfig) -> io::Result<Self> {
        let file = File::create(path)?;
        Ok(Self::with_sink(file, start, config))
    }
}

impl<S: Sink> Recorder<S> {
    /// A recorder writing to any seekable sink (tests use memory).
    pub fn with_sink(sink: S, start: SystemTime, config: RecorderConfig) -> Self {
        Recorder {
            config,
            writer: MkvWriter::new(sink, start),
            tracks: Vec::new(),
            sender: SenderClock::default(),
            origin: None,
            now_us: 0,
            file_origin_us: None,
            last_sync_us: 0,
            pool: Vec::new(),
            pending_frames: 0,
            stats: RecorderStats::default(),
            failed: None,
            done: false,
        }
    }

    /// Declares a track. Allowed at any time: a track added after the first cluster enters
    /// the file with its first block (see the module docs). `clock_rate` is the RTP clock
    /// (90000 for video, 48000 for Opus); `channels` matters for Opus only.
    pub fn add_track(
        &mut self,
        codec: Codec,
        clock_rate: u32,
        channels: u16,
    ) -> Result<TrackId, AddTrackError> {
        if self.tracks.len() >= MAX_TRACKS {
            return Err(AddTrackError::TooManyTracks);
        }
        if clock_rate == 0 {
            return Err(AddTrackError::BadClockRate);
        }
        let depack = Depacketizer::new(codec).ok_or(AddTrackError::Unsupported(codec))?;
        let video = codec.is_video();
        let slots = if video {
            self.config.video_jitter_packets
        } else {
            self.config.audio_jitter_packets
        };
        if codec == Codec::H264 {
            self.writer.set_doc_type(DocType::Matroska);
        }
        let id = TrackId(self.tracks.len() as u8);
        self.tracks.push(Track {
            codec,
            clock_rate,
            channels: channels.clamp(1, 2) as u8,
            jitter: JitterBuffer::new(slots, self.config.jitter_window),
            depack,
            ssrc: None,
            generation: 0,
            clock: SourceClock::new(clock_rate),
            report: None,
            waiting_keyframe: video,
            last_request: None,
            pending: VecDeque::new(),
            number: None,
            uid: rand::random::<u64>() | 1,
            entry_dims: None,
            entry_private: None,
            last_written_ms: None,
            last_written_rtp: None,
            last_duration_ms: if video { 33 } else { 20 },
            end_ms: 0,
        });
        Ok(id)
    }

    /// Feeds one RTP packet of `track`, received at `arrival`. Packets of one track should
    /// come in arrival order (the jitter buffer handles their sequence order). An error is
    /// a write failure: the recording cannot go on (call [`finish`](Self::finish) to close
    /// what can be closed).
    pub fn push_rtp(
        &mut self,
        track: TrackId,
        packet: &rtc::rtp::Packet,
        arrival: Instant,
    ) -> io::Result<()> {
        self.check()?;
        let h = &packet.header;
        if track.0 as usize >= self.tracks.len() || h.version != 2 || packet.payload.is_empty() {
            self.stats.packets_rejected += 1;
            return Ok(());
        }
        let arrival_us = self.local_us(arrival);
        self.now_us = self.now_us.max(arrival_us);
        self.stats.packets += 1;
        let ti = track.0 as usize;
        if self.tracks[ti].ssrc != Some(h.ssrc) {
            self.change_source(ti, h.ssrc);
        }
        let t = &mut self.tracks[ti];
        let first = !t.clock.is_anchored();
        t.clock.on_packet(h.timestamp, arrival_us, &mut self.sender);
        if first
            && let Some((ssrc, ntp, rtp)) = t.report.take()
            && ssrc == h.ssrc
        {
            t.clock.apply_report(&self.sender, ntp, rtp);
        }
        let _ = t.jitter.push(
            h.sequence_number,
            h.timestamp,
            h.marker,
            packet.payload.clone(),
            arrival,
        );
        self.release(ti, Some(arrival));
        let r = self.mux(false);
        self.fail(r)
    }

    /// An RTCP Sender Report of `track`'s source `ssrc`: NTP time `ntp` (32.32) is RTP time
    /// `rtp_ts`. Optional; it makes audio/video sync follow the sender's capture clock.
    pub fn push_sender_report(&mut self, track: TrackId, ssrc: u32, ntp: u64, rtp_ts: u32) {
        let Some(t) = self.tracks.get_mut(track.0 as usize) else {
            return;
        };
        if t.ssrc == Some(ssrc) && t.clock.is_anchored() {
            t.clock.apply_report(&self.sender, ntp, rtp_ts);
        } else {
            // Before the source's first packet: applied when it comes.
            t.report = Some((ssrc, ntp, rtp_ts));
        }
    }

    /// Whether `track` (video) is waiting for a keyframe: at the start, after a loss it
    /// could not repair, after a source change. Its frames are dropped until one comes.
    pub fn needs_keyframe(&self, track: TrackId) -> bool {
        self.tracks
            .get(track.0 as usize)
            .is_some_and(|t| t.is_video() && t.waiting_keyframe)
    }

    /// Like [`needs_keyframe`](Self::needs_keyframe), throttled: true at most once per
    /// `keyframe_request_interval` while a keyframe is needed. Send a PLI when it says so.
    pub fn keyframe_request_due(&mut self, track: TrackId, now: Instant) -> bool {
        if !self.needs_keyframe(track) {
            return false;
        }
        let interval = self.config.keyframe_request_interval;
        let t = &mut self.tracks[track.0 as usize];
        if t.last_request
            .is_some_and(|last| now.saturating_duration_since(last) < interval)
        {
            return false;
        }
        t.last_request = Some(now);
        self.stats.keyframes_requested += 1;
        true
    }

    /// Lets time pass without packets: releases gaps that waited long enough and writes
    /// what is due. Call it every ~100-250 ms when a track may go quiet.
    pub fn poll(&mut self, now: Instant) -> io::Result<()> {
        self.check()?;
        if self.origin.is_none() {
            return Ok(());
        }
        let now_us = self.local_us(now);
        self.now_us = self.now_us.max(now_us);
        for ti in 0..self.tracks.len() {
            self.release(ti, Some(now));
        }
        self.mux(false)?;
        // Close a cluster nothing will extend soon (a paused stream), so it is on disk.
        if let Some(ts) = self.writer.cluster_timestamp()
            && let Some(origin) = self.file_origin_us
        {
            let due = ts * 1000 + origin + self.config.cluster_duration.as_micros() as i64;
            if self.now_us - self.config.mux_delay.as_micros() as i64 >= due {
                self.close_cluster()?;
            }
        }
        Ok(())
    }

    /// Writes everything still buffered (incomplete frames are dropped), the Cues, and the
    /// final sizes and duration.
    pub fn finish(mut self) -> io::Result<RecordingSummary> {
        self.finalize()
    }

    /// Duration written to disk so far (what a cut file would play), in ms.
    pub fn written_duration_ms(&self) -> u64 {
        self.writer.duration_ms() as u64
    }

    /// Bytes written to disk so far.
    pub fn written_bytes(&self) -> u64 {
        self.writer.len()
    }

    pub fn stats(&self) -> RecorderStats {
        let mut s = self.stats;
        for t in &self.tracks {
            s.duplicates += t.jitter.stats.duplicates;
            s.late += t.jitter.stats.late;
            s.lost += t.jitter.stats.lost;
        }
        s.clusters = self.writer.clusters();
        s
    }

    /// The content type the file has (or will have).
    pub fn content_type(&self) -> &'static str {
        // Video tracks written decide; before anything is written, the declared ones.
        let written = self.tracks.iter().any(|t| t.number.is_some());
        if self.writer.doc_type() == DocType::Matroska {
            "video/x-matroska"
        } else if self
            .tracks
            .iter()
            .any(|t| t.is_video() && (t.number.is_some() || !written))
        {
            "video/webm"
        } else {
            "audio/webm"
        }
    }

    fn check(&self) -> io::Result<()> {
        match self.failed {
            Some(kind) => Err(io::Error::new(kind, "recording failed earlier")),
            None if self.done => Err(io::Error::other("recording finished")),
            None => Ok(()),
        }
    }

    fn fail<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r {
            self.failed = Some(e.kind());
        }
        r
    }

    fn local_us(&mut self, at: Instant) -> i64 {
        let origin = *self.origin.get_or_insert(at);
        match at.checked_duration_since(origin) {
            Some(d) => d.as_micros() as i64,
            None => -(origin.duration_since(at).as_micros() as i64),
        }
    }

    /// A new SSRC on a track: what the old source left is released, and the track starts
    /// over on the same timeline (video waits for a keyframe).
    fn change_source(&mut self, ti: usize, ssrc: u32) {
        if self.tracks[ti].ssrc.is_some() {
            self.stats.source_changes += 1;
            self.release(ti, None);
            let window = self.config.jitter_window;
            let t = &mut self.tracks[ti];
            t.depack.reset();
            t.jitter = JitterBuffer::new(t.jitter.capacity(), window);
            t.clock = SourceClock::new(t.clock_rate);
            t.generation = t.generation.wrapping_add(1);
            if t.is_video() {
                t.waiting_keyframe = true;
            }
        }
        let t = &mut self.tracks[ti];
        t.ssrc = Some(ssrc);
        if t.report.is_some_and(|(s, _, _)| s != ssrc) {
            t.report = None;
        }
    }

    /// Moves what the jitter buffer lets go (all of it when `now` is None: the source
    /// ended) through the depacketizer into the track's pending frames.
    fn release(&mut self, ti: usize, now: Option<Instant>) {
        let Recorder {
            tracks,
            pool,
            stats,
            pending_frames,
            sender,
            ..
        } = self;
        let t = &mut tracks[ti];
        let video = t.is_video();
        let opus = t.codec == Codec::Opus;
        let generation = t.generation;
        let Track {
            jitter,
            depack,
            clock,
            waiting_keyframe,
            pending,
            ..
        } = t;
        let mut sink = FrameSink {
            video,
            opus,
            generation,
            clock,
            sender,
            waiting_keyframe,
            pending,
            pool,
            stats,
            pending_frames,
        };
        loop {
            let released = match now {
                Some(now) => jitter.pop(now),
                None => jitter.drain(),
            };
            match released {
                Some(Released::Packet(p)) => depack.push(&p, &mut |o| sink.on(o)),
                Some(Released::Lost { .. }) => depack.lost(&mut |o| sink.on(o)),
                None => break,
            }
        }
        if now.is_none() {
            depack.flush(&mut |o| sink.on(o));
        }
    }

    /// Writes pending frames in time order: those older than the mux delay, or all of
    /// them (`flush`), or the oldest while too many wait.
    fn mux(&mut self, flush: bool) -> io::Result<()> {
        let watermark = self.now_us - self.config.mux_delay.as_micros() as i64;
        let over = |r: &Self| r.pending_frames > r.config.max_pending_frames;
        if !flush && self.file_origin_us.is_none() && !over(self) {
            let synced = self.sender.offset_us().is_some()
                && self
                    .tracks
                    .iter()
                    .all(|t| t.ssrc.is_none() || t.clock.by_report());
            if !synced && self.now_us < self.config.startup_hold.as_micros() as i64 {
                return Ok(());
            }
            if self.video_not_started()
                && self.now_us < self.config.video_start_wait.as_micros() as i64
            {
                return Ok(());
            }
        }
        if self.file_origin_us.is_none() && !self.config.video_start_wait.is_zero() {
            self.trim_audio_before_video();
        }
        loop {
            let mut best: Option<(usize, i64)> = None;
            for (i, t) in self.tracks.iter().enumerate() {
                if let Some(f) = t.pending.front() {
                    let ts = self.frame_time(t, f);
                    if best.is_none_or(|(_, b)| ts < b) {
                        best = Some((i, ts));
                    }
                }
            }
            let Some((ti, ts)) = best else { break };
            if !flush && ts > watermark && !over(self) {
                break;
            }
            let Some(frame) = self.tracks[ti].pending.pop_front() else {
                break;
            };
            self.pending_frames -= 1;
            let r = self.write_frame(ti, ts, &frame);
            recycle(&mut self.pool, frame.data);
            r?;
        }
        Ok(())
    }

    /// A video track sends but has no frame yet (it waits for its first keyframe).
    fn video_not_started(&self) -> bool {
        self.tracks
            .iter()
            .any(|t| t.is_video() && t.ssrc.is_some() && t.pending.is_empty() && t.number.is_none())
    }

    /// Before the first write: audio older than the first video frame waiting is dropped,
    /// so the file starts with both (half an audio frame of slack).
    fn trim_audio_before_video(&mut self) {
        let start = self
            .tracks
            .iter()
            .filter(|t| t.is_video())
            .filter_map(|t| t.pending.front().map(|f| self.frame_time(t, f)))
            .min();
        let Some(start) = start else { return };
        let mut dropped = 0;
        let Recorder {
            tracks,
            sender,
            pool,
            ..
        } = self;
        for t in tracks.iter_mut().filter(|t| !t.is_video()) {
            while let Some(f) = t.pending.front() {
                let ts = if f.generation == t.generation {
                    t.clock.local_us(f.rtp_ext, sender)
                } else {
                    f.ts_us
                };
                if ts + 10_000 >= start {
                    break;
                }
                if let Some(f) = t.pending.pop_front() {
                    recycle(pool, f.data);
                }
                dropped += 1;
            }
        }
        self.pending_frames -= dropped;
        self.stats.frames_dropped += dropped as u64;
    }

    /// Where a pending frame goes on the local timeline, with what is known now.
    fn frame_time(&self, t: &Track, f: &PendingFrame) -> i64 {
        if f.generation == t.generation {
            t.clock.local_us(f.rtp_ext, &self.sender)
        } else {
            f.ts_us
        }
    }

    fn write_frame(&mut self, ti: usize, ts_us: i64, f: &PendingFrame) -> io::Result<()> {
        if self.file_origin_us.is_none() {
            // From now on, what is written fixes the timeline.
            self.sender.freeze();
        }
        let origin = *self.file_origin_us.get_or_insert(ts_us);
        let mut ms = (ts_us - origin + 500).div_euclid(1000).max(0);
        let video = self.tracks[ti].is_video();
        if let Some(last) = self.tracks[ti].last_written_ms {
            if !video && ms <= last {
                // Audio mapped onto what is already written (a timeline correction): a
                // short gap in sound is better than two packets over each other.
                self.stats.frames_dropped += 1;
                return Ok(());
            }
            // Video keeps every frame (later ones refer to it) in RTP order: a frame older
            // than one already written (it came late, out of order) is dropped, a decoder
            // cannot take it after its successors.
            let previous = self.tracks[ti]
                .last_written_rtp
                .filter(|(_, generation)| *generation == f.generation);
            if let Some((rtp, _)) = previous
                && f.rtp_ext <= rtp
            {
                self.stats.frames_dropped += 1;
                return Ok(());
            }
            // When the timeline moved back under the track (the sender's clock corrected
            // backwards), frames catch up at half their own spacing rather than pile up a
            // millisecond apart (a burst to the viewer, colliding timestamps to a muxer).
            let spacing = previous.map_or(2, |(rtp, _)| {
                (f.rtp_ext - rtp) * 1000 / i64::from(self.tracks[ti].clock_rate.max(1))
            });
            ms = ms.max(last + (spacing / 2).max(1));
        }
        if let Some(cluster) = self.writer.cluster_timestamp() {
            ms = ms.max(cluster);
            let age = ms - cluster;
            let keyframe_cut =
                video && f.keyframe && age >= self.config.keyframe_cluster_min.as_millis() as i64;
            if age >= self.config.cluster_duration.as_millis() as i64
                || keyframe_cut
                || age >= CLUSTER_MAX_MS
                || self.writer.cluster_bytes() >= CLUSTER_MAX_BYTES
            {
                self.close_cluster()?;
            }
        }
        if self.writer.cluster_timestamp().is_none() {
            self.writer.open_cluster(ms);
        }
        let needs_entry =
            self.tracks[ti].number.is_none() || (video && f.keyframe && self.entry_changed(ti));
        if needs_entry && !self.update_entry(ti) {
            self.stats.frames_dropped += 1;
            return Ok(());
        }
        let t = &mut self.tracks[ti];
        let Some(number) = t.number else {
            return Ok(());
        };
        self.writer
            .add_block(number, ms, f.keyframe || !video, &f.data);
        t.last_duration_ms = if f.duration_us > 0 {
            (f.duration_us / 1000).max(1)
        } else if let Some(last) = t.last_written_ms {
            (ms - last).clamp(1, 1000)
        } else {
            t.last_duration_ms
        };
        t.last_written_ms = Some(ms);
        t.last_written_rtp = Some((f.rtp_ext, f.generation));
        t.end_ms = ms + t.last_duration_ms;
        if f.generation == t.generation {
            t.clock.lock();
        }
        self.stats.frames_written += 1;
        Ok(())
    }

    fn entry_changed(&self, ti: usize) -> bool {
        let t = &self.tracks[ti];
        let dims = t.depack.dimensions();
        (dims.is_some() && dims != t.entry_dims)
            || (t.codec == Codec::H264 && t.depack.avcc() != t.entry_private)
    }

    /// Puts the track's current description into the file's Tracks (written before the
    /// cluster being built). False when it does not fit.
    fn update_entry(&mut self, ti: usize) -> bool {
        let next_number = self.tracks.iter().filter(|t| t.number.is_some()).count() as u64 + 1;
        let t = &self.tracks[ti];
        let number = t.number.unwrap_or(next_number);
        let dims = t.depack.dimensions().or(t.entry_dims);
        let (codec_id, private, kind) = match t.codec {
            Codec::Vp8 | Codec::Vp9 | Codec::H264 => {
                // Players take the size from the bitstream; the header only informs.
                let (width, height) = dims.unwrap_or((640, 480));
                let id = match t.codec {
                    Codec::Vp8 => "V_VP8",
                    Codec::Vp9 => "V_VP9",
                    _ => "V_MPEG4/ISO/AVC",
                };
                let private = if t.codec == Codec::H264 {
                    t.depack.avcc()
                } else {
                    None
                };
                (id, private, EntryKind::Video { width, height })
            }
            _ => (
                "A_OPUS",
                Some(mkv::opus_head(t.channels)),
                EntryKind::Audio {
                    sampling_frequency: 48_000.0,
                    channels: t.channels,
                },
            ),
        };
        let entry = TrackEntry {
            number,
            uid: t.uid,
            codec_id,
            codec_private: private.clone(),
            kind,
        };
        if self.writer.set_track(entry).is_err() {
            return false;
        }
        let t = &mut self.tracks[ti];
        t.number = Some(number);
        t.entry_dims = dims;
        t.entry_private = private;
        true
    }

    fn duration_ms(&self) -> f64 {
        self.tracks.iter().map(|t| t.end_ms).max().unwrap_or(0) as f64
    }

    fn close_cluster(&mut self) -> io::Result<()> {
        let duration = self.duration_ms();
        let r = self.writer.close_cluster(duration);
        self.fail(r)?;
        if self.now_us - self.last_sync_us >= self.config.fsync_interval.as_micros() as i64 {
            self.last_sync_us = self.now_us;
            let r = self.writer.sync();
            self.fail(r)?;
        }
        Ok(())
    }

    fn finalize(&mut self) -> io::Result<RecordingSummary> {
        if self.done {
            return Err(io::Error::other("recording finished"));
        }
        self.done = true;
        if let Some(kind) = self.failed {
            return Err(io::Error::new(kind, "recording failed earlier"));
        }
        for ti in 0..self.tracks.len() {
            self.release(ti, None);
        }
        self.mux(true)?;
        let duration = self.duration_ms();
        let r = self.writer.finish(duration);
        self.fail(r)?;
        Ok(RecordingSummary {
            duration_ms: self.writer.duration_ms() as u64,
            size_bytes: self.writer.len(),
            content_type: self.content_type(),
        })
    }

    /// The sink, once finished (tests read what was written).
    pub fn finish_into_sink(mut self) -> io::Result<(RecordingSummary, S)>
    where
        S: Default,
    {
        let summary = self.finalize()?;
        let sink = std::mem::take(self.writer.sink_mut());
        Ok((summary, sink))
    }
}

/// A recorder moves to the thread that runs it.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Recorder>();
};

impl<S: Sink> Drop for Recorder<S> {
    /// A recorder dropped without [`finish`](Recorder::finish) (a task that panicked, an
    /// early return) still closes its file properly, as far as it can.
    fn drop(&mut self) {
        if !self.done {
            let _ = self.finalize();
        }
    }
}

/// Where depacketized frames go: the track's pending queue, through the keyframe gate and
/// the clock.
struct FrameSink<'a> {
    video: bool,
    opus: bool,
    generation: u32,
    clock: &'a mut SourceClock,
    sender: &'a SenderClock,
    waiting_keyframe: &'a mut bool,
    pending: &'a mut VecDeque<PendingFrame>,
    pool: &'a mut Vec<Vec<u8>>,
    stats: &'a mut RecorderStats,
    pending_frames: &'a mut usize,
}

impl FrameSink<'_> {
    fn on(&mut self, o: Output<'_>) {
        match o {
            Output::Dropped { discardable } => {
                self.stats.frames_dropped += 1;
                if self.video && !discardable {
                    *self.waiting_keyframe = true;
                }
            }
            Output::Frame(f) => {
                if self.video {
                    if f.keyframe {
                        *self.waiting_keyframe = false;
                    } else if *self.waiting_keyframe {
                        self.stats.frames_dropped += 1;
                        return;
                    }
                }
                let rtp_ext = self.clock.unwrap(f.timestamp);
                let ts_us = self.clock.local_us(rtp_ext, self.sender);
                let duration_us = if self.opus {
                    depack::opus::duration_48k(f.data).unwrap_or(960) as i64 * 1000 / 48
                } else {
                    0
                };
                let mut data = self.pool.pop().unwrap_or_default();
                data.clear();
                data.extend_from_slice(f.data);
                self.pending.push_back(PendingFrame {
                    rtp_ext,
                    generation: self.generation,
                    ts_us,
                    keyframe: f.keyframe,
                    duration_us,
                    data,
                });
                *self.pending_frames += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::time::Duration;

    use bytes::Bytes;
    use rtc::rtp::Packet;
    use rtc::rtp::header::Header;

    use super::super::mkv::parse::parse;
    use super::*;

    type Mem = Recorder<Cursor<Vec<u8>>>;

    fn recorder() -> Mem {
        recorder_with(RecorderConfig::default())
    }

    fn recorder_with(config: RecorderConfig) -> Mem {
        Recorder::with_sink(Cursor::new(Vec::new()), SystemTime::UNIX_EPOCH, config)
    }

    fn packet(ssrc: u32, seq: u16, ts: u32, marker: bool, payload: Vec<u8>) -> Packet {
        Packet {
            header: Header {
                version: 2,
                marker,
                sequence_number: seq,
                timestamp: ts,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from(payload),
        }
    }

    /// A one-packet VP8 frame (descriptor S=1, then a frame tag).
    fn vp8(ssrc: u32, seq: u16, ts: u32, key: bool) -> Packet {
        let mut p = vec![0x10];
        if key {
            p.extend_from_slice(&[0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]);
        } else {
            p.extend_from_slice(&[0x51, 0x00, 0x00, 1, 2, 3]);
        }
        packet(ssrc, seq, ts, true, p)
    }

    fn opus(seq: u16, ts: u32) -> Packet {
        packet(7, seq, ts, false, vec![0xF8, 0xAA, 0xBB])
    }

    fn t0() -> Instant {
        static B: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *B.get_or_init(Instant::now)
    }

    /// Feeds `seconds` of 30 fps video (keyframes where `key(i)`) and 50 pps audio.
    fn feed(
        r: &mut Mem,
        v: TrackId,
        a: TrackId,
        from_s: f64,
        seconds: f64,
        key: impl Fn(u32) -> bool,
    ) {
        let frames = (seconds * 30.0) as u32;
        let first = (from_s * 30.0) as u32;
        for i in first..first + frames {
            let at = t0() + Duration::from_micros(i as u64 * 33_333);
            r.push_rtp(v, &vp8(1, i as u16, i * 3000, key(i)), at)
                .unwrap();
            if i % 3 != 2 {
                let j = i * 50 / 30;
                r.push_rtp(a, &opus(j as u16, j * 960), at).unwrap();
            }
        }
    }

    #[test]
    fn video_waits_for_a_keyframe_and_audio_does_not() {
        // Past the start (no wait for video), audio flows while video waits.
        let mut r = recorder_with(RecorderConfig {
            video_start_wait: Duration::ZERO,
            ..RecorderConfig::default()
        });
        let v = r.add_track(Codec::Vp8, 90_000, 0).unwrap();
        let a = r.add_track(Codec::Opus, 48_000, 2).unwrap();
        assert!(r.needs_keyframe(v));
        assert!(!r.needs_keyframe(a));
        // Deltas only for a second: a request is due, then throttled.
        feed(&mut r, v, a, 0.0, 1.0, |_| false);
        assert!(r.needs_keyframe(v));
        assert!(r.keyframe_request_due(v, t0()));
        assert!(!r.keyframe_request_due(v, t0() + Duration::from_millis(100)));
        assert!(r.keyframe_request_due(v, t0() + Duration::from_millis(600)));
        feed(&mut r, v, a, 1.0, 2.0, |i| i == 30);
        assert!(!r.needs_keyframe(v));
        let stats = r.stats();
        let (summary, sink) = r.finish_into_sink().unwrap();
        assert_eq!(summary.content_type, "video/webm");
        let p = parse(sink.get_ref());
        let video_blocks: Vec<_> = p.blocks.iter().filter(|b| b.0 == 2).collect();
        // Track 1 is audio (it came first); video starts at its keyframe, 1 s in.
        assert_eq!(p.tracks.len(), 2);
        assert!(video_blocks[0].2, "first video block is a keyframe");
        assert!(
            (video_blocks[0].1 - 1000).abs() <= 40,
            "{:?}",
            video_blocks[0]
        );
        assert_eq!(video_blocks.len(), 60);
        assert!(stats.frames_dropped >= 30);
        // Per track, strictly increasing times.
        for track in [1, 2] {
            let times: Vec<_> = p
                .blocks
                .iter()
                .filter(|b| b.0 == track)
                .map(|b| b.1)
                .collect();
            assert!(times.windows(2).all(|w| w[0] < w[1]));
        }
        assert!((p.duration - 3000.0).abs() < 60.0, "{}", p.duration);
    }

    /// Recording starts mid-call: video deltas for half a second before the keyframe asked
    /// for. The file starts at that keyframe, audio with it.
    #[test]
    fn the_file_starts_with_audio_and_video_together() {
        let mut r = recorder();
        let v = r.add_track(Codec::Vp8, 90_000, 0).unwrap();
        let a = r.add_track(Codec::Opus, 48_000, 2).unwrap();
        feed(&mut r, v, a, 0.0, 2.5, |i| i == 15);
        let (_, sink) = r.finish_into_sink().unwrap();
        let p = parse(sink.get_ref());
        let number = |codec: &str| p.tracks.iter().find(|t| t.1 == codec).unwrap().0;
        let (vn, an) = (number("V_VP8"), number("A_OPUS"));
        let first = |track| p.blocks.iter().find(|b| b.0 == track).unwrap().1;
        let (video, audio) = (first(vn), first(an));
        assert!(video <= 20, "video starts the file: {video}");
        assert!((audio - video).abs() <= 20, "audio {audio}, video {video}");
        assert!((p.duration - 2000.0).abs() < 60.0, "{}", p.duration);
        assert_eq!(p.blocks.iter().filter(|b| b.0 == vn).count(), 60);
        // A keyframe later than `video_start_wait`: audio from the start, video joins.
        let mut r = recorder();
        let v = r.add_track(Codec::Vp8, 90_000, 0).unwrap();
        let a = r.add_track(Codec::Opus, 48_000, 2).unwrap();
        feed(&mut r, v, a, 0.0, 3.0, |i| i == 45);
        let (_, sink) = r.finish_into_sink().unwrap();
        let p = parse(sink.get_ref());
        let number = |codec: &str| p.tracks.iter().find(|t| t.1 == codec).unwrap().0;
        let first = |track| p.blocks.iter().find(|b| b.0 == track).unwrap().1;
        assert_eq!(first(number("A_OPUS")), 0);
        assert!((first(number("V_VP8")) - 1500).abs() <= 40);
    }

    /// A camera that never sends a keyframe holds the start back only so long.
    #[test]
    fn audio_does_not_wait_forever_for_video() {
        let mut r = recorder();
        let v = r.add_track(Codec::Vp8, 90_000, 0).unwrap();
        let a = r.add_track(Codec::Opus, 48_000, 2).unwrap();
        feed(&mut r, v, a, 0.0, 5.0, |_| false);
        let (_, sink) = r.finish_into_sink().unwrap();
        let p = parse(sink.get_ref());
        assert!(p.blocks.iter().all(|b| b.0 == 1), "audio only");
        let first_audio = p.blocks.first().unwrap().1;
        assert_eq!(first_audio, 0);
        assert!((p.duration - 5000.0).abs() < 100.0, "{}", p.duration);
    }

    #[test]
    fn a_loss_waits_for_the_next_keyframe() {
        let mut r = recorder();
        let v = r.add_track(Codec::Vp8, 90_000, 0).unwrap();
        for i in 0..90u32 {
            if i == 40 {
                continue; // lost for good
            }
            let at = t0() + Duration::from_micros(i as u64 * 33_333);
            r.push_rtp(v, &vp8(1, i as u16, i * 3000, i % 60 == 0), at)
                .unwrap();
            if i == 50 {
                assert!(r.needs_keyframe(v));
            }
        }
        let (_, sink) = r.finish_into_sink().unwrap();
        let p = parse(sink.get_ref());
        // Frames 0..=39 and 60..90.
        assert_eq!(p.blocks.len(), 40 + 30);
    }

    #[test]
    fn a_new_ssrc_continues_the_timeline() {
        let mut r = recorder();
        let v = r.add_track(Codec::Vp8, 90_000, 0).unwrap();
        for i in 0..60u32 {
            let at = t0() + Duration::from_micros(i as u64 * 33_333);
            let (ssrc, seq, ts) = if i < 30 {
                (1, i as u16, i * 3000)
            } else {
                (2, 5000 + i as u16, 777 + i * 3000)
            };
            r.push_rtp(v, &vp8(ssrc, seq, ts, i == 0 || i == 30), at)
                .unwrap();
        }
        assert_eq!(r.stats().source_changes, 1);
        let (_, sink) = r.finish_into_sink().unwrap();
        let p = parse(sink.get_ref());
        assert_eq!(p.blocks.len(), 60);
        let times: Vec<_> = p.blocks.iter().map(|b| b.1).collect();
        assert!((times[30] - 1000).abs() <= 2, "{times:?}");
    }

    /// A Sender Report that moves a written video track back in time (its sender's clock
    /// corrected by more than RESYNC_US) does not pile the next frames a millisecond apart
    /// (players and muxers see a burst, or timestamps that collide): they catch up at half
    /// their spacing. A frame older than one written is dropped, not written behind it.
    #[test]
    fn a_clock_correction_backwards_keeps_frames_apart() {
        let mut r = recorder();
        let v = r.add_track(Codec::Vp8, 90_000, 0).unwrap();
        let ntp0: u64 = 1000 << 32;
        let frame_ntp = |i: u32| ntp0 + ((u64::from(i) << 32) / 30);
        let mut times = Vec::new();
        for i in 0..120u32 {
            let at = t0() + Duration::from_micros(u64::from(i) * 33_333);
            if i % 30 == 1 {
                // Reports agree with the arrivals until frame 61's, which says the frames were
                // captured 165 ms earlier than thought.
                let ntp = if i >= 61 {
                    frame_ntp(i) - (165u64 << 32) / 1000
                } else {
                    frame_ntp(i)
                };
                r.push_sender_report(v, 1, ntp, i * 3000);
            }
            r.push_rtp(v, &vp8(1, i as u16, i * 3000, i == 0), at)
                .unwrap();
            if i == 90 {
                // Frame 70 again, late: older than what is written.
                r.push_rtp(v, &vp8(1, 70, 70 * 3000, false), at).unwrap();
            }
            r.poll(at).unwrap();
        }
        let (_, sink) = r.finish_into_sink().unwrap();
        let p = parse(sink.get_ref());
        times.extend(p.blocks.iter().map(|b| b.1));
        assert!(
            times.windows(2).all(|w| w[1] - w[0] >= 15),
            "frames at least half their spacing apart: {times:?}"
        );
        assert!(times.len() >= 118, "{} frames", times.len());
    }

    #[test]
    fn a_cut_file_has_its_clusters_and_duration() {
        let mut r = recorder();
        let v = r.add_track(Codec::Vp8, 90_000, 0).unwrap();
        let a = r.add_track(Codec::Opus, 48_000, 2).unwrap();
        feed(&mut r, v, a, 0.0, 5.0, |i| i % 90 == 0);
        let written = r.written_duration_ms();
        let cut = r.writer.sink().get_ref().clone();
        std::mem::forget(r);
        let p = parse(&cut);
        assert_eq!(p.segment_size, None);
        assert!(p.clusters >= 3);
        assert_eq!(p.duration as u64, written);
        let last_block_end = p.blocks.iter().map(|b| b.1).max().unwrap();
        assert!(p.duration as i64 >= last_block_end);
        assert!(p.duration as i64 - last_block_end <= 40);
    }

    #[test]
    fn tracks_are_bounded() {
        let mut r = recorder();
        for _ in 0..MAX_TRACKS {
            r.add_track(Codec::Opus, 48_000, 1).unwrap();
        }
        assert_eq!(
            r.add_track(Codec::Opus, 48_000, 1),
            Err(AddTrackError::TooManyTracks)
        );
        let mut r = recorder();
        assert_eq!(
            r.add_track(Codec::Other, 90_000, 0),
            Err(AddTrackError::Unsupported(Codec::Other))
        );
        assert_eq!(
            r.add_track(Codec::Vp8, 0, 0),
            Err(AddTrackError::BadClockRate)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Garbage RTP (any payload, sequence, timestamp, SSRC, marker, on any track) never
        /// panics, and what gets written is a well-formed file.
        #[test]
        fn garbage_never_panics(
            packets in proptest::collection::vec(
                (0u8..4, proptest::num::u16::ANY, proptest::num::u32::ANY, 0u32..3,
                 proptest::bool::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..40)),
                0..300),
        ) {
            let mut r = recorder();
            let tracks = [
                r.add_track(Codec::Vp8, 90_000, 0).unwrap(),
                r.add_track(Codec::Vp9, 90_000, 0).unwrap(),
                r.add_track(Codec::H264, 90_000, 0).unwrap(),
                r.add_track(Codec::Opus, 48_000, 2).unwrap(),
            ];
            for (k, (t, seq, ts, ssrc, marker, payload)) in packets.into_iter().enumerate() {
                let at = t0() + Duration::from_millis(k as u64 * 7);
                let p = packet(ssrc, seq, ts, marker, payload);
                r.push_rtp(tracks[t as usize], &p, at).unwrap();
                r.push_sender_report(tracks[t as usize], ssrc, (k as u64) << 30, ts);
                let _ = r.keyframe_request_due(tracks[t as usize], at);
            }
            r.push_rtp(TrackId(42), &opus(1, 1), t0()).unwrap();
            let (_, sink) = r.finish_into_sink().unwrap();
            let bytes = sink.into_inner();
            if !bytes.is_empty() {
                let p = parse(&bytes);
                proptest::prop_assert!(p.segment_size.is_some());
            }
        }
    }
}
