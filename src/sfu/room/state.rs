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
//!   stream whose tracks all stopped (the screen share ended) has its file finished;
//! - with the waiting room on, nobody but the session's doctor enters before the doctor
//!   admits them: a waiting person has no PeerConnection, hears none of the session's events
//!   and is not a participant; once admitted, a person rejoins (a rebuilt connection) without
//!   waiting again; a person declined or removed is refused until the room closes;
//! - a participant in audio-only mode neither sends nor receives video: no video track links
//!   them to anyone, in either direction, while the mode lasts; everyone (and every newcomer)
//!   is told who is audio only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::clock::{Millis, to_rfc3339};
use crate::codec::Codec;
use crate::error::ErrorCode;
use crate::ids::{ConversationId, Identity, SessionId, SocketId};
use crate::messaging::{DomainError, DomainResult};
use crate::recording::Consent;
use crate::sfu::sdp;
use crate::sfu::types::{
    LocalAnswer, MediaKind, PeerEvent, PeerId, SignalError, SignalResult, TrackId, TrackInfo,
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
    /// A security-relevant act to write to the audit trail.
    Audit(AuditNote),
}

/// What the room decided that the audit trail keeps: who did it, to whom, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditNote {
    pub actor: Identity,
    /// Where the actor's request came from.
    pub ip: Option<std::net::IpAddr>,
    pub act: AuditAct,
    pub subject: Identity,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAct {
    Admitted,
    Declined,
    Removed,
    AudioOnlyOn,
    AudioOnlyOff,
}

/// How a `request_webrtc_offer` went.
#[derive(Debug)]
pub struct JoinOutcome {
    pub actions: Vec<Action>,
    /// The person waits in the waiting room (no offer yet).
    pub waiting: bool,
}

/// A person in the waiting room.
#[derive(Debug, Clone)]
pub struct WaitingPerson {
    pub who: Identity,
    pub name: Option<String>,
    /// Wall-clock time they started waiting.
    pub since: Millis,
    sid: Option<SocketId>,
    grace_deadline: Option<Instant>,
}

/// Why a person may not come back while the room lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Declined,
    Removed,
}

/// A free-text reason, bounded.
fn bounded_reason(reason: Option<String>) -> Option<String> {
    reason
        .map(|r| r.trim().chars().take(200).collect::<String>())
        .filter(|r| !r.is_empty())
}

