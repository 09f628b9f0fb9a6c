//! Synthetic media, the one format the test client ([`crate::client::peer`]) and the load
//! tool's engines (WebRTC legs, the bare relay's plain RTP legs, Janus legs) send and check:
//! video frames at a fixed rate with a bitrate budget, larger keyframes at an interval (or on
//! request), packetized at browser-like sizes; Opus-sized audio at 50 packets/s.
//!
//! Each payload is `codec prefix | MAGIC | tag u32 | counter u32 | send time µs u64 | filler`:
//! the prefix makes the SFU (and a recorder) see real keyframe boundaries for the chosen codec,
//! the tag names the sending track, the counter (per track, +1 per packet) gives loss,
//! duplicates and reordering at the receiver, the send time (µs since [`epoch`], same
//! process) gives latency, and the filler is a fixed pattern the receiver checks byte for byte.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

pub const MAGIC: &[u8; 4] = b"RLS2";
const HEADER: usize = 4 + 4 + 4 + 8;
/// How far into a payload the magic may start (the longest codec prefix is 11 bytes).
const PREFIX_MAX: usize = 12;
/// Largest RTP payload per packet, as browsers packetize (MTU 1200 minus headers).
pub const MAX_PAYLOAD: usize = 1100;
/// One Opus frame of 20 ms at about 32 kbit/s.
pub const AUDIO_PAYLOAD: usize = 80;
pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);

static FILLER: [u8; 1500] = {
    let mut f = [0u8; 1500];
    let mut i = 0;
    while i < f.len() {
        f[i] = (i as u8).wrapping_mul(31).wrapping_add(7);
        i += 1;
    }
    f
};

/// The instant all synthetic timestamps count from (one per process).
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// The video codec the synthetic frames claim to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
}

impl VideoCodec {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "vp8" => Some(Self::Vp8),
            "vp9" => Some(Self::Vp9),
            "h264" => Some(Self::H264),
            _ => None,
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Self::Vp8 => "video/VP8",
            Self::Vp9 => "video/VP9",
            Self::H264 => "video/H264",
        }
    }

    pub fn fmtp(self) -> &'static str {
        match self {
            Self::Vp8 => "",
            Self::Vp9 => "profile-id=0",
            Self::H264 => "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        }
    }

    /// Payload descriptor bytes for one packet of a frame.
    fn prefix(self, first: bool, last: bool, key: bool, out: &mut BytesMut) {
        match self {
            // RFC 7741: S bit on the first packet; VP8 header P bit 0 on keyframes, which
            // carry the rest of a keyframe header (start code, 640x480, RFC 6386 §9.1) so
            // that recorders take them as keyframes too.
            Self::Vp8 => out.put_slice(match (first, key) {
                (true, true) => &[
                    0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01,
                ],
                (true, false) => &[0x10, 0x01],
                (false, _) => &[0x00, 0x01],
            }),
            // VP9 descriptor: P (inter-predicted), B (begins), E (ends).
            Self::Vp9 => {
                let mut b = 0u8;
                if !key {
                    b |= 0x40;
                }
                if first {
                    b |= 0x08;
                }
                if last {
                    b |= 0x04;
                }
                out.put_u8(b);
            }
            // RFC 6184 FU-A of an IDR (type 5) or non-IDR (type 1) slice.
            Self::H264 => {
                let nal = if key { 5 } else { 1 };
                let mut fu = nal;
                if first {
                    fu |= 0x80;
                }
                if last {
                    fu |= 0x40;
                }
                out.put_slice(&[0x60 | 28, fu]);
            }
        }
    }
}

/// What one participant sends.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pattern {
    pub audio: bool,
    pub video: bool,
    pub codec: VideoCodec,
    pub video_bitrate_bps: u32,
    pub fps: u32,
    pub keyframe_interval: Duration,
}

impl Pattern {
    fn frame_bytes(&self) -> usize {
        (self.video_bitrate_bps / 8 / self.fps.max(1)) as usize
    }

    /// Video packets per second this pattern sends on average (keyframes included).
    pub fn video_pps(&self) -> f64 {
        if !self.video {
            return 0.0;
        }
        let fps = f64::from(self.fps.max(1));
        let key_every = (self.keyframe_interval.as_secs_f64() * fps).max(1.0);
        let delta = self.frame_bytes().max(60).div_ceil(MAX_PAYLOAD) as f64;
        let key = (self.frame_bytes() * 3).max(60).div_ceil(MAX_PAYLOAD) as f64;
        fps * (delta * (key_every - 1.0) + key) / key_every
    }

    pub fn audio_pps(&self) -> f64 {
        if self.audio { 50.0 } else { 0.0 }
    }
}

