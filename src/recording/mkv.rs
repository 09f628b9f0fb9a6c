//! The file layout of a recording: a Matroska (or its WebM subset) file written so that it
//! stays playable at every moment, including after the process is killed.
//!
//! ```text
//! EBML header (DocType webm | matroska)
//! Segment, size "unknown" (patched on finish)
//!   SeekHead     fixed reserved region, rewritten on finish (adds Cues)
//!   Info         TimestampScale 1 ms, DateUTC, Duration (8-byte float, updated in place
//!                after every cluster)
//!   Tracks       fixed reserved region: rewritten in place (same length, padded with a
//!                Void) when a track first appears or learns its parameters
//!   Cluster*     each built in memory and appended whole, with its exact size
//!   Cues         on finish
//! ```
//!
//! Invariants that make a cut file play up to its last cluster:
//! - nothing refers forward to data not yet written: the Segment has an unknown size until
//!   finish, the SeekHead lists only Info and Tracks until finish;
//! - the Tracks region on disk describes every track that has a block on disk: it is
//!   rewritten *before* the cluster holding a new track's first block is appended;
//! - Duration on disk is at most the end of the last complete cluster: it is updated
//!   *after* the cluster is appended, by rewriting 8 bytes in place;
//! - every in-place rewrite keeps the length of what it replaces.

