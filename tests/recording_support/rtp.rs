//! Packetizes encoded media into RTP the way browsers (libwebrtc) do, and plays a call
//! through a simulated network (delay, jitter, loss, reordering) into a `Recorder`.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use relais::codec::Codec;
use relais::recording::{Recorder, RecordingSummary};
use rtc::rtp::Packet;
use rtc::rtp::header::Header;

use super::media::{FPS, VideoFrame};

/// RTP payload budget (libwebrtc leaves room for headers and SRTP under a 1200 MTU).
const MAX_PAYLOAD: usize = 1100;

/// Splits `len` bytes into `n` nearly equal parts, as libwebrtc balances fragments.
fn balanced(len: usize, max: usize) -> Vec<usize> {
    let n = len.div_ceil(max).max(1);
    (0..n).map(|i| len / n + usize::from(i < len % n)).collect()
}

/// RFC 7741 with X=1 and a 15-bit picture id.
pub fn vp8(frame: &[u8], picture_id: u16) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    for (i, size) in balanced(frame.len(), MAX_PAYLOAD - 4)
        .into_iter()
        .enumerate()
    {
        let mut p = vec![
            0x80 | if i == 0 { 0x10 } else { 0 },
            0x80,
            0x80 | (picture_id >> 8) as u8 & 0x7F,
            picture_id as u8,
        ];
        p.extend_from_slice(&frame[at..at + size]);
        at += size;
        out.push(p);
    }
    out
}

/// RFC 9628. Non-flexible (libwebrtc's default for one layer): layer indices with
/// TL0PICIDX, and the scalability structure on keyframes. Flexible: one P_DIFF.
pub fn vp9(frame: &[u8], keyframe: bool, picture_id: u16, flexible: bool) -> Vec<Vec<u8>> {
    let sizes = balanced(frame.len(), MAX_PAYLOAD - 16);
    let n = sizes.len();
    let mut out = Vec::new();
    let mut at = 0;
    for (i, size) in sizes.into_iter().enumerate() {
        let ss = keyframe && i == 0;
        let mut b0 = 0x80 | 0x20; // I, L
        if !keyframe {
            b0 |= 0x40;
        }
        if flexible {
            b0 |= 0x10;
        }
        if i == 0 {
            b0 |= 0x08;
        }
        if i + 1 == n {
            b0 |= 0x04;
        }
        if ss {
            b0 |= 0x02;
        }
        let mut p = vec![
            b0,
            0x80 | (picture_id >> 8) as u8 & 0x7F,
            picture_id as u8,
            0x00,
        ];
        if !flexible {
            p.push(picture_id as u8); // TL0PICIDX
        } else if !keyframe {
            p.push(0x02); // P_DIFF 1, no more
        }
        if ss {
            // One spatial layer 320x240, one picture group (TID 0, one reference).
            p.extend_from_slice(&[0x18, 0x01, 0x40, 0x00, 0xF0, 0x01, 0x04, 0x01]);
        }
        p.extend_from_slice(&frame[at..at + size]);
        at += size;
        out.push(p);
    }
    out
}

/// RFC 6184 mode 1 as libwebrtc: small units aggregated in STAP-A, large ones in FU-A.
pub fn h264(nals: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut i = 0;
    while i < nals.len() {
        let nal = &nals[i];
        if nal.len() > MAX_PAYLOAD {
            let header = nal[0];
            let body = &nal[1..];
            let sizes = balanced(body.len(), MAX_PAYLOAD - 2);
            let n = sizes.len();
            let mut at = 0;
            for (k, size) in sizes.into_iter().enumerate() {
                let mut fu = header & 0x1F;
                if k == 0 {
                    fu |= 0x80;
                }
                if k + 1 == n {
                    fu |= 0x40;
                }
                let mut p = vec![(header & 0xE0) | 28, fu];
                p.extend_from_slice(&body[at..at + size]);
                at += size;
                out.push(p);
            }
            i += 1;
            continue;
        }
        // Aggregate as many following small units as fit.
        let mut j = i;
        let mut size = 1;
        while j < nals.len() && size + 2 + nals[j].len() <= MAX_PAYLOAD {
            size += 2 + nals[j].len();
            j += 1;
        }
        if j - i >= 2 {
            let mut p = vec![(nals[i..j].iter().map(|n| n[0] & 0x60).max().unwrap()) | 24];
            for n in &nals[i..j] {
                p.extend_from_slice(&(n.len() as u16).to_be_bytes());
                p.extend_from_slice(n);
            }
            out.push(p);
            i = j;
        } else {
            out.push(nal.clone());
            i += 1;
        }
    }
    out
}