/// One packet to send: RTP header fields and payload (SSRC and payload type are the leg's).
#[derive(Debug, Clone)]
pub struct OutPacket {
    pub video: bool,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub payload: Bytes,
}

/// Builds a payload: `prefix`, header, filler up to `size` bytes (at least the header).
pub fn payload(tag: u32, counter: u32, size: usize, prefix: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(HEADER + 4));
    prefix(&mut b);
    b.put_slice(MAGIC);
    b.put_u32(tag);
    b.put_u32(counter);
    b.put_u64(now_us());
    let fill = size.saturating_sub(b.len()).min(FILLER.len());
    b.put_slice(&FILLER[..fill]);
    b.freeze()
}

/// What a receiver reads back from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub tag: u32,
    pub counter: u32,
    pub sent_us: u64,
    /// Every filler byte is what the sender wrote.
    pub intact: bool,
}

pub fn decode(p: &[u8]) -> Option<Decoded> {
    // The codec prefix is at most a few bytes: look for the magic near the start only.
    let at = p[..p.len().min(PREFIX_MAX + MAGIC.len())]
        .windows(4)
        .position(|w| w == MAGIC)?;
    let h = p.get(at..at + HEADER)?;
    let tag = u32::from_be_bytes(h[4..8].try_into().ok()?);
    let counter = u32::from_be_bytes(h[8..12].try_into().ok()?);
    let sent_us = u64::from_be_bytes(h[12..20].try_into().ok()?);
    let fill = &p[at + HEADER..];
    let intact = FILLER.get(..fill.len()) == Some(fill);
    Some(Decoded {
        tag,
        counter,
        sent_us,
        intact,
    })
}

/// One sending track's state: the next due time, numbering, and the keyframe flag.
#[derive(Debug, Clone)]
pub struct TrackSender {
    pub video: bool,
    pub tag: u32,
    pub next: Instant,
    interval: Duration,
    seq: u16,
    counter: u32,
    frame: u64,
    keyframe_requested: bool,
    pub packets: u64,
}

impl TrackSender {
    /// `phase` (0..1) spreads the first send over one interval, as independent browsers are.
    pub fn new(pattern: &Pattern, video: bool, tag: u32, start: Instant, phase: f64) -> Self {
        let interval = if video {
            Duration::from_secs_f64(1.0 / f64::from(pattern.fps.max(1)))
        } else {
            AUDIO_INTERVAL
        };
        Self {
            video,
            tag,
            next: start + interval.mul_f64(phase.clamp(0.0, 1.0)),
            interval,
            seq: rand::random(),
            counter: 0,
            frame: 0,
            keyframe_requested: false,
            packets: 0,
        }
    }

    /// The time between two frames (video) or two packets (audio).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A PLI arrived: the next frame is a keyframe.
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// The packets due at `now` (a frame or an audio packet per elapsed interval, without
    /// catching up more than one interval after a stall).
    pub fn due(&mut self, pattern: &Pattern, now: Instant, out: &mut Vec<OutPacket>) {
        while self.next <= now {
            if self.video {
                self.frame_packets(pattern, out);
            } else {
                self.audio_packet(out);
            }
            self.next += self.interval;
            if now.saturating_duration_since(self.next) > self.interval {
                self.next = now + self.interval;
            }
        }
    }

    fn audio_packet(&mut self, out: &mut Vec<OutPacket>) {
        let n = self.frame as u32;
        out.push(OutPacket {
            video: false,
            seq: self.seq,
            ts: n.wrapping_mul(960),
            marker: false,
            payload: payload(self.tag, self.counter, AUDIO_PAYLOAD, |_| {}),
        });
        self.seq = self.seq.wrapping_add(1);
        self.counter = self.counter.wrapping_add(1);
        self.frame += 1;
        self.packets += 1;
    }

