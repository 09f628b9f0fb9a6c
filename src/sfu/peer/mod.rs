//! One server-side PeerConnection and the task that owns it.
//!
//! The task is the only code that touches its `RTCPeerConnection` (sans-IO, `Send` but not
//! `Sync`). It wakes on: a datagram the media socket routed to it, a command from its room,
//! an RTP packet a publisher's task forwarded to it, or the connection's next timer. After each
//! wake-up it drains the connection in the order the stack needs (events, reads, writes).
//!
//! Invariants:
//! - every queue into the task is bounded; media queues drop (and count) when full, so a slow
//!   subscriber never slows its publisher;
//! - at most one offer of ours is outstanding: renegotiation waits for the answer
//!   ([`negotiation`]);
//! - when the task ends, for whatever reason, it unregisters its routes, tells its room
//!   (`Closed`) and drops every sender it held, so nothing of it stays behind.

mod negotiation;
mod publish;
mod retransmit;
mod rtcp_out;
pub mod rtcp_tap;
pub mod setup;
pub mod stats;
mod subscribe;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::mpsc;

use super::feedback::twcc::TwccRecorder;
use super::media_plane::{Datagram, MediaPlane, Transport};
use super::types::{Forwarded, PeerCommand, PeerEvent, PeerId, TrackId};
use crate::ids::Identity;
use crate::metrics::{Metrics, ReasonLabels};
use publish::UpTrack;
use retransmit::SentHistory;
use setup::PeerFactory;
use subscribe::DownTrack;

/// Datagrams waiting for a peer before the socket drops new ones.
const INBOX: usize = 2048;
/// Forwarded packets waiting for a subscriber before publishers drop new ones.
const MEDIA_QUEUE: usize = 1024;
const COMMANDS: usize = 256;
/// Remote addresses whose local candidate a peer remembers (ICE checks use a handful).
const MAX_REMOTE_ADDRS: usize = 16;
/// Most queued items handled per wake-up before the connection is drained.
const BATCH: usize = 64;
/// Forwarded packets handed to the stack before its writes are swept out.
const WRITE_SWEEP: usize = 4;

/// How to reach a peer's task.
#[derive(Debug, Clone)]
pub struct PeerHandle {
    pub id: PeerId,
    pub commands: mpsc::Sender<PeerCommand>,
    pub media: mpsc::Sender<Forwarded>,
}