/// A deterministic generator (xorshift64*), so that a failing run can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone)]
pub struct VideoPlan {
    pub codec: Codec,
    pub frames: Vec<VideoFrame>,
    /// Capture time of the first frame sent (a late camera).
    pub start_s: f64,
    /// From this capture time on, the track's source has a new SSRC, sequence and timestamp
    /// base (a replaced track).
    pub ssrc_change_at_s: Option<f64>,
    /// Added to every video packet's delay (encoder latency).
    pub extra_delay_ms: f64,
    pub vp9_flexible: bool,
}

#[derive(Clone, Default)]
pub struct Network {
    pub loss: f64,
    /// Each packet gets a random extra delay in [0, jitter_ms): reorders packets.
    pub jitter_ms: f64,
    /// A lost packet is sent again one round trip later (the SFU's NACK and the browser's
    /// retransmission), itself exposed to the same loss.
    pub retransmit: bool,
    pub seed: u64,
}

#[derive(Clone)]
pub struct Call {
    pub seconds: f64,
    pub video: Option<VideoPlan>,
    pub audio: Option<Vec<Vec<u8>>>,
    pub network: Network,
    pub sender_reports: bool,
}

pub enum Event {
    Rtp(usize, Packet),
    /// (track, ssrc, ntp, rtp)
    Report(usize, u32, u64, u32),
}

