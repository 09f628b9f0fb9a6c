//! A room's decisions, without IO: who is in the consultation and bound to which socket, who
//! receives which track, in which order the others are renegotiated, when a participant whose
//! socket went away is let go, and which recordings open and close as participants come and
//! go. [`RoomState`] takes the room's inputs (signaling, peer events, the time) and returns
//! [`Action`]s; the room task ([`super::Room`]) carries them out (peer tasks, store writes,
//! socket emits) in the order given and feeds back what only IO can tell (a peer that could
//! not start, a recording that could not open). It never reads the clock: `now` comes in.
//!
//! Invariants (kept here; unit-tested in `state/tests.rs`):
//! - every participant with a PeerConnection receives every track the others publish (audio
//!   always, video unless the session is audio-only, which its peers enforce from
//!   [`Action::CreatePeer`]'s `allow_video`), and nothing of their own;
//! - a participant removed for any reason (left, ICE failed, socket gone past the grace
//!   period, session ended) leaves nothing: its peer is closed, its tracks are withdrawn from
//!   the others (who are renegotiated, in the order they joined), its subscriptions are dropped
//!   at the publishers, its recordings are finished;
//! - a participant whose socket went away stays until the grace deadline
//!   ([`RoomState::poll_timeout`]); a socket of theirs back before it keeps them, and gets our
//!   unanswered offer again;
//! - the room is done ([`RoomState::is_done`]) when its last participant is gone or the
//!   session ended;
//! - while recording is on, each stream a participant publishes has exactly one recording,
//!   fed by that stream's tracks (a replaced connection's tracks continue the same file); a
//!   participant who leaves has theirs finished, one who comes back gets new ones; a further
//!   stream whose tracks all stopped (the screen share ended) has its file finished.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::clock::{Millis, to_rfc3339};
use crate::codec::Codec;
use crate::error::ErrorCode;
use crate::ids::{ConversationId, Identity, SessionId, SocketId};
use crate::messaging::{DomainError, DomainResult};
use crate::recording::Consent;
use crate::sfu::sdp;
use crate::sfu::types::{
    LocalAnswer, PeerEvent, PeerId, SignalError, SignalResult, TrackId, TrackInfo,
};
use crate::store::{SessionRecord, SessionType};
use crate::wire::{self as events, Outgoing};

/// The reason a room closes when its session moved to another node (several nodes).
pub const MOVED: &str = "session_moved";

/// What the room task is to do, in order.
#[derive(Debug)]
pub enum Action {
    /// Put the socket in the session's room (what is emitted to the session reaches it).
    JoinRoom(SocketId),
    /// Take the socket out of the session's room.
    LeaveRoom(SocketId),
    /// Emit to one socket.
    Notify {
        to: SocketId,
        event: Outgoing,
    },
    /// Emit to everyone in the session, on every node.
    NotifySession(Outgoing),
    /// A `webrtc_error` with this code goes out (the signaling error counter).
    CountError(ErrorCode),
    /// `who` is in this session on this node (or no longer is).
    Presence {
        who: Identity,
        present: bool,
    },
    Store(StoreWrite),
    /// Start a peer task for `who`. If it cannot start, the rest of the batch is void (it
    /// assumes the peer): the room calls [`RoomState::peer_not_started`] instead.
    CreatePeer {
        peer: PeerId,
        who: Identity,
        allow_video: bool,
        max_tracks: usize,
    },
    /// Tell a peer's task something.
    Peer {
        peer: PeerId,
        order: PeerOrder,
    },
    Recording(RecordingAction),
}

/// A write to the store, in the session's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreWrite {
    ParticipantJoined(Identity),
    ParticipantLeft(Identity),
    /// The first media arrived: the session is active.
    MarkActive,
}

/// What the state asks of a peer's task ([`crate::sfu::types::PeerCommand`] without the
/// handles, which only the room task holds).
#[derive(Debug)]
pub enum PeerOrder {
    /// Make the first offer: slots for the client's own audio (and video), and the tracks
    /// it receives from the start.
    StartOffer {
        audio: bool,
        video: bool,
        subscribe: Vec<TrackInfo>,
    },
    /// Start sending this track to the client (the peer renegotiates).
    Subscribe(TrackInfo),
    /// Stop sending this track to the client (the peer renegotiates).
    Unsubscribe(TrackId),
    /// To `track`'s publisher: forward it to `subscriber`.
    AddSubscriber {
        track: TrackId,
        subscriber: PeerId,
    },
    /// To `track`'s publisher: stop forwarding it to `peer`.
    RemoveSubscriber {
        track: TrackId,
        peer: PeerId,
    },
    /// To `track`'s publisher: some subscriber decodes only these.
    PreferCodecs {
        track: TrackId,
        codecs: Vec<Codec>,
    },
    Close,
}