    fn frame_packets(&mut self, pattern: &Pattern, out: &mut Vec<OutPacket>) {
        let fps = u64::from(pattern.fps.max(1));
        let key_every = (pattern.keyframe_interval.as_secs_f64() * fps as f64).max(1.0) as u64;
        let key =
            self.frame.is_multiple_of(key_every) || std::mem::take(&mut self.keyframe_requested);
        let frame_bytes = pattern.frame_bytes();
        // Keyframes are about three times larger, as in real video.
        let size = if key { frame_bytes * 3 } else { frame_bytes }.max(60);
        let packets = size.div_ceil(MAX_PAYLOAD);
        let ts = (self.frame * 90_000 / fps) as u32;
        for i in 0..packets {
            let len = if i + 1 == packets {
                size - i * MAX_PAYLOAD
            } else {
                MAX_PAYLOAD
            };
            let (first, last) = (i == 0, i + 1 == packets);
            let codec = pattern.codec;
            out.push(OutPacket {
                video: true,
                seq: self.seq,
                ts,
                marker: last,
                payload: payload(self.tag, self.counter, len.max(32), |b| {
                    codec.prefix(first, last, key, b)
                }),
            });
            self.seq = self.seq.wrapping_add(1);
            self.counter = self.counter.wrapping_add(1);
            self.packets += 1;
        }
        self.frame += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relais::codec::{Codec, is_keyframe};

    fn pattern(codec: VideoCodec) -> Pattern {
        Pattern {
            audio: true,
            video: true,
            codec,
            video_bitrate_bps: 1_000_000,
            fps: 30,
            keyframe_interval: Duration::from_secs(2),
        }
    }

    #[test]
    fn frames_are_packetized_with_keyframes_the_sfu_recognizes() {
        for (codec, sfu) in [
            (VideoCodec::Vp8, Codec::Vp8),
            (VideoCodec::Vp9, Codec::Vp9),
            (VideoCodec::H264, Codec::H264),
        ] {
            let p = pattern(codec);
            let t0 = Instant::now();
            let mut s = TrackSender::new(&p, true, 9, t0, 0.0);
            let mut out = Vec::new();
            s.due(&p, t0, &mut out);
            // 1 Mbit/s at 30 fps: 4166-byte frames, keyframe ×3 → 12 packets of ≤ 1100 bytes.
            assert_eq!(out.len(), 12, "{codec:?}");
            assert!(is_keyframe(sfu, &out[0].payload), "{codec:?}");
            assert!(out.iter().all(|o| o.payload.len() <= MAX_PAYLOAD));
            assert!(out.last().unwrap().marker);
            out.clear();
            s.due(&p, t0 + Duration::from_millis(34), &mut out);
            assert_eq!(out.len(), 4);
            assert!(!is_keyframe(sfu, &out[0].payload), "{codec:?}");
            let d = decode(&out[3].payload).unwrap();
            assert_eq!((d.tag, d.counter, d.intact), (9, 15, true));
        }
    }

    /// A recorder writes the synthetic VP8 frames (keyframes carry a valid header), so load
    /// runs with recording write video as browsers' would.
    #[test]
    fn synthetic_vp8_is_recordable() {
        use relais::recording::{Recorder, RecorderConfig};
        let p = pattern(VideoCodec::Vp8);
        let t0 = Instant::now();
        let mut s = TrackSender::new(&p, true, 9, t0, 0.0);
        let mut r = Recorder::with_sink(
            std::io::Cursor::new(Vec::new()),
            std::time::SystemTime::UNIX_EPOCH,
            RecorderConfig::default(),
        );
        let v = r.add_track(Codec::Vp8, 90_000, 0).unwrap();
        for i in 0..60u32 {
            let at = t0 + Duration::from_millis(u64::from(i) * 34);
            let mut out = Vec::new();
            s.due(&p, at, &mut out);
            for o in out {
                let packet = rtc::rtp::Packet {
                    header: rtc::rtp::header::Header {
                        version: 2,
                        marker: o.marker,
                        sequence_number: o.seq,
                        timestamp: o.ts,
                        ssrc: 1,
                        ..Default::default()
                    },
                    payload: o.payload,
                };
                r.push_rtp(v, &packet, at).unwrap();
            }
        }
        assert!(!r.needs_keyframe(v));
        let summary = r.finish().unwrap();
        assert_eq!(summary.content_type, "video/webm");
        assert!(summary.duration_ms > 1500, "{summary:?}");
    }

    /// Every filler byte is checked, not only the tail's.
    #[test]
    fn any_changed_byte_is_seen() {
        let p = payload(7, 42, 1000, |b| {
            VideoCodec::Vp8.prefix(true, false, true, b)
        });
        assert_eq!(p.len(), 1000);
        let d = decode(&p).unwrap();
        assert_eq!((d.tag, d.counter, d.intact), (7, 42, true));
        let mut bad = p.to_vec();
        bad[500] ^= 1;
        assert!(!decode(&bad).unwrap().intact);
        assert!(decode(b"nothing here").is_none());
    }

    #[test]
    fn audio_and_integrity() {
        let p = pattern(VideoCodec::Vp8);
        let t0 = Instant::now();
        let mut s = TrackSender::new(&p, false, 3, t0, 0.0);
        let mut out = Vec::new();
        s.due(&p, t0 + Duration::from_millis(25), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].payload.len(), AUDIO_PAYLOAD);
        let mut bad = out[1].payload.to_vec();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(!decode(&bad).unwrap().intact);
        assert!(decode(b"no magic here at all").is_none());
        assert!((p.video_pps() - 30.0 * (4.0 * 59.0 + 12.0) / 60.0).abs() < 1e-6);
    }
}