use std::io::{self, Seek, SeekFrom, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use super::ebml::{self, *};

// Element ids (Matroska specification, RFC 9559).
const EBML: u32 = 0x1A45DFA3;
const EBML_VERSION: u32 = 0x4286;
const EBML_READ_VERSION: u32 = 0x42F7;
const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
const DOC_TYPE: u32 = 0x4282;
const DOC_TYPE_VERSION: u32 = 0x4287;
const DOC_TYPE_READ_VERSION: u32 = 0x4285;
const SEGMENT: u32 = 0x18538067;
const SEEK_HEAD: u32 = 0x114D9B74;
const SEEK: u32 = 0x4DBB;
const SEEK_ID: u32 = 0x53AB;
const SEEK_POSITION: u32 = 0x53AC;
const INFO: u32 = 0x1549A966;
const TIMESTAMP_SCALE: u32 = 0x2AD7B1;
const MUXING_APP: u32 = 0x4D80;
const WRITING_APP: u32 = 0x5741;
const DATE_UTC: u32 = 0x4461;
const DURATION: u32 = 0x4489;
const TRACKS: u32 = 0x1654AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_UID: u32 = 0x73C5;
const TRACK_TYPE: u32 = 0x83;
const FLAG_LACING: u32 = 0x9C;
const LANGUAGE: u32 = 0x22B59C;
const CODEC_ID: u32 = 0x86;
const CODEC_PRIVATE: u32 = 0x63A2;
const CODEC_DELAY: u32 = 0x56AA;
const SEEK_PRE_ROLL: u32 = 0x56BB;
const VIDEO: u32 = 0xE0;
const PIXEL_WIDTH: u32 = 0xB0;
const PIXEL_HEIGHT: u32 = 0xBA;
const AUDIO: u32 = 0xE1;
const SAMPLING_FREQUENCY: u32 = 0xB5;
const CHANNELS: u32 = 0x9F;
const CLUSTER: u32 = 0x1F43B675;
const CLUSTER_TIMESTAMP: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;
const CUES: u32 = 0x1C53BB6B;
const CUE_POINT: u32 = 0xBB;
const CUE_TIME: u32 = 0xB3;
const CUE_TRACK_POSITIONS: u32 = 0xB7;
const CUE_TRACK: u32 = 0xF7;
const CUE_CLUSTER_POSITION: u32 = 0xF1;

/// Bytes kept for the SeekHead (three entries need about 70).
const SEEK_HEAD_REGION: usize = 128;
/// Bytes kept for Tracks: room for [`super::MAX_TRACKS`] entries with parameter sets.
pub const TRACKS_REGION: usize = 8192;

/// Milliseconds: the TimestampScale in nanoseconds.
const TIMESTAMP_SCALE_NS: u64 = 1_000_000;

/// The Matroska epoch (2001-01-01T00:00:00Z) in Unix seconds, for DateUTC.
const MATROSKA_EPOCH_UNIX: i64 = 978_307_200;

/// Where the recording goes: a file, or memory in tests.
pub trait Sink: Write + Seek {
    /// Makes what was written durable (fsync on files).
    fn sync(&mut self) -> io::Result<()>;
}

impl Sink for std::fs::File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

impl Sink for io::Cursor<Vec<u8>> {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocType {
    Webm,
    Matroska,
}

/// What the Tracks element says of one track.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackEntry {
    pub number: u64,
    pub uid: u64,
    pub codec_id: &'static str,
    pub codec_private: Option<Vec<u8>>,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EntryKind {
    Video {
        width: u16,
        height: u16,
    },
    Audio {
        sampling_frequency: f64,
        channels: u8,
    },
}

/// A cluster being assembled in memory.
struct Cluster {
    buf: Vec<u8>,
    timestamp_ms: i64,
    /// The first keyframe block of the cue track in this cluster.
    cue: Option<(u64, i64)>,
}

pub struct MkvWriter<S: Sink> {
    sink: S,
    doc: DocType,
    date_utc_ns: i64,
    header_written: bool,
    /// Absolute offsets.
    segment_size_at: u64,
    segment_data_at: u64,
    seek_head_at: u64,
    info_at: u64,
    duration_at: u64,
    tracks_at: u64,
    end: u64,
    tracks: Vec<TrackEntry>,
    tracks_dirty: bool,
    cluster: Option<Cluster>,
    /// The track cues point at: the first video track, else the first track.
    cue_track: Option<u64>,
    cues: Vec<(i64, u64, u64)>,
    duration_ms: f64,
    scratch: Vec<u8>,
    spare: Vec<u8>,
    clusters: u64,
}

impl<S: Sink> MkvWriter<S> {
    pub fn new(sink: S, start: SystemTime) -> Self {
        let unix_ns = match start.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos().min(i64::MAX as u128) as i64,
            Err(e) => -(e.duration().as_nanos().min(i64::MAX as u128) as i64),
        };
        MkvWriter {
            sink,
            doc: DocType::Webm,
            date_utc_ns: unix_ns.saturating_sub(MATROSKA_EPOCH_UNIX * 1_000_000_000),
            header_written: false,
            segment_size_at: 0,
            segment_data_at: 0,
            seek_head_at: 0,
            info_at: 0,
            duration_at: 0,
            tracks_at: 0,
            end: 0,
            tracks: Vec::new(),
            tracks_dirty: false,
            cluster: None,
            cue_track: None,
            cues: Vec::new(),
            duration_ms: 0.0,
            scratch: Vec::with_capacity(TRACKS_REGION),
            spare: Vec::with_capacity(64 * 1024),
            clusters: 0,
        }
    }

    /// Settles the DocType; only before anything was written.
    pub fn set_doc_type(&mut self, doc: DocType) {
        if !self.header_written {
            self.doc = doc;
        }
    }

    pub fn doc_type(&self) -> DocType {
        self.doc
    }

    /// Bytes written so far (the file's length).
    pub fn len(&self) -> u64 {
        self.end
    }

    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// Duration on disk, in ms.
    pub fn duration_ms(&self) -> f64 {
        self.duration_ms
    }

    pub fn clusters(&self) -> u64 {
        self.clusters
    }

    pub fn has_track(&self, number: u64) -> bool {
        self.tracks.iter().any(|t| t.number == number)
    }

    /// Adds or replaces a track entry; written before the next cluster. Fails (and changes
    /// nothing) when the entries would not fit the reserved region.
    pub fn set_track(&mut self, entry: TrackEntry) -> Result<(), TracksFull> {
        let mut tracks = self.tracks.clone();
        match tracks.iter_mut().find(|t| t.number == entry.number) {
            Some(t) if *t == entry => return Ok(()),
            Some(t) => *t = entry,
            None => tracks.push(entry),
        }
        let mut probe = Vec::new();
        if !encode_tracks(&mut probe, &tracks) {
            return Err(TracksFull);
        }
        self.tracks = tracks;
        self.tracks_dirty = true;
        // Cues point at the first video track (keyframes), else at the first track.
        self.cue_track = self
            .tracks
            .iter()
            .find(|t| matches!(t.kind, EntryKind::Video { .. }))
            .or(self.tracks.first())
            .map(|t| t.number);
        Ok(())
    }

    /// The open cluster's timestamp, if one is open.
    pub fn cluster_timestamp(&self) -> Option<i64> {
        self.cluster.as_ref().map(|c| c.timestamp_ms)
    }

    pub fn cluster_bytes(&self) -> usize {
        self.cluster.as_ref().map_or(0, |c| c.buf.len())
    }

    pub fn open_cluster(&mut self, timestamp_ms: i64) {
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        ebml::write_id(&mut buf, CLUSTER);
        buf.extend_from_slice(&UNKNOWN_SIZE_8);
        write_uint(&mut buf, CLUSTER_TIMESTAMP, timestamp_ms.max(0) as u64);
        self.cluster = Some(Cluster {
            buf,
            timestamp_ms: timestamp_ms.max(0),
            cue: None,
        });
    }

    /// Appends a SimpleBlock to the open cluster. `timestamp_ms` must be within
    /// [cluster, cluster + 32767]; the caller keeps it so.
    pub fn add_block(&mut self, track: u64, timestamp_ms: i64, keyframe: bool, data: &[u8]) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let rel = (timestamp_ms - c.timestamp_ms).clamp(0, i16::MAX as i64) as i16;
        let mut head = [0u8; 12];
        let mut n = 0;
        // Track number as a vint (tracks are 1..=126: one byte).
        head[n] = 0x80 | (track as u8 & 0x7F);
        n += 1;
        head[n..n + 2].copy_from_slice(&rel.to_be_bytes());
        n += 2;
        head[n] = if keyframe { 0x80 } else { 0x00 };
        n += 1;
        ebml::write_id(&mut c.buf, SIMPLE_BLOCK);
        write_size(&mut c.buf, (n + data.len()) as u64);
        c.buf.extend_from_slice(&head[..n]);
        c.buf.extend_from_slice(data);
        if keyframe && c.cue.is_none() && Some(track) == self.cue_track {
            c.cue = Some((track, timestamp_ms));
        }
    }

    /// Appends the open cluster to the file (writing the header or the Tracks first when
    /// needed), then records `duration_ms` as the file's duration.
    pub fn close_cluster(&mut self, duration_ms: f64) -> io::Result<()> {
        let Some(mut c) = self.cluster.take() else {
            return Ok(());
        };
        self.write_header_and_tracks()?;
        let size = (c.buf.len() - 12) as u64;
        c.buf[4..12].copy_from_slice(&size8(size));
        let at = self.end;
        self.append_buf(&c.buf)?;
        self.clusters += 1;
        if let Some((track, time)) = c.cue {
            self.cues.push((time, track, at - self.segment_data_at));
        }
        self.spare = c.buf;
        self.set_duration(duration_ms)
    }

    fn write_header_and_tracks(&mut self) -> io::Result<()> {
        if !self.header_written {
            self.write_header()?;
        } else if self.tracks_dirty {
            let mut buf = std::mem::take(&mut self.scratch);
            buf.clear();
            if !encode_tracks(&mut buf, &self.tracks) {
                // set_track checked the size; keep what is on disk.
                self.scratch = buf;
                return Ok(());
            }
            let r = self.write_at(self.tracks_at, &buf);
            self.scratch = buf;
            r?;
        }
        self.tracks_dirty = false;
        Ok(())
    }

    fn write_header(&mut self) -> io::Result<()> {
        let mut b = Vec::with_capacity(512 + TRACKS_REGION);
        let at = begin_master(&mut b, EBML);
        write_uint(&mut b, EBML_VERSION, 1);
        write_uint(&mut b, EBML_READ_VERSION, 1);
        write_uint(&mut b, EBML_MAX_ID_LENGTH, 4);
        write_uint(&mut b, EBML_MAX_SIZE_LENGTH, 8);
        write_str(
            &mut b,
            DOC_TYPE,
            match self.doc {
                DocType::Webm => "webm",
                DocType::Matroska => "matroska",
            },
        );
        write_uint(&mut b, DOC_TYPE_VERSION, 4);
        write_uint(&mut b, DOC_TYPE_READ_VERSION, 2);
        end_master(&mut b, at);
        ebml::write_id(&mut b, SEGMENT);
        self.segment_size_at = b.len() as u64;
        b.extend_from_slice(&UNKNOWN_SIZE_8);
        self.segment_data_at = b.len() as u64;

        self.seek_head_at = b.len() as u64;
        b.resize(b.len() + SEEK_HEAD_REGION, 0);

        self.info_at = b.len() as u64;
        let at = begin_master(&mut b, INFO);
        write_uint(&mut b, TIMESTAMP_SCALE, TIMESTAMP_SCALE_NS);
        write_str(&mut b, MUXING_APP, "relais");
        write_str(&mut b, WRITING_APP, "relais");
        write_int(&mut b, DATE_UTC, self.date_utc_ns);
        write_float(&mut b, DURATION, self.duration_ms.max(1.0));
        self.duration_at = (b.len() - 8) as u64;
        end_master(&mut b, at);

        self.tracks_at = b.len() as u64;
        if !encode_tracks(&mut b, &self.tracks) {
            return Err(io::Error::other("tracks do not fit their reserved region"));
        }
        // The SeekHead, now that Info and Tracks have their places.
        let mut sh = Vec::with_capacity(SEEK_HEAD_REGION);
        self.encode_seek_head(&mut sh, None);
        let s = self.seek_head_at as usize;
        b[s..s + SEEK_HEAD_REGION].copy_from_slice(&sh);

        self.end = 0;
        self.sink.seek(SeekFrom::Start(0))?;
        self.append_buf(&b)?;
        self.header_written = true;
        Ok(())
    }

    /// SeekHead padded to exactly its region.
    fn encode_seek_head(&self, out: &mut Vec<u8>, cues_at: Option<u64>) {
        let start = out.len();
        for widen in [0, 1] {
            out.truncate(start);
            let at = begin_master(out, SEEK_HEAD);
            let rel = |abs: u64| abs - self.segment_data_at;
            let mut entries = vec![(INFO, rel(self.info_at)), (TRACKS, rel(self.tracks_at))];
            if let Some(c) = cues_at {
                entries.push((CUES, rel(c)));
            }
            for (i, (id, pos)) in entries.into_iter().enumerate() {
                let s = begin_master(out, SEEK);
                write_bytes(
                    out,
                    SEEK_ID,
                    &id.to_be_bytes()[(id.leading_zeros() / 8) as usize..],
                );
                // A one-byte remainder cannot be a Void: widen one position by a byte.
                let natural = (8 - pos.leading_zeros() as usize / 8).max(1);
                let len = if i == 0 { natural + widen } else { natural };
                write_uint_min_len(out, SEEK_POSITION, pos, len);
                end_master(out, s);
            }
            end_master(out, at);
            if write_void(out, SEEK_HEAD_REGION - (out.len() - start)) {
                return;
            }
        }
    }

    /// Records the duration on disk (in place).
    pub fn set_duration(&mut self, duration_ms: f64) -> io::Result<()> {
        self.duration_ms = duration_ms.max(self.duration_ms);
        if self.header_written {
            let bytes = self.duration_ms.max(1.0).to_be_bytes();
            self.write_at(self.duration_at, &bytes)?;
        }
        Ok(())
    }

    /// Appends Cues, completes the SeekHead and patches the Segment size. Nothing is
    /// written when no cluster ever was.
    pub fn finish(&mut self, duration_ms: f64) -> io::Result<()> {
        self.close_cluster(duration_ms)?;
        if !self.header_written {
            return Ok(());
        }
        let cues_at = if self.cues.is_empty() {
            None
        } else {
            let mut b = Vec::with_capacity(self.cues.len() * 16 + 16);
            let at = begin_master(&mut b, CUES);
            for &(time, track, pos) in &self.cues {
                let p = begin_master(&mut b, CUE_POINT);
                write_uint(&mut b, CUE_TIME, time.max(0) as u64);
                let t = begin_master(&mut b, CUE_TRACK_POSITIONS);
                write_uint(&mut b, CUE_TRACK, track);
                write_uint(&mut b, CUE_CLUSTER_POSITION, pos);
                end_master(&mut b, t);
                end_master(&mut b, p);
            }
            end_master(&mut b, at);
            let cues_at = self.end;
            self.append_buf(&b)?;
            Some(cues_at)
        };
        let mut sh = Vec::with_capacity(SEEK_HEAD_REGION);
        self.encode_seek_head(&mut sh, cues_at);
        self.write_at(self.seek_head_at, &sh)?;
        let segment_size = self.end - self.segment_data_at;
        self.write_at(self.segment_size_at, &size8(segment_size))?;
        self.set_duration(duration_ms)?;
        self.sink.flush()?;
        self.sink.sync()
    }

    pub fn sync(&mut self) -> io::Result<()> {
        self.sink.flush()?;
        self.sink.sync()
    }

    fn append_buf(&mut self, b: &[u8]) -> io::Result<()> {
        self.sink.write_all(b)?;
        self.end += b.len() as u64;
        Ok(())
    }

    fn write_at(&mut self, at: u64, b: &[u8]) -> io::Result<()> {
        self.sink.seek(SeekFrom::Start(at))?;
        let r = self.sink.write_all(b);
        self.sink.seek(SeekFrom::Start(self.end))?;
        r
    }

    pub fn into_sink(self) -> S {
        self.sink
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }
}