/// One recording (a participant's stream) and what feeds it.
#[derive(Debug)]
pub enum RecordingAction {
    /// Open a file for `who`'s `stream`. If it cannot open, the room calls
    /// [`RoomState::recording_not_opened`] (and the tracks added to it are not).
    Open {
        who: Identity,
        stream: String,
        consent: Consent,
        codecs: Vec<Codec>,
    },
    /// Feed it this track (the publisher taps it).
    AddTrack {
        who: Identity,
        stream: String,
        track: TrackInfo,
    },
    /// This track stopped (its publisher is gone or withdrew it).
    RemoveTrack {
        who: Identity,
        stream: String,
        track: TrackId,
    },
    /// Finish the file (the publishers stop tapping).
    Close {
        who: Identity,
        stream: String,
        reason: &'static str,
    },
}

/// A `webrtc_offer` the room hands to `peer` once the actions are carried out; the room
/// reports the outcome with [`RoomState::offer_answered`] or [`RoomState::offer_refused`].
#[derive(Debug)]
pub struct PublishPlan {
    pub actions: Vec<Action>,
    pub peer: PeerId,
    /// The peer was created for this offer.
    pub fresh: bool,
}

/// A participant as `GET …/stats` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub who: Identity,
    pub peer: Option<PeerId>,
    pub connected: bool,
}

struct PeerState {
    id: PeerId,
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

/// The codecs every subscriber of a track that could not decode it accepts.
struct CodecConstraint {
    codecs: Vec<Codec>,
    /// The subscribers' peers that wait for another codec.
    waiting: Vec<PeerId>,
    /// The codec they could not decode.
    sent: Codec,
}

struct Recording {
    consent: Consent,
    /// By participant and stream: the tracks feeding it.
    recorders: BTreeMap<(Identity, String), Vec<TrackId>>,
}

/// One consultation's room, as decisions.
pub struct RoomState {
    session: SessionId,
    conversation: ConversationId,
    session_type: SessionType,
    created_by: Identity,
    grace: Duration,
    max_tracks: usize,
    /// In the order they came in (the order the others are renegotiated in).
    participants: Vec<Participant>,
    peers: HashMap<PeerId, Identity>,
    next_peer: Box<dyn FnMut() -> PeerId + Send + Sync>,
    marked_active: bool,
    ended: bool,
    recording: Option<Recording>,
    /// Per published track whose codec some subscriber could not decode: what they accept.
    codec_constraints: HashMap<TrackId, CodecConstraint>,
    out: Vec<Action>,
}

impl RoomState {
    /// `next_peer` hands out peer ids (unique in the process).
    pub fn new(
        session: &SessionRecord,
        grace: Duration,
        max_tracks: usize,
        next_peer: Box<dyn FnMut() -> PeerId + Send + Sync>,
    ) -> Self {
        Self {
            session: session.id,
            conversation: session.conversation_id,
            session_type: session.session_type,
            created_by: session.created_by,
            grace,
            max_tracks,
            participants: Vec::new(),
            peers: HashMap::new(),
            next_peer,
            marked_active: session.statut != crate::store::SessionStatus::Initiating,
            ended: false,
            recording: None,
            codec_constraints: HashMap::new(),
            out: Vec::new(),
        }
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    fn index(&self, who: Identity) -> Option<usize> {
        self.participants.iter().position(|p| p.who == who)
    }

    fn get(&self, who: Identity) -> Option<&Participant> {
        self.participants.iter().find(|p| p.who == who)
    }

    fn get_mut(&mut self, who: Identity) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.who == who)
    }

    fn contains(&self, who: Identity) -> bool {
        self.get(who).is_some()
    }

    fn everyone(&self) -> Vec<events::UserRef> {
        self.participants.iter().map(|p| p.who.into()).collect()
    }

    // ---- What the room asks -------------------------------------------------------------

