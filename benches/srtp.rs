//! The SRTP path of every forwarded packet: decrypt what the publisher sent, encrypt for each
//! subscriber. A 1100-byte video packet (12-byte header), with rtc's SRTP context and its
//! default crypto provider, for the two profiles browsers negotiate.
//!
//! `cargo bench --bench srtp`
#![allow(clippy::unwrap_used)] // tests and benchmarks: a failed unwrap is a failed test

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rtc::rtp::Packet;
use rtc::rtp::header::Header;
use rtc::shared::marshal::Marshal;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

const PACKETS: usize = 256;

fn plain(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            Packet {
                header: Header {
                    version: 2,
                    payload_type: 96,
                    sequence_number: i as u16,
                    timestamp: (i as u32 / 4) * 3000,
                    ssrc: 0x1234_5678,
                    ..Default::default()
                },
                payload: vec![0x5Au8; 1100].into(),
            }
            .marshal()
            .expect("marshal")
            .to_vec()
        })
        .collect()
}

fn context(profile: ProtectionProfile) -> Context {
    let provider = rtc::crypto::default_provider().expect("crypto provider");
    let key = vec![7u8; profile.key_len()];
    let salt = vec![9u8; profile.salt_len()];
    Context::new(&key, &salt, profile, None, None, provider.crypto()).expect("context")
}

fn bench(c: &mut Criterion) {
    let input = plain(PACKETS);
    let mut g = c.benchmark_group("srtp");
    g.throughput(Throughput::Elements(PACKETS as u64));
    for (name, profile) in [
        ("aes128_cm_sha1_80", ProtectionProfile::Aes128CmHmacSha1_80),
        ("aead_aes128_gcm", ProtectionProfile::AeadAes128Gcm),
    ] {
        g.bench_function(format!("encrypt/{name}"), |b| {
            b.iter_batched_ref(
                || context(profile),
                |ctx| {
                    for p in &input {
                        black_box(ctx.encrypt_rtp(p).expect("encrypt"));
                    }
                },
                BatchSize::SmallInput,
            )
        });
        let mut enc = context(profile);
        let encrypted: Vec<_> = input
            .iter()
            .map(|p| enc.encrypt_rtp(p).expect("encrypt"))
            .collect();
        g.bench_function(format!("decrypt/{name}"), |b| {
            b.iter_batched_ref(
                || context(profile),
                |ctx| {
                    for p in &encrypted {
                        black_box(ctx.decrypt_rtp(p).expect("decrypt"));
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
