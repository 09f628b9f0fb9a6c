//! One live consultation: its participants, their PeerConnections, who receives which track.
//!
//! A room is a task (an actor): signaling commands and peer events reach it through queues
//! and it handles them one at a time, so its state needs no lock. It talks to clients through
//! Socket.IO: SDP to one participant's socket, session events to `session:{id}`.
//!
//! Invariants:
//! - every participant with a PeerConnection receives every track the others publish (audio
//!   always, video unless the session is audio-only), and nothing of their own;
//! - a participant removed for any reason (left, ICE failed, socket gone past the grace
//!   period, session ended) leaves nothing: its peer task is closed, its tracks are withdrawn
//!   from the others (who are renegotiated), its subscriptions are dropped at the publishers;
//! - the room stops when its last participant is gone or the session ended.

pub mod recording;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::peer::stats::TrackStatsView;
use super::peer::{self, PeerContext, PeerHandle};
use super::sdp;
use super::types::{
    LocalAnswer, PeerCommand, PeerEvent, PeerId, SignalError, SignalResult, SubscriberLink,
    TrackId, TrackInfo,
};
use crate::codec::Codec;
use crate::error::ErrorCode;
use crate::ids::{Identity, RoomKey, SessionId, SocketId};
use crate::store::SessionRecord;
use crate::wire::{self as events, Outgoing, UserRef};

const COMMANDS: usize = 256;
/// The reason a room closes when its session moved to another node (several nodes).
pub const MOVED: &str = "session_moved";
/// How long a peer may take to answer a signaling command.
const PEER_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Signaling requests for a room.
#[derive(Debug)]
pub enum RoomCommand {
    /// `webrtc_offer`: the participant publishes (or renegotiates).
    Publish {
        who: Identity,
        sid: SocketId,
        sdp: String,
        reply: oneshot::Sender<SignalResult<()>>,
    },
    /// `request_webrtc_offer` (already admitted with the code): the server offers.
    Join {
        who: Identity,
        sid: SocketId,
        reply: oneshot::Sender<SignalResult<()>>,
    },
    Answer {
        who: Identity,
        sdp: String,
        reply: oneshot::Sender<SignalResult<()>>,
    },
    Candidates {
        who: Identity,
        candidates: Vec<rtc::peer_connection::transport::RTCIceCandidateInit>,
        reply: oneshot::Sender<SignalResult<usize>>,
    },
    Leave {
        who: Identity,
        reply: oneshot::Sender<SignalResult<()>>,
    },
    End {
        reason: &'static str,
        reply: oneshot::Sender<()>,
    },
    SocketGone {
        sid: SocketId,
    },
    SocketBack {
        who: Identity,
        sid: SocketId,
    },
    Stats {
        reply: oneshot::Sender<Vec<ParticipantStats>>,
    },
    /// The doctor (already authorized) turns recording on, having confirmed consent at `at`.
    StartRecording {
        by: Identity,
        at: crate::clock::Millis,
        reply: oneshot::Sender<crate::messaging::DomainResult<recording::RecordingStarted>>,
    },
    StopRecording {
        reply: oneshot::Sender<
            crate::messaging::DomainResult<Vec<(String, crate::recording::Closing)>>,
        >,
    },
}

/// One participant in `GET …/stats`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ParticipantStats {
    pub participant: UserRef,
    pub connected: bool,
    /// `udp` or `tcp` (ICE-TCP): how the server reaches this participant's media.
    #[schema(value_type = Option<String>)]
    pub transport: Option<std::borrow::Cow<'static, str>>,
    pub tracks: Vec<TrackStatsView>,
}

#[derive(Debug, Clone)]
pub struct RoomHandle {
    pub session: SessionId,
    pub tx: mpsc::Sender<RoomCommand>,
}

struct PeerState {
    handle: PeerHandle,
    published: Vec<TrackInfo>,
    fingerprint: Option<String>,
    connected: bool,
}

struct Participant {
    who: Identity,
    sid: Option<SocketId>,
    peer: Option<PeerState>,
    /// An offer of ours not yet answered, re-sent when the socket comes back.
    pending_offer: Option<String>,
    grace_deadline: Option<Instant>,
}