/// What a peer's task needs besides its connection.
pub struct PeerContext {
    pub id: PeerId,
    pub owner: Identity,
    /// False in audio-only sessions: published video is ignored.
    pub allow_video: bool,
    pub plane: Arc<MediaPlane>,
    pub factory: Arc<PeerFactory>,
    pub metrics: Arc<Metrics>,
    pub events: mpsc::UnboundedSender<PeerEvent>,
    pub next_track_id: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signaling {
    Stable,
    HaveLocalOffer,
}

pub(super) struct Peer {
    ctx: PeerContext,
    pc: RTCPeerConnection,
    /// Our own command queue, weakly: handed to subscribers (keyframe requests) without
    /// keeping the queue open once the room let go of us.
    commands_weak: mpsc::WeakSender<PeerCommand>,
    /// Kept so the queues never close while the task runs (a closed queue would spin `select!`).
    _media_tx: mpsc::Sender<Forwarded>,
    inbox_tx: mpsc::Sender<Datagram>,
    signaling: Signaling,
    /// Offers of ours are allowed (after the first negotiation, or from the start when we
    /// make the first offer).
    can_offer: bool,
    negotiation_needed: bool,
    remote_set: bool,
    pending_candidates: Vec<RTCIceCandidateInit>,
    connected: bool,
    saw_media: bool,
    closed: bool,
    /// How media last left for the client: `udp` or `tcp` (ICE-TCP).
    path: Option<&'static str>,
    /// Our candidate address per remote address seen (see [`PeerFactory::local_addr_for`]).
    local_addrs: Vec<(SocketAddr, Transport, SocketAddr)>,
    ups: Vec<UpTrack>,
    up_by_ssrc: HashMap<u32, usize>,
    downs: HashMap<TrackId, DownTrack>,
    down_by_ssrc: HashMap<u32, TrackId>,
    /// What was recently sent on each outgoing video track, by its SSRC, to answer NACKs
    /// (a few entries: a scan is cheaper than hashing every outgoing datagram).
    sent: Vec<(u32, SentHistory)>,
    /// Where the stack last sent media: retransmissions go the same way.
    media_dest: Option<(SocketAddr, Transport)>,
    /// Sender SSRC of the RTCP we write about the client's streams.
    rtcp_ssrc: u32,
    /// Arrival of the client's packets, for congestion feedback ([`rtcp_out`]).
    twcc: TwccRecorder,
    next_report: Instant,
    next_twcc: Instant,
    /// Reused for the sequence numbers of one NACK.
    lost_scratch: Vec<u16>,
}

/// Builds the connection and starts its task.
pub fn spawn(ctx: PeerContext, now: Instant) -> rtc::shared::error::Result<PeerHandle> {
    let pc = ctx.factory.build(now)?;
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMANDS);
    let (media_tx, media_rx) = mpsc::channel(MEDIA_QUEUE);
    let (inbox_tx, inbox_rx) = mpsc::channel(INBOX);
    let handle = PeerHandle {
        id: ctx.id,
        commands: cmd_tx,
        media: media_tx,
    };
    ctx.metrics.media.peer_connections.inc();
    let peer = Peer {
        ctx,
        pc,
        commands_weak: handle.commands.downgrade(),
        _media_tx: handle.media.clone(),
        inbox_tx,
        signaling: Signaling::Stable,
        can_offer: false,
        negotiation_needed: false,
        remote_set: false,
        pending_candidates: Vec::new(),
        connected: false,
        saw_media: false,
        path: None,
        local_addrs: Vec::new(),
        closed: false,
        ups: Vec::new(),
        up_by_ssrc: HashMap::new(),
        downs: HashMap::new(),
        down_by_ssrc: HashMap::new(),
        sent: Vec::new(),
        media_dest: None,
        rtcp_ssrc: rand::random::<u32>().max(1),
        twcc: TwccRecorder::default(),
        next_report: now + rtcp_out::REPORT_INTERVAL,
        next_twcc: now,
        lost_scratch: Vec::new(),
    };
    tokio::spawn(peer.run(cmd_rx, media_rx, inbox_rx));
    Ok(handle)
}