    /// The room has nothing left to do: the session ended, or nobody (and no peer) is left.
    pub fn is_done(&self) -> bool {
        self.ended || (self.participants.is_empty() && self.peers.is_empty())
    }

    /// The next grace deadline: [`Self::handle_timeout`] is due then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.participants
            .iter()
            .filter_map(|p| p.grace_deadline)
            .min()
    }

    /// Everyone, in the order they came in.
    pub fn members(&self) -> Vec<Member> {
        self.participants
            .iter()
            .map(|p| Member {
                who: p.who,
                peer: p.peer.as_ref().map(|s| s.id),
                connected: p.peer.as_ref().is_some_and(|s| s.connected),
            })
            .collect()
    }

    pub fn recording_on(&self) -> bool {
        self.recording.is_some()
    }

    /// `who`'s peer, for a description or candidates of theirs.
    pub fn peer_of(&self, who: Identity) -> SignalResult<PeerId> {
        self.get(who)
            .and_then(|p| p.peer.as_ref())
            .map(|p| p.id)
            .ok_or_else(not_in_session)
    }

    /// Where `who`'s trickled candidates go: `None` for a member whose PeerConnection is not
    /// there yet (its description is still on its way: a socket's events are handled
    /// concurrently): nothing to apply them to, and nothing lost (ICE-lite; the server learns
    /// the path from the client's checks).
    pub fn candidates_target(&self, who: Identity) -> SignalResult<Option<PeerId>> {
        match self.peer_of(who) {
            Ok(peer) => Ok(Some(peer)),
            Err(_) if who == self.created_by || self.contains(who) => Ok(None),
            Err(e) => Err(e),
        }
    }

    // ---- Signaling ----------------------------------------------------------------------

    /// `webrtc_offer`: the participant publishes (or renegotiates). The session's doctor may
    /// open the room this way; anyone else joined with the code first.
    pub fn publish(
        &mut self,
        who: Identity,
        sid: SocketId,
        offer: &str,
    ) -> SignalResult<PublishPlan> {
        if who != self.created_by && !self.contains(who) {
            return Err(not_in_session());
        }
        sdp::check(offer).map_err(|p| SignalError::bad_sdp(p.message()))?;
        self.enter(who, sid);
        let fingerprint = sdp::fingerprint(offer).map(str::to_string);
        // The same PeerConnection offers again (a track added, an ICE restart); one that joined
        // by code and has not answered yet has no known fingerprint and is taken as the same.
        let same_connection = self
            .get(who)
            .and_then(|p| p.peer.as_ref())
            .is_some_and(|p| p.fingerprint.is_none() || p.fingerprint == fingerprint);
        if !same_connection {
            // A new PeerConnection on the client's side replaces the old one.
            self.drop_peer(who);
        }
        let existing = self.get(who).and_then(|p| p.peer.as_ref()).map(|p| p.id);
        let (peer, fresh) = match existing {
            Some(peer) => (peer, false),
            None => (self.new_peer(who, fingerprint), true),
        };
        Ok(PublishPlan {
            actions: self.take(),
            peer,
            fresh,
        })
    }

    /// The peer answered `who`'s offer: the answer goes to their socket, and a new peer
    /// receives everything the others publish.
    pub fn offer_answered(
        &mut self,
        who: Identity,
        fresh: bool,
        answer: LocalAnswer,
    ) -> Vec<Action> {
        if let Some(sid) = self.get(who).and_then(|p| p.sid) {
            let event = Outgoing::WebrtcAnswer(events::Answer {
                session_id: self.session,
                sdp_answer: answer.sdp,
                from: events::ServerRef::default(),
            });
            self.out.push(Action::Notify { to: sid, event });
            self.emit_candidates(who, answer.candidates);
        }
        if fresh {
            self.subscribe_to_others(who);
        }
        self.take()
    }

    /// The peer refused `who`'s offer (or did not answer): a peer made for it goes again.
    pub fn offer_refused(&mut self, who: Identity, fresh: bool) -> Vec<Action> {
        if fresh {
            self.drop_peer(who);
        }
        self.take()
    }

    /// `request_webrtc_offer` (already admitted with the code): a new PeerConnection whose
    /// first offer (ours) carries everything the others publish.
    pub fn join(&mut self, who: Identity, sid: SocketId) -> Vec<Action> {
        self.enter(who, sid);
        // A join is a new PeerConnection on the client's side.
        self.drop_peer(who);
        let peer = self.new_peer(who, None);
        let mut subscribe = Vec::new();
        for other in self.participants.iter().filter(|o| o.who != who) {
            let Some(op) = &other.peer else { continue };
            for track in &op.published {
                subscribe.push(track.clone());
                self.out.push(Action::Peer {
                    peer: op.id,
                    order: PeerOrder::AddSubscriber {
                        track: track.id,
                        subscriber: peer,
                    },
                });
            }
        }
        self.out.push(Action::Peer {
            peer,
            order: PeerOrder::StartOffer {
                audio: true,
                video: self.session_type.has_video(),
                subscribe,
            },
        });
        self.take()
    }

    /// A peer of [`Action::CreatePeer`] could not start: `who` stays, without a peer.
    pub fn peer_not_started(&mut self, peer: PeerId) {
        self.peers.remove(&peer);
        for p in &mut self.participants {
            if p.peer.as_ref().is_some_and(|s| s.id == peer) {
                p.peer = None;
            }
        }
    }

    /// `who`'s peer took their answer to our offer (`fingerprint` is the answer's).
    pub fn answered(&mut self, who: Identity, fingerprint: Option<String>) {
        if let Some(p) = self.get_mut(who) {
            p.pending_offer = None;
            if let Some(peer) = p.peer.as_mut()
                && peer.fingerprint.is_none()
            {
                peer.fingerprint = fingerprint;
            }
        }
    }

    /// `leave_session`.
    pub fn leave(&mut self, who: Identity) -> SignalResult<Vec<Action>> {
        if !self.contains(who) {
            return Err(not_in_session());
        }
        self.remove_participant(who, "left");
        Ok(self.take())
    }

    /// The session ended (or moved away, [`MOVED`], or the server stops): everyone goes.
    /// `wall` is the time a running recording stops at.
    pub fn end(&mut self, reason: &'static str, wall: Millis) -> Vec<Action> {
        if self.recording.is_some() {
            // A session moving away stops being recorded here as at a shutdown.
            let why = if reason == "server_shutdown" || reason == MOVED {
                "server_shutdown"
            } else {
                "session_ended"
            };
            self.stop_recording_now(why, wall);
        }
        // A session moving to another node is not over: its participants were told
        // `session_moved` instead.
        if reason != MOVED {
            self.out.push(Action::NotifySession(Outgoing::SessionEnded(
                events::SessionEnded {
                    session_id: self.session,
                    reason,
                },
            )));
        }
        let everyone: Vec<Identity> = self.participants.iter().map(|p| p.who).collect();
        for who in everyone {
            self.drop_peer(who);
            if let Some(i) = self.index(who) {
                let p = self.participants.remove(i);
                self.out.push(Action::Presence {
                    who,
                    present: false,
                });
                if let Some(sid) = p.sid {
                    self.out.push(Action::LeaveRoom(sid));
                }
            }
        }
        self.ended = true;
        self.take()
    }

    /// Whatever peers are left close with the room.
    pub fn close_all(&mut self) -> Vec<Action> {
        for p in &self.participants {
            if let Some(peer) = &p.peer {
                self.out.push(Action::Peer {
                    peer: peer.id,
                    order: PeerOrder::Close,
                });
            }
        }
        self.take()
    }

    // ---- Sockets and time -----------------------------------------------------------------

    /// A socket went away: whoever it carried has until `now + grace` to come back.
    pub fn socket_gone(&mut self, sid: SocketId, now: Instant) {
        let deadline = now + self.grace;
        for p in &mut self.participants {
            if p.sid == Some(sid) {
                p.sid = None;
                p.grace_deadline = Some(deadline);
            }
        }
    }

    /// A socket of `who` connected: if they wait for one, it carries them now (and gets our
    /// unanswered offer again).
    pub fn socket_back(&mut self, who: Identity, sid: SocketId) -> Vec<Action> {
        let Some(p) = self.get_mut(who) else {
            return Vec::new();
        };
        if p.sid.is_some() && p.grace_deadline.is_none() {
            // Still bound to a live socket (another tab); keep it.
            return Vec::new();
        }
        p.sid = Some(sid);
        p.grace_deadline = None;
        let pending = p.pending_offer.clone();
        self.out.push(Action::JoinRoom(sid));
        self.tell_recording(sid);
        if let Some(sdp) = pending {
            self.emit_offer(who, sdp);
        }
        self.take()
    }

    /// Participants whose grace period is over at `now` are removed (`disconnected`).
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        let expired: Vec<Identity> = self
            .participants
            .iter()
            .filter(|p| p.grace_deadline.is_some_and(|d| d <= now))
            .map(|p| p.who)
            .collect();
        for who in expired {
            self.remove_participant(who, "disconnected");
        }
        self.take()
    }

    // ---- Peer events ----------------------------------------------------------------------

    pub fn on_peer_event(&mut self, ev: PeerEvent) -> Vec<Action> {
        match ev {
            PeerEvent::Offer { peer, sdp } => {
                if let Some(who) = self.owner(peer) {
                    if let Some(p) = self.get_mut(who) {
                        p.pending_offer = Some(sdp.clone());
                    }
                    self.emit_offer(who, sdp);
                }
            }
            PeerEvent::LocalCandidates { peer, candidates } => {
                if let Some(who) = self.owner(peer) {
                    self.emit_candidates(who, candidates);
                }
            }
            PeerEvent::Published { peer, tracks } => self.published(peer, tracks),
            PeerEvent::Unpublished { peer, tracks } => self.unpublished(peer, &tracks),
            PeerEvent::Refused {
                peer,
                track: _,
                code,
                message,
            } => {
                if let Some(who) = self.owner(peer) {
                    self.emit_error(who, code, message);
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
            } => self.codec_unavailable(track, &asked),
            PeerEvent::FirstMedia { .. } => {
                if !self.marked_active {
                    self.marked_active = true;
                    self.out.push(Action::Store(StoreWrite::MarkActive));
                }
            }
            PeerEvent::Connected { peer } => {
                if let Some(who) = self.owner(peer)
                    && let Some(state) = self.get_mut(who).and_then(|p| p.peer.as_mut())
                {
                    state.connected = true;
                }
            }
            PeerEvent::Failed { peer, reason } => {
                if let Some(who) = self.owner(peer) {
                    self.emit_error(who, reason, "the media connection failed".to_string());
                    self.remove_participant(who, reason.as_str());
                }
            }
            PeerEvent::Closed { peer } => {
                // Expected after a peer was dropped (already forgotten); otherwise the task
                // stopped on its own and its participant goes too.
                if let Some(who) = self.peers.remove(&peer) {
                    self.remove_participant(who, "connection_closed");
                }
            }
        }
        self.take()
    }

    fn owner(&self, peer: PeerId) -> Option<Identity> {
        self.peers.get(&peer).copied()
    }

    fn published(&mut self, peer: PeerId, tracks: Vec<TrackInfo>) {
        let Some(who) = self.owner(peer) else { return };
        let Some(state) = self.get_mut(who).and_then(|p| p.peer.as_mut()) else {
            return;
        };
        state.published.extend(tracks.iter().cloned());
        let publisher = state.id;
        for other in self.participants.iter().filter(|o| o.who != who) {
            let Some(op) = &other.peer else { continue };
            for track in &tracks {
                link(&mut self.out, track, op.id, publisher);
            }
        }
        self.record_participant(who);
    }

    fn unpublished(&mut self, peer: PeerId, tracks: &[TrackId]) {
        let Some(who) = self.owner(peer) else { return };
        if let Some(state) = self.get_mut(who).and_then(|p| p.peer.as_mut()) {
            state.published.retain(|t| !tracks.contains(&t.id));
        }
        self.unrecord_tracks(who, tracks);
        for track in tracks {
            self.codec_constraints.remove(track);
        }
        for other in self.participants.iter().filter(|o| o.who != who) {
            let Some(op) = &other.peer else { continue };
            for track in tracks {
                self.out.push(Action::Peer {
                    peer: op.id,
                    order: PeerOrder::Unsubscribe(*track),
                });
            }
        }
    }

    /// A subscriber of `track` decodes only `accepted`: the publisher is asked to send a codec
    /// every subscriber that could not decode it so far decodes (their lists intersected, so
    /// that two subscribers cannot make it switch back and forth). Nobody is told anything
    /// unless no such codec exists or the publisher offered none ([`Self::codec_unavailable`]).
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
            .iter()
            .filter_map(|p| p.peer.as_ref())
            .find(|p| p.published.iter().any(|t| t.id == track))
            .map(|p| p.id);
        if let Some(peer) = publisher {
            self.out.push(Action::Peer {
                peer,
                order: PeerOrder::PreferCodecs { track, codecs },
            });
        }
    }

    /// No codec fits both `track`'s publisher and the subscribers waiting for one: they are
    /// told what to change (they receive the rest of the call).
    fn codec_unavailable(&mut self, track: TrackId, asked: &[Codec]) {
        let Some(constraint) = self.codec_constraints.get(&track) else {
            return;
        };
        let owner = self
            .participants
            .iter()
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
            self.emit_error(who, ErrorCode::CodecUnsupported, message.clone());
        }
    }

    // ---- Recording ------------------------------------------------------------------------

    /// The doctor (already authorized) turns recording on, having confirmed consent at `at`:
    /// everyone publishing is recorded from now, and everyone in the session is told.
    pub fn start_recording(&mut self, by: Identity, at: Millis) -> DomainResult<Vec<Action>> {
        if self.recording.is_some() {
            return Err(DomainError::conflict(
                ErrorCode::AlreadyRecording,
                "this consultation is already being recorded",
            ));
        }
        if !self.participants.iter().any(|p| p.peer.is_some()) {
            return Err(DomainError::conflict(
                ErrorCode::SessionNotLive,
                "nobody is connected to this consultation yet",
            ));
        }
        self.recording = Some(Recording {
            consent: Consent { by, at },
            recorders: BTreeMap::new(),
        });
        let everyone: Vec<Identity> = self.participants.iter().map(|p| p.who).collect();
        for who in everyone {
            self.record_participant(who);
        }
        if let Some(event) = self.recording_started_event() {
            self.out
                .push(Action::NotifySession(Outgoing::RecordingStarted(event)));
        }
        Ok(self.take())
    }

    /// Recording stops (`reason`) at `wall`: every file is finished, everyone is told.
    pub fn stop_recording(
        &mut self,
        reason: &'static str,
        wall: Millis,
    ) -> DomainResult<Vec<Action>> {
        if self.recording.is_none() {
            return Err(DomainError::conflict(
                ErrorCode::NotRecording,
                "this consultation is not being recorded",
            ));
        }
        self.stop_recording_now(reason, wall);
        Ok(self.take())
    }

    fn stop_recording_now(&mut self, reason: &'static str, wall: Millis) {
        let Some(recording) = self.recording.take() else {
            return;
        };
        for (who, stream) in recording.recorders.into_keys() {
            self.out.push(Action::Recording(RecordingAction::Close {
                who,
                stream,
                reason,
            }));
        }
        self.out
            .push(Action::NotifySession(Outgoing::RecordingStopped(
                events::RecordingStopped {
                    session_id: self.session,
                    reason,
                    stopped_at: to_rfc3339(wall),
                },
            )));
    }

    /// A recording of [`RecordingAction::Open`] could not open: it is tried again the next
    /// time its participant publishes.
    pub fn recording_not_opened(&mut self, who: Identity, stream: &str) {
        if let Some(r) = &mut self.recording {
            r.recorders.remove(&(who, stream.to_string()));
        }
    }

    fn recording_started_event(&self) -> Option<events::RecordingStarted> {
        let r = self.recording.as_ref()?;
        Some(events::RecordingStarted {
            session_id: self.session,
            started_at: to_rfc3339(r.consent.at),
            started_by: r.consent.by.into(),
            consent: events::RecordingConsent {
                confirmed_by: r.consent.by.into(),
                confirmed_at: to_rfc3339(r.consent.at),
            },
        })
    }

    /// Tells one socket (a newcomer, a reconnection) that the consultation is recorded.
    fn tell_recording(&mut self, sid: SocketId) {
        if let Some(event) = self.recording_started_event() {
            self.out.push(Action::Notify {
                to: sid,
                event: Outgoing::RecordingStarted(event),
            });
        }
    }

    /// Records what `who` publishes now (opening a file per stream of theirs if needed).
    /// Nothing when recording is off or they publish nothing.
    fn record_participant(&mut self, who: Identity) {
        let Some(recording) = &mut self.recording else {
            return;
        };
        let tracks: &[TrackInfo] = self
            .participants
            .iter()
            .find(|p| p.who == who)
            .and_then(|p| p.peer.as_ref())
            .map(|p| p.published.as_slice())
            .unwrap_or_default();
        let mut streams: Vec<&str> = Vec::new();
        for t in tracks {
            if !streams.contains(&t.stream.as_str()) {
                streams.push(&t.stream);
            }
        }
        for stream in streams {
            let key = (who, stream.to_string());
            let of_stream = tracks.iter().filter(|t| t.stream == stream);
            if !recording.recorders.contains_key(&key) {
                let codecs = of_stream
                    .clone()
                    .map(|t| Codec::from_mime(&t.codec.mime_type))
                    .collect();
                self.out.push(Action::Recording(RecordingAction::Open {
                    who,
                    stream: stream.to_string(),
                    consent: recording.consent,
                    codecs,
                }));
            }
            let sources = recording.recorders.entry(key).or_default();
            for track in of_stream {
                if sources.contains(&track.id) {
                    continue;
                }
                sources.push(track.id);
                self.out.push(Action::Recording(RecordingAction::AddTrack {
                    who,
                    stream: stream.to_string(),
                    track: track.clone(),
                }));
            }
        }
    }

    /// Tracks that stopped (unpublished, or their connection went away). A further stream of
    /// `who`'s left with no track (the screen share ended) has its file finished.
    fn unrecord_tracks(&mut self, who: Identity, tracks: &[TrackId]) {
        let main = who.key();
        let Some(recording) = self.recording.as_mut() else {
            return;
        };
        let mut finished = Vec::new();
        for (key, sources) in recording.recorders.iter_mut().filter(|(k, _)| k.0 == who) {
            for id in tracks {
                if let Some(i) = sources.iter().position(|s| s == id) {
                    sources.swap_remove(i);
                    self.out
                        .push(Action::Recording(RecordingAction::RemoveTrack {
                            who,
                            stream: key.1.clone(),
                            track: *id,
                        }));
                }
            }
            if sources.is_empty() && key.1 != main {
                finished.push(key.clone());
            }
        }
        for key in finished {
            recording.recorders.remove(&key);
            self.out.push(Action::Recording(RecordingAction::Close {
                who,
                stream: key.1,
                reason: "stream_ended",
            }));
        }
    }

    /// `who` left: their files are finished.
    fn stop_recording_participant(&mut self, who: Identity, reason: &'static str) {
        let Some(recording) = self.recording.as_mut() else {
            return;
        };
        let keys: Vec<(Identity, String)> = recording
            .recorders
            .keys()
            .filter(|k| k.0 == who)
            .cloned()
            .collect();
        for key in keys {
            recording.recorders.remove(&key);
            self.out.push(Action::Recording(RecordingAction::Close {
                who,
                stream: key.1,
                reason,
            }));
        }
    }

    // ---- Membership and peers -------------------------------------------------------------

    /// Adds (or refreshes) a participant bound to `sid`.
    fn enter(&mut self, who: Identity, sid: SocketId) {
        let is_new = !self.contains(who);
        if is_new {
            self.participants.push(Participant {
                who,
                sid: None,
                peer: None,
                pending_offer: None,
                grace_deadline: None,
            });
        }
        let p = self.get_mut(who).expect("just added");
        let rebound = p.sid != Some(sid);
        p.sid = Some(sid);
        p.grace_deadline = None;
        self.out.push(Action::JoinRoom(sid));
        if rebound {
            self.tell_recording(sid);
        }
        if is_new {
            self.out.push(Action::Presence { who, present: true });
            self.out
                .push(Action::Store(StoreWrite::ParticipantJoined(who)));
            let event = Outgoing::ParticipantJoined(events::ParticipantEvent {
                session_id: self.session,
                participant: who.into(),
                reason: None,
                participants: self.everyone(),
            });
            self.out.push(Action::NotifySession(event));
        }
    }

    fn new_peer(&mut self, who: Identity, fingerprint: Option<String>) -> PeerId {
        let id = (self.next_peer)();
        self.peers.insert(id, who);
        let p = self.get_mut(who).expect("entered first");
        p.peer = Some(PeerState {
            id,
            published: Vec::new(),
            fingerprint,
            connected: false,
        });
        self.out.push(Action::CreatePeer {
            peer: id,
            who,
            allow_video: self.session_type.has_video(),
            max_tracks: self.max_tracks,
        });
        id
    }

    /// Sends `who` every track the others publish.
    fn subscribe_to_others(&mut self, who: Identity) {
        let Some(me) = self.get(who).and_then(|p| p.peer.as_ref()).map(|p| p.id) else {
            return;
        };
        for other in self.participants.iter().filter(|o| o.who != who) {
            let Some(op) = &other.peer else { continue };
            for track in &op.published {
                link(&mut self.out, track, me, op.id);
            }
        }
    }

    /// Closes `who`'s peer and withdraws everything it published or received.
    fn drop_peer(&mut self, who: Identity) {
        let Some(p) = self.get_mut(who) else { return };
        let Some(state) = p.peer.take() else { return };
        p.pending_offer = None;
        self.peers.remove(&state.id);
        let gone: Vec<TrackId> = state.published.iter().map(|t| t.id).collect();
        self.unrecord_tracks(who, &gone);
        self.out.push(Action::Peer {
            peer: state.id,
            order: PeerOrder::Close,
        });
        for other in &self.participants {
            let Some(op) = &other.peer else { continue };
            for track in &gone {
                self.out.push(Action::Peer {
                    peer: op.id,
                    order: PeerOrder::Unsubscribe(*track),
                });
            }
            for track in &op.published {
                self.out.push(Action::Peer {
                    peer: op.id,
                    order: PeerOrder::RemoveSubscriber {
                        track: track.id,
                        peer: state.id,
                    },
                });
            }
        }
    }

    fn remove_participant(&mut self, who: Identity, reason: &'static str) {
        self.drop_peer(who);
        self.stop_recording_participant(who, "participant_left");
        let Some(i) = self.index(who) else { return };
        let p = self.participants.remove(i);
        self.out.push(Action::Presence {
            who,
            present: false,
        });
        if let Some(sid) = p.sid {
            self.out.push(Action::LeaveRoom(sid));
        }
        self.out
            .push(Action::Store(StoreWrite::ParticipantLeft(who)));
        let event = Outgoing::ParticipantLeft(events::ParticipantEvent {
            session_id: self.session,
            participant: who.into(),
            reason: Some(reason),
            participants: self.everyone(),
        });
        self.out.push(Action::NotifySession(event));
    }

    // ---- To one participant's socket ------------------------------------------------------

    fn emit_offer(&mut self, who: Identity, sdp: String) {
        let Some(sid) = self.get(who).and_then(|p| p.sid) else {
            return;
        };
        let event = Outgoing::WebrtcOffer(events::Offer {
            session_id: self.session,
            conversation_id: self.conversation,
            sdp_offer: sdp,
            session_type: self.session_type,
            from: events::ServerRef::default(),
        });
        self.out.push(Action::Notify { to: sid, event });
    }

    fn emit_candidates(
        &mut self,
        who: Identity,
        candidates: Vec<rtc::peer_connection::transport::RTCIceCandidateInit>,
    ) {
        if candidates.is_empty() {
            return;
        }
        let Some(sid) = self.get(who).and_then(|p| p.sid) else {
            return;
        };
        let event = Outgoing::WebrtcIceCandidates(events::Candidates {
            session_id: self.session,
            candidates,
            from: events::ServerRef::default(),
        });
        self.out.push(Action::Notify { to: sid, event });
    }

    fn emit_error(&mut self, who: Identity, code: ErrorCode, message: String) {
        let Some(sid) = self.get(who).and_then(|p| p.sid) else {
            return;
        };
        self.out.push(Action::CountError(code));
        let event = Outgoing::WebrtcError(events::WebrtcError {
            session_id: Some(self.session),
            code,
            message,
        });
        self.out.push(Action::Notify { to: sid, event });
    }
}

/// `subscriber` receives `track`, published by `publisher`.
fn link(out: &mut Vec<Action>, track: &TrackInfo, subscriber: PeerId, publisher: PeerId) {
    out.push(Action::Peer {
        peer: subscriber,
        order: PeerOrder::Subscribe(track.clone()),
    });
    out.push(Action::Peer {
        peer: publisher,
        order: PeerOrder::AddSubscriber {
            track: track.id,
            subscriber,
        },
    });
}

/// The refusal for someone with no part in the room (the SFU and the room say it alike).
pub(crate) fn not_in_session() -> SignalError {
    SignalError::new(
        ErrorCode::NotInSession,
        "you are not in this consultation: join with its code first",
    )
}

#[cfg(test)]
mod tests;