pub(super) struct Room {
    session: SessionRecord,
    shared: Arc<Shared>,
    participants: HashMap<Identity, Participant>,
    peers: HashMap<PeerId, Identity>,
    events_tx: mpsc::UnboundedSender<PeerEvent>,
    marked_active: bool,
    ended: bool,
    /// Set while the consultation is recorded.
    recording: Option<recording::RoomRecording>,
    /// Per published track whose codec some subscriber could not decode: what they accept.
    codec_constraints: HashMap<TrackId, CodecConstraint>,
}

/// The codecs every subscriber of a track that could not decode it accepts.
struct CodecConstraint {
    codecs: Vec<Codec>,
    /// The subscribers' peers that wait for another codec.
    waiting: Vec<PeerId>,
    /// The codec they could not decode.
    sent: Codec,
}

pub(super) fn spawn(session: SessionRecord, shared: Arc<Shared>) -> RoomHandle {
    let (tx, rx) = mpsc::channel(COMMANDS);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let handle = RoomHandle {
        session: session.id,
        tx,
    };
    let room = Room {
        marked_active: session.statut != crate::store::SessionStatus::Initiating,
        session,
        shared,
        participants: HashMap::new(),
        peers: HashMap::new(),
        events_tx,
        ended: false,
        recording: None,
        codec_constraints: HashMap::new(),
    };
    tokio::spawn(room.run(rx, events_rx, handle.clone()));
    handle
}

