//! The SFU's per-packet forwarding work for one outgoing leg, without IO: the forwarding
//! decision (`Rewriter`: which packet goes out, with which sequence number and timestamp) and
//! the header rewrite (SSRC, numbering, payload type), then the packet serialized as it would
//! be handed to SRTP. A 1:1 consultation's video: 4 packets per frame at 30 fps.
//!
//! `cargo bench --bench forward`
#![allow(clippy::unwrap_used)] // tests and benchmarks: a failed unwrap is a failed test

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relais::sfu::forward::{Decision, Incoming, Rewriter};
use rtc::rtp::Packet;
use rtc::rtp::header::Header;
use rtc::shared::marshal::Marshal;

fn packets(n: usize) -> Vec<(Packet, bool)> {
    let payload = Bytes::from(vec![0x5Au8; 1100]);
    (0..n)
        .map(|i| {
            let frame = (i / 4) as u32;
            let p = Packet {
                header: Header {
                    version: 2,
                    marker: i % 4 == 3,
                    payload_type: 96,
                    sequence_number: i as u16,
                    timestamp: frame * 3000,
                    ssrc: 0x1234_5678,
                    ..Default::default()
                },
                payload: payload.clone(),
            };
            (p, i % 240 == 0)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let input = packets(1024);
    let t0 = Instant::now();
    let mut g = c.benchmark_group("forward");
    g.throughput(Throughput::Elements(input.len() as u64));
    g.bench_function("decide", |b| {
        b.iter(|| {
            let mut r = Rewriter::new(90_000, true, 1000);
            for (i, (p, key)) in input.iter().enumerate() {
                let d = r.decide(&Incoming {
                    ssrc: p.header.ssrc,
                    seq: p.header.sequence_number,
                    ts: p.header.timestamp,
                    keyframe: *key,
                    at: t0 + Duration::from_micros(i as u64 * 8_000),
                });
                black_box(d);
            }
        })
    });
    g.bench_function("decide_rewrite_marshal", |b| {
        let mut buf = vec![0u8; 1500];
        b.iter(|| {
            let mut r = Rewriter::new(90_000, true, 1000);
            for (i, (p, key)) in input.iter().enumerate() {
                let mut p = p.clone();
                let h = &mut p.header;
                if let Decision::Forward { seq, ts } = r.decide(&Incoming {
                    ssrc: h.ssrc,
                    seq: h.sequence_number,
                    ts: h.timestamp,
                    keyframe: *key,
                    at: t0 + Duration::from_micros(i as u64 * 8_000),
                }) {
                    h.ssrc = 0xCAFE_F00D;
                    h.sequence_number = seq;
                    h.timestamp = ts;
                    h.payload_type = 102;
                    let n = p.marshal_to(&mut buf).expect("fits");
                    black_box(&buf[..n]);
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
