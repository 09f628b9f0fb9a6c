//! A participant of the bare-relay baseline: the same synthetic media as plain RTP over UDP
//! (no ICE, no DTLS, no SRTP), to and from [`crate::load::relay`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use futures_util::future::BoxFuture;
use tokio::net::UdpSocket;

use super::{Leg, LegStats, ShardCtx};
use crate::load::recv::LegRecv;
use crate::load::relay;
use crate::synthetic::{OutPacket, Pattern, TrackSender};

const HELLO_EVERY: Duration = Duration::from_secs(1);

struct Track {
    ssrc: u32,
    pt: u8,
    sender: TrackSender,
}

pub struct PlainLeg {
    socket: Arc<UdpSocket>,
    relay: SocketAddr,
    session: u32,
    pattern: Arc<Pattern>,
    tracks: Vec<Track>,
    recv: LegRecv,
    next_hello: Instant,
    started: Instant,
    out: Vec<OutPacket>,
    buf: BytesMut,
}

impl PlainLeg {
    pub async fn new(
        bind: std::net::IpAddr,
        relay: SocketAddr,
        session: u32,
        pattern: Arc<Pattern>,
        tag_base: u32,
    ) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(SocketAddr::new(bind, 0)).await?;
        let now = Instant::now();
        let phase: f64 = rand::random();
        let mut tracks = Vec::new();
        for (video, wanted, pt) in [(false, pattern.audio, 111), (true, pattern.video, 96)] {
            if wanted {
                tracks.push(Track {
                    ssrc: rand::random::<u32>() | 1,
                    pt,
                    sender: TrackSender::new(
                        &pattern,
                        video,
                        tag_base.wrapping_add(u32::from(video)),
                        now,
                        phase,
                    ),
                });
            }
        }
        Ok(Self {
            socket: Arc::new(socket),
            relay,
            session,
            pattern,
            tracks,
            recv: LegRecv::default(),
            next_hello: now,
            started: now,
            out: Vec::new(),
            buf: BytesMut::with_capacity(2048),
        })
    }
}

impl Leg for PlainLeg {
    fn on_readable(&mut self, _now: Instant, ctx: &mut ShardCtx) {
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = self.socket.try_recv_from(&mut buf) {
            let p = &buf[..n];
            if n < 12 || p[0] >> 6 != 2 {
                continue;
            }
            let header = 12 + 4 * usize::from(p[0] & 0x0F);
            if let Some(payload) = p.get(header..) {
                self.recv.on_payload(payload, &mut ctx.latency);
            }
        }
    }

    fn on_timeout(&mut self, now: Instant, ctx: &mut ShardCtx) {
        if now >= self.next_hello {
            let _ = self
                .socket
                .try_send_to(&relay::hello(self.session), self.relay);
            self.next_hello = now + HELLO_EVERY;
        }
        for t in &mut self.tracks {
            t.sender.due(&self.pattern, now, &mut self.out);
            for o in self.out.drain(..) {
                self.buf.clear();
                self.buf.put_u8(0x80);
                self.buf.put_u8(t.pt | if o.marker { 0x80 } else { 0 });
                self.buf.put_u16(o.seq);
                self.buf.put_u32(o.ts);
                self.buf.put_u32(t.ssrc);
                self.buf.put_slice(&o.payload);
                if self.socket.try_send_to(&self.buf, self.relay).is_err() {
                    ctx.send_drops += 1;
                }
            }
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        let media = self.tracks.iter().map(|t| t.sender.next).min();
        Some(media.map_or(self.next_hello, |m| m.min(self.next_hello)))
    }

    fn readiness(&self) -> Option<BoxFuture<'static, ()>> {
        let s = self.socket.clone();
        Some(Box::pin(async move {
            let _ = s.readable().await;
        }))
    }

    fn io_generation(&self) -> u64 {
        0
    }

    fn add_stats(&self, s: &mut LegStats) {
        s.legs += 1;
        s.connected += 1;
        s.sent_packets += self.tracks.iter().map(|t| t.sender.packets).sum::<u64>();
        s.recv.add_leg(&self.recv);
        s.join_ms.push(0.0);
        if let Some(first) = self.recv.first_packet_us {
            let started_us = self
                .started
                .saturating_duration_since(crate::synthetic::epoch())
                .as_micros() as u64;
            s.first_packet_ms
                .push(first.saturating_sub(started_us) as f64 / 1000.0);
        }
    }

    fn close(&mut self, _now: Instant, _ctx: &mut ShardCtx) {}
}
