//! The room's decisions driven by hand: no runtime, no socket, no sleep; time is an `Instant`
//! moved forward by the test. Actions are read as one line each (see [`line`]).

use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use tokio::sync::mpsc;

use super::*;
use crate::ids::{Role, SessionId};
use crate::sfu::types::{LocalAnswer, MediaKind, PeerCommand};
use crate::store::SessionStatus;

const GRACE: Duration = Duration::from_secs(30);
const MAX_TRACKS: usize = 4;

fn doctor() -> Identity {
    Identity::new(Role::Medecin, 79)
}

fn patient() -> Identity {
    Identity::new(Role::Patient, 11)
}

fn relative() -> Identity {
    Identity::new(Role::Patient, 12)
}

/// A socket named by its first letters (`d`, `p`, `p2`…).
fn sid(name: &str) -> SocketId {
    SocketId::parse(&format!("{name:-<16}")).expect("a socket id")
}

fn record(kind: SessionType, statut: SessionStatus) -> SessionRecord {
    SessionRecord {
        id: SessionId(5),
        conversation_id: ConversationId(3),
        session_type: kind,
        statut,
        created_by: doctor(),
        code_hash: String::new(),
        code_expires_at: 0,
        created_at: 0,
        started_at: None,
        ended_at: None,
        end_reason: None,
        node_id: None,
        moved_from: None,
        moved_at: None,
        waiting_room: false,
    }
}

fn room_of(kind: SessionType) -> RoomState {
    let mut next = 0;
    RoomState::new(
        &record(kind, SessionStatus::Initiating),
        GRACE,
        MAX_TRACKS,
        Box::new(move || {
            next += 1;
            PeerId(next)
        }),
    )
}

fn room() -> RoomState {
    room_of(SessionType::AudioVideo)
}

/// An offer from a client whose PeerConnection has certificate `fp`.
fn offer(fp: &str) -> String {
    format!("v=0\r\na=fingerprint:sha-256 {fp}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n")
}

fn answer(sdp: &str) -> LocalAnswer {
    LocalAnswer {
        sdp: sdp.to_string(),
        candidates: Vec::new(),
    }
}

/// Keeps fake publishers' queues open for the test's length.
struct Publishers(Vec<mpsc::Receiver<PeerCommand>>);

impl Publishers {
    fn track(&mut self, id: u64, owner: Identity, stream: &str, kind: MediaKind) -> TrackInfo {
        let (tx, rx) = mpsc::channel(1);
        self.0.push(rx);
        let (mime, clock_rate, channels) = match kind {
            MediaKind::Audio => ("audio/opus", 48_000, 2),
            MediaKind::Video => ("video/VP8", 90_000, 0),
        };
        TrackInfo {
            id: TrackId(id),
            owner,
            stream: stream.to_string(),
            kind,
            codec: RTCRtpCodec {
                mime_type: mime.into(),
                clock_rate,
                channels,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: Vec::new(),
            },
            publisher: tx,
        }
    }

    /// `who`'s camera and microphone, as tracks `first` and `first + 1`.
    fn camera(&mut self, who: Identity, first: u64) -> Vec<TrackInfo> {
        vec![
            self.track(first, who, &who.key(), MediaKind::Audio),
            self.track(first + 1, who, &who.key(), MediaKind::Video),
        ]
    }
}

fn user(u: &events::UserRef) -> String {
    Identity::new(u.user_type, u.user_id).to_string()
}

