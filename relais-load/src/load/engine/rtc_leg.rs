//! A synthetic participant's WebRTC connection, sans-IO (`rtc::RTCPeerConnection`), driven by
//! its shard: it plays a browser toward relais (or Janus): full ICE agent, DTLS client or
//! server as negotiated, SRTP, NACK and RTCP reports, and synthetic media on its tracks.
//!
//! Signaling is not here: the participant's signaling task calls the methods below through
//! [`super::ShardHandle::call`] (create an offer, apply an answer, answer an offer, add
//! candidates).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rtc::ice::network_type::NetworkType;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, CandidateRelayConfig, RTCIceCandidate,
    RTCIceCandidateInit,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;

use super::io::{Io, TransportKind};
use super::{Leg, LegStats, ShardCtx};
use crate::load::recv::LegRecv;
use crate::load::rejoin::Outages;
use crate::peer_connection::{Codecs, PcConfig, opus};
use crate::synthetic::{OutPacket, Pattern, TrackSender};

/// Builds client PeerConnections: Opus and the pattern's video codec only (so the codec the
/// server picks is the one we send), NACK and RTCP reports, one certificate for all.
pub struct RtcFactory {
    certificate: RTCCertificate,
    pattern: Arc<Pattern>,
}

impl RtcFactory {
    pub fn new(pattern: Arc<Pattern>) -> anyhow::Result<Self> {
        use rtc::peer_connection::certificate::CertificateParams;
        let provider =
            rtc::crypto::default_provider().map_err(|e| anyhow::anyhow!("crypto provider: {e}"))?;
        let certificate = RTCCertificate::generate(
            provider.crypto(),
            rtc::crypto::SignatureScheme::EcdsaP256Sha256,
            CertificateParams::new(vec!["relais-load".into()])
                .map_err(|e| anyhow::anyhow!("certificate parameters: {e}"))?,
        )
        .map_err(|e| anyhow::anyhow!("certificate: {e}"))?;
        Ok(Self {
            certificate,
            pattern,
        })
    }

    pub fn pattern(&self) -> &Arc<Pattern> {
        &self.pattern
    }

    fn build_pc(
        &self,
        transport: TransportKind,
        now: Instant,
    ) -> anyhow::Result<RTCPeerConnection> {
        let network = match transport {
            TransportKind::Tcp => vec![NetworkType::Tcp4],
            _ => vec![NetworkType::Udp4],
        };
        let mut config = PcConfig::new(Codecs::Only(self.pattern.codec), network);
        config.certificate = Some(self.certificate.clone());
        config.sans_io(now)
    }

    /// A leg whose socket is `io`; its local candidate is added when known (now for UDP and
    /// ICE-TCP; after the allocation for TURN: see [`RtcLeg::relay_ready`]). A leg that does
    /// not `send` only receives (Janus's subscriber connections).
    pub fn leg(
        &self,
        io: Io,
        transport: TransportKind,
        started: Instant,
        tag_base: u32,
        send: bool,
    ) -> anyhow::Result<RtcLeg> {
        let now = Instant::now();
        let pc = self.pc_for(&io, transport, now)?;
        let phase: f64 = rand::random();
        let mut tracks = Vec::new();
        for (video, wanted) in [(false, self.pattern.audio), (true, self.pattern.video)] {
            if wanted && send {
                let tag = tag_base.wrapping_add(u32::from(video));
                tracks.push(LocalTrack {
                    ssrc: rand::random::<u32>() | 1,
                    video,
                    sender_id: None,
                    pt: None,
                    sender: TrackSender::new(&self.pattern, video, tag, now, phase),
                });
            }
        }
        Ok(RtcLeg {
            pc,
            io,
            pattern: self.pattern.clone(),
            tracks,
            recv: LegRecv::default(),
            started,
            connected_at: None,
            first_connected: None,
            outage: Outages::default(),
            transport,
            failed: None,
            closed: false,
            io_generation: 0,
            plis: 0,
            permitted: Vec::new(),
            out: Vec::new(),
        })
    }
}

