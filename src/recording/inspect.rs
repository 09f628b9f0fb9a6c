//! Reads back what a recording file says about itself: the Duration in its Info (which the
//! writer keeps at the end of the last complete cluster, see [`super::mkv`]) and whether it
//! holds video. Used at start-up to repair the rows of recordings a killed process left.
//!
//! Only the head of the file is read (EBML header, SeekHead, Info, Tracks: a few KiB); every
//! length is checked, so a truncated or foreign file yields `None`, never a panic.

use std::io::Read;
use std::path::Path;

const EBML: u32 = 0x1A45DFA3;
const DOC_TYPE: u32 = 0x4282;
const SEGMENT: u32 = 0x18538067;
const INFO: u32 = 0x1549A966;
const TIMESTAMP_SCALE: u32 = 0x2AD7B1;
const DURATION: u32 = 0x4489;
const TRACKS: u32 = 0x1654AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const CODEC_ID: u32 = 0x86;
const CLUSTER: u32 = 0x1F43B675;

/// The head of a recording covers the header, SeekHead, Info and the Tracks region.
const HEAD_BYTES: u64 = 64 * 1024;

/// What the head of a recording file says.
#[derive(Debug, Clone, PartialEq)]
pub struct FileInfo {
    /// `webm` or `matroska`.
    pub doc_type: String,
    /// Duration in ms (0 when nothing was written yet).
    pub duration_ms: u64,
    /// Codec ids of the tracks described (`V_VP8`, `A_OPUS`, …).
    pub codecs: Vec<String>,
}

impl FileInfo {
    /// The content type a file with these tracks is served with.
    pub fn content_type(&self) -> &'static str {
        if self.doc_type == "matroska" {
            "video/x-matroska"
        } else if self.codecs.iter().any(|c| c.starts_with("V_")) {
            "video/webm"
        } else {
            "audio/webm"
        }
    }
}

/// Reads the head of the file at `path`. `Ok(None)`: empty or not a Matroska file.
pub fn read(path: &Path) -> std::io::Result<Option<FileInfo>> {
    let mut head = Vec::new();
    std::fs::File::open(path)?
        .take(HEAD_BYTES)
        .read_to_end(&mut head)?;
    Ok(parse(&head))
}

struct Element {
    id: u32,
    /// None: unknown size.
    size: Option<u64>,
    data: usize,
}

fn read_id(b: &[u8], at: usize) -> Option<(u32, usize)> {
    let first = *b.get(at)?;
    let len = first.leading_zeros() as usize + 1;
    if len > 4 {
        return None;
    }
    let bytes = b.get(at..at + len)?;
    Some((bytes.iter().fold(0u32, |a, &x| (a << 8) | x as u32), len))
}

fn read_size(b: &[u8], at: usize) -> Option<(Option<u64>, usize)> {
    let first = *b.get(at)?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let bytes = b.get(at..at + len)?;
    let mut v = (first as u64) & ((1u64 << (8 - len)) - 1);
    for &x in &bytes[1..] {
        v = (v << 8) | x as u64;
    }
    let unknown = v == (1u64 << (7 * len)) - 1;
    Some((if unknown { None } else { Some(v) }, len))
}

fn element(b: &[u8], at: usize) -> Option<Element> {
    let (id, il) = read_id(b, at)?;
    let (size, sl) = read_size(b, at + il)?;
    Some(Element {
        id,
        size,
        data: at + il + sl,
    })
}

/// Children of the master element whose data spans `start..end` (clamped to what was read).
fn children(b: &[u8], start: usize, end: usize) -> Vec<Element> {
    let end = end.min(b.len());
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let Some(e) = element(b, at) else { break };
        let next = match e.size {
            Some(s) => e.data.saturating_add(s as usize),
            None => end,
        };
        out.push(e);
        if next <= at {
            break;
        }
        at = next;
    }
    out
}

fn body<'a>(b: &'a [u8], e: &Element) -> Option<&'a [u8]> {
    b.get(e.data..e.data.checked_add(e.size? as usize)?)
}

fn uint(bytes: &[u8]) -> u64 {
    bytes.iter().take(8).fold(0, |a, &x| (a << 8) | x as u64)
}

fn float(bytes: &[u8]) -> Option<f64> {
    match bytes.len() {
        4 => Some(f32::from_be_bytes(bytes.try_into().ok()?) as f64),
        8 => Some(f64::from_be_bytes(bytes.try_into().ok()?)),
        _ => None,
    }
}