fn event(e: &Outgoing) -> String {
    let name = e.name();
    match e {
        Outgoing::ParticipantJoined(p) | Outgoing::ParticipantLeft(p) => format!(
            "{name} {}{} [{}]",
            user(&p.participant),
            p.reason.map(|r| format!(" ({r})")).unwrap_or_default(),
            p.participants
                .iter()
                .map(user)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Outgoing::SessionEnded(e) => format!("{name} {}", e.reason),
        Outgoing::WebrtcError(e) => format!("{name} {}", e.code),
        Outgoing::WebrtcOffer(o) => format!("{name} {}", o.sdp_offer),
        Outgoing::WebrtcAnswer(a) => format!("{name} {}", a.sdp_answer),
        Outgoing::WebrtcIceCandidates(c) => format!("{name} {}", c.candidates.len()),
        Outgoing::RecordingStopped(r) => format!("{name} {}", r.reason),
        Outgoing::ParticipantWaiting(w) => format!("{name} {}", user(&w.user)),
        Outgoing::ParticipantWaitingLeft(w) | Outgoing::Admitted(w) => {
            format!("{name} {}", user(&w.user))
        }
        Outgoing::AudioOnly(a) => format!("{name} {} {}", user(&a.user), a.audio_only),
        Outgoing::ConnectionQuality(q) => format!(
            "{name} {} {} {:?}",
            user(&q.user),
            q.quality,
            q.available_bps
        ),
        _ => name.to_string(),
    }
}

fn socket(s: &SocketId) -> String {
    s.as_str().trim_end_matches('-').to_string()
}

fn ids(tracks: impl IntoIterator<Item = TrackId>) -> String {
    tracks
        .into_iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn codecs(c: &[Codec]) -> String {
    c.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}

/// One action as a line: `join d`, `to p: webrtc_offer …`, `session: participant_joined …`,
/// `peer 1: subscribe 20`, `rec open patient-11 [opus, vp8]`…
fn line(a: &Action) -> String {
    match a {
        Action::JoinRoom(s) => format!("join {}", socket(s)),
        Action::LeaveRoom(s) => format!("leave {}", socket(s)),
        Action::Notify { to, event: e } => format!("to {}: {}", socket(to), event(e)),
        Action::NotifySession(e) => format!("session: {}", event(e)),
        Action::CountError(code) => format!("count {code}"),
        Action::Presence { who, present } => {
            format!("{} {who}", if *present { "present" } else { "absent" })
        }
        Action::Store(StoreWrite::ParticipantJoined(who)) => format!("store joined {who}"),
        Action::Store(StoreWrite::ParticipantLeft(who)) => format!("store left {who}"),
        Action::Store(StoreWrite::MarkActive) => "store active".to_string(),
        Action::Store(StoreWrite::Refused { who, removed }) => {
            format!("store refused {who} removed={removed}")
        }
        Action::CreatePeer {
            peer,
            who,
            allow_video,
            max_tracks,
        } => format!("create peer {peer} for {who} video={allow_video} max={max_tracks}"),
        Action::Peer { peer, order } => {
            let o = match order {
                PeerOrder::StartOffer {
                    audio,
                    video,
                    subscribe,
                } => format!(
                    "start_offer audio={audio} video={video} [{}]",
                    ids(subscribe.iter().map(|t| t.id))
                ),
                PeerOrder::Subscribe(t) => format!("subscribe {}", t.id),
                PeerOrder::Unsubscribe(t) => format!("unsubscribe {t}"),
                PeerOrder::AddSubscriber { track, subscriber } => {
                    format!("add_subscriber {track} -> {subscriber}")
                }
                PeerOrder::RemoveSubscriber { track, peer } => {
                    format!("remove_subscriber {track} -> {peer}")
                }
                PeerOrder::PreferCodecs { track, codecs: c } => {
                    format!("prefer_codecs {track} [{}]", codecs(c))
                }
                PeerOrder::Close => "close".to_string(),
            };
            format!("peer {peer}: {o}")
        }
        Action::Recording(r) => match r {
            RecordingAction::Open {
                stream, codecs: c, ..
            } => format!("rec open {stream} [{}]", codecs(c)),
            RecordingAction::AddTrack { stream, track, .. } => {
                format!("rec add {stream} {}", track.id)
            }
            RecordingAction::RemoveTrack { stream, track, .. } => {
                format!("rec remove {stream} {track}")
            }
            RecordingAction::Close { stream, reason, .. } => {
                format!("rec close {stream} {reason}")
            }
        },
        Action::Audit(n) => format!(
            "audit {} {:?} {}{}",
            n.actor,
            n.act,
            n.subject,
            n.reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
    }
}

fn lines(actions: &[Action]) -> Vec<String> {
    actions.iter().map(line).collect()
}

fn members(r: &RoomState) -> Vec<Identity> {
    r.members().iter().map(|m| m.who).collect()
}

/// The doctor opens the room with an offer on socket `d`, answered; their peer is 1.
fn doctor_publishes(r: &mut RoomState) -> PeerId {
    let plan = r.publish(doctor(), sid("d"), &offer("AA")).unwrap();
    r.offer_answered(doctor(), plan.fresh, answer("answer-d"));
    plan.peer
}

/// `who` asks to join with the code on socket `s` (no waiting room): the actions.
fn join(r: &mut RoomState, who: Identity, s: SocketId) -> Vec<Action> {
    let outcome = r.join(who, s, None, 0).unwrap();
    assert!(!outcome.waiting);
    outcome.actions
}

/// `who` joins with the code on socket `s` and answers the first offer; their new peer.
fn joins(r: &mut RoomState, who: Identity, s: &str) -> PeerId {
    let actions = join(r, who, sid(s));
    let peer = r.peer_of(who).unwrap();
    assert!(
        lines(&actions).contains(&format!("create peer {peer} for {who} video=true max=4")),
        "{actions:?}"
    );
    r.answered(who, Some("sha-256 BB".into()));
    peer
}

fn publishes(r: &mut RoomState, peer: PeerId, tracks: Vec<TrackInfo>) -> Vec<String> {
    lines(&r.on_peer_event(PeerEvent::Published { peer, tracks }))
}

// ---- Membership -----------------------------------------------------------------------------

#[test]
fn the_doctor_opens_the_room_with_an_offer_and_is_answered() {
    let mut r = room();
    let plan = r.publish(doctor(), sid("d"), &offer("AA")).unwrap();
    assert_eq!(
        lines(&plan.actions),
        [
            "join d",
            "present medecin:79",
            "store joined medecin:79",
            "session: participant_joined medecin:79 [medecin:79]",
            "create peer 1 for medecin:79 video=true max=4",
        ]
    );
    assert_eq!((plan.peer, plan.fresh), (PeerId(1), true));
    // Nobody publishes yet: the answer only.
    assert_eq!(
        lines(&r.offer_answered(doctor(), true, answer("answer-1"))),
        ["to d: webrtc_answer answer-1"]
    );
    assert_eq!(members(&r), [doctor()]);
    assert!(!r.is_done());

    // The same PeerConnection offers again (a renegotiation): same peer, nobody told.
    let again = r.publish(doctor(), sid("d"), &offer("AA")).unwrap();
    assert_eq!(lines(&again.actions), ["join d"]);
    assert_eq!((again.peer, again.fresh), (PeerId(1), false));
}

#[test]
fn only_members_and_the_doctor_may_publish_and_bad_sdp_changes_nothing() {
    let mut r = room();
    let e = r
        .publish(patient(), sid("p"), &offer("BB"))
        .expect_err("not admitted");
    assert_eq!(e.code, "not_in_session");
    let e = r.publish(doctor(), sid("d"), "hello").expect_err("not SDP");
    assert_eq!(e.code, "bad_sdp");
    assert!(r.members().is_empty());
    assert!(r.is_done(), "nobody came in");
    // Leaving a room one is not in.
    assert_eq!(r.leave(patient()).unwrap_err().code, "not_in_session");
}

#[test]
fn a_participant_leaves_and_the_last_one_out_closes_the_room() {
    let mut r = room();
    let d = doctor_publishes(&mut r);
    let p = joins(&mut r, patient(), "p");
    assert_eq!(members(&r), [doctor(), patient()]);
    assert_eq!(
        lines(&r.leave(patient()).unwrap()),
        [
            format!("peer {p}: close"),
            "absent patient:11".into(),
            "leave p".into(),
            "store left patient:11".into(),
            "session: participant_left patient:11 (left) [medecin:79]".into(),
        ]
    );
    assert!(r.peer_of(patient()).is_err());
    // Its peer's late `Closed` is expected: nothing more happens.
    assert!(r.on_peer_event(PeerEvent::Closed { peer: p }).is_empty());
    assert!(!r.is_done());
    let out = lines(&r.leave(doctor()).unwrap());
    assert_eq!(out[0], format!("peer {d}: close"));
    assert!(r.is_done());
}

#[test]
fn first_media_marks_the_session_active_once() {
    let mut r = room();
    let d = doctor_publishes(&mut r);
    assert_eq!(
        lines(&r.on_peer_event(PeerEvent::FirstMedia { peer: d })),
        ["store active"]
    );
    assert!(
        r.on_peer_event(PeerEvent::FirstMedia { peer: d })
            .is_empty()
    );
    // A session already active in the store is not marked again.
    let mut r = RoomState::new(
        &record(SessionType::AudioVideo, SessionStatus::Active),
        GRACE,
        MAX_TRACKS,
        Box::new(|| PeerId(1)),
    );
    let d = doctor_publishes(&mut r);
    assert!(
        r.on_peer_event(PeerEvent::FirstMedia { peer: d })
            .is_empty()
    );
}

#[test]
fn a_weak_link_is_told_to_the_whole_session_and_so_is_its_recovery() {
    let mut r = room();
    let _d = doctor_publishes(&mut r);
    let p = joins(&mut r, patient(), "p");
    let weak = lines(&r.on_peer_event(PeerEvent::LinkQuality {
        peer: p,
        weak: true,
        available_bps: Some(300_000),
    }));
    assert_eq!(weak.len(), 1, "{weak:?}");
    assert!(
        weak[0].contains("connection_quality patient:11 weak Some(300000)"),
        "{weak:?}"
    );
    let good = lines(&r.on_peer_event(PeerEvent::LinkQuality {
        peer: p,
        weak: false,
        available_bps: None,
    }));
    assert!(
        good[0].contains("connection_quality patient:11 good None"),
        "{good:?}"
    );
    // A peer the room does not know (gone already): nothing.
    assert!(
        r.on_peer_event(PeerEvent::LinkQuality {
            peer: PeerId(999),
            weak: true,
            available_bps: None,
        })
        .is_empty()
    );
}

// ---- Subscriptions --------------------------------------------------------------------------

#[test]
fn a_newcomer_by_code_gets_everything_published_in_its_first_offer() {
    let mut pubs = Publishers(Vec::new());
    let mut r = room();
    let d = doctor_publishes(&mut r);
    // The doctor's tracks reach nobody yet.
    assert!(publishes(&mut r, d, pubs.camera(doctor(), 10)).is_empty());
    let actions = join(&mut r, patient(), sid("p"));
    assert_eq!(
        lines(&actions),
        [
            "join p",
            "present patient:11",
            "store joined patient:11",
            "session: participant_joined patient:11 [medecin:79, patient:11]",
            "create peer 2 for patient:11 video=true max=4",
            "peer 1: add_subscriber 10 -> 2",
            "peer 1: add_subscriber 11 -> 2",
            "peer 2: start_offer audio=true video=true [10, 11]",
        ]
    );
}

#[test]
fn a_second_publisher_subscribes_both_ways_and_never_to_itself() {
    let mut pubs = Publishers(Vec::new());
    let mut r = room();
    let d = doctor_publishes(&mut r);
    publishes(&mut r, d, pubs.camera(doctor(), 10));
    let p = joins(&mut r, patient(), "p");
    // The patient publishes: the doctor receives it, the patient does not.
    assert_eq!(
        publishes(&mut r, p, pubs.camera(patient(), 20)),
        [
            "peer 1: subscribe 20",
            "peer 2: add_subscriber 20 -> 1",
            "peer 1: subscribe 21",
            "peer 2: add_subscriber 21 -> 1",
        ]
    );
    // A screen shared later by the doctor goes to the patient alone.
    let screen = pubs.track(12, doctor(), "medecin-79.1", MediaKind::Video);
    assert_eq!(
        publishes(&mut r, d, vec![screen]),
        ["peer 2: subscribe 12", "peer 1: add_subscriber 12 -> 2"]
    );
}

#[test]
fn a_second_connection_by_offer_receives_what_the_others_publish_once_answered() {
    let mut pubs = Publishers(Vec::new());
    let mut r = room();
    let d = doctor_publishes(&mut r);
    publishes(&mut r, d, pubs.camera(doctor(), 10));
    // The patient joined by code, then their client replaced its PeerConnection with one that
    // offers itself (another certificate): the old peer goes, a fresh one answers.
    let p = joins(&mut r, patient(), "p");
    let plan = r.publish(patient(), sid("p"), &offer("CC")).unwrap();
    assert!(plan.fresh);
    assert_eq!(
        lines(&plan.actions),
        [
            "join p".to_string(),
            format!("peer {p}: close"),
            "peer 1: remove_subscriber 10 -> 2".into(),
            "peer 1: remove_subscriber 11 -> 2".into(),
            "create peer 3 for patient:11 video=true max=4".into(),
        ]
    );
    assert_eq!(
        lines(&r.offer_answered(patient(), true, answer("answer-3"))),
        [
            "to p: webrtc_answer answer-3",
            "peer 3: subscribe 10",
            "peer 1: add_subscriber 10 -> 3",
            "peer 3: subscribe 11",
            "peer 1: add_subscriber 11 -> 3",
        ]
    );
}

#[test]
fn an_audio_only_session_starts_peers_without_video() {
    let mut pubs = Publishers(Vec::new());
    let mut r = room_of(SessionType::AudioOnly);
    let plan = r.publish(doctor(), sid("d"), &offer("AA")).unwrap();
    assert_eq!(
        lines(&plan.actions).last().unwrap(),
        "create peer 1 for medecin:79 video=false max=4"
    );
    r.offer_answered(doctor(), true, answer("a"));
    // The doctor's peer publishes audio only (it ignores video in an audio-only session).
    let mic = pubs.track(10, doctor(), "medecin-79", MediaKind::Audio);
    publishes(&mut r, plan.peer, vec![mic]);
    let actions = lines(&join(&mut r, patient(), sid("p")));
    assert!(actions.contains(&"create peer 2 for patient:11 video=false max=4".to_string()));
    assert_eq!(
        actions.last().unwrap(),
        "peer 2: start_offer audio=true video=false [10]"
    );
}

#[test]
fn tracks_withdrawn_are_unsubscribed_everywhere_else() {
    let mut pubs = Publishers(Vec::new());
    let mut r = room();
    let d = doctor_publishes(&mut r);
    publishes(&mut r, d, pubs.camera(doctor(), 10));
    joins(&mut r, patient(), "p");
    joins(&mut r, relative(), "r");
    assert_eq!(
        lines(&r.on_peer_event(PeerEvent::Unpublished {
            peer: d,
            tracks: vec![TrackId(11)],
        })),
        ["peer 2: unsubscribe 11", "peer 3: unsubscribe 11"]
    );
}

#[test]
fn a_removed_participant_is_withdrawn_from_the_others_renegotiated_in_join_order() {
    let mut pubs = Publishers(Vec::new());
    let mut r = room();
    let d = doctor_publishes(&mut r);
    publishes(&mut r, d, pubs.camera(doctor(), 10));
    let p = joins(&mut r, patient(), "p");
    publishes(&mut r, p, pubs.camera(patient(), 20));
    let q = joins(&mut r, relative(), "r");
    publishes(&mut r, q, pubs.camera(relative(), 30));
    assert_eq!(members(&r), [doctor(), patient(), relative()]);
    // The patient's connection fails.
    assert_eq!(
        lines(&r.on_peer_event(PeerEvent::Failed {
            peer: p,
            reason: ErrorCode::IceFailed,
        })),
        [
            "count ice_failed",
            "to p: webrtc_error ice_failed",
            "peer 2: close",
            // The doctor first (in the room first): stops receiving the patient, and stops
            // sending to the patient's peer.
            "peer 1: unsubscribe 20",
            "peer 1: unsubscribe 21",
            "peer 1: remove_subscriber 10 -> 2",
            "peer 1: remove_subscriber 11 -> 2",
            // Then the relative.
            "peer 3: unsubscribe 20",
            "peer 3: unsubscribe 21",
            "peer 3: remove_subscriber 30 -> 2",
            "peer 3: remove_subscriber 31 -> 2",
            "absent patient:11",
            "leave p",
            "store left patient:11",
            "session: participant_left patient:11 (ice_failed) [medecin:79, patient:12]",
        ]
    );
    // Nothing of the patient's is linked any more: a newcomer gets the others' tracks only.
    let actions = lines(&join(&mut r, patient(), sid("p")));
    assert_eq!(
        actions.last().unwrap(),
        "peer 4: start_offer audio=true video=true [10, 11, 30, 31]"
    );
}

#[test]
fn a_track_a_client_refuses_is_reported_to_it_alone() {
    let mut r = room();
    doctor_publishes(&mut r);
    let p = joins(&mut r, patient(), "p");
    assert_eq!(
        lines(&r.on_peer_event(PeerEvent::Refused {
            peer: p,
            track: TrackId(10),
            code: ErrorCode::CodecUnsupported,
            message: "no VP9 here".into(),
        })),
        [
            "count codec_unsupported",
            "to p: webrtc_error codec_unsupported"
        ]
    );
    assert_eq!(members(&r), [doctor(), patient()]);
}

#[test]
fn joining_again_replaces_the_participants_peer() {
    let mut pubs = Publishers(Vec::new());
    let mut r = room();
    let d = doctor_publishes(&mut r);
    publishes(&mut r, d, pubs.camera(doctor(), 10));
    let p = joins(&mut r, patient(), "p");
    // The page reloaded: a new socket asks for an offer again. Nobody is told of a newcomer;
    // the old peer goes, the new one gets everything in its first offer.
    assert_eq!(
        lines(&join(&mut r, patient(), sid("p2"))),
        [
            "join p2".to_string(),
            format!("peer {p}: close"),
            "peer 1: remove_subscriber 10 -> 2".into(),
            "peer 1: remove_subscriber 11 -> 2".into(),
            "create peer 3 for patient:11 video=true max=4".into(),
            "peer 1: add_subscriber 10 -> 3".into(),
            "peer 1: add_subscriber 11 -> 3".into(),
            "peer 3: start_offer audio=true video=true [10, 11]".into(),
        ]
    );
    assert_eq!(members(&r), [doctor(), patient()]);
    // The old peer's late events are no one's.
    assert!(r.on_peer_event(PeerEvent::Closed { peer: p }).is_empty());
    assert!(
        r.on_peer_event(PeerEvent::Offer {
            peer: p,
            sdp: "stale".into(),
        })
        .is_empty()
    );
}

#[test]
fn a_peer_task_that_stops_on_its_own_takes_its_participant_along() {
    let mut r = room();
    doctor_publishes(&mut r);
    let p = joins(&mut r, patient(), "p");
    let out = lines(&r.on_peer_event(PeerEvent::Closed { peer: p }));
    assert_eq!(
        out.last().unwrap(),
        "session: participant_left patient:11 (connection_closed) [medecin:79]"
    );
    assert_eq!(members(&r), [doctor()]);
}

#[test]
fn a_peer_that_cannot_start_leaves_its_participant_in_without_one() {
    let mut r = room();
    doctor_publishes(&mut r);
    let actions = join(&mut r, patient(), sid("p"));
    let Some(Action::CreatePeer { peer, .. }) = actions
        .iter()
        .find(|a| matches!(a, Action::CreatePeer { .. }))
    else {
        panic!("no peer created: {actions:?}")
    };
    r.peer_not_started(*peer);
    assert!(r.peer_of(patient()).is_err());
    assert_eq!(members(&r), [doctor(), patient()]);
    // Candidates of theirs are let go quietly; a stranger's are refused.
    assert_eq!(r.candidates_target(patient()).unwrap(), None);
    assert_eq!(
        r.candidates_target(relative()).unwrap_err().code,
        "not_in_session"
    );
    // The peer's id is unknown: its events change nothing.
    assert!(
        r.on_peer_event(PeerEvent::Closed { peer: *peer })
            .is_empty()
    );
}

#[test]
fn candidates_go_to_the_peer_or_are_let_go_before_it_exists() {
    let mut r = room();
    // The doctor's first candidates may overtake the offer that opens the room.
    assert_eq!(r.candidates_target(doctor()).unwrap(), None);
    let d = doctor_publishes(&mut r);
    assert_eq!(r.candidates_target(doctor()).unwrap(), Some(d));
    assert!(r.candidates_target(patient()).is_err());
}

// ---- Max tracks -----------------------------------------------------------------------------

#[test]
fn peers_get_the_track_limit_and_an_offer_over_it_leaves_the_participant_without_a_peer() {
    let mut pubs = Publishers(Vec::new());
    let mut r = room();
    let d = doctor_publishes(&mut r);
    publishes(&mut r, d, pubs.camera(doctor(), 10));
    joins(&mut r, patient(), "p");
    // The patient's client replaces its PeerConnection with one offering too many tracks:
    // the fresh peer refuses the offer (`too_many_tracks`, from the limit it was given) and
    // goes; the patient stays, without one.
    let plan = r.publish(patient(), sid("p"), &offer("CC")).unwrap();
    assert!(plan.fresh);
    assert_eq!(
        lines(&plan.actions).last().unwrap(),
        "create peer 3 for patient:11 video=true max=4"
    );
    assert_eq!(
        lines(&r.offer_refused(patient(), plan.fresh)),
        [
            "peer 3: close",
            "peer 1: remove_subscriber 10 -> 3",
            "peer 1: remove_subscriber 11 -> 3",
        ]
    );
    assert!(r.peer_of(patient()).is_err());
    assert_eq!(members(&r), [doctor(), patient()]);
    // A renegotiation refused keeps the peer as it was.
    let plan = r.publish(doctor(), sid("d"), &offer("AA")).unwrap();
    assert!(!plan.fresh);
    assert!(r.offer_refused(doctor(), plan.fresh).is_empty());
    assert_eq!(r.peer_of(doctor()).unwrap(), d);
}

// ---- Sockets and grace ----------------------------------------------------------------------

#[test]
fn a_socket_gone_is_waited_for_and_its_participant_leaves_only_at_the_deadline() {
    let mut r = room();
    doctor_publishes(&mut r);
    let p = joins(&mut r, patient(), "p");
    let t0 = Instant::now();
    assert_eq!(r.poll_timeout(), None);
    r.socket_gone(sid("p"), t0);
    // Another socket going changes nothing for the patient.
    r.socket_gone(sid("x"), t0);
    assert_eq!(r.poll_timeout(), Some(t0 + GRACE));
    assert!(
        r.handle_timeout(t0 + GRACE - Duration::from_millis(1))
            .is_empty()
    );
    assert_eq!(members(&r), [doctor(), patient()]);
    assert_eq!(
        lines(&r.handle_timeout(t0 + GRACE)),
        [
            format!("peer {p}: close"),
            "absent patient:11".into(),
            // No socket to take out of the session's room: it is gone.
            "store left patient:11".into(),
            "session: participant_left patient:11 (disconnected) [medecin:79]".into(),
        ]
    );
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(members(&r), [doctor()]);
}

#[test]
fn a_socket_back_within_grace_keeps_the_participant_and_gets_the_pending_offer_again() {
    let mut pubs = Publishers(Vec::new());
    let mut r = room();
    let d = doctor_publishes(&mut r);
    let p = joins(&mut r, patient(), "p");
    // The doctor publishes: the patient's peer renegotiates, its offer goes to socket p.
    publishes(&mut r, d, pubs.camera(doctor(), 10));
    assert_eq!(
        lines(&r.on_peer_event(PeerEvent::Offer {
            peer: p,
            sdp: "offer-2".into(),
        })),
        ["to p: webrtc_offer offer-2"]
    );
    let t0 = Instant::now();
    r.socket_gone(sid("p"), t0);
    // While the socket is away, what goes to the patient alone goes nowhere.
    assert!(
        r.on_peer_event(PeerEvent::LocalCandidates {
            peer: p,
            candidates: vec![Default::default()],
        })
        .is_empty()
    );
    assert_eq!(
        lines(&r.socket_back(patient(), sid("p2"))),
        ["join p2", "to p2: webrtc_offer offer-2"]
    );
    assert_eq!(r.poll_timeout(), None);
    assert!(r.handle_timeout(t0 + GRACE * 2).is_empty());
    assert_eq!(members(&r), [doctor(), patient()]);
    assert_eq!(r.peer_of(patient()).unwrap(), p);
    // Once answered, a reconnection has nothing to re-send.
    r.answered(patient(), None);
    r.socket_gone(sid("p2"), t0);
    assert_eq!(lines(&r.socket_back(patient(), sid("p3"))), ["join p3"]);
    // A second socket of someone still connected (another tab) does not take over.
    assert!(r.socket_back(patient(), sid("p4")).is_empty());
    // Nor does a socket of someone not in the room.
    assert!(r.socket_back(relative(), sid("r")).is_empty());
    // Candidates of ours reach the socket bound now.
    assert_eq!(
        lines(&r.on_peer_event(PeerEvent::LocalCandidates {
            peer: p,
            candidates: vec![Default::default()],
        })),
        ["to p3: webrtc_ice_candidates 1"]
    );
}

#[test]
fn graces_expire_each_at_its_own_deadline() {
    let mut r = room();
    doctor_publishes(&mut r);
    joins(&mut r, patient(), "p");
    joins(&mut r, relative(), "r");
    let t0 = Instant::now();
    r.socket_gone(sid("r"), t0);
    r.socket_gone(sid("p"), t0 + Duration::from_secs(10));
    assert_eq!(r.poll_timeout(), Some(t0 + GRACE));
    let out = lines(&r.handle_timeout(t0 + GRACE));
    assert_eq!(
        out.last().unwrap(),
        "session: participant_left patient:12 (disconnected) [medecin:79, patient:11]"
    );
    assert_eq!(r.poll_timeout(), Some(t0 + GRACE + Duration::from_secs(10)));
    // The doctor's socket also goes: everyone left waits; the room is not done until then.
    r.socket_gone(sid("d"), t0 + Duration::from_secs(35));
    let out = lines(&r.handle_timeout(t0 + Duration::from_secs(70)));
    assert_eq!(
        out.iter()
            .filter(|l| l.contains("participant_left"))
            .count(),
        2,
        "{out:?}"
    );
    assert!(r.is_done());
}

// ---- The end --------------------------------------------------------------------------------

#[test]
fn the_end_of_the_session_removes_everyone_at_once() {
    let mut pubs = Publishers(Vec::new());
    let mut r = room();
    let d = doctor_publishes(&mut r);
    publishes(&mut r, d, pubs.camera(doctor(), 10));
    let p = joins(&mut r, patient(), "p");
    r.socket_gone(sid("p"), Instant::now());
    assert_eq!(
        lines(&r.end("ended_by_doctor", 0)),
        [
            "session: session_ended ended_by_doctor".to_string(),
            format!("peer {d}: close"),
            format!("peer {p}: unsubscribe 10"),
            format!("peer {p}: unsubscribe 11"),
            "absent medecin:79".into(),
            "leave d".into(),
            format!("peer {p}: close"),
            "absent patient:11".into(),
        ]
    );
    assert!(r.is_done());
    assert!(r.members().is_empty());
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn a_session_moving_away_is_not_told_it_ended() {
    let mut r = room();
    doctor_publishes(&mut r);
    let out = lines(&r.end(MOVED, 0));
    assert!(!out.iter().any(|l| l.contains("session_ended")), "{out:?}");
    assert!(out.contains(&"peer 1: close".to_string()));
    assert!(r.is_done());
}

#[test]
fn peers_left_when_the_room_stops_are_closed() {
    let mut r = room();
    doctor_publishes(&mut r);
    joins(&mut r, patient(), "p");
    assert_eq!(lines(&r.close_all()), ["peer 1: close", "peer 2: close"]);
}

// ---- Codecs ---------------------------------------------------------------------------------

#[test]
fn subscribers_that_cannot_decode_a_track_get_a_codec_they_all_accept_or_are_told() {
    let mut pubs = Publishers(Vec::new());
    let mut r = room();
    let d = doctor_publishes(&mut r);
    publishes(&mut r, d, pubs.camera(doctor(), 10));
    let p = joins(&mut r, patient(), "p");
    let q = joins(&mut r, relative(), "r");
    let unsupported = |peer, accepted: Vec<Codec>| PeerEvent::CodecUnsupported {
        peer,
        track: TrackId(11),
        codec: Codec::Vp9,
        accepted,
    };
    assert_eq!(
        lines(&r.on_peer_event(unsupported(p, vec![Codec::Vp8, Codec::H264]))),
        ["peer 1: prefer_codecs 11 [vp8, h264]"]
    );
    // A second subscriber narrows the choice to what both decode.
    assert_eq!(
        lines(&r.on_peer_event(unsupported(q, vec![Codec::H264]))),
        ["peer 1: prefer_codecs 11 [h264]"]
    );
    // The doctor's client offers no H264: both are told what to change.
    assert_eq!(
        lines(&r.on_peer_event(PeerEvent::CodecUnavailable {
            peer: d,
            track: TrackId(11),
            asked: vec![Codec::H264],
        })),
        [
            "count codec_unsupported",
            "to p: webrtc_error codec_unsupported",
            "count codec_unsupported",
            "to r: webrtc_error codec_unsupported",
        ]
    );
    // The track withdrawn, its constraint goes with it.
    r.on_peer_event(PeerEvent::Unpublished {
        peer: d,
        tracks: vec![TrackId(11)],
    });
    assert!(
        r.on_peer_event(PeerEvent::CodecUnavailable {
            peer: d,
            track: TrackId(11),
            asked: vec![Codec::H264],
        })
        .is_empty()
    );
}

// ---- Recording ------------------------------------------------------------------------------

fn recording_room(pubs: &mut Publishers) -> (RoomState, PeerId) {
    let mut r = room();
    let d = doctor_publishes(&mut r);
    publishes(&mut r, d, pubs.camera(doctor(), 10));
    (r, d)
}

#[test]
fn recording_starts_only_in_a_live_room_and_once() {
    let mut r = room();
    let e = r.start_recording(doctor(), 1_000).unwrap_err();
    assert_eq!(e.code, "session_not_live");
    let mut pubs = Publishers(Vec::new());
    let (mut r, _) = recording_room(&mut pubs);
    assert_eq!(
        lines(&r.start_recording(doctor(), 1_000).unwrap()),
        [
            "rec open medecin-79 [opus, vp8]",
            "rec add medecin-79 10",
            "rec add medecin-79 11",
            "session: recording_started",
        ]
    );
    assert!(r.recording_on());
    let e = r.start_recording(doctor(), 2_000).unwrap_err();
    assert_eq!(e.code, "already_recording");
    assert_eq!(
        lines(&r.stop_recording("stopped_by_doctor", 3_000).unwrap()),
        [
            "rec close medecin-79 stopped_by_doctor",
            "session: recording_stopped stopped_by_doctor",
        ]
    );
    assert!(!r.recording_on());
    let e = r.stop_recording("stopped_by_doctor", 4_000).unwrap_err();
    assert_eq!(e.code, "not_recording");
}

#[test]
fn recordings_open_and_close_per_participant_as_they_come_and_go() {
    let mut pubs = Publishers(Vec::new());
    let (mut r, _) = recording_room(&mut pubs);
    r.start_recording(doctor(), 1_000).unwrap();
    // A newcomer is told on entering; their file opens when they publish.
    let actions = lines(&join(&mut r, patient(), sid("p")));
    assert_eq!(actions[..2], ["join p", "to p: recording_started"]);
    let p = r.peer_of(patient()).unwrap();
    let out = publishes(&mut r, p, pubs.camera(patient(), 20));
    assert_eq!(
        out[4..],
        [
            "rec open patient-11 [opus, vp8]",
            "rec add patient-11 20",
            "rec add patient-11 21",
        ]
    );
    // A shared screen: a file of its own, finished when the share ends.
    let screen = pubs.track(22, patient(), "patient-11.1", MediaKind::Video);
    let out = publishes(&mut r, p, vec![screen]);
    assert_eq!(
        out[2..],
        ["rec open patient-11.1 [vp8]", "rec add patient-11.1 22"]
    );
    assert_eq!(
        lines(&r.on_peer_event(PeerEvent::Unpublished {
            peer: p,
            tracks: vec![TrackId(22)],
        })),
        [
            "rec remove patient-11.1 22",
            "rec close patient-11.1 stream_ended",
            "peer 1: unsubscribe 22",
        ]
    );
    // The main stream is not finished when a track of it stops.
    let out = lines(&r.on_peer_event(PeerEvent::Unpublished {
        peer: p,
        tracks: vec![TrackId(21)],
    }));
    assert_eq!(out, ["rec remove patient-11 21", "peer 1: unsubscribe 21"]);
    // The patient leaves: their file is finished.
    let out = lines(&r.leave(patient()).unwrap());
    assert!(out.contains(&"rec remove patient-11 20".to_string()));
    assert!(out.contains(&"rec close patient-11 participant_left".to_string()));
    // Back, they get a new one.
    join(&mut r, patient(), sid("p"));
    let p = r.peer_of(patient()).unwrap();
    let out = publishes(&mut r, p, pubs.camera(patient(), 40));
    assert!(out.contains(&"rec open patient-11 [opus, vp8]".to_string()));
    // The session ends: everything is finished, everyone told, as a stop.
    let out = lines(&r.end("ended_by_doctor", 9_000));
    assert_eq!(
        out[..4],
        [
            // By participant (patients sort first), then stream.
            "rec close patient-11 session_ended",
            "rec close medecin-79 session_ended",
            "session: recording_stopped session_ended",
            "session: session_ended ended_by_doctor",
        ]
    );
    assert!(!r.recording_on());
}

#[test]
fn a_replaced_connection_continues_the_same_file() {
    let mut pubs = Publishers(Vec::new());
    let (mut r, d) = recording_room(&mut pubs);
    r.start_recording(doctor(), 1_000).unwrap();
    // The doctor's client makes a new PeerConnection: the old tracks stop feeding the file,
    // which stays open; the new ones feed it.
    let plan = r.publish(doctor(), sid("d"), &offer("ZZ")).unwrap();
    assert_eq!(
        lines(&plan.actions),
        [
            "join d".to_string(),
            "rec remove medecin-79 10".into(),
            "rec remove medecin-79 11".into(),
            format!("peer {d}: close"),
            "create peer 2 for medecin:79 video=true max=4".into(),
        ]
    );
    r.offer_answered(doctor(), true, answer("a"));
    assert_eq!(
        publishes(&mut r, plan.peer, pubs.camera(doctor(), 50)),
        ["rec add medecin-79 50", "rec add medecin-79 51"]
    );
}

#[test]
fn a_recording_that_could_not_open_is_tried_again_on_the_next_publication() {
    let mut pubs = Publishers(Vec::new());
    let (mut r, d) = recording_room(&mut pubs);
    r.start_recording(doctor(), 1_000).unwrap();
    r.recording_not_opened(doctor(), "medecin-79");
    let screen = pubs.track(12, doctor(), "medecin-79.1", MediaKind::Video);
    let out = publishes(&mut r, d, vec![screen]);
    assert_eq!(
        out,
        [
            "rec open medecin-79 [opus, vp8]",
            "rec add medecin-79 10",
            "rec add medecin-79 11",
            "rec open medecin-79.1 [vp8]",
            "rec add medecin-79.1 12",
        ]
    );
}

#[test]
fn a_reconnection_is_told_the_session_is_recorded() {
    let mut pubs = Publishers(Vec::new());
    let (mut r, _) = recording_room(&mut pubs);
    r.start_recording(doctor(), 1_000).unwrap();
    r.socket_gone(sid("d"), Instant::now());
    assert_eq!(
        lines(&r.socket_back(doctor(), sid("d2"))),
        ["join d2", "to d2: recording_started"]
    );
    // The same socket offering again is not told twice; another socket is.
    let plan = r.publish(doctor(), sid("d2"), &offer("AA")).unwrap();
    assert_eq!(lines(&plan.actions), ["join d2"]);
    let plan = r.publish(doctor(), sid("d3"), &offer("AA")).unwrap();
    assert_eq!(
        lines(&plan.actions),
        ["join d3", "to d3: recording_started"]
    );
}

// ---- Waiting room, admission, audio only ------------------------------------------------------

fn waiting_room() -> RoomState {
    let mut next = 0;
    let mut rec = record(SessionType::AudioVideo, SessionStatus::Initiating);
    rec.waiting_room = true;
    RoomState::new(
        &rec,
        GRACE,
        MAX_TRACKS,
        Box::new(move || {
            next += 1;
            PeerId(next)
        }),
    )
}

fn guest() -> Identity {
    Identity::new(Role::Invite, 4)
}

#[test]
fn with_a_waiting_room_newcomers_wait_unseen_until_the_doctor_admits_them() {
    let mut pubs = Publishers(Vec::new());
    let mut r = waiting_room();
    // The patient arrives first: waits, nobody to tell yet, no peer, not a member.
    let o = r
        .join(patient(), sid("p"), Some("Mme Durand".into()), 1_000)
        .unwrap();
    assert!(o.waiting);
    assert_eq!(lines(&o.actions), ["to p: waiting"]);
    assert!(members(&r).is_empty());
    assert!(!r.is_done(), "someone waits: the room stays");
    assert!(r.peer_of(patient()).is_err());
    // Asking again (a reload) keeps their place and time.
    let o = r.join(patient(), sid("p"), None, 5_000).unwrap();
    assert!(o.waiting);
    assert_eq!(r.waiting()[0].since, 1_000);
    // The doctor opens the room: told who waits.
    let plan = r.publish(doctor(), sid("d"), &offer("AA")).unwrap();
    assert!(
        lines(&plan.actions).contains(&"to d: participant_waiting patient:11".to_string()),
        "{:?}",
        lines(&plan.actions)
    );
    r.offer_answered(doctor(), plan.fresh, answer("answer-d"));
    let d = plan.peer;
    publishes(&mut r, d, pubs.camera(doctor(), 10));
    // A guest arrives while the doctor is there: the doctor is told at once.
    let o = r
        .join(guest(), sid("g"), Some("Interprète".into()), 2_000)
        .unwrap();
    assert!(o.waiting);
    assert_eq!(
        lines(&o.actions),
        ["to d: participant_waiting invite:4", "to g: waiting"]
    );
    // Admitted: told, then joins like anyone with a code.
    let actions = lines(&r.admit(doctor(), None, patient()).unwrap());
    assert_eq!(
        actions,
        [
            "audit medecin:79 Admitted patient:11",
            "to p: admitted patient:11",
            "join p",
            "present patient:11",
            "store joined patient:11",
            "session: participant_joined patient:11 [medecin:79, patient:11]",
            "create peer 2 for patient:11 video=true max=4",
            "peer 1: add_subscriber 10 -> 2",
            "peer 1: add_subscriber 11 -> 2",
            "peer 2: start_offer audio=true video=true [10, 11]",
        ]
    );
    assert_eq!(r.waiting().len(), 1);
    // Admitted once: a rebuilt connection rejoins without waiting.
    assert!(!r.join(patient(), sid("p"), None, 9_000).unwrap().waiting);
    // The doctor never waits.
    assert_eq!(
        r.admit(doctor(), None, patient()).unwrap_err().code,
        ErrorCode::NotWaiting
    );
}

#[test]
fn a_declined_person_is_told_and_refused_until_the_room_closes() {
    let mut r = waiting_room();
    doctor_publishes(&mut r);
    r.join(patient(), sid("p"), None, 1_000).unwrap();
    let actions = lines(
        &r.decline(
            doctor(),
            None,
            patient(),
            Some("  pas de rendez-vous  ".into()),
        )
        .unwrap(),
    );
    assert_eq!(
        actions,
        [
            "store refused patient:11 removed=false",
            "audit medecin:79 Declined patient:11 (pas de rendez-vous)",
            "to p: declined",
        ]
    );
    assert_eq!(
        r.join(patient(), sid("p"), None, 2_000).unwrap_err().code,
        ErrorCode::Declined
    );
    // Nobody waits now: deciding again is refused, as is a decision about a stranger.
    assert_eq!(
        r.decline(doctor(), None, patient(), None).unwrap_err().code,
        ErrorCode::NotWaiting
    );
    assert_eq!(
        r.admit(doctor(), None, relative()).unwrap_err().code,
        ErrorCode::NotWaiting
    );
}

#[test]
fn a_waiting_person_who_goes_away_leaves_the_list_after_the_grace_period() {
    let mut r = waiting_room();
    doctor_publishes(&mut r);
    r.join(patient(), sid("p"), None, 1_000).unwrap();
    r.join(relative(), sid("q"), None, 1_000).unwrap();
    let t0 = Instant::now();
    r.socket_gone(sid("p"), t0);
    assert_eq!(r.poll_timeout(), Some(t0 + GRACE));
    // Back in time: waits on, told again.
    assert_eq!(
        lines(&r.socket_back(patient(), sid("p2"))),
        ["to p2: waiting"]
    );
    r.socket_gone(sid("p2"), t0);
    assert!(lines(&r.handle_timeout(t0 + GRACE / 2)).is_empty());
    assert_eq!(
        lines(&r.handle_timeout(t0 + GRACE)),
        ["to d: participant_waiting_left patient:11"]
    );
    // One who leaves on purpose goes at once.
    assert_eq!(
        lines(&r.leave(relative()).unwrap()),
        ["to d: participant_waiting_left patient:12"]
    );
    assert!(r.waiting().is_empty());
}

#[test]
fn the_doctor_removes_a_participant_who_cannot_come_back() {
    let mut pubs = Publishers(Vec::new());
    let mut r = room();
    let d = doctor_publishes(&mut r);
    publishes(&mut r, d, pubs.camera(doctor(), 10));
    let g = joins(&mut r, guest(), "g");
    publishes(&mut r, g, pubs.camera(guest(), 20));
    let actions = lines(&r.remove(doctor(), None, guest()).unwrap());
    assert_eq!(actions[0], "store refused invite:4 removed=true");
    assert_eq!(actions[1], "audit medecin:79 Removed invite:4");
    assert_eq!(actions[2], "to g: removed");
    for expected in [
        "peer 2: close",
        "peer 1: unsubscribe 20",
        "peer 1: unsubscribe 21",
        "session: participant_left invite:4 (removed) [medecin:79]",
    ] {
        assert!(
            actions.contains(&expected.to_string()),
            "{expected}: {actions:?}"
        );
    }
    assert_eq!(members(&r), [doctor()]);
    assert_eq!(
        r.join(guest(), sid("g"), None, 0).unwrap_err().code,
        ErrorCode::Removed
    );
    assert_eq!(
        r.remove(doctor(), None, doctor()).unwrap_err().code,
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        r.remove(doctor(), None, relative()).unwrap_err().code,
        ErrorCode::NotInSession
    );
}

#[test]
fn audio_only_cuts_video_both_ways_and_back_without_touching_audio_or_others() {
    let mut pubs = Publishers(Vec::new());
    let mut r = room();
    let d = doctor_publishes(&mut r);
    publishes(&mut r, d, pubs.camera(doctor(), 10));
    let p = joins(&mut r, patient(), "p");
    publishes(&mut r, p, pubs.camera(patient(), 20));
    let q = joins(&mut r, relative(), "q");
    publishes(&mut r, q, pubs.camera(relative(), 30));
    let mut on = lines(
        &r.set_audio_only(patient(), None, true, Some("connexion insuffisante".into()))
            .unwrap(),
    );
    let event = on.pop().unwrap();
    assert_eq!(event, "session: audio_only patient:11 true");
    let audit = on.pop().unwrap();
    assert_eq!(
        audit,
        "audit patient:11 AudioOnlyOn patient:11 (connexion insuffisante)"
    );
    on.sort();
    let mut expected = vec![
        format!("peer {d}: remove_subscriber 11 -> {p}"),
        format!("peer {d}: unsubscribe 21"),
        format!("peer {p}: remove_subscriber 21 -> {d}"),
        format!("peer {p}: remove_subscriber 21 -> {q}"),
        format!("peer {p}: unsubscribe 11"),
        format!("peer {p}: unsubscribe 31"),
        format!("peer {q}: remove_subscriber 31 -> {p}"),
        format!("peer {q}: unsubscribe 21"),
    ];
    expected.sort();
    assert_eq!(
        on, expected,
        "audio (10, 20, 30) untouched, the relative's video to the doctor too"
    );
    // Already audio only: nothing changes, nobody is told.
    assert!(
        r.set_audio_only(patient(), None, true, None)
            .unwrap()
            .is_empty()
    );
    // A newcomer's first offer carries no video of theirs, and they are told.
    let joined = lines(&join(&mut r, Identity::new(Role::Patient, 13), sid("n")));
    assert!(
        joined.contains(&"to n: audio_only patient:11 true".to_string()),
        "{joined:?}"
    );
    assert!(
        joined
            .iter()
            .any(|l| l.contains("start_offer") && l.contains("20") && !l.contains("21")),
        "{joined:?}"
    );
    // Back to video: every link restored.
    let mut off = lines(&r.set_audio_only(patient(), None, false, None).unwrap());
    assert_eq!(off.pop().unwrap(), "session: audio_only patient:11 false");
    assert_eq!(
        off.pop().unwrap(),
        "audit patient:11 AudioOnlyOff patient:11"
    );
    assert!(off.contains(&format!("peer {p}: subscribe 11")), "{off:?}");
    assert!(off.contains(&format!("peer {d}: subscribe 21")), "{off:?}");
    assert!(off.contains(&format!("peer {q}: subscribe 21")), "{off:?}");
    // Someone not in the call cannot switch.
    assert_eq!(
        r.set_audio_only(Identity::new(Role::Patient, 99), None, true, None)
            .unwrap_err()
            .code,
        ErrorCode::NotInSession
    );
}

#[test]
fn someone_admitted_by_an_earlier_room_of_the_session_does_not_wait_again() {
    let mut r = waiting_room();
    doctor_publishes(&mut r);
    // After a restart: the store says the patient took part; the new room lets them in.
    r.admitted_before(patient());
    let o = r.join(patient(), sid("p"), None, 0).unwrap();
    assert!(!o.waiting);
    assert!(members(&r).contains(&patient()));
    // A newcomer still waits.
    assert!(r.join(relative(), sid("q"), None, 0).unwrap().waiting);
}