/// The track entries don't fit the reserved Tracks region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TracksFull;

/// Tracks plus a Void, exactly [`TRACKS_REGION`] bytes; false when they don't fit.
fn encode_tracks(out: &mut Vec<u8>, tracks: &[TrackEntry]) -> bool {
    let start = out.len();
    let at = begin_master(out, TRACKS);
    for t in tracks {
        let e = begin_master(out, TRACK_ENTRY);
        write_uint(out, TRACK_NUMBER, t.number);
        write_uint(out, TRACK_UID, t.uid);
        let kind = match t.kind {
            EntryKind::Video { .. } => 1,
            EntryKind::Audio { .. } => 2,
        };
        write_uint(out, TRACK_TYPE, kind);
        write_uint(out, FLAG_LACING, 0);
        write_str(out, LANGUAGE, "und");
        write_str(out, CODEC_ID, t.codec_id);
        if let Some(p) = &t.codec_private {
            write_bytes(out, CODEC_PRIVATE, p);
        }
        match t.kind {
            EntryKind::Video { width, height } => {
                let v = begin_master(out, VIDEO);
                write_uint(out, PIXEL_WIDTH, width as u64);
                write_uint(out, PIXEL_HEIGHT, height as u64);
                end_master(out, v);
            }
            EntryKind::Audio {
                sampling_frequency,
                channels,
            } => {
                if t.codec_id == "A_OPUS" {
                    write_uint(out, CODEC_DELAY, 0);
                    // 80 ms: what decoders need to converge after a seek (RFC 7845 §4.6).
                    write_uint(out, SEEK_PRE_ROLL, 80_000_000);
                }
                let a = begin_master(out, AUDIO);
                write_float(out, SAMPLING_FREQUENCY, sampling_frequency);
                write_uint(out, CHANNELS, channels as u64);
                end_master(out, a);
            }
        }
        end_master(out, e);
    }
    end_master(out, at);
    let used = out.len() - start;
    if used > TRACKS_REGION || TRACKS_REGION - used == 1 {
        out.truncate(start);
        return false;
    }
    write_void(out, TRACKS_REGION - used)
}