impl Peer {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<PeerCommand>,
        mut media: mpsc::Receiver<Forwarded>,
        mut inbox: mpsc::Receiver<Datagram>,
    ) {
        let mut batch_cmd = Vec::with_capacity(BATCH);
        let mut batch_media = Vec::with_capacity(BATCH);
        let mut batch_dgram = Vec::with_capacity(BATCH);
        // One timer for the connection's deadlines, moved rather than re-registered each turn.
        let mut deadline = self.next_deadline();
        let timer = tokio::time::sleep_until(deadline.into());
        tokio::pin!(timer);
        while !self.closed && !self.ctx.events.is_closed() {
            let next = self.next_deadline();
            if next != deadline {
                deadline = next;
                timer.as_mut().reset(deadline.into());
            }
            tokio::select! {
                biased;
                n = commands.recv_many(&mut batch_cmd, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    for cmd in batch_cmd.drain(..) {
                        self.on_command(cmd);
                    }
                }
                // Each datagram is carried up the stack and its media taken out before the
                // next one (the stack's read queue stays one message deep); events and writes
                // are swept once for the whole batch, below: every sweep visits every layer of
                // the stack, and per packet those sweeps cost more than the packet itself.
                _ = inbox.recv_many(&mut batch_dgram, BATCH) => {
                    for dg in batch_dgram.drain(..) {
                        self.on_datagram(dg);
                        self.take_media();
                    }
                }
                // Forwarded packets are queued into the stack together and leave in one sweep
                // per [`WRITE_SWEEP`] packets (the stack's queues keep the capacity they grow
                // to, so their depth is memory held per PeerConnection).
                _ = media.recv_many(&mut batch_media, BATCH) => {
                    let now = Instant::now();
                    for (i, f) in batch_media.drain(..).enumerate() {
                        self.on_forwarded(f, now);
                        if (i + 1) % WRITE_SWEEP == 0 {
                            self.flush_writes();
                        }
                    }
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if self.pc.poll_timeout().is_some_and(|t| t <= now)
                        && let Err(e) = self.pc.handle_timeout(now)
                    {
                        tracing::debug!(peer = self.ctx.id, error = %e, "peer timer failed");
                        self.fail("timer_error");
                    }
                }
            }
            self.drain();
            if self.maybe_offer() {
                self.drain();
            }
        }
        self.shutdown();
    }

    /// When the stack next wants `handle_timeout`, or our own feedback is due (at most a
    /// second away).
    fn next_deadline(&mut self) -> Instant {
        let stack = self
            .pc
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        self.feedback_deadline().map_or(stack, |f| f.min(stack))
    }

    fn on_command(&mut self, cmd: PeerCommand) {
        match cmd {
            PeerCommand::RemoteOffer { sdp, reply } => {
                let _ = reply.send(self.remote_offer(&sdp));
            }
            PeerCommand::RemoteAnswer { sdp, reply } => {
                let _ = reply.send(self.remote_answer(&sdp));
            }
            PeerCommand::RemoteCandidates { candidates, reply } => {
                let _ = reply.send(self.remote_candidates(candidates));
            }
            PeerCommand::StartOffer {
                audio,
                video,
                subscribe,
            } => {
                // The client's own slots first: browsers' addTrack() takes the first free
                // transceiver of its kind, which must be one meant for its media.
                self.start_offer(audio, video);
                for track in subscribe {
                    self.subscribe(track);
                }
            }
            PeerCommand::Subscribe(info) => self.subscribe(info),
            PeerCommand::Unsubscribe(track) => self.unsubscribe(track),
            PeerCommand::AddSubscriber { track, link } => self.add_subscriber(track, link),
            PeerCommand::RemoveSubscriber { track, peer } => self.remove_subscriber(track, peer),
            PeerCommand::RequestKeyframe { track } => self.request_keyframe(track, Instant::now()),
            PeerCommand::RecordTrack { track, tap } => self.record_track(track, tap),
            PeerCommand::Stats { reply } => {
                let _ = reply.send((self.path, self.stats(Instant::now())));
            }
            PeerCommand::Close => {
                let _ = self.pc.close();
                self.flush_writes();
                self.closed = true;
            }
        }
    }

    fn on_datagram(&mut self, dg: Datagram) {
        let Some(local_addr) = self.local_addr_for(dg.from, dg.transport) else {
            return;
        };
        let transport_protocol = match dg.transport {
            Transport::Udp => TransportProtocol::UDP,
            Transport::Tcp => TransportProtocol::TCP,
        };
        let msg = TaggedBytesMut {
            now: dg.at,
            transport: TransportContext {
                local_addr,
                peer_addr: dg.from,
                transport_protocol,
                ecn: None,
            },
            message: dg.data,
        };
        if let Err(e) = self.pc.handle_read(msg) {
            tracing::debug!(peer = self.ctx.id, error = %e, "datagram refused");
        }
    }

    /// Our candidate address for datagrams from `from`, remembered per remote address.
    fn local_addr_for(&mut self, from: SocketAddr, transport: Transport) -> Option<SocketAddr> {
        if let Some((_, _, local)) = self
            .local_addrs
            .iter()
            .find(|(f, t, _)| *f == from && *t == transport)
        {
            return Some(*local);
        }
        let local = self.ctx.factory.local_addr_for(from, transport)?;
        if self.local_addrs.len() >= MAX_REMOTE_ADDRS {
            self.local_addrs.remove(0);
        }
        self.local_addrs.push((from, transport, local));
        Some(local)
    }

    /// Events, then application reads, then our feedback, then wire writes: the order the
    /// stack advances in.
    fn drain(&mut self) {
        self.take_events();
        while let Some(msg) = self.pc.poll_read() {
            self.on_media(msg.message, msg.now);
        }
        self.send_feedback(Instant::now());
        self.flush_writes();
    }

    pub(super) fn take_events(&mut self) {
        while let Some(event) = self.pc.poll_event() {
            self.on_event(event);
        }
    }

    /// The media a `handle_read` just carried up the stack. `handle_read` has already swept
    /// every layer, so this only empties the stack's media output (`poll_read` would sweep
    /// again for each message). Data-channel messages and events wait for [`Self::drain`].
    fn take_media(&mut self) {
        while let Some(msg) = self.pc.poll_media_read() {
            self.on_media(msg.message, msg.now);
        }
    }

    /// `at`: when the datagram that carried it arrived.
    fn on_media(&mut self, message: RTCMessage, at: Instant) {
        match message {
            RTCMessage::RtpPacket(_, packet) => self.on_rtp(packet, at),
            RTCMessage::RtcpPacket(_, packets) => self.on_rtcp(&packets, at),
            _ => {}
        }
    }

    /// Sends what the stack wrote, keeping outgoing video for NACKs ([`retransmit`]).
    fn flush_writes(&mut self) {
        while let Some(out) = self.pc.poll_write() {
            let (transport, path) = match out.transport.transport_protocol {
                TransportProtocol::TCP => (Transport::Tcp, "tcp"),
                _ => (Transport::Udp, "udp"),
            };
            self.path = Some(path);
            let datagram = out.message.freeze();
            if let Some((ssrc, seq)) = retransmit::rtp_ids(&datagram)
                && let Some((_, history)) = self.sent.iter_mut().find(|(s, _)| *s == ssrc)
            {
                history.record(seq, out.now, datagram.clone());
                self.media_dest = Some((out.transport.peer_addr, transport));
            }
            self.ctx
                .plane
                .send(datagram, out.transport.peer_addr, transport);
        }
    }

    fn on_event(&mut self, event: RTCPeerConnectionEvent) {
        match event {
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                self.bind_ssrc(init.receiver_id, init.ssrc);
            }
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                RTCPeerConnectionState::Connected if !self.connected => {
                    self.connected = true;
                    let _ = self
                        .ctx
                        .events
                        .send(PeerEvent::Connected { peer: self.ctx.id });
                }
                RTCPeerConnectionState::Failed => self.fail("connection_failed"),
                RTCPeerConnectionState::Closed => self.closed = true,
                _ => {}
            },
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                RTCIceConnectionState::Failed,
            ) => {
                self.fail("ice_failed");
            }
            _ => {}
        }
    }

    fn fail(&mut self, reason: &'static str) {
        if self.closed {
            return;
        }
        if reason == "ice_failed" || reason == "connection_failed" {
            self.ctx.metrics.media.ice_failures.inc();
        }
        let _ = self.ctx.events.send(PeerEvent::Failed {
            peer: self.ctx.id,
            reason,
        });
        let _ = self.pc.close();
        self.flush_writes();
        self.closed = true;
    }

    fn count_drop(&self, reason: &'static str) {
        self.ctx
            .metrics
            .media
            .rtp_packets_dropped
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    fn shutdown(mut self) {
        self.ctx.plane.unregister(self.ctx.id);
        let media = &self.ctx.metrics.media;
        media.tracks.dec_by(self.ups.len() as i64);
        media.peer_connections.dec();
        self.ups.clear();
        self.downs.clear();
        let _ = self
            .ctx
            .events
            .send(PeerEvent::Closed { peer: self.ctx.id });
        tracing::debug!(peer = self.ctx.id, "peer closed");
    }
}