/// A write to the store, in the session's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreWrite {
    ParticipantJoined(Identity),
    ParticipantLeft(Identity),
    /// The doctor declined (`removed: false`) or removed this person: refused from now on,
    /// by any room of this session on any node.
    Refused {
        who: Identity,
        removed: bool,
    },
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
    /// Newcomers wait for the doctor's admission.
    waiting_room: bool,
    waiting: Vec<WaitingPerson>,
    /// Let in by the doctor (they rejoin without waiting).
    admitted: HashSet<Identity>,
    refused: HashMap<Identity, Refusal>,
    /// Admitted while their socket was away: their socket that comes back joins them.
    admitted_away: Vec<Identity>,
    /// Participants in audio-only mode, with why.
    audio_only: BTreeMap<Identity, Option<String>>,
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
            waiting_room: session.waiting_room,
            waiting: Vec::new(),
            admitted: HashSet::new(),
            refused: HashMap::new(),
            admitted_away: Vec::new(),
            audio_only: BTreeMap::new(),
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
        self.ended
            || (self.participants.is_empty() && self.peers.is_empty() && self.waiting.is_empty())
    }

    /// The next grace deadline: [`Self::handle_timeout`] is due then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.participants
            .iter()
            .filter_map(|p| p.grace_deadline)
            .chain(self.waiting.iter().filter_map(|w| w.grace_deadline))
            .min()
    }

    /// Who waits in the waiting room, in the order they came.
    pub fn waiting(&self) -> &[WaitingPerson] {
        &self.waiting
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

    /// `request_webrtc_offer` (the code already checked): with the waiting room on, a person
    /// the doctor has not admitted waits ([`JoinOutcome::waiting`]); otherwise a new
    /// PeerConnection whose first offer (ours) carries everything the others publish.
    /// `wall` is the time shown as "waiting since".
    pub fn join(
        &mut self,
        who: Identity,
        sid: SocketId,
        name: Option<String>,
        wall: Millis,
    ) -> SignalResult<JoinOutcome> {
        if let Some(refusal) = self.refused.get(&who) {
            return Err(refused_error(*refusal));
        }
        let must_wait = self.waiting_room
            && who != self.created_by
            && !self.admitted.contains(&who)
            && !self.contains(who);
        if must_wait {
            self.wait(who, sid, name, wall);
            return Ok(JoinOutcome {
                actions: self.take(),
                waiting: true,
            });
        }
        self.enter_with_peer(who, sid);
        Ok(JoinOutcome {
            actions: self.take(),
            waiting: false,
        })
    }

    /// `who` was admitted to this session by an earlier room (before a restart or a node
    /// handover): they do not wait again, unless refused since.
    pub fn admitted_before(&mut self, who: Identity) {
        self.admitted.insert(who);
    }

    /// `who` (not admitted yet) waits: told so, and the doctor is told (once per person).
    fn wait(&mut self, who: Identity, sid: SocketId, name: Option<String>, wall: Millis) {
        let session = self.session;
        let entry = match self.waiting.iter_mut().find(|w| w.who == who) {
            Some(w) => {
                w.sid = Some(sid);
                w.grace_deadline = None;
                w.clone()
            }
            None => {
                let w = WaitingPerson {
                    who,
                    name,
                    since: wall,
                    sid: Some(sid),
                    grace_deadline: None,
                };
                self.waiting.push(w.clone());
                self.tell_doctor_waiting(&w);
                w
            }
        };
        self.out.push(Action::Notify {
            to: sid,
            event: Outgoing::Waiting(events::Waiting {
                session_id: session,
                since: to_rfc3339(entry.since),
            }),
        });
    }

    fn doctor_sid(&self) -> Option<SocketId> {
        self.get(self.created_by).and_then(|p| p.sid)
    }

    fn tell_doctor_waiting(&mut self, w: &WaitingPerson) {
        if let Some(sid) = self.doctor_sid() {
            let event = Outgoing::ParticipantWaiting(events::ParticipantWaiting {
                session_id: self.session,
                user: w.who.into(),
                name: w.name.clone(),
                since: to_rfc3339(w.since),
            });
            self.out.push(Action::Notify { to: sid, event });
        }
    }

    fn tell_doctor_waiting_left(&mut self, who: Identity) {
        if let Some(sid) = self.doctor_sid() {
            let event = Outgoing::ParticipantWaitingLeft(events::SessionUser {
                session_id: self.session,
                user: who.into(),
            });
            self.out.push(Action::Notify { to: sid, event });
        }
    }

    fn take_waiting(&mut self, who: Identity) -> Option<WaitingPerson> {
        let i = self.waiting.iter().position(|w| w.who == who)?;
        Some(self.waiting.remove(i))
    }

    /// The doctor (already authorized) admits a waiting person: they are told, and join.
    pub fn admit(
        &mut self,
        by: Identity,
        ip: Option<std::net::IpAddr>,
        who: Identity,
    ) -> SignalResult<Vec<Action>> {
        let Some(w) = self.take_waiting(who) else {
            return Err(not_waiting());
        };
        self.admitted.insert(who);
        self.audit(by, ip, AuditAct::Admitted, who, None);
        // A waiting person whose socket is away (grace period) is admitted all the same: the
        // socket that comes back gets the offer (`socket_back`).
        match w.sid {
            Some(sid) => {
                self.let_in(who, sid);
            }
            None => self.admitted_away.push(who),
        }
        Ok(self.take())
    }

    /// An admitted person is told so on `sid`, and enters with a new PeerConnection.
    fn let_in(&mut self, who: Identity, sid: SocketId) {
        self.out.push(Action::Notify {
            to: sid,
            event: Outgoing::Admitted(events::SessionUser {
                session_id: self.session,
                user: who.into(),
            }),
        });
        self.enter_with_peer(who, sid);
    }

    /// `who` is refused for the rest of the session (here, and in the store for any room).
    fn refuse(&mut self, who: Identity, refusal: Refusal) {
        self.refused.insert(who, refusal);
        self.admitted.remove(&who);
        self.out.push(Action::Store(StoreWrite::Refused {
            who,
            removed: refusal == Refusal::Removed,
        }));
    }

    /// The doctor turns a waiting person away: told so, refused until the room closes.
    pub fn decline(
        &mut self,
        by: Identity,
        ip: Option<std::net::IpAddr>,
        who: Identity,
        reason: Option<String>,
    ) -> SignalResult<Vec<Action>> {
        let Some(w) = self.take_waiting(who) else {
            return Err(not_waiting());
        };
        let reason = bounded_reason(reason);
        self.refuse(who, Refusal::Declined);
        self.audit(by, ip, AuditAct::Declined, who, reason.clone());
        if let Some(sid) = w.sid {
            let message = match &reason {
                Some(r) => format!("the doctor declined to admit you: {r}"),
                None => "the doctor declined to admit you to this consultation".to_string(),
            };
            self.out.push(Action::Notify {
                to: sid,
                event: Outgoing::Declined(events::TurnedAway {
                    session_id: self.session,
                    message,
                    reason: reason.clone(),
                }),
            });
        }
        Ok(self.take())
    }

    /// The doctor takes someone out of the call (or out of the waiting room): their
    /// connection closes, the others are told, and they cannot come back while the room lasts.
    pub fn remove(
        &mut self,
        by: Identity,
        ip: Option<std::net::IpAddr>,
        who: Identity,
    ) -> SignalResult<Vec<Action>> {
        if who == self.created_by {
            return Err(SignalError::new(
                ErrorCode::InvalidRequest,
                "the session's doctor cannot remove themselves: end the session instead",
            ));
        }
        let waiting = self.take_waiting(who);
        if waiting.is_none() && !self.contains(who) {
            return Err(not_in_session());
        }
        self.refuse(who, Refusal::Removed);
        self.audit(by, ip, AuditAct::Removed, who, None);
        let sid = waiting
            .and_then(|w| w.sid)
            .or_else(|| self.get(who).and_then(|p| p.sid));
        if let Some(sid) = sid {
            self.out.push(Action::Notify {
                to: sid,
                event: Outgoing::Removed(events::TurnedAway {
                    session_id: self.session,
                    message: "the doctor removed you from this consultation".to_string(),
                    reason: None,
                }),
            });
        }
        if self.contains(who) {
            self.remove_participant(who, "removed");
        }
        Ok(self.take())
    }

    /// `set_audio_only`: `who` stops (or resumes) sending and receiving video; everyone is
    /// told. Setting the mode it is already in changes nothing and tells nobody.
    pub fn set_audio_only(
        &mut self,
        who: Identity,
        ip: Option<std::net::IpAddr>,
        on: bool,
        reason: Option<String>,
    ) -> SignalResult<Vec<Action>> {
        if !self.contains(who) {
            return Err(not_in_session());
        }
        if self.audio_only.contains_key(&who) == on {
            return Ok(Vec::new());
        }
        let before = self.video_links_of(who);
        let reason = bounded_reason(reason);
        if on {
            self.audio_only.insert(who, reason.clone());
        } else {
            self.audio_only.remove(&who);
        }
        let after = self.video_links_of(who);
        for (sub, publisher, track) in &before {
            if !after.iter().any(|(s, _, t)| s == sub && t.id == track.id) {
                self.out.push(Action::Peer {
                    peer: *sub,
                    order: PeerOrder::Unsubscribe(track.id),
                });
                self.out.push(Action::Peer {
                    peer: *publisher,
                    order: PeerOrder::RemoveSubscriber {
                        track: track.id,
                        peer: *sub,
                    },
                });
            }
        }
        for (sub, publisher, track) in &after {
            if !before.iter().any(|(s, _, t)| s == sub && t.id == track.id) {
                link(&mut self.out, track, *sub, *publisher);
            }
        }
        let act = if on {
            AuditAct::AudioOnlyOn
        } else {
            AuditAct::AudioOnlyOff
        };
        self.audit(who, ip, act, who, reason.clone());
        self.out.push(Action::NotifySession(Outgoing::AudioOnly(
            events::AudioOnly {
                session_id: self.session,
                user: who.into(),
                audio_only: on,
                reason,
            },
        )));
        Ok(self.take())
    }

    /// Whether `subscriber` receives `track` (audio always; video unless either side is in
    /// audio-only mode).
    fn carries(&self, subscriber: Identity, track: &TrackInfo) -> bool {
        carries(&self.audio_only, subscriber, track)
    }

    /// The video links (subscriber peer, publisher peer, track) that involve `who` as things
    /// stand.
    fn video_links_of(&self, who: Identity) -> Vec<(PeerId, PeerId, TrackInfo)> {
        let mut links = Vec::new();
        for publisher in &self.participants {
            let Some(pp) = &publisher.peer else { continue };
            for subscriber in self.participants.iter().filter(|s| s.who != publisher.who) {
                if publisher.who != who && subscriber.who != who {
                    continue;
                }
                let Some(sp) = &subscriber.peer else { continue };
                for track in pp.published.iter().filter(|t| t.kind == MediaKind::Video) {
                    if self.carries(subscriber.who, track) {
                        links.push((sp.id, pp.id, track.clone()));
                    }
                }
            }
        }
        links
    }

    fn audit(
        &mut self,
        actor: Identity,
        ip: Option<std::net::IpAddr>,
        act: AuditAct,
        subject: Identity,
        reason: Option<String>,
    ) {
        self.out.push(Action::Audit(AuditNote {
            actor,
            ip,
            act,
            subject,
            reason,
        }));
    }

    /// Enters `who` with a new PeerConnection whose first offer (ours) carries what the
    /// others publish.
    fn enter_with_peer(&mut self, who: Identity, sid: SocketId) {
        self.enter(who, sid);
        // A join is a new PeerConnection on the client's side.
        self.drop_peer(who);
        let peer = self.new_peer(who, None);
        let mut subscribe = Vec::new();
        let mut orders = Vec::new();
        for other in self.participants.iter().filter(|o| o.who != who) {
            let Some(op) = &other.peer else { continue };
            for track in &op.published {
                if !self.carries(who, track) {
                    continue;
                }
                subscribe.push(track.clone());
                orders.push(Action::Peer {
                    peer: op.id,
                    order: PeerOrder::AddSubscriber {
                        track: track.id,
                        subscriber: peer,
                    },
                });
            }
        }
        self.out.extend(orders);
        self.out.push(Action::Peer {
            peer,
            order: PeerOrder::StartOffer {
                audio: true,
                video: self.session_type.has_video(),
                subscribe,
            },
        });
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
        if self.take_waiting(who).is_some() {
            self.tell_doctor_waiting_left(who);
            return Ok(self.take());
        }
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
        for w in &mut self.waiting {
            if w.sid == Some(sid) {
                w.sid = None;
                w.grace_deadline = Some(deadline);
            }
        }
    }

    /// A socket of `who` connected: if they wait for one, it carries them now (and gets our
    /// unanswered offer again).
    pub fn socket_back(&mut self, who: Identity, sid: SocketId) -> Vec<Action> {
        if let Some(i) = self.admitted_away.iter().position(|w| *w == who) {
            self.admitted_away.remove(i);
            self.let_in(who, sid);
            return self.take();
        }
        if let Some(w) = self.waiting.iter_mut().find(|w| w.who == who) {
            if w.sid.is_none() {
                w.sid = Some(sid);
                w.grace_deadline = None;
                let since = w.since;
                self.out.push(Action::Notify {
                    to: sid,
                    event: Outgoing::Waiting(events::Waiting {
                        session_id: self.session,
                        since: to_rfc3339(since),
                    }),
                });
            }
            return self.take();
        }
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
        let gone: Vec<Identity> = self
            .waiting
            .iter()
            .filter(|w| w.grace_deadline.is_some_and(|d| d <= now))
            .map(|w| w.who)
            .collect();
        for who in gone {
            self.take_waiting(who);
            self.tell_doctor_waiting_left(who);
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
            PeerEvent::LinkQuality {
                peer,
                weak,
                available_bps,
            } => {
                if let Some(who) = self.owner(peer) {
                    self.out
                        .push(Action::NotifySession(Outgoing::ConnectionQuality(
                            events::ConnectionQuality {
                                session_id: self.session,
                                user: who.into(),
                                quality: if weak { "weak" } else { "good" },
                                available_bps,
                            },
                        )));
                }
            }
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
            for track in tracks
                .iter()
                .filter(|t| carries(&self.audio_only, other.who, t))
            {
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

    /// Tells one socket (a newcomer, a reconnection) who is audio only.
    fn tell_audio_only(&mut self, sid: SocketId) {
        for (who, reason) in &self.audio_only {
            self.out.push(Action::Notify {
                to: sid,
                event: Outgoing::AudioOnly(events::AudioOnly {
                    session_id: self.session,
                    user: (*who).into(),
                    audio_only: true,
                    reason: reason.clone(),
                }),
            });
        }
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
            self.tell_audio_only(sid);
            if who == self.created_by {
                for w in self.waiting.clone() {
                    self.tell_doctor_waiting(&w);
                }
            }
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
            for track in op
                .published
                .iter()
                .filter(|t| carries(&self.audio_only, who, t))
            {
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
        self.audio_only.remove(&who);
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

/// Whether `subscriber` receives `track`: audio always, video unless either side is in
/// audio-only mode (`audio_only`).
fn carries(
    audio_only: &BTreeMap<Identity, Option<String>>,
    subscriber: Identity,
    track: &TrackInfo,
) -> bool {
    track.kind != MediaKind::Video
        || !(audio_only.contains_key(&subscriber) || audio_only.contains_key(&track.owner))
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

fn not_waiting() -> SignalError {
    SignalError::new(
        ErrorCode::NotWaiting,
        "this person is not in the waiting room of this consultation",
    )
}

fn refused_error(refusal: Refusal) -> SignalError {
    match refusal {
        Refusal::Declined => SignalError::new(
            ErrorCode::Declined,
            "the doctor declined to admit you to this consultation",
        ),
        Refusal::Removed => SignalError::new(
            ErrorCode::Removed,
            "the doctor removed you from this consultation",
        ),
    }
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
