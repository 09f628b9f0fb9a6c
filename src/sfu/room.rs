//! One live consultation: its participants, their PeerConnections, who receives which track.
//!
//! A room is a task (an actor): signaling commands and peer events reach it through queues
//! and it handles them one at a time, so its state needs no lock. What to do is decided by
//! [`state::RoomState`] (pure, unit-tested, time passed in); this task is its IO shell: it
//! feeds it commands, peer events and the grace timer, and carries out the [`state::Action`]s
//! it returns in order: peer tasks started, told and closed, store writes, recordings opened
//! and fed, and events to clients through the [`crate::ports::ClientNotify`] port (SDP to
//! one participant's socket, session events to the session's room).
//!
//! Invariants (decided and tested in [`state`], where they are written out): every
//! participant with a PeerConnection receives every track the others publish (audio always,
//! video unless the session is audio-only), and nothing of their own; a participant removed
//! for any reason leaves nothing (peer closed, tracks withdrawn from the others, subscriptions
//! dropped at the publishers); the room stops when its last participant is gone or the session
//! ended. This shell adds: actions are carried out in the order given, one batch at a time, and
//! a peer task exists exactly while the state knows its peer (started on `CreatePeer`, its
//! handle dropped on `Close`, all closed when the room stops).

pub mod recording;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::peer::stats::TrackStatsView;
use super::peer::{self, PeerContext, PeerHandle};
use super::sdp;
use super::types::{PeerCommand, PeerEvent, PeerId, SignalError, SignalResult, SubscriberLink};
use crate::error::ErrorCode;
use crate::ids::{Identity, RoomKey, SessionId, SocketId};
use crate::store::SessionRecord;
use crate::wire::{Outgoing, UserRef};
use state::{Action, PeerOrder, RoomState, StoreWrite};

pub use state::MOVED;

const COMMANDS: usize = 256;
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
    /// `request_webrtc_offer` (already admitted with the code): the server offers, or the
    /// person waits for the doctor (answered `true`). `at` is the wall-clock time.
    Join {
        who: Identity,
        sid: SocketId,
        name: Option<String>,
        at: crate::clock::Millis,
        /// They entered this session before (in an earlier room): no waiting again.
        admitted_before: bool,
        reply: oneshot::Sender<SignalResult<bool>>,
    },
    /// The doctor (already authorized) acts on someone: admit, decline, remove.
    Admission {
        by: Identity,
        ip: Option<std::net::IpAddr>,
        who: Identity,
        decision: Admission,
        reply: oneshot::Sender<SignalResult<()>>,
    },
    /// `set_audio_only`.
    AudioOnly {
        who: Identity,
        ip: Option<std::net::IpAddr>,
        on: bool,
        reason: Option<String>,
        reply: oneshot::Sender<SignalResult<()>>,
    },
    /// Who waits in the waiting room.
    Waiting {
        reply: oneshot::Sender<Vec<state::WaitingPerson>>,
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

/// What the doctor decides about someone.
#[derive(Debug, Clone)]
pub enum Admission {
    Admit,
    Decline { reason: Option<String> },
    Remove,
}

/// One participant in `GET …/stats`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ParticipantStats {
    pub participant: UserRef,
    pub connected: bool,
    /// `udp` or `tcp` (ICE-TCP): how the server reaches this participant's media.
    #[schema(value_type = Option<String>)]
    pub transport: Option<std::borrow::Cow<'static, str>>,
    /// The server's port that media arrives on: the media UDP port, the ICE-TCP listener's,
    /// or the shared HTTPS port (`https.multiplex`). With TURN, the media UDP port (the relay
    /// is in between).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_port: Option<u16>,
    pub tracks: Vec<TrackStatsView>,
}

#[derive(Debug, Clone)]
pub struct RoomHandle {
    pub session: SessionId,
    pub tx: mpsc::Sender<RoomCommand>,
}

pub(super) struct Room {
    session: SessionId,
    shared: Arc<Shared>,
    /// The decisions.
    state: RoomState,
    /// The peer tasks, by the ids the state knows them by.
    handles: HashMap<PeerId, PeerHandle>,
    events_tx: mpsc::UnboundedSender<PeerEvent>,
    /// The open recordings while the consultation is recorded, by participant and stream.
    recorders: BTreeMap<(Identity, String), recording::Recorded>,
}