impl Room {
    fn session_room(&self) -> RoomKey {
        RoomKey::Session(self.session.id)
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<RoomCommand>,
        mut events: mpsc::UnboundedReceiver<PeerEvent>,
        me: RoomHandle,
    ) {
        self.shared.metrics.media.sessions_active.inc();
        loop {
            let deadline = self
                .participants
                .values()
                .filter_map(|p| p.grace_deadline)
                .min();
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await,
                    None => break,
                },
                Some(ev) = events.recv() => self.on_peer_event(ev).await,
                _ = sleep_until_opt(deadline) => self.expire_graces().await,
            }
            if self.ended || (self.participants.is_empty() && self.peers.is_empty()) {
                break;
            }
        }
        // Whatever is left closes with the room.
        for p in self.participants.values() {
            if let Some(peer) = &p.peer {
                let _ = peer.handle.commands.try_send(PeerCommand::Close);
            }
        }
        self.shared.forget_room(&me);
        self.shared.metrics.media.sessions_active.dec();
        tracing::debug!(session = %self.session.id, "room closed");
    }

    async fn on_command(&mut self, cmd: RoomCommand) {
        match cmd {
            RoomCommand::Publish {
                who,
                sid,
                sdp,
                reply,
            } => {
                let r = self.publish(who, sid, sdp).await;
                let _ = reply.send(r);
            }
            RoomCommand::Join { who, sid, reply } => {
                let r = self.join(who, sid).await;
                let _ = reply.send(r);
            }
            RoomCommand::Answer { who, sdp, reply } => {
                let r = self.answer(who, sdp).await;
                let _ = reply.send(r);
            }
            RoomCommand::Candidates {
                who,
                candidates,
                reply,
            } => {
                let r = self.candidates(who, candidates).await;
                let _ = reply.send(r);
            }
            RoomCommand::Leave { who, reply } => {
                let r = if self.participants.contains_key(&who) {
                    self.remove_participant(who, "left").await;
                    Ok(())
                } else {
                    Err(not_in_session())
                };
                let _ = reply.send(r);
            }
            RoomCommand::End { reason, reply } => {
                self.end(reason).await;
                let _ = reply.send(());
            }
            RoomCommand::SocketGone { sid } => {
                let grace = self.shared.grace;
                for p in self.participants.values_mut() {
                    if p.sid == Some(sid) {
                        p.sid = None;
                        p.grace_deadline = Some(Instant::now() + grace);
                    }
                }
            }
            RoomCommand::SocketBack { who, sid } => self.socket_back(who, sid),
            RoomCommand::Stats { reply } => {
                let _ = reply.send(self.stats().await);
            }
            RoomCommand::StartRecording { by, at, reply } => {
                let r = self.start_recording(by, at).await;
                let _ = reply.send(r);
            }
            RoomCommand::StopRecording { reply } => {
                let r = self.stop_recording("stopped_by_doctor").await;
                let _ = reply.send(r);
            }
        }
    }

    /// Adds (or refreshes) a participant bound to `sid`.
    async fn enter(&mut self, who: Identity, sid: SocketId) {
        let is_new = !self.participants.contains_key(&who);
        let p = self.participants.entry(who).or_insert_with(|| Participant {
            who,
            sid: None,
            peer: None,
            pending_offer: None,
            grace_deadline: None,
        });
        let rebound = p.sid != Some(sid);
        p.sid = Some(sid);
        p.grace_deadline = None;
        self.shared.io.join(sid, self.session_room());
        if rebound && self.recording_on() {
            self.tell_recording(sid);
        }
        if is_new {
            self.shared.presence_add(who, self.session.id);
            if let Err(e) = self
                .shared
                .sessions
                .participant_joined(self.session.id, who)
                .await
            {
                tracing::warn!(error = %e, "could not record a session participant");
            }
            let payload = events::ParticipantEvent {
                session_id: self.session.id.0,
                participant: who.into(),
                reason: None,
                participants: self.participants.keys().map(|w| (*w).into()).collect(),
            };
            self.emit_session(Outgoing::ParticipantJoined(payload))
                .await;
        }
    }

    async fn publish(&mut self, who: Identity, sid: SocketId, offer: String) -> SignalResult<()> {
        if who != self.session.created_by && !self.participants.contains_key(&who) {
            return Err(not_in_session());
        }
        sdp::check(&offer).map_err(|p| SignalError::bad_sdp(p.message()))?;
        self.enter(who, sid).await;
        let fingerprint = sdp::fingerprint(&offer).map(str::to_string);
        // The same PeerConnection offers again (a track added, an ICE restart); one that joined
        // by code and has not answered yet has no known fingerprint and is taken as the same.
        let same_connection = self.participants[&who]
            .peer
            .as_ref()
            .is_some_and(|p| p.fingerprint.is_none() || p.fingerprint == fingerprint);
        if !same_connection {
            // A new PeerConnection on the client's side replaces the old one.
            self.drop_peer(who);
        }
        let fresh = self.participants[&who].peer.is_none();
        if fresh {
            self.new_peer(who, fingerprint)?;
        }
        let handle = self.participants[&who]
            .peer
            .as_ref()
            .expect("just set")
            .handle
            .clone();
        let (tx, rx) = oneshot::channel();
        self.send_peer(
            &handle,
            PeerCommand::RemoteOffer {
                sdp: offer,
                reply: tx,
            },
        );
        let answer = match await_reply(rx).await {
            Ok(a) => a,
            Err(e) => {
                if fresh {
                    self.drop_peer(who);
                }
                return Err(e);
            }
        };
        self.send_answer(who, answer);
        if fresh {
            self.subscribe_to_others(who);
        }
        Ok(())
    }

    async fn join(&mut self, who: Identity, sid: SocketId) -> SignalResult<()> {
        self.enter(who, sid).await;
        // A join is a new PeerConnection on the client's side.
        self.drop_peer(who);
        self.new_peer(who, None)?;
        let handle = self.participants[&who]
            .peer
            .as_ref()
            .expect("just set")
            .handle
            .clone();
        // Everything the newcomer receives goes in the first offer.
        let mut subscribe = Vec::new();
        for other in self.participants.values().filter(|o| o.who != who) {
            let Some(op) = &other.peer else { continue };
            for track in &op.published {
                subscribe.push(track.clone());
                self.send_peer(
                    &op.handle,
                    PeerCommand::AddSubscriber {
                        track: track.id,
                        link: SubscriberLink {
                            peer: handle.id,
                            outbound: handle.outbound.clone(),
                        },
                    },
                );
            }
        }
        self.send_peer(
            &handle,
            PeerCommand::StartOffer {
                audio: true,
                video: self.session.session_type.has_video(),
                subscribe,
            },
        );
        Ok(())
    }

    async fn answer(&mut self, who: Identity, answer: String) -> SignalResult<()> {
        let handle = self.peer_of(who)?;
        let fingerprint = sdp::fingerprint(&answer).map(str::to_string);
        let (tx, rx) = oneshot::channel();
        self.send_peer(
            &handle,
            PeerCommand::RemoteAnswer {
                sdp: answer,
                reply: tx,
            },
        );
        await_reply(rx).await?;
        if let Some(p) = self.participants.get_mut(&who) {
            p.pending_offer = None;
            if let Some(peer) = p.peer.as_mut()
                && peer.fingerprint.is_none()
            {
                peer.fingerprint = fingerprint;
            }
        }
        Ok(())
    }

    async fn candidates(
        &mut self,
        who: Identity,
        candidates: Vec<rtc::peer_connection::transport::RTCIceCandidateInit>,
    ) -> SignalResult<usize> {
        // A member whose PeerConnection is not there yet (its description is still on its
        // way: a socket's events are handled concurrently): nothing to apply them to, and
        // nothing lost (ICE-lite; the server learns the path from the client's checks).
        if self.peer_of(who).is_err()
            && (who == self.session.created_by || self.participants.contains_key(&who))
        {
            return Ok(0);
        }
        let handle = self.peer_of(who)?;
        let (tx, rx) = oneshot::channel();
        self.send_peer(
            &handle,
            PeerCommand::RemoteCandidates {
                candidates,
                reply: tx,
            },
        );
        await_reply(rx).await
    }

    fn peer_of(&self, who: Identity) -> SignalResult<PeerHandle> {
        self.participants
            .get(&who)
            .and_then(|p| p.peer.as_ref())
            .map(|p| p.handle.clone())
            .ok_or_else(not_in_session)
    }

    fn new_peer(&mut self, who: Identity, fingerprint: Option<String>) -> SignalResult<()> {
        let id = self.shared.next_peer_id();
        let ctx = PeerContext {
            id,
            owner: who,
            allow_video: self.session.session_type.has_video(),
            max_tracks: self.shared.max_tracks,
            plane: self.shared.plane.clone(),
            factory: self.shared.factory.clone(),
            metrics: self.shared.metrics.clone(),
            events: self.events_tx.clone(),
            next_track_id: self.shared.next_track_id.clone(),
        };
        let handle = peer::spawn(ctx, Instant::now()).map_err(|e| {
            tracing::error!(error = %e, "cannot build a PeerConnection");
            SignalError::internal()
        })?;
        self.peers.insert(id, who);
        let p = self.participants.get_mut(&who).expect("entered first");
        p.peer = Some(PeerState {
            handle,
            published: Vec::new(),
            fingerprint,
            connected: false,
        });
        Ok(())
    }

    /// Sends `who` every track the others publish.
    fn subscribe_to_others(&self, who: Identity) {
        let Some(me) = self.participants.get(&who).and_then(|p| p.peer.as_ref()) else {
            return;
        };
        for other in self.participants.values().filter(|o| o.who != who) {
            let Some(op) = &other.peer else { continue };
            for track in &op.published {
                self.link(track, me, &op.handle);
            }
        }
    }

    /// `subscriber` receives `track`, published by `publisher`.
    fn link(&self, track: &TrackInfo, subscriber: &PeerState, publisher: &PeerHandle) {
        self.send_peer(&subscriber.handle, PeerCommand::Subscribe(track.clone()));
        self.send_peer(
            publisher,
            PeerCommand::AddSubscriber {
                track: track.id,
                link: SubscriberLink {
                    peer: subscriber.handle.id,
                    outbound: subscriber.handle.outbound.clone(),
                },
            },
        );
    }

    fn send_peer(&self, handle: &PeerHandle, cmd: PeerCommand) {
        match handle.commands.try_send(cmd) {
            Ok(()) => {}
            // A peer that is closing: what it was told no longer matters.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!(peer = %handle.id, "peer already closed");
            }
            Err(e) => tracing::warn!(peer = %handle.id, error = %e, "peer command queue full"),
        }
    }

    /// Closes `who`'s PeerConnection and withdraws everything it published or received.
    fn drop_peer(&mut self, who: Identity) {
        let Some(state) = self.participants.get_mut(&who).and_then(|p| p.peer.take()) else {
            return;
        };
        self.peers.remove(&state.handle.id);
        if let Some(p) = self.participants.get_mut(&who) {
            p.pending_offer = None;
        }
        let gone: Vec<_> = state.published.iter().map(|t| t.id).collect();
        self.unrecord_tracks(who, &gone);
        self.send_peer(&state.handle, PeerCommand::Close);
        for other in self.participants.values() {
            let Some(op) = &other.peer else { continue };
            for track in &state.published {
                self.send_peer(&op.handle, PeerCommand::Unsubscribe(track.id));
            }
            for track in &op.published {
                self.send_peer(
                    &op.handle,
                    PeerCommand::RemoveSubscriber {
                        track: track.id,
                        peer: state.handle.id,
                    },
                );
            }
        }
    }

    async fn remove_participant(&mut self, who: Identity, reason: &'static str) {
        self.drop_peer(who);
        self.stop_recording_participant(who, "participant_left");
        let Some(p) = self.participants.remove(&who) else {
            return;
        };
        self.shared.presence_remove(who, self.session.id);
        if let Some(sid) = p.sid {
            self.shared.io.leave(sid, self.session_room());
        }
        if let Err(e) = self
            .shared
            .sessions
            .participant_left(self.session.id, who)
            .await
        {
            tracing::warn!(error = %e, "could not record a departure");
        }
        let payload = events::ParticipantEvent {
            session_id: self.session.id.0,
            participant: who.into(),
            reason: Some(reason),
            participants: self.participants.keys().map(|w| (*w).into()).collect(),
        };
        self.emit_session(Outgoing::ParticipantLeft(payload)).await;
        tracing::debug!(session = %self.session.id, reason, "participant removed");
    }

    async fn end(&mut self, reason: &'static str) {
        if self.recording_on() {
            // A session moving away stops being recorded here as at a shutdown.
            let why = if reason == "server_shutdown" || reason == MOVED {
                "server_shutdown"
            } else {
                "session_ended"
            };
            let _ = self.stop_recording(why).await;
        }
        // A session moving to another node is not over: its participants were told
        // `session_moved` instead.
        if reason != MOVED {
            let payload = events::SessionEnded {
                session_id: self.session.id.0,
                reason,
            };
            self.emit_session(Outgoing::SessionEnded(payload)).await;
        }
        let everyone: Vec<Identity> = self.participants.keys().copied().collect();
        for who in everyone {
            self.drop_peer(who);
            if let Some(p) = self.participants.remove(&who) {
                self.shared.presence_remove(who, self.session.id);
                if let Some(sid) = p.sid {
                    self.shared.io.leave(sid, self.session_room());
                }
            }
        }
        self.ended = true;
    }

    async fn expire_graces(&mut self) {
        let now = Instant::now();
        let expired: Vec<Identity> = self
            .participants
            .values()
            .filter(|p| p.grace_deadline.is_some_and(|d| d <= now))
            .map(|p| p.who)
            .collect();
        for who in expired {
            self.remove_participant(who, "disconnected").await;
        }
    }

    fn socket_back(&mut self, who: Identity, sid: SocketId) {
        let Some(p) = self.participants.get_mut(&who) else {
            return;
        };
        if p.sid.is_some() && p.grace_deadline.is_none() {
            // Still bound to a live socket (another tab); keep it.
            return;
        }
        p.sid = Some(sid);
        p.grace_deadline = None;
        let pending = p.pending_offer.clone();
        self.shared.io.join(sid, self.session_room());
        if self.recording_on() {
            self.tell_recording(sid);
        }
        if let Some(sdp) = pending {
            self.emit_offer(who, sdp);
        }
    }

    async fn on_peer_event(&mut self, ev: PeerEvent) {
        match ev {
            PeerEvent::Offer { peer, sdp } => {
                let Some(&who) = self.peers.get(&peer) else {
                    return;
                };
                if let Some(p) = self.participants.get_mut(&who) {
                    p.pending_offer = Some(sdp.clone());
                }
                self.emit_offer(who, sdp);
            }
            PeerEvent::LocalCandidates { peer, candidates } => {
                let Some(&who) = self.peers.get(&peer) else {
                    return;
                };
                self.emit_candidates(who, candidates);
            }
            PeerEvent::Published { peer, tracks } => {
                let Some(&who) = self.peers.get(&peer) else {
                    return;
                };
                let Some(state) = self
                    .participants
                    .get_mut(&who)
                    .and_then(|p| p.peer.as_mut())
                else {
                    return;
                };
                state.published.extend(tracks.iter().cloned());
                let publisher = state.handle.clone();
                for other in self.participants.values().filter(|o| o.who != who) {
                    let Some(op) = &other.peer else { continue };
                    for track in &tracks {
                        self.link(track, op, &publisher);
                    }
                }
                self.record_participant(who).await;
            }
            PeerEvent::Unpublished { peer, tracks } => {
                let Some(&who) = self.peers.get(&peer) else {
                    return;
                };
                if let Some(state) = self
                    .participants
                    .get_mut(&who)
                    .and_then(|p| p.peer.as_mut())
                {
                    state.published.retain(|t| !tracks.contains(&t.id));
                }
                self.unrecord_tracks(who, &tracks);
                for track in &tracks {
                    self.codec_constraints.remove(track);
                }
                for other in self.participants.values().filter(|o| o.who != who) {
                    let Some(op) = &other.peer else { continue };
                    for track in &tracks {
                        self.send_peer(&op.handle, PeerCommand::Unsubscribe(*track));
                    }
                }
            }
            PeerEvent::Refused {
                peer,
                track: _,
                code,
                message,
            } => {
                if let Some(&who) = self.peers.get(&peer) {
                    self.emit_error(who, code, &message);
                }
            }
            PeerEvent::CodecUnsupported {
                peer,
                track,
                codec,
                accepted,
            } => self.constrain_codec(peer, track, codec, accepted),
            PeerEvent::CodecUnavailable {
                peer: _,
                track,
                asked,
            } => {
                self.codec_unavailable(track, &asked);
            }
            PeerEvent::FirstMedia { .. } => {
                if !self.marked_active {
                    self.marked_active = true;
                    if let Err(e) = self.shared.sessions.mark_active(self.session.id).await {
                        tracing::warn!(error = %e, "could not mark the session active");
                    }
                }
            }
            PeerEvent::Connected { peer } => {
                let Some(&who) = self.peers.get(&peer) else {
                    return;
                };
                if let Some(state) = self
                    .participants
                    .get_mut(&who)
                    .and_then(|p| p.peer.as_mut())
                {
                    state.connected = true;
                }
            }
            PeerEvent::Failed { peer, reason } => {
                let Some(&who) = self.peers.get(&peer) else {
                    return;
                };
                self.emit_error(who, reason, "the media connection failed");
                self.remove_participant(who, reason.as_str()).await;
            }
            PeerEvent::Closed { peer } => {
                // Expected after drop_peer (already forgotten); otherwise the task stopped on
                // its own and its participant goes too.
                if let Some(who) = self.peers.remove(&peer) {
                    self.remove_participant(who, "connection_closed").await;
                }
            }
        }
    }

    /// A subscriber of `track` decodes only `accepted`: the publisher is asked to send a codec
    /// every subscriber that could not decode it so far decodes (their lists intersected, so that
    /// two subscribers cannot make it switch back and forth). Nobody is told anything unless no
    /// such codec exists or the publisher offered none ([`Self::codec_unavailable`]).
    fn constrain_codec(
        &mut self,
        subscriber: PeerId,
        track: TrackId,
        codec: Codec,
        accepted: Vec<Codec>,
    ) {
        let entry = self
            .codec_constraints
            .entry(track)
            .or_insert_with(|| CodecConstraint {
                codecs: accepted.clone(),
                waiting: Vec::new(),
                sent: codec,
            });
        entry.codecs.retain(|c| accepted.contains(c));
        if !entry.waiting.contains(&subscriber) {
            entry.waiting.push(subscriber);
        }
        entry.sent = codec;
        let codecs = entry.codecs.clone();
        if codecs.is_empty() {
            self.codec_unavailable(track, &accepted);
            return;
        }
        let publisher = self
            .participants
            .values()
            .filter_map(|p| p.peer.as_ref())
            .find(|p| p.published.iter().any(|t| t.id == track))
            .map(|p| p.handle.clone());
        if let Some(handle) = publisher {
            self.send_peer(&handle, PeerCommand::PreferCodecs { track, codecs });
        }
    }

    /// No codec fits both `track`'s publisher and the subscribers waiting for one: they are told
    /// what to change (they receive the rest of the call).
    fn codec_unavailable(&mut self, track: TrackId, asked: &[Codec]) {
        let Some(constraint) = self.codec_constraints.get(&track) else {
            return;
        };
        let owner = self
            .participants
            .values()
            .find(|p| {
                p.peer
                    .as_ref()
                    .is_some_and(|s| s.published.iter().any(|t| t.id == track))
            })
            .map(|p| p.who);
        let Some(owner) = owner else { return };
        let names = |codecs: &[Codec]| {
            codecs
                .iter()
                .map(|c| c.name().to_uppercase())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let message = format!(
            "{} {} sends video in {}, which your client does not decode, and offers none of the \
             codecs you accept ({}): enable {} on your side to see them",
            owner.role,
            owner.id,
            constraint.sent.name().to_uppercase(),
            names(asked),
            constraint.sent.name().to_uppercase()
        );
        let waiting: Vec<Identity> = constraint
            .waiting
            .iter()
            .filter_map(|p| self.peers.get(p).copied())
            .collect();
        for who in waiting {
            self.emit_error(who, ErrorCode::CodecUnsupported, &message);
        }
    }

    fn send_answer(&self, who: Identity, answer: LocalAnswer) {
        let Some(sid) = self.participants.get(&who).and_then(|p| p.sid) else {
            return;
        };
        let payload = events::Answer {
            session_id: self.session.id.0,
            sdp_answer: answer.sdp,
            from: events::ServerRef::default(),
        };
        self.emit_to(sid, Outgoing::WebrtcAnswer(payload));
        self.emit_candidates(who, answer.candidates);
    }

    fn emit_offer(&self, who: Identity, sdp: String) {
        let Some(sid) = self.participants.get(&who).and_then(|p| p.sid) else {
            return;
        };
        let payload = events::Offer {
            session_id: self.session.id.0,
            conversation_id: self.session.conversation_id.0,
            sdp_offer: sdp,
            session_type: self.session.session_type,
            from: events::ServerRef::default(),
        };
        self.emit_to(sid, Outgoing::WebrtcOffer(payload));
    }

    fn emit_candidates(
        &self,
        who: Identity,
        candidates: Vec<rtc::peer_connection::transport::RTCIceCandidateInit>,
    ) {
        if candidates.is_empty() {
            return;
        }
        let Some(sid) = self.participants.get(&who).and_then(|p| p.sid) else {
            return;
        };
        let payload = events::Candidates {
            session_id: self.session.id.0,
            candidates,
            from: events::ServerRef::default(),
        };
        self.emit_to(sid, Outgoing::WebrtcIceCandidates(payload));
    }

    fn emit_error(&self, who: Identity, code: ErrorCode, message: &str) {
        let Some(sid) = self.participants.get(&who).and_then(|p| p.sid) else {
            return;
        };
        self.shared.count_signal_error(code);
        let payload = events::WebrtcError {
            session_id: Some(self.session.id.0),
            code,
            message: message.to_string(),
        };
        self.emit_to(sid, Outgoing::WebrtcError(payload));
    }

    fn emit_to(&self, sid: SocketId, event: Outgoing) {
        tracing::trace!(session = %self.session.id, %sid, event = event.name(), "signal out");
        if let Err(e) = self.shared.io.emit_to(sid, &event) {
            tracing::debug!(error = %e, event = event.name(), "signal dropped");
        }
    }

    async fn emit_session(&self, event: Outgoing) {
        if let Err(e) = self.shared.io.emit_room(self.session_room(), &event).await {
            tracing::debug!(error = %e, event = event.name(), "emit failed");
        }
    }

    async fn stats(&self) -> Vec<ParticipantStats> {
        let mut out = Vec::new();
        for p in self.participants.values() {
            let mut tracks = Vec::new();
            let mut connected = false;
            let mut transport = None;
            if let Some(state) = &p.peer {
                connected = state.connected;
                let (tx, rx) = oneshot::channel();
                self.send_peer(&state.handle, PeerCommand::Stats { reply: tx });
                if let Ok(Ok((path, t))) = tokio::time::timeout(Duration::from_secs(2), rx).await {
                    transport = path;
                    tracks = t;
                }
            }
            out.push(ParticipantStats {
                participant: p.who.into(),
                connected,
                transport: transport.map(Into::into),
                tracks,
            });
        }
        out
    }
}

fn not_in_session() -> SignalError {
    SignalError::new(
        ErrorCode::NotInSession,
        "you are not in this consultation: join with its code first",
    )
}

async fn await_reply<T>(rx: oneshot::Receiver<SignalResult<T>>) -> SignalResult<T> {
    match tokio::time::timeout(PEER_REPLY_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(SignalError::new(
            ErrorCode::PeerGone,
            "the media connection closed",
        )),
        Err(_) => Err(SignalError::new(
            ErrorCode::Timeout,
            "the media server did not answer in time",
        )),
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
