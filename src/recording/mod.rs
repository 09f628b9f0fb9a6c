//! Recording: one participant's consultation media, from the RTP the SFU receives to one
//! WebM (VP8/VP9 + Opus) or Matroska (H264 + Opus) file, natively: no ffmpeg or gstreamer
//! in the loop.
//!
//! A [`Recorder`] is synchronous and owns its file: run it on a dedicated thread (or a
//! blocking task) fed through a bounded queue, so disk latency never stalls the media
//! path. Times always come in as arguments (`arrival`, `now`); the recorder reads no clock.
//!
//! Per track: a [`jitter`] buffer puts packets back in order (bounded: a slot array and a
//! wait window), a [`depack`]etizer rebuilds whole frames (an incomplete frame is dropped,
//! never written half), and a [`sync`] clock maps RTP timestamps onto the recording's single
//! timeline (by RTCP Sender Reports when given, else by the arrival of the track's first
//! packet). Frames wait in per-track queues for a short delay so that tracks interleave,
//! then go into ~1 s clusters that [`mkv`] appends whole.
//!
//! Invariants:
//! - a video track writes nothing until a keyframe, and after a frame it could not rebuild
//!   (loss) nothing until the next keyframe: a player never meets a frame whose reference
//!   is missing. [`Recorder::needs_keyframe`] says when to send a PLI; audio keeps flowing;
//! - a file starts with every track that is sending: at the start, video that waits for its
//!   first keyframe holds the file back (bounded by `video_start_wait`) and audio from
//!   before that keyframe is left out;
//! - block timestamps are strictly increasing per track, clusters are appended in time
//!   order, and the Info Duration follows the last complete cluster: a file cut anywhere
//!   (SIGKILL) plays up to its last cluster with the right duration;
//! - a track may be added at any time (a late camera): it enters the file's Tracks with its
//!   first block, which the writer rewrites in a reserved region before that block's
//!   cluster; a source (SSRC) change on a track continues the track's timeline;
//! - garbage RTP is dropped and counted, never a panic; memory per recorder is bounded
//!   (jitter slots, a pending-frame cap, one cluster in memory).
//!
//! Clusters are built in memory and appended whole with their exact size (one write per
//! second or so): only the Segment has an "unknown" size while recording. A SIGKILL
//! between writes leaves whole clusters; one during a write leaves a truncated last
//! cluster, which players read up to its end.
//!
//! Using it from the SFU: one recorder per recorded participant, on its own thread (or
//! `spawn_blocking` loop) that owns it and reads a bounded channel of
//! `Rtp { track, packet, arrival }`, `SenderReport { track, ssrc, ntp, rtp }` and `Stop`
//! messages; the publisher's task `try_send`s into it (dropping and counting when full,
//! never blocking) right where it fans packets out to subscribers, with the packet's
//! receive `Instant`. After each message the thread asks
//! [`Recorder::keyframe_request_due`] for each video track and, when true, sends the
//! publisher's task a keyframe request (its PLI is throttled again there); it calls
//! [`Recorder::poll`] with `Instant::now()` when the channel is quiet for ~200 ms, and
//! [`Recorder::finish`] on stop, session end or the participant leaving. Pick the file
//! name with [`container_for`] from the negotiated codecs. A recorder dropped without
//! `finish` finishes itself (blocking IO in `Drop`).
//!
//! In the server: [`worker`] runs a recorder on its own thread behind a bounded queue and a
//! [`worker::RecordTap`] the publisher's task pushes into; [`Recordings`] keeps the rows, the
//! files under `<media_dir>/recordings/<session>/`, access, repair after a crash
//! ([`inspect`] reads a cut file's duration back) and retention. The SFU's rooms decide who
//! is recorded (`crate::sfu::room`).
//!
//! Why not a crate: `webm` wraps libwebm (C++); the pure-Rust muxers on crates.io
//! (`ebml-webm`, `oxideav-mkv`, `mkv`) are early 0.x releases, and none writes a live file
//! whose Segment size stays unknown while Duration and Tracks are rewritten in place, the
//! layout the crash safety rests on. The EBML subset needed is small ([`ebml`]).

