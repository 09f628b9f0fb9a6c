//! One server-side PeerConnection and the task that owns it.
//!
//! The `rtc` PeerConnection negotiates (SDP, transceivers) and runs ICE; the task runs DTLS-SRTP
//! itself ([`dtls_srtp`]) and reads and writes media directly: a datagram is told apart by its
//! first byte (RFC 7983): STUN goes to the PeerConnection, DTLS to the association, SRTP/SRTCP
//! is decrypted here. What the PeerConnection writes is sent only when it is STUN (its own DTLS
//! never starts: the association here is the one the SDP's fingerprints describe).
//!
//! The task is the only code that touches its `RTCPeerConnection` (sans-IO, `Send` but not
//! `Sync`). It wakes on: a datagram the media socket routed to it, a command from its room, or
//! the next timer (ICE, DTLS, feedback). What other peers forward to its client does not wake
//! it: their tasks write it into its [`outbound`] directly.
//!
//! Invariants:
//! - every queue into the task is bounded, and the socket's outbox drops (and counts) when
//!   full, so a slow client never slows its publisher;
//! - DTLS is accepted only from a path ICE validated (a tuple the PeerConnection answered a
//!   binding request from); media leaves only on the path ICE selected;
//! - at most one offer of ours is outstanding: renegotiation waits for the answer
//!   ([`negotiation`]);
//! - when the task ends, for whatever reason, it unregisters its routes, tells its room
//!   (`Closed`) and drops every sender it held, so nothing of it stays behind.

mod dtls_srtp;
mod negotiation;
mod outbound;
mod path;
mod publish;
mod retransmit;
mod rtcp_out;
pub mod rtcp_tap;
pub mod setup;
pub mod stats;
mod subscribe;
#[cfg(test)]
mod tests;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::state::RTCIceConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::sansio::Protocol;
use tokio::sync::mpsc;

use super::feedback::twcc::TwccRecorder;
use super::media_plane::{Datagram, MediaPlane, Transport};
use super::types::{self, FastMap, PeerCommand, PeerEvent, PeerId, TrackId, TrackInfo};
use crate::ids::Identity;
use crate::metrics::{Metrics, ReasonLabels};
pub use dtls_srtp::DtlsIdentity;
use dtls_srtp::DtlsSrtp;
pub use outbound::SharedOutbound;
use publish::UpTrack;
use setup::PeerFactory;
use subscribe::{DownTrack, IdleSender};

/// Datagrams waiting for a peer before the socket drops new ones.
const INBOX: usize = 2048;
const COMMANDS: usize = 256;
/// Remote addresses whose local candidate a peer remembers (ICE checks use a handful).
const MAX_REMOTE_ADDRS: usize = 16;
/// Most queued items handled per wake-up before the connection is drained.
const BATCH: usize = 64;
/// DTLS records kept while the remote description (and its fingerprint) is not known yet.
const MAX_EARLY_DTLS: usize = 8;

/// Packet counts of one wake-up, added to the shared counters once ([`Peer::drain`]) rather
/// than per packet.
#[derive(Debug, Default)]
struct PendingCounts {
    received: u64,
    forwarded: u64,
    forwarded_bytes: u64,
}

/// How to reach a peer's task.
#[derive(Debug, Clone)]
pub struct PeerHandle {
    pub id: PeerId,
    pub commands: mpsc::Sender<PeerCommand>,
    /// What publishers forward into ([`outbound`]).
    pub outbound: SharedOutbound,
}