/// OpusHead (RFC 7845 §5.1), the CodecPrivate of an A_OPUS track: no pre-skip (WebRTC
/// streams start on a packet boundary), mapping family 0.
pub fn opus_head(channels: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(19);
    v.extend_from_slice(b"OpusHead");
    v.push(1);
    v.push(channels.clamp(1, 2));
    v.extend_from_slice(&0u16.to_le_bytes());
    v.extend_from_slice(&48_000u32.to_le_bytes());
    v.extend_from_slice(&0i16.to_le_bytes());
    v.push(0);
    v
}

#[cfg(test)]
pub(crate) mod parse {
    //! A test-only reader of what the writer produces.

    use super::super::ebml::reader::*;
    use super::*;

    #[derive(Debug, Default)]
    pub struct Parsed {
        pub doc_type: String,
        /// None: unknown size.
        pub segment_size: Option<u64>,
        pub duration: f64,
        /// (number, codec id, codec private length)
        pub tracks: Vec<(u64, String, usize)>,
        /// (track, absolute ms, keyframe, bytes)
        pub blocks: Vec<(u64, i64, bool, usize)>,
        pub clusters: usize,
        pub cues: usize,
        pub seek_ids: Vec<u32>,
    }

    pub fn parse(b: &[u8]) -> Parsed {
        let mut p = Parsed::default();
        let ebml = read_element(b, 0).expect("EBML header");
        assert_eq!(ebml.id, EBML);
        let body = ebml.offset + ebml.header_len;
        for e in children(b, body, body + ebml.size.unwrap() as usize) {
            if e.id == DOC_TYPE {
                let s = e.offset + e.header_len;
                p.doc_type = String::from_utf8_lossy(&b[s..s + e.size.unwrap() as usize]).into();
            }
        }
        let seg_at = body + ebml.size.unwrap() as usize;
        let seg = read_element(b, seg_at).expect("Segment");
        assert_eq!(seg.id, SEGMENT);
        p.segment_size = seg.size;
        let data = seg_at + seg.header_len;
        let end = seg.size.map_or(b.len(), |s| data + s as usize);
        assert!(end <= b.len(), "segment runs past the file");
        for e in children(b, data, end) {
            let s = e.offset + e.header_len;
            let Some(size) = e.size else { continue };
            let e_end = s + size as usize;
            assert!(e_end <= b.len(), "element {:x} runs past the file", e.id);
            match e.id {
                SEEK_HEAD => {
                    for seek in children(b, s, e_end) {
                        let ss = seek.offset + seek.header_len;
                        let kids = children(b, ss, ss + seek.size.unwrap() as usize);
                        let id = kids.iter().find(|k| k.id == SEEK_ID).unwrap();
                        let pos = kids.iter().find(|k| k.id == SEEK_POSITION).unwrap();
                        let id = uint(b, id) as u32;
                        let target = read_element(b, data + uint(b, pos) as usize).unwrap();
                        assert_eq!(target.id, id, "SeekHead points at the wrong place");
                        p.seek_ids.push(id);
                    }
                }
                INFO => {
                    for k in children(b, s, e_end) {
                        if k.id == DURATION {
                            let ks = k.offset + k.header_len;
                            p.duration = f64::from_be_bytes(b[ks..ks + 8].try_into().unwrap());
                        }
                    }
                }
                TRACKS => {
                    for t in children(b, s, e_end) {
                        let ts = t.offset + t.header_len;
                        let kids = children(b, ts, ts + t.size.unwrap() as usize);
                        let num = uint(b, kids.iter().find(|k| k.id == TRACK_NUMBER).unwrap());
                        let codec = kids.iter().find(|k| k.id == CODEC_ID).unwrap();
                        let cs = codec.offset + codec.header_len;
                        let id = String::from_utf8_lossy(&b[cs..cs + codec.size.unwrap() as usize]);
                        let private = kids
                            .iter()
                            .find(|k| k.id == CODEC_PRIVATE)
                            .map_or(0, |k| k.size.unwrap() as usize);
                        p.tracks.push((num, id.into(), private));
                    }
                }
                CLUSTER => {
                    p.clusters += 1;
                    let mut base = 0;
                    for k in children(b, s, e_end) {
                        let ks = k.offset + k.header_len;
                        match k.id {
                            CLUSTER_TIMESTAMP => base = uint(b, &k) as i64,
                            SIMPLE_BLOCK => {
                                let track = (b[ks] & 0x7F) as u64;
                                let rel = i16::from_be_bytes([b[ks + 1], b[ks + 2]]) as i64;
                                let key = b[ks + 3] & 0x80 != 0;
                                let len = k.size.unwrap() as usize - 4;
                                p.blocks.push((track, base + rel, key, len));
                            }
                            _ => {}
                        }
                    }
                }
                CUES => p.cues = children(b, s, e_end).len(),
                _ => {}
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::parse::parse;
    use super::*;

    fn writer() -> MkvWriter<io::Cursor<Vec<u8>>> {
        MkvWriter::new(io::Cursor::new(Vec::new()), SystemTime::UNIX_EPOCH)
    }

    fn video(number: u64) -> TrackEntry {
        TrackEntry {
            number,
            uid: 7,
            codec_id: "V_VP8",
            codec_private: None,
            kind: EntryKind::Video {
                width: 320,
                height: 240,
            },
        }
    }

    fn audio(number: u64) -> TrackEntry {
        TrackEntry {
            number,
            uid: 9,
            codec_id: "A_OPUS",
            codec_private: Some(opus_head(2)),
            kind: EntryKind::Audio {
                sampling_frequency: 48_000.0,
                channels: 2,
            },
        }
    }

    #[test]
    fn nothing_is_written_before_a_cluster() {
        let mut w = writer();
        w.set_track(audio(1)).unwrap();
        w.finish(0.0).unwrap();
        assert!(w.into_sink().into_inner().is_empty());
    }

    #[test]
    fn every_prefix_at_a_cluster_boundary_is_a_whole_file() {
        let mut w = writer();
        w.set_track(audio(1)).unwrap();
        let mut snapshots = Vec::new();
        for c in 0..3i64 {
            w.open_cluster(c * 1000);
            for k in 0..50 {
                w.add_block(1, c * 1000 + k * 20, true, &[0xF8, 1, 2, 3]);
            }
            if c == 1 {
                // A camera joins: its track is written before its first cluster.
                w.set_track(video(2)).unwrap();
                w.add_block(2, 1500, true, &[0x10, 0, 0]);
            }
            w.close_cluster(((c + 1) * 1000) as f64).unwrap();
            snapshots.push(w.sink().get_ref().clone());
        }
        for (i, snap) in snapshots.iter().enumerate() {
            let p = parse(snap);
            assert_eq!(p.doc_type, "webm");
            assert_eq!(p.segment_size, None, "unknown size until finish");
            assert_eq!(p.clusters, i + 1);
            assert_eq!(p.duration, ((i + 1) * 1000) as f64);
            assert_eq!(p.seek_ids, vec![INFO, TRACKS]);
            let tracks_needed = if i >= 1 { 2 } else { 1 };
            assert_eq!(p.tracks.len(), tracks_needed);
        }
        w.finish(3000.0).unwrap();
        let b = w.into_sink().into_inner();
        let p = parse(&b);
        assert!(p.segment_size.is_some());
        assert_eq!(p.seek_ids, vec![INFO, TRACKS, CUES]);
        // Cues: the video track's keyframe cluster only (video is the cue track once it
        // exists), plus the audio cluster before it.
        assert!(p.cues >= 1);
        assert_eq!(p.blocks.len(), 151);
        assert_eq!(p.tracks[1], (2, "V_VP8".into(), 0));
        assert_eq!(p.tracks[0], (1, "A_OPUS".into(), 19));
    }

    #[test]
    fn matroska_doc_type_and_private_data() {
        let mut w = writer();
        w.set_doc_type(DocType::Matroska);
        let mut v = video(1);
        v.codec_id = "V_MPEG4/ISO/AVC";
        v.codec_private = Some(vec![1, 0x42, 0xC0, 0x0D, 0xFF, 0xE1]);
        w.set_track(v).unwrap();
        w.open_cluster(0);
        w.add_block(1, 0, true, &[0, 0, 0, 1, 0x65]);
        w.finish(33.0).unwrap();
        let p = parse(w.sink().get_ref());
        assert_eq!(p.doc_type, "matroska");
        assert_eq!(p.tracks, vec![(1, "V_MPEG4/ISO/AVC".into(), 6)]);
        assert_eq!(p.blocks, vec![(1, 0, true, 5)]);
        assert_eq!(p.cues, 1);
    }

    #[test]
    fn tracks_that_do_not_fit_are_refused() {
        let mut w = writer();
        let mut v = video(1);
        v.codec_private = Some(vec![0; TRACKS_REGION]);
        assert_eq!(w.set_track(v), Err(TracksFull));
        w.set_track(video(1)).unwrap();
    }

    #[test]
    fn seek_head_fills_its_region_whatever_the_positions() {
        // Positions of every byte length, and the one-byte remainder case.
        for info in [0u64, 200, 70_000, 1 << 30, 1 << 40] {
            let mut w = writer();
            w.segment_data_at = 0;
            w.info_at = info;
            w.tracks_at = info + 100;
            for cues in [None, Some(info + 9_999), Some(u64::MAX >> 9)] {
                let mut out = Vec::new();
                w.encode_seek_head(&mut out, cues);
                assert_eq!(out.len(), SEEK_HEAD_REGION);
            }
        }
    }
}