/// Parses the head of a file (what [`read`] read).
pub fn parse(b: &[u8]) -> Option<FileInfo> {
    let header = element(b, 0)?;
    if header.id != EBML {
        return None;
    }
    let header_end = header.data.checked_add(header.size? as usize)?;
    let mut doc_type = String::new();
    for e in children(b, header.data, header_end) {
        if e.id == DOC_TYPE {
            doc_type = String::from_utf8_lossy(body(b, &e)?).into_owned();
        }
    }
    let segment = element(b, header_end)?;
    if segment.id != SEGMENT {
        return None;
    }
    let segment_end = segment
        .size
        .map_or(b.len(), |s| segment.data.saturating_add(s as usize));
    let mut scale_ns = 1_000_000u64;
    let mut duration = 0.0f64;
    let mut codecs = Vec::new();
    for e in children(b, segment.data, segment_end) {
        match e.id {
            INFO => {
                let Some(info) = body(b, &e) else { continue };
                let base = e.data;
                for k in children(b, base, base + info.len()) {
                    match (k.id, body(b, &k)) {
                        (TIMESTAMP_SCALE, Some(v)) => scale_ns = uint(v).max(1),
                        (DURATION, Some(v)) => duration = float(v).unwrap_or(0.0),
                        _ => {}
                    }
                }
            }
            TRACKS => {
                let Some(tracks) = body(b, &e) else { continue };
                for t in children(b, e.data, e.data + tracks.len()) {
                    if t.id != TRACK_ENTRY {
                        continue;
                    }
                    let Some(entry) = body(b, &t) else { continue };
                    for k in children(b, t.data, t.data + entry.len()) {
                        if k.id == CODEC_ID
                            && let Some(v) = body(b, &k)
                        {
                            codecs.push(String::from_utf8_lossy(v).into_owned());
                        }
                    }
                }
            }
            // The head ends where media starts.
            CLUSTER => break,
            _ => {}
        }
    }
    let duration_ms = if duration.is_finite() && duration > 0.0 {
        (duration * scale_ns as f64 / 1_000_000.0).round() as u64
    } else {
        0
    };
    Some(FileInfo {
        doc_type,
        duration_ms,
        codecs,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::time::{Duration, Instant, SystemTime};

    use bytes::Bytes;
    use rtc::rtp::Packet;
    use rtc::rtp::header::Header;

    use super::*;
    use crate::codec::Codec;
    use crate::recording::{Recorder, RecorderConfig};

    fn opus(seq: u16, ts: u32) -> Packet {
        Packet {
            header: Header {
                version: 2,
                sequence_number: seq,
                timestamp: ts,
                ssrc: 7,
                ..Default::default()
            },
            payload: Bytes::from_static(&[0xF8, 0xAA, 0xBB]),
        }
    }

    /// Three seconds of audio: a cut copy and the finished file both say how long they are.
    #[test]
    fn reads_duration_of_cut_and_finished_files() {
        let mut r = Recorder::with_sink(
            Cursor::new(Vec::new()),
            SystemTime::UNIX_EPOCH,
            RecorderConfig::default(),
        );
        let a = r.add_track(Codec::Opus, 48_000, 2).unwrap();
        let t0 = Instant::now();
        for i in 0..150u32 {
            let at = t0 + Duration::from_millis(i as u64 * 20);
            r.push_rtp(a, &opus(i as u16, i * 960), at).unwrap();
            r.poll(at).unwrap();
        }
        let written = r.written_duration_ms();
        assert!(written > 0);
        let (summary, sink) = r.finish_into_sink().unwrap();
        let full = sink.into_inner();
        let info = parse(&full).unwrap();
        assert_eq!(info.duration_ms, summary.duration_ms);
        assert_eq!(info.codecs, vec!["A_OPUS".to_string()]);
        assert_eq!(info.content_type(), "audio/webm");
        assert_eq!(info.doc_type, "webm");
        // Any prefix parses without panicking; a prefix with the head says the same tracks.
        for cut in [0, 1, 5, 40, 200, 4000, full.len() / 2] {
            let _ = parse(&full[..cut.min(full.len())]);
        }
        assert!(parse(b"not a matroska file at all").is_none());
    }
}
