//! Recording throughput: RTP packets per second through jitter buffer, depacketizer, muxer
//! and the file, on one core. A synthetic call: VP8 at 30 fps (frames of 4 packets, a
//! keyframe every 2 s) and Opus at 50 packets/s, 10 s of media per iteration.
//!
//! `cargo bench --bench recording`
#![allow(clippy::unwrap_used)] // tests and benchmarks: a failed unwrap is a failed test

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relais::codec::Codec;
use relais::recording::{Recorder, RecorderConfig};
use rtc::rtp::Packet;
use rtc::rtp::header::Header;

const SECONDS: u32 = 10;
const PACKETS_PER_FRAME: u32 = 4;
const PAYLOAD: usize = 1100;

/// (track 0 = video / 1 = audio, packet, arrival offset)
fn call() -> Vec<(usize, Packet, Duration)> {
    let mut out = Vec::new();
    let mut vseq: u16 = 0;
    for i in 0..SECONDS * 30 {
        let key = i % 60 == 0;
        for k in 0..PACKETS_PER_FRAME {
            let mut p = vec![if k == 0 { 0x90 } else { 0x80 }, 0x80, 0x80, i as u8];
            if k == 0 {
                let tag = if key { 0x50 } else { 0x51 };
                p.extend_from_slice(&[tag, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x05, 0xD0, 0x02]);
            }
            p.resize(PAYLOAD, 0x5A);
            let header = Header {
                version: 2,
                marker: k + 1 == PACKETS_PER_FRAME,
                sequence_number: vseq,
                timestamp: i * 3000,
                ssrc: 1,
                ..Default::default()
            };
            vseq = vseq.wrapping_add(1);
            let at = Duration::from_micros(i as u64 * 33_333 + k as u64 * 100);
            out.push((
                0,
                Packet {
                    header,
                    payload: Bytes::from(p),
                },
                at,
            ));
        }
    }
    for j in 0..SECONDS * 50 {
        let mut p = vec![0xF8];
        p.resize(80, 0x33);
        let header = Header {
            version: 2,
            sequence_number: j as u16,
            timestamp: j * 960,
            ssrc: 2,
            ..Default::default()
        };
        out.push((
            1,
            Packet {
                header,
                payload: Bytes::from(p),
            },
            Duration::from_millis(j as u64 * 20),
        ));
    }
    out.sort_by_key(|e| e.2);
    out
}

fn bench(c: &mut Criterion) {
    let packets = call();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.webm");
    let mut g = c.benchmark_group("recording");
    g.throughput(Throughput::Elements(packets.len() as u64));
    g.sample_size(20);
    g.bench_function("vp8_opus_10s_to_file", |b| {
        b.iter(|| {
            let mut r =
                Recorder::create_with(&path, SystemTime::now(), RecorderConfig::default()).unwrap();
            let v = r.add_track(Codec::Vp8, 90_000, 0).unwrap();
            let a = r.add_track(Codec::Opus, 48_000, 2).unwrap();
            let start = Instant::now();
            for (t, p, at) in &packets {
                let track = if *t == 0 { v } else { a };
                r.push_rtp(track, p, start + *at).unwrap();
            }
            black_box(r.finish().unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