/// Every packet and report of the call, with its arrival time after the start, in arrival
/// order. Track 0 is video (when present), then audio.
pub fn schedule(call: &Call) -> Vec<(Duration, Event)> {
    let mut rng = Rng::new(call.network.seed ^ 0x5EED);
    let mut events: Vec<(f64, Event)> = Vec::new();
    let base_delay_ms = 20.0;
    let ntp0: u64 = 3_900_000_000u64 << 32;
    let ntp_at = |t: f64| ntp0 + (t * 4_294_967_296.0) as u64;
    let net = |rng: &mut Rng, send_ms: f64| -> Option<f64> {
        let n = &call.network;
        if rng.unit() >= n.loss {
            return Some(send_ms + base_delay_ms + rng.unit() * n.jitter_ms);
        }
        // Noticed when the next packets arrive, NACKed, resent: about a round trip and a
        // bit later.
        if n.retransmit && rng.unit() >= n.loss {
            return Some(send_ms + 3.0 * base_delay_ms + 15.0 + rng.unit() * n.jitter_ms);
        }
        None
    };
    let mut track = 0;
    if let Some(v) = &call.video {
        let mut ssrc = 0x1111_0001u32;
        let mut seq: u16 = 65_500; // wraps early in the call
        let mut ts_base: u32 = 4_294_000_000; // wraps too
        let mut first_index = None;
        let mut picture_id: u16 = 100;
        let mut changed = false;
        for (i, f) in v.frames.iter().enumerate() {
            let t = i as f64 / FPS as f64;
            if t < v.start_s || t >= call.seconds {
                continue;
            }
            if let Some(at) = v.ssrc_change_at_s
                && t >= at
                && !changed
            {
                changed = true;
                ssrc = 0x2222_0002;
                seq = 1_000;
                ts_base = 123_456;
                first_index = Some(i);
            }
            let first = *first_index.get_or_insert(i);
            let ts = ts_base.wrapping_add(((i - first) as u32) * (90_000 / FPS));
            let payloads = match v.codec {
                Codec::Vp8 => vp8(&f.nals[0], picture_id),
                Codec::Vp9 => vp9(&f.nals[0], f.keyframe, picture_id, v.vp9_flexible),
                Codec::H264 => h264(&f.nals),
                _ => unreachable!(),
            };
            picture_id = (picture_id + 1) & 0x7FFF;
            let n = payloads.len();
            for (k, p) in payloads.into_iter().enumerate() {
                let send = t * 1000.0 + v.extra_delay_ms + k as f64 * 0.1;
                let packet = rtp(ssrc, seq, ts, k + 1 == n, 96, p);
                seq = seq.wrapping_add(1);
                if let Some(at) = net(&mut rng, send) {
                    events.push((at, Event::Rtp(track, packet)));
                }
            }
            if call.sender_reports && i % FPS as usize == 0 {
                let send = t * 1000.0 + v.extra_delay_ms;
                events.push((
                    send + base_delay_ms,
                    Event::Report(track, ssrc, ntp_at(t), ts),
                ));
            }
        }
        track += 1;
    }
    if let Some(packets) = &call.audio {
        let ssrc = 0x3333_0003u32;
        let mut seq: u16 = 40_000;
        let ts0: u32 = 2_000_000_000;
        for (j, p) in packets.iter().enumerate() {
            let t = j as f64 * 0.020;
            if t >= call.seconds {
                break;
            }
            let ts = ts0.wrapping_add(j as u32 * 960);
            let packet = rtp(ssrc, seq, ts, false, 111, p.clone());
            seq = seq.wrapping_add(1);
            if let Some(at) = net(&mut rng, t * 1000.0) {
                events.push((at, Event::Rtp(track, packet)));
            }
            if call.sender_reports && j % 50 == 25 {
                events.push((
                    t * 1000.0 + base_delay_ms,
                    Event::Report(track, ssrc, ntp_at(t), ts),
                ));
            }
        }
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    events
        .into_iter()
        .map(|(ms, e)| (Duration::from_micros((ms * 1000.0) as u64), e))
        .collect()
}

fn rtp(ssrc: u32, seq: u16, ts: u32, marker: bool, pt: u8, payload: Vec<u8>) -> Packet {
    Packet {
        header: Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload: Bytes::from(payload),
    }
}

/// What feeding a call produced.
pub struct Fed {
    pub recorder: Recorder,
    pub keyframe_requests: u64,
}

/// Creates a recorder for the call's tracks and feeds it every event up to `until`
/// (arrival time), as the SFU would, asking for keyframes when the recorder says so.
pub fn feed(call: &Call, path: &Path, until: Option<Duration>) -> Fed {
    let mut recorder = Recorder::create(path, SystemTime::now()).expect("create recording");
    let mut tracks = Vec::new();
    if let Some(v) = &call.video {
        tracks.push(recorder.add_track(v.codec, 90_000, 0).unwrap());
    }
    if call.audio.is_some() {
        tracks.push(recorder.add_track(Codec::Opus, 48_000, 2).unwrap());
    }
    let start = Instant::now();
    let mut keyframe_requests = 0;
    let mut last = start;
    for (at, e) in schedule(call) {
        if until.is_some_and(|u| at > u) {
            break;
        }
        let now = start + at;
        match e {
            Event::Rtp(t, p) => recorder.push_rtp(tracks[t], &p, now).expect("push"),
            Event::Report(t, ssrc, ntp, rtp) => {
                recorder.push_sender_report(tracks[t], ssrc, ntp, rtp)
            }
        }
        for &t in &tracks {
            if recorder.keyframe_request_due(t, now) {
                keyframe_requests += 1;
            }
        }
        if now.duration_since(last) >= Duration::from_millis(100) {
            recorder.poll(now).expect("poll");
            last = now;
        }
    }
    Fed {
        recorder,
        keyframe_requests,
    }
}

pub fn record(call: &Call, path: &Path) -> (RecordingSummary, u64) {
    let fed = feed(call, path, None);
    let summary = fed.recorder.finish().expect("finish");
    (summary, fed.keyframe_requests)
}