/// What a peer's task needs besides its connection.
pub struct PeerContext {
    pub id: PeerId,
    pub owner: Identity,
    /// False in audio-only sessions: published video is ignored.
    pub allow_video: bool,
    /// Most tracks the client may publish.
    pub max_tracks: usize,
    pub plane: Arc<MediaPlane>,
    pub factory: Arc<PeerFactory>,
    pub metrics: Arc<Metrics>,
    pub events: mpsc::UnboundedSender<PeerEvent>,
    pub next_track_id: Arc<std::sync::atomic::AtomicU64>,
    /// A pre-call check's peer ([`crate::sfu::check`]): it may receive its own tracks back.
    /// False for every consultation peer (nobody receives their own media in a room).
    pub echo: bool,
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
    /// What leaves for the client, shared with the publishers it receives from.
    outbound: SharedOutbound,
    inbox_tx: mpsc::Sender<Datagram>,
    signaling: Signaling,
    /// Offers of ours are allowed (after the first negotiation, or from the start when we
    /// make the first offer).
    can_offer: bool,
    negotiation_needed: bool,
    /// Our next offer waits until then: a client that just completed a negotiation often
    /// offers next (tracks it could not add to our offer), and two crossing offers help nobody.
    offer_not_before: Option<Instant>,
    remote_set: bool,
    pending_candidates: Vec<RTCIceCandidateInit>,
    connected: bool,
    saw_media: bool,
    closed: bool,
    /// How media last left for the client.
    path: Option<super::types::MediaPath>,
    /// Our candidate address per remote address seen (see [`PeerFactory::local_addr_for`]).
    local_addrs: Vec<(SocketAddr, Transport, SocketAddr)>,
    /// Tuples whose binding requests the PeerConnection answered (ICE-validated paths).
    validated: Vec<(SocketAddr, Transport)>,
    /// ICE's selected path: where media, RTCP and DTLS go ([`path`]).
    media_dest: Option<(SocketAddr, Transport)>,
    /// The DTLS association, once a remote description said how to authenticate it.
    secure: Option<DtlsSrtp>,
    early_dtls: Vec<Datagram>,
    /// Where the last DTLS record came from (the path, until ICE names one).
    dtls_from: Option<(SocketAddr, Transport)>,
    /// SSRCs the client declared, by mid, from its last description.
    declared_ssrcs: Vec<(u32, String)>,
    /// The PeerConnection was handed something since its output was last drained: media does
    /// not go through it, so most wake-ups need not sweep it.
    pc_touched: bool,
    /// Its next deadline, read when it was last drained.
    pc_deadline: Option<Instant>,
    counts: PendingCounts,
    ups: Vec<UpTrack>,
    up_by_ssrc: FastMap<u32, usize>,
    downs: FastMap<TrackId, DownTrack>,
    down_by_ssrc: FastMap<u32, TrackId>,
    /// Sending halves that carried a track and wait for another ([`subscribe`]).
    idle: Vec<IdleSender>,
    /// Tracks kept out of our first offer (one m-line per kind), added once it is answered.
    deferred: Vec<TrackInfo>,
    /// The client's last description, as relais reads it.
    remote_sections: crate::sfu::sdp::sections::Sections,
    /// The client's media streams (msid), in the order their tracks were first published: the
    /// first is the participant's own stream for subscribers, the others `.2`, `.3`…
    client_streams: Vec<String>,
    /// Our first offer's receive slots and their kinds.
    slots: Vec<(rtc::rtp_transceiver::RTCRtpTransceiverId, types::MediaKind)>,
    /// The mid our descriptions tag first in their BUNDLE group, when not the stack's choice
    /// ([`crate::sfu::sdp::plan::bundle_plan`]).
    bundle_tag: Option<String>,
    /// From the client's last offer: each mid and whether the client receives on it.
    client_offered: Vec<(String, bool)>,
    /// Sender SSRC of the RTCP we write about the client's streams.
    rtcp_ssrc: u32,
    /// Arrival of the client's packets, for congestion feedback ([`rtcp_out`]).
    twcc: TwccRecorder,
    next_report: Instant,
    next_twcc: Instant,
    /// The client's round trip, from its reports on what we send it.
    round_trip: Option<Duration>,
    /// Reused for what the pacer releases; what it dropped, as last counted.
    paced_scratch: Vec<(bytes::Bytes, Option<u16>)>,
    pacer_dropped: u64,
    /// Whether the room was told the client's downlink is weak.
    link_quality: crate::sfu::congestion::cap::LinkQuality,
    /// When to tell our client its subscribers' cap ([`crate::sfu::congestion::cap`]).
    remb: crate::sfu::congestion::cap::RembSchedule,

    /// Reused for the sequence numbers of one NACK.
    lost_scratch: Vec<u16>,
}