impl RtcFactory {
    /// A new PeerConnection whose local candidate is `io`'s (added later for TURN).
    fn pc_for(
        &self,
        io: &Io,
        transport: TransportKind,
        now: Instant,
    ) -> anyhow::Result<RTCPeerConnection> {
        let mut pc = self.build_pc(transport, now)?;
        match io {
            Io::Udp { local, .. } => {
                pc.add_local_candidate(host_candidate("udp", *local, false)?)?
            }
            Io::Tcp { local, .. } => {
                pc.add_local_candidate(host_candidate("tcp", *local, true)?)?
            }
            Io::Turn { .. } => {}
        }
        Ok(pc)
    }
}

fn host_candidate(
    network: &str,
    addr: SocketAddr,
    active: bool,
) -> anyhow::Result<RTCIceCandidateInit> {
    let c = CandidateHostConfig {
        base_config: CandidateConfig {
            network: network.into(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        tcp_type: if active {
            rtc::ice::tcp_type::TcpType::Active
        } else {
            rtc::ice::tcp_type::TcpType::Unspecified
        },
    }
    .new_candidate_host()?;
    Ok(RTCIceCandidate::from(&c).to_json()?)
}

struct LocalTrack {
    ssrc: u32,
    video: bool,
    sender_id: Option<RTCRtpSenderId>,
    /// Negotiated payload type; media starts once known and connected.
    pt: Option<u8>,
    sender: TrackSender,
}

pub struct RtcLeg {
    pc: RTCPeerConnection,
    io: Io,
    pattern: Arc<Pattern>,
    tracks: Vec<LocalTrack>,
    recv: LegRecv,
    started: Instant,
    /// Connected now (reset when the connection is rebuilt).
    connected_at: Option<Instant>,
    /// The first connection (join figures stay those of the first join).
    first_connected: Option<Instant>,
    outage: Outages,
    transport: TransportKind,
    failed: Option<String>,
    closed: bool,
    io_generation: u64,
    plis: u64,
    /// Remote addresses a TURN permission was asked for.
    permitted: Vec<SocketAddr>,
    out: Vec<OutPacket>,
}

impl RtcLeg {
    pub fn connected(&self) -> bool {
        self.connected_at.is_some()
    }

    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The connection failed after it had been up once (the media is gone, not a failed join).
    pub fn media_lost(&self) -> bool {
        self.failed.is_some() && self.first_connected.is_some()
    }

    /// The participant's signaling connection was lost at `now`.
    pub fn signaling_lost(&mut self, now: Instant) {
        self.outage.lost(now);
    }

    /// Replaces the PeerConnection and its socket in place, after a loss: same leg (its
    /// figures continue), same tracks (their counters continue where they stopped), nothing
    /// negotiated yet; the signaling task then enters the session again.
    pub fn rebuild(
        &mut self,
        factory: &RtcFactory,
        io: Io,
        now: Instant,
        ctx: &mut ShardCtx,
    ) -> anyhow::Result<()> {
        let pc = factory.pc_for(&io, self.transport, now)?;
        // The old connection says goodbye if its path is still there.
        let _ = self.pc.close();
        while let Some(out) = self.pc.poll_write() {
            if !self.io.send(now, &out.message, out.transport.peer_addr) {
                ctx.send_drops += 1;
            }
        }
        self.io.close(now);
        self.pc = pc;
        self.io = io;
        // The shard arms the new socket's readiness; the old one's future is ignored.
        self.io_generation += 1;
        self.permitted.clear();
        self.connected_at = None;
        self.failed = None;
        for t in &mut self.tracks {
            t.sender_id = None;
            t.pt = None;
            // A receiver that comes back needs a keyframe to show anything.
            t.sender.request_keyframe();
        }
        self.outage.rebuilt();
        Ok(())
    }

    pub fn is_tcp_connected(&self) -> bool {
        self.io.is_tcp_connected()
    }

    /// TURN only: `Ok(true)` once the relayed address is known (and added as our candidate).
    pub fn relay_ready(&mut self) -> anyhow::Result<bool> {
        let Some(turn) = self.io.turn_state() else {
            return Ok(true);
        };
        if let Some(e) = &turn.failed {
            anyhow::bail!("{e}");
        }
        let Some(relayed) = turn.relayed else {
            return Ok(false);
        };
        let Io::Turn { local, .. } = &self.io else {
            return Ok(false);
        };
        let c = CandidateRelayConfig {
            base_config: CandidateConfig {
                network: "udp".into(),
                address: relayed.ip().to_string(),
                port: relayed.port(),
                component: 1,
                ..Default::default()
            },
            rel_addr: local.ip().to_string(),
            rel_port: local.port(),
            ..Default::default()
        }
        .new_candidate_relay()?;
        self.pc
            .add_local_candidate(RTCIceCandidate::from(&c).to_json()?)?;
        Ok(true)
    }

    /// The doctor's way in: our tracks as send-only transceivers, then our offer.
    pub fn publish_offer(&mut self, now: Instant) -> anyhow::Result<String> {
        for i in 0..self.tracks.len() {
            let track = self.media_track(i);
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            };
            let t = self.pc.add_transceiver_from_track(track, Some(init))?;
            self.tracks[i].sender_id = Some(RTCRtpSenderId::from(t));
        }
        let offer = self.pc.create_offer(None)?;
        self.pc.set_local_description(now, offer)?;
        self.local_sdp()
    }

    pub fn apply_answer(&mut self, now: Instant, sdp: &str) -> anyhow::Result<()> {
        self.pc
            .set_remote_description(now, RTCSessionDescription::answer(sdp.to_string())?)?;
        self.after_remote(now, sdp);
        Ok(())
    }

    /// Answers an offer of the server; the first time, our tracks take the slots it offered.
    pub fn answer_offer(&mut self, now: Instant, sdp: &str) -> anyhow::Result<String> {
        self.pc
            .set_remote_description(now, RTCSessionDescription::offer(sdp.to_string())?)?;
        for i in 0..self.tracks.len() {
            if self.tracks[i].sender_id.is_none() {
                let track = self.media_track(i);
                self.tracks[i].sender_id = Some(self.pc.add_track(track)?);
            }
        }
        let answer = self.pc.create_answer(None)?;
        self.pc.set_local_description(now, answer)?;
        self.after_remote(now, sdp);
        self.local_sdp()
    }

    pub fn add_remote_candidates(&mut self, now: Instant, list: Vec<RTCIceCandidateInit>) {
        for c in list {
            if let Some(addr) = candidate_addr(&c.candidate) {
                self.permit(now, addr);
            }
            if let Err(e) = self.pc.add_remote_candidate(c) {
                tracing::debug!(error = %e, "remote candidate refused");
            }
        }
    }

    /// Attaches the ICE-TCP connection the signaling task opened.
    pub fn attach_tcp(&mut self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        self.io.attach_tcp(stream)?;
        self.io_generation += 1;
        Ok(())
    }

    fn permit(&mut self, now: Instant, addr: SocketAddr) {
        if !self.permitted.contains(&addr) {
            self.permitted.push(addr);
            self.io.permit(now, addr);
        }
    }

    fn after_remote(&mut self, now: Instant, sdp: &str) {
        for line in sdp.lines() {
            if let Some(c) = line.strip_prefix("a=")
                && let Some(addr) = candidate_addr(c)
            {
                self.permit(now, addr);
            }
        }
        for i in 0..self.tracks.len() {
            let Some(id) = self.tracks[i].sender_id else {
                continue;
            };
            if let Some(mut s) = self.pc.rtp_sender(id) {
                self.tracks[i].pt = s
                    .get_parameters()
                    .rtp_parameters
                    .codecs
                    .first()
                    .map(|c| c.payload_type);
            }
        }
    }

    fn media_track(&self, i: usize) -> MediaStreamTrack {
        let t = &self.tracks[i];
        let (kind, codec, label) = if t.video {
            (
                RtpCodecKind::Video,
                self.pattern.codec.parameters().rtp_codec,
                "video",
            )
        } else {
            (RtpCodecKind::Audio, opus().rtp_codec, "audio")
        };
        let stream = format!("load-{}", self.tracks[0].ssrc);
        MediaStreamTrack::new(
            stream.clone(),
            format!("{stream}-{label}"),
            label.into(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(t.ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        )
    }

    fn local_sdp(&self) -> anyhow::Result<String> {
        self.pc
            .local_description()
            .map(|d| d.sdp.clone())
            .ok_or_else(|| anyhow::anyhow!("no local description"))
    }

    fn send_media(&mut self, now: Instant) {
        if self.connected_at.is_none() || self.closed {
            return;
        }
        for t in &mut self.tracks {
            let Some(pt) = t.pt else { continue };
            t.sender.due(&self.pattern, now, &mut self.out);
            for o in self.out.drain(..) {
                let packet = Packet {
                    header: Header {
                        version: 2,
                        marker: o.marker,
                        payload_type: pt,
                        sequence_number: o.seq,
                        timestamp: o.ts,
                        ssrc: t.ssrc,
                        ..Default::default()
                    },
                    payload: o.payload,
                };
                let msg = TaggedRTCMessage {
                    now,
                    message: RTCMessage::RtpPacket(String::new(), packet),
                };
                if let Err(e) = self.pc.handle_write(msg) {
                    tracing::trace!(error = %e, "media write refused");
                }
            }
        }
    }

    /// Events, reads, writes: the order the stack advances in.
    fn drain(&mut self, now: Instant, ctx: &mut ShardCtx) {
        while let Some(ev) = self.pc.poll_event() {
            match ev {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) => match s {
                    RTCPeerConnectionState::Connected if self.connected_at.is_none() => {
                        self.connected_at = Some(now);
                        self.first_connected.get_or_insert(now);
                        // Media starts now, each track at its own phase.
                        for t in &mut self.tracks {
                            t.sender.next = t.sender.next.max(now);
                        }
                    }
                    RTCPeerConnectionState::Failed => {
                        self.failed
                            .get_or_insert_with(|| "connection failed".into());
                        if self.first_connected.is_some() {
                            self.outage.lost(now);
                        }
                    }
                    _ => {}
                },
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                    RTCIceConnectionState::Failed,
                ) => {
                    self.failed.get_or_insert_with(|| "ICE failed".into());
                    if self.first_connected.is_some() {
                        self.outage.lost(now);
                    }
                }
                _ => {}
            }
        }
        while let Some(msg) = self.pc.poll_read() {
            match msg.message {
                RTCMessage::RtpPacket(_, p) => {
                    self.outage.media(now);
                    self.recv.on_payload(&p.payload, &mut ctx.latency)
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    for p in &packets {
                        let any = p.as_any();
                        let ssrc = if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                            Some(pli.media_ssrc)
                        } else {
                            any.downcast_ref::<FullIntraRequest>()
                                .and_then(|f| f.fir.first().map(|e| e.ssrc))
                        };
                        if let Some(ssrc) = ssrc
                            && let Some(t) = self.tracks.iter_mut().find(|t| t.ssrc == ssrc)
                        {
                            t.sender.request_keyframe();
                            self.plis += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        while let Some(out) = self.pc.poll_write() {
            if !self.io.send(now, &out.message, out.transport.peer_addr) {
                ctx.send_drops += 1;
            }
        }
        ctx.send_drops += self.io.flush();
    }
}

/// The address of an ICE candidate line (`candidate:… <proto> <prio> <ip> <port> typ …`).
fn candidate_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("candidate:")?;
    let parts: Vec<&str> = rest.split_whitespace().collect();
    // foundation, component, protocol, priority, address, port
    let ip: std::net::IpAddr = parts.get(4)?.parse().ok()?;
    let port: u16 = parts.get(5)?.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

/// The server's passive ICE-TCP candidates in a description.
pub fn passive_tcp_candidates(sdp: &str) -> Vec<SocketAddr> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a="))
        .filter(|c| c.contains(" tcp ") || c.contains(" TCP "))
        .filter(|c| c.contains("tcptype passive"))
        .filter_map(candidate_addr)
        .fold(Vec::new(), |mut v, a| {
            if !v.contains(&a) {
                v.push(a);
            }
            v
        })
}

impl Leg for RtcLeg {
    fn on_readable(&mut self, now: Instant, ctx: &mut ShardCtx) {
        let pc = &mut self.pc;
        self.io.read_all(now, |msg| {
            if let Err(e) = pc.handle_read(msg) {
                tracing::trace!(error = %e, "datagram refused");
            }
        });
        self.drain(now, ctx);
    }

    fn on_timeout(&mut self, now: Instant, ctx: &mut ShardCtx) {
        if self.pc.poll_timeout().is_some_and(|d| d <= now) {
            let _ = self.pc.handle_timeout(now);
        }
        if self.io.poll_timeout().is_some_and(|d| d <= now) {
            self.io.handle_timeout(now);
        }
        self.send_media(now);
        self.drain(now, ctx);
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let mut d = self.pc.poll_timeout();
        let mut earliest = |x: Option<Instant>| {
            if let Some(x) = x {
                d = Some(d.map_or(x, |d| d.min(x)));
            }
        };
        earliest(self.io.poll_timeout());
        if self.connected_at.is_some() {
            for t in &self.tracks {
                if t.pt.is_some() {
                    earliest(Some(t.sender.next));
                }
            }
        }
        d
    }

    fn readiness(&self) -> Option<futures_util::future::BoxFuture<'static, ()>> {
        self.io.readiness()
    }

    fn io_generation(&self) -> u64 {
        self.io_generation
    }

    fn add_stats(&self, s: &mut LegStats) {
        s.legs += 1;
        s.failed += u64::from(self.failed.is_some());
        s.plis_received += self.plis;
        s.sent_packets += self.tracks.iter().map(|t| t.sender.packets).sum::<u64>();
        s.recv.add_leg(&self.recv);
        s.connected += u64::from(self.connected_at.is_some());
        s.rejoin_attempts += self.outage.attempts;
        s.rejoins += self.outage.rejoins;
        s.participants_rejoined += u64::from(self.outage.rejoins > 0);
        s.outages_open += u64::from(self.outage.since().is_some());
        s.media_back_ms.extend(
            self.outage
                .media_back
                .iter()
                .map(|d| d.as_secs_f64() * 1000.0),
        );
        if let Some(c) = self.first_connected {
            s.join_ms
                .push(c.saturating_duration_since(self.started).as_secs_f64() * 1000.0);
            if let Some(first) = self.recv.first_packet_us {
                let connected_us = c
                    .saturating_duration_since(crate::synthetic::epoch())
                    .as_micros() as u64;
                s.first_packet_ms
                    .push(first.saturating_sub(connected_us) as f64 / 1000.0);
            }
        }
    }

    fn close(&mut self, now: Instant, ctx: &mut ShardCtx) {
        if self.closed {
            return;
        }
        self.closed = true;
        let _ = self.pc.close();
        while let Some(out) = self.pc.poll_write() {
            if !self.io.send(now, &out.message, out.transport.peer_addr) {
                ctx.send_drops += 1;
            }
        }
        self.io.close(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_from_descriptions() {
        let sdp = "v=0\r\na=candidate:2693830880 1 udp 2130706431 127.0.0.1 3581 typ host\r\n\
                   a=candidate:153441841 1 tcp 2124414975 127.0.0.1 3581 typ host tcptype passive\r\n\
                   a=candidate:153441841 2 tcp 2124414975 127.0.0.1 3581 typ host tcptype passive\r\n";
        assert_eq!(
            passive_tcp_candidates(sdp),
            vec!["127.0.0.1:3581".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            candidate_addr("candidate:1 1 udp 2015363327 192.0.2.2 54022 typ host"),
            Some("192.0.2.2:54022".parse().unwrap())
        );
        assert_eq!(candidate_addr("candidate:nonsense"), None);
    }
}