pub(super) fn spawn(session: SessionRecord, shared: Arc<Shared>) -> RoomHandle {
    let (tx, rx) = mpsc::channel(COMMANDS);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let handle = RoomHandle {
        session: session.id,
        tx,
    };
    let ids = shared.clone();
    let state = RoomState::new(
        &session,
        shared.grace,
        shared.max_tracks,
        Box::new(move || ids.next_peer_id()),
    );
    let room = Room {
        session: session.id,
        shared,
        state,
        handles: HashMap::new(),
        events_tx,
        recorders: BTreeMap::new(),
    };
    tokio::spawn(room.run(rx, events_rx, handle.clone()));
    handle
}

impl Room {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<RoomCommand>,
        mut events: mpsc::UnboundedReceiver<PeerEvent>,
        me: RoomHandle,
    ) {
        self.shared.metrics.media.sessions_active.inc();
        loop {
            let deadline = self.state.poll_timeout();
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await,
                    None => break,
                },
                Some(ev) = events.recv() => {
                    let actions = self.state.on_peer_event(ev);
                    self.run_actions(actions).await;
                }
                _ = sleep_until_opt(deadline) => {
                    let actions = self.state.handle_timeout(Instant::now());
                    self.run_actions(actions).await;
                }
            }
            if self.state.is_done() {
                break;
            }
        }
        // Whatever is left closes with the room.
        let actions = self.state.close_all();
        self.run_actions(actions).await;
        self.shared.forget_room(&me);
        self.shared.metrics.media.sessions_active.dec();
        tracing::debug!(session = %self.session, "room closed");
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
            RoomCommand::Join {
                who,
                sid,
                name,
                at,
                admitted_before,
                reply,
            } => {
                if admitted_before {
                    self.state.admitted_before(who);
                }
                let r = match self.state.join(who, sid, name, at) {
                    Ok(outcome) => self.execute(outcome.actions).await.map(|_| outcome.waiting),
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            RoomCommand::Admission {
                by,
                ip,
                who,
                decision,
                reply,
            } => {
                let decided = match decision {
                    Admission::Admit => self.state.admit(by, ip, who),
                    Admission::Decline { reason } => self.state.decline(by, ip, who, reason),
                    Admission::Remove => self.state.remove(by, ip, who),
                };
                let r = match decided {
                    Ok(actions) => self.execute(actions).await.map(drop),
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            RoomCommand::AudioOnly {
                who,
                ip,
                on,
                reason,
                reply,
            } => {
                let r = match self.state.set_audio_only(who, ip, on, reason) {
                    Ok(actions) => {
                        self.run_actions(actions).await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            RoomCommand::Waiting { reply } => {
                let _ = reply.send(self.state.waiting().to_vec());
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
                let r = match self.state.leave(who) {
                    Ok(actions) => {
                        self.run_actions(actions).await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            RoomCommand::End { reason, reply } => {
                if self.state.recording_on() {
                    tracing::info!(session = %self.session, reason, "recording off");
                }
                let actions = self.state.end(reason, self.shared.recordings.now());
                self.run_actions(actions).await;
                let _ = reply.send(());
            }
            RoomCommand::SocketGone { sid } => self.state.socket_gone(sid, Instant::now()),
            RoomCommand::SocketBack { who, sid } => {
                let actions = self.state.socket_back(who, sid);
                self.run_actions(actions).await;
            }
            RoomCommand::Stats { reply } => {
                let _ = reply.send(self.stats().await);
            }
            RoomCommand::StartRecording { by, at, reply } => {
                let r = self.start_recording(by, at).await;
                let _ = reply.send(r);
            }
            RoomCommand::StopRecording { reply } => {
                let r = self.stop_recording().await;
                let _ = reply.send(r);
            }
        }
    }

    async fn publish(&mut self, who: Identity, sid: SocketId, offer: String) -> SignalResult<()> {
        let plan = self.state.publish(who, sid, &offer)?;
        self.execute(plan.actions).await?;
        let (tx, rx) = oneshot::channel();
        self.send_peer(
            plan.peer,
            PeerCommand::RemoteOffer {
                sdp: offer,
                reply: tx,
            },
        );
        match await_reply(rx).await {
            Ok(answer) => {
                let actions = self.state.offer_answered(who, plan.fresh, answer);
                self.run_actions(actions).await;
                Ok(())
            }
            Err(e) => {
                let actions = self.state.offer_refused(who, plan.fresh);
                self.run_actions(actions).await;
                Err(e)
            }
        }
    }

    async fn answer(&mut self, who: Identity, answer: String) -> SignalResult<()> {
        let peer = self.state.peer_of(who)?;
        let fingerprint = sdp::fingerprint(&answer).map(str::to_string);
        let (tx, rx) = oneshot::channel();
        self.send_peer(
            peer,
            PeerCommand::RemoteAnswer {
                sdp: answer,
                reply: tx,
            },
        );
        await_reply(rx).await?;
        self.state.answered(who, fingerprint);
        Ok(())
    }

    async fn candidates(
        &mut self,
        who: Identity,
        candidates: Vec<rtc::peer_connection::transport::RTCIceCandidateInit>,
    ) -> SignalResult<usize> {
        let Some(peer) = self.state.candidates_target(who)? else {
            return Ok(0);
        };
        let (tx, rx) = oneshot::channel();
        self.send_peer(
            peer,
            PeerCommand::RemoteCandidates {
                candidates,
                reply: tx,
            },
        );
        await_reply(rx).await
    }

    /// Carries out a batch that starts no peer.
    async fn run_actions(&mut self, actions: Vec<Action>) {
        if let Err(e) = self.execute(actions).await {
            tracing::warn!(session = %self.session, error = %e, "room actions cut short");
        }
    }

    /// Carries out `actions` in order; returns the recordings finished on the way. A peer
    /// that cannot start voids the rest of the batch (it assumed the peer): the state is told
    /// and the error returned.
    async fn execute(
        &mut self,
        actions: Vec<Action>,
    ) -> SignalResult<Vec<(String, crate::recording::Closing)>> {
        let mut closings = Vec::new();
        for action in actions {
            match action {
                Action::JoinRoom(sid) => self.shared.io.join(sid, self.session_room()),
                Action::LeaveRoom(sid) => self.shared.io.leave(sid, self.session_room()),
                Action::Notify { to, event } => self.emit_to(to, &event),
                Action::NotifySession(event) => self.emit_session(&event).await,
                Action::CountError(code) => self.shared.count_signal_error(code),
                Action::Presence { who, present } => {
                    if present {
                        self.shared.presence_add(who, self.session);
                    } else {
                        self.shared.presence_remove(who, self.session);
                    }
                }
                Action::Store(write) => self.store(write).await,
                Action::CreatePeer {
                    peer,
                    who,
                    allow_video,
                    max_tracks,
                } => {
                    if let Err(e) = self.create_peer(peer, who, allow_video, max_tracks) {
                        self.state.peer_not_started(peer);
                        return Err(e);
                    }
                }
                Action::Peer { peer, order } => self.order(peer, order),
                Action::Recording(action) => self.recording_action(action, &mut closings).await,
                Action::Audit(note) => self.audit(note).await,
            }
        }
        Ok(closings)
    }

    /// Writes the room's decision to the audit trail (fail-open: the decision stands).
    async fn audit(&self, note: state::AuditNote) {
        use crate::audit::{Action as Act, Entry, Target};
        let action = match note.act {
            state::AuditAct::Admitted => Act::ParticipantAdmitted,
            state::AuditAct::Declined => Act::ParticipantDeclined,
            state::AuditAct::Removed => Act::ParticipantRemoved,
            state::AuditAct::AudioOnlyOn => Act::AudioOnlyOn,
            state::AuditAct::AudioOnlyOff => Act::AudioOnlyOff,
        };
        let target = Target::Participant {
            session: self.session,
            who: note.subject,
        };
        let detail = match note.reason {
            Some(reason) => serde_json::json!({ "reason": reason }),
            None => serde_json::json!({}),
        };
        self.shared
            .sessions
            .audit()
            .note(
                Entry::new(action, target)
                    .by(note.actor)
                    .ip(note.ip)
                    .detail(detail),
            )
            .await;
    }

    async fn store(&self, write: StoreWrite) {
        let sessions = &self.shared.sessions;
        match write {
            StoreWrite::ParticipantJoined(who) => {
                if let Err(e) = sessions.participant_joined(self.session, who).await {
                    tracing::warn!(error = %e, "could not record a session participant");
                }
            }
            StoreWrite::ParticipantLeft(who) => {
                if let Err(e) = sessions.participant_left(self.session, who).await {
                    tracing::warn!(error = %e, "could not record a departure");
                }
            }
            StoreWrite::Refused { who, removed } => {
                if let Err(e) = sessions.refuse(self.session, who, removed).await {
                    tracing::warn!(error = %e, "could not record a refusal");
                }
            }
            StoreWrite::MarkActive => {
                if let Err(e) = sessions.mark_active(self.session).await {
                    tracing::warn!(error = %e, "could not mark the session active");
                }
            }
        }
    }

    fn create_peer(
        &mut self,
        id: PeerId,
        who: Identity,
        allow_video: bool,
        max_tracks: usize,
    ) -> SignalResult<()> {
        let ctx = PeerContext {
            id,
            owner: who,
            allow_video,
            max_tracks,
            plane: self.shared.plane.clone(),
            factory: self.shared.factory.clone(),
            metrics: self.shared.metrics.clone(),
            events: self.events_tx.clone(),
            next_track_id: self.shared.next_track_id.clone(),
            echo: false,
        };
        let handle = peer::spawn(ctx, Instant::now()).map_err(|e| {
            tracing::error!(error = %e, "cannot build a PeerConnection");
            SignalError::internal()
        })?;
        self.handles.insert(id, handle);
        Ok(())
    }

    /// One order of the state to a peer's task.
    fn order(&mut self, peer: PeerId, order: PeerOrder) {
        let cmd = match order {
            PeerOrder::StartOffer {
                audio,
                video,
                subscribe,
            } => PeerCommand::StartOffer {
                audio,
                video,
                subscribe,
            },
            PeerOrder::Subscribe(track) => PeerCommand::Subscribe(track),
            PeerOrder::Unsubscribe(track) => PeerCommand::Unsubscribe(track),
            PeerOrder::AddSubscriber { track, subscriber } => {
                let Some(sub) = self.handles.get(&subscriber) else {
                    tracing::debug!(peer = %subscriber, "subscriber already closed");
                    return;
                };
                PeerCommand::AddSubscriber {
                    track,
                    link: SubscriberLink {
                        peer: sub.id,
                        outbound: sub.outbound.clone(),
                    },
                }
            }
            PeerOrder::RemoveSubscriber { track, peer } => {
                PeerCommand::RemoveSubscriber { track, peer }
            }
            PeerOrder::PreferCodecs { track, codecs } => {
                PeerCommand::PreferCodecs { track, codecs }
            }
            PeerOrder::Close => {
                // The room lets go of the task once it is told to close.
                if let Some(handle) = self.handles.remove(&peer) {
                    send(&handle, PeerCommand::Close);
                }
                return;
            }
        };
        self.send_peer(peer, cmd);
    }

    fn send_peer(&self, peer: PeerId, cmd: PeerCommand) {
        match self.handles.get(&peer) {
            Some(handle) => send(handle, cmd),
            None => tracing::debug!(%peer, "peer already closed"),
        }
    }

    fn session_room(&self) -> RoomKey {
        RoomKey::Session(self.session)
    }

    fn emit_to(&self, sid: SocketId, event: &Outgoing) {
        tracing::trace!(session = %self.session, %sid, event = event.name(), "signal out");
        if let Err(e) = self.shared.io.emit_to(sid, event) {
            tracing::debug!(error = %e, event = event.name(), "signal dropped");
        }
    }

    async fn emit_session(&self, event: &Outgoing) {
        if let Outgoing::ParticipantLeft(left) = event {
            tracing::debug!(session = %self.session, reason = ?left.reason, "participant removed");
        }
        if let Err(e) = self.shared.io.emit_room(self.session_room(), event).await {
            tracing::debug!(error = %e, event = event.name(), "emit failed");
        }
    }

    async fn stats(&self) -> Vec<ParticipantStats> {
        let mut out = Vec::new();
        for member in self.state.members() {
            let mut tracks = Vec::new();
            let mut path = None;
            if let Some(peer) = member.peer {
                let (tx, rx) = oneshot::channel();
                self.send_peer(peer, PeerCommand::Stats { reply: tx });
                if let Ok(Ok((p, t))) = tokio::time::timeout(Duration::from_secs(2), rx).await {
                    path = p;
                    tracks = t;
                }
            }
            out.push(ParticipantStats {
                participant: member.who.into(),
                connected: member.connected,
                transport: path.map(|p| p.transport.into()),
                server_port: path.and_then(|p| p.server_port),
                tracks,
            });
        }
        out
    }
}

fn send(handle: &PeerHandle, cmd: PeerCommand) {
    match handle.commands.try_send(cmd) {
        Ok(()) => {}
        // A peer that is closing: what it was told no longer matters.
        Err(mpsc::error::TrySendError::Closed(_)) => {
            tracing::debug!(peer = %handle.id, "peer already closed");
        }
        Err(e) => tracing::warn!(peer = %handle.id, error = %e, "peer command queue full"),
    }
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