pub mod depack;
pub mod ebml;
pub mod inspect;
pub mod jitter;
pub mod mkv;
mod recorder;
mod service;
pub mod sync;
pub mod worker;

use std::time::Duration;

pub use mkv::Sink;
pub use recorder::Recorder;
pub use service::{ActiveRecording, Closing, Consent, Recordings};

use crate::codec::Codec;

/// Tracks one recorder accepts (a participant sends audio, camera, maybe a screen).
pub const MAX_TRACKS: usize = 8;

/// A track of a [`Recorder`], from [`Recorder::add_track`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackId(pub(crate) u8);

/// Tuning; the defaults suit WebRTC calls.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// How long a gap in sequence numbers is waited for before it counts as lost.
    pub jitter_window: Duration,
    /// Jitter buffer slots (packets) of a video track; also the most it waits, in packets.
    pub video_jitter_packets: usize,
    pub audio_jitter_packets: usize,
    /// Frames are held this long behind the newest arrival so that tracks interleave in
    /// time order. Must exceed `jitter_window`.
    pub mux_delay: Duration,
    /// Target cluster length: what a SIGKILL may lose at most, roughly.
    pub cluster_duration: Duration,
    /// A video keyframe starts a new cluster when the current one is at least this long.
    pub keyframe_cluster_min: Duration,
    /// At most one fsync per this interval (clusters are written as they complete).
    pub fsync_interval: Duration,
    /// Throttle of [`Recorder::keyframe_request_due`].
    pub keyframe_request_interval: Duration,
    /// Frames held across all tracks before they are written regardless of the delay.
    pub max_pending_frames: usize,
    /// Nothing is written before this much time passed since the first packet, unless
    /// Sender Reports already map every track: the first reports (or the slower track's
    /// first packets) can still place the start of each track before it is on disk.
    pub startup_hold: Duration,
    /// At the start, a video track that has received packets but no keyframe yet holds the
    /// file back this long (its keyframe was asked for); once it comes, audio from before it
    /// is left out, so that the file starts with audio and video together. Past this wait
    /// the file starts without it (it joins later, like a camera turned on late).
    pub video_start_wait: Duration,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            jitter_window: Duration::from_millis(150),
            video_jitter_packets: 1024,
            audio_jitter_packets: 128,
            mux_delay: Duration::from_millis(350),
            cluster_duration: Duration::from_millis(1000),
            keyframe_cluster_min: Duration::from_millis(250),
            fsync_interval: Duration::from_secs(1),
            keyframe_request_interval: Duration::from_millis(500),
            max_pending_frames: 4096,
            startup_hold: Duration::from_millis(1000),
            video_start_wait: Duration::from_millis(800),
        }
    }
}

/// What a finished recording is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSummary {
    pub duration_ms: u64,
    pub size_bytes: u64,
    /// `video/webm`, `audio/webm` or `video/x-matroska`.
    pub content_type: &'static str,
}

/// Counters for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecorderStats {
    pub packets: u64,
    /// Dropped before the jitter buffer: unknown track, malformed header.
    pub packets_rejected: u64,
    pub duplicates: u64,
    pub late: u64,
    pub lost: u64,
    pub frames_written: u64,
    /// Incomplete frames, and video frames skipped while waiting for a keyframe.
    pub frames_dropped: u64,
    pub keyframes_requested: u64,
    pub source_changes: u64,
    pub clusters: u64,
}

/// Why a track was not added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddTrackError {
    #[error("codec {0:?} cannot be recorded")]
    Unsupported(Codec),
    #[error("a recorder takes at most {MAX_TRACKS} tracks")]
    TooManyTracks,
    #[error("clock rate must be positive")]
    BadClockRate,
}

/// The container a set of codecs is recorded in: pick the file name before
/// [`Recorder::create`].
pub fn container_for(codecs: impl IntoIterator<Item = Codec>) -> (&'static str, &'static str) {
    let mut video = false;
    for c in codecs {
        if c == Codec::H264 {
            return ("mkv", "video/x-matroska");
        }
        video |= c.is_video();
    }
    if video {
        ("webm", "video/webm")
    } else {
        ("webm", "audio/webm")
    }
}