/// Builds the connection and starts its task.
pub fn spawn(ctx: PeerContext, now: Instant) -> rtc::shared::error::Result<PeerHandle> {
    let (peer, handle, cmd_rx, inbox_rx) = Peer::build(ctx, now)?;
    let plane = peer.ctx.plane.clone();
    plane.spawn(peer.run(cmd_rx, inbox_rx));
    Ok(handle)
}

type Built = (
    Peer,
    PeerHandle,
    mpsc::Receiver<PeerCommand>,
    mpsc::Receiver<Datagram>,
);

impl Peer {
    /// The connection and the queues its task reads (the task is not started).
    fn build(ctx: PeerContext, now: Instant) -> rtc::shared::error::Result<Built> {
        let pc = ctx.factory.build(now)?;
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMANDS);
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX);
        let handle = PeerHandle {
            id: ctx.id,
            commands: cmd_tx,
            outbound: outbound::Outbound::shared(ctx.plane.clone()),
        };
        ctx.metrics.media.peer_connections.inc();
        let peer = Peer {
            ctx,
            pc,
            commands_weak: handle.commands.downgrade(),
            outbound: handle.outbound.clone(),
            inbox_tx,
            signaling: Signaling::Stable,
            can_offer: false,
            negotiation_needed: false,
            offer_not_before: None,
            remote_set: false,
            pending_candidates: Vec::new(),
            connected: false,
            saw_media: false,
            path: None,
            local_addrs: Vec::new(),
            validated: Vec::new(),
            media_dest: None,
            secure: None,
            early_dtls: Vec::new(),
            dtls_from: None,
            declared_ssrcs: Vec::new(),
            pc_touched: true,
            pc_deadline: None,
            counts: PendingCounts::default(),
            closed: false,
            ups: Vec::new(),
            up_by_ssrc: FastMap::default(),
            downs: FastMap::default(),
            down_by_ssrc: FastMap::default(),
            idle: Vec::new(),
            deferred: Vec::new(),
            remote_sections: Default::default(),
            client_offered: Vec::new(),
            bundle_tag: None,
            slots: Vec::new(),
            client_streams: Vec::new(),
            rtcp_ssrc: rand::random::<u32>().max(1),
            twcc: TwccRecorder::default(),
            next_report: now + rtcp_out::REPORT_INTERVAL,
            next_twcc: now,
            remb: Default::default(),
            round_trip: None,
            link_quality: Default::default(),
            paced_scratch: Vec::new(),
            pacer_dropped: 0,

            lost_scratch: Vec::new(),
        };
        Ok((peer, handle, cmd_rx, inbox_rx))
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<PeerCommand>,
        mut inbox: mpsc::Receiver<Datagram>,
    ) {
        let mut batch_cmd = Vec::with_capacity(BATCH);
        let mut batch_dgram = Vec::with_capacity(BATCH);
        let pacer_wake = self.outbound.lock().pacer_wake();
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
                _ = inbox.recv_many(&mut batch_dgram, BATCH) => {
                    for dg in batch_dgram.drain(..) {
                        self.on_datagram(dg);
                    }
                }
                _ = &mut timer => self.on_timer(Instant::now()),
                // Video entered the pacer's empty queue: its release time is a deadline now.
                _ = pacer_wake.notified() => {}
            }
            self.drain();
            if self.maybe_offer() {
                self.drain();
            }
        }
        self.shutdown();
    }

    /// When the stack (ICE), the DTLS handshake or our own feedback next needs the task (at
    /// most a second away).
    fn next_deadline(&mut self) -> Instant {
        let mut next = self
            .pc_deadline
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        if let Some(t) = self.feedback_deadline() {
            next = next.min(t);
        }
        if let Some(t) = self.outbound.lock().next_paced(Instant::now()) {
            next = next.min(t);
        }
        if self.negotiation_needed
            && let Some(t) = self.offer_not_before
        {
            next = next.min(t);
        }
        // Handshake retransmissions only: a completed association needs no timer.
        if let Some(t) = self
            .secure
            .as_ref()
            .filter(|s| !s.is_connected())
            .and_then(DtlsSrtp::poll_timeout)
        {
            next = next.min(t);
        }
        next
    }

    fn on_timer(&mut self, now: Instant) {
        self.pc_touched = true;
        // Not fatal: when the SDPs make the PeerConnection the DTLS client, its own handshake
        // (whose flights are never sent) gives up with an error here. ICE failure is an event.
        if self.pc.poll_timeout().is_some_and(|t| t <= now)
            && let Err(e) = self.pc.handle_timeout(now)
        {
            tracing::trace!(peer = %self.ctx.id, error = %e, "PeerConnection timer");
        }
        if let Some(secure) = self.secure.as_mut()
            && let Err(e) = secure.handle_timeout(now)
        {
            tracing::debug!(peer = %self.ctx.id, error = %e, "DTLS handshake gave up");
            self.fail(crate::error::ErrorCode::DtlsFailed);
        }
        self.flush_dtls();
    }

    fn on_command(&mut self, cmd: PeerCommand) {
        self.pc_touched = true;
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
            PeerCommand::SubscriberRate { track, peer, bps } => {
                self.subscriber_rate(track, peer, bps, Instant::now());
            }
            PeerCommand::PreferCodecs { track, codecs } => self.prefer_codecs(track, &codecs),
            PeerCommand::RecordTrack { track, tap } => self.record_track(track, tap),
            PeerCommand::Stats { reply } => {
                let _ = reply.send((self.path, self.stats(Instant::now())));
            }
            PeerCommand::Close => {
                self.close_secure();
                let _ = self.pc.close();
                self.flush_writes();
                self.closed = true;
            }
        }
    }

    /// After each wake-up: the shared packet counters, the PeerConnection's events and output
    /// when it was handed something, then our feedback.
    fn drain(&mut self) {
        let counts = std::mem::take(&mut self.counts);
        let media = &self.ctx.metrics.media;
        if counts.received > 0 {
            media.rtp_packets_received.inc_by(counts.received);
        }
        if counts.forwarded > 0 {
            media.rtp_packets_forwarded.inc_by(counts.forwarded);
            media.rtp_bytes_forwarded.inc_by(counts.forwarded_bytes);
        }
        if std::mem::take(&mut self.pc_touched) {
            self.take_events();
            self.flush_writes();
            self.pc_deadline = self.pc.poll_timeout();
        }
        self.send_feedback(Instant::now());
        self.release_paced(Instant::now());
    }

    /// Sends the video the pacer lets go now, and counts what it had to drop.
    fn release_paced(&mut self, now: Instant) {
        let (_, dropped) = self
            .outbound
            .lock()
            .release_paced(now, &mut self.paced_scratch);
        if dropped > self.pacer_dropped {
            self.ctx
                .metrics
                .media
                .pacer_dropped
                .inc_by(dropped - self.pacer_dropped);
            self.pacer_dropped = dropped;
        }
    }

    pub(super) fn take_events(&mut self) {
        while let Some(event) = self.pc.poll_event() {
            self.on_event(event);
        }
    }

    /// The PeerConnection's connection state is not read: its DTLS never runs (this task's
    /// does, see [`Self::on_secure_connected`]); ICE's state is.
    fn on_event(&mut self, event: RTCPeerConnectionEvent) {
        if let RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(state) = event {
            match state {
                RTCIceConnectionState::Failed => self.fail(crate::error::ErrorCode::IceFailed),
                RTCIceConnectionState::Connected | RTCIceConnectionState::Completed => {
                    self.on_ice_connected();
                }
                _ => {}
            }
        }
    }

    fn fail(&mut self, reason: crate::error::ErrorCode) {
        if self.closed {
            return;
        }
        if matches!(
            reason,
            crate::error::ErrorCode::IceFailed | crate::error::ErrorCode::DtlsFailed
        ) {
            self.ctx.metrics.media.ice_failures.inc();
        }
        let _ = self.ctx.events.send(PeerEvent::Failed {
            peer: self.ctx.id,
            reason,
        });
        self.close_secure();
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
        self.outbound.lock().close();
        self.ctx.plane.unregister(self.ctx.id);
        let media = &self.ctx.metrics.media;
        media.tracks.dec_by(self.ups.len() as i64);
        media.peer_connections.dec();
        self.ups.clear();
        self.downs.clear();
        self.idle.clear();
        let _ = self
            .ctx
            .events
            .send(PeerEvent::Closed { peer: self.ctx.id });
        tracing::debug!(peer = %self.ctx.id, "peer closed");
    }
}
