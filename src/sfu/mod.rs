//! The media plane: every browser's PeerConnection ends here and RTP is forwarded between the
//! participants of a consultation (a selective forwarding unit on webrtc-rs's sans-IO `rtc`).
//!
//! Layout:
//! - [`media_plane`]: the one UDP socket and its routing (5-tuple, then STUN USERNAME);
//! - [`peer`]: one task per PeerConnection (negotiation and ICE on `rtc`, DTLS-SRTP and media
//!   read and written by the task itself, publishing, subscribing);
//! - [`feedback`]: the RTCP the SFU writes (NACK, transport-wide congestion feedback, reports);
//! - [`api`]: what the SFU can be asked ([`SfuRequest`], from any node) and answers
//!   ([`SfuReply`]); [`Sfu::handle`] runs one request;
//! - [`room`]: one task per live session, carrying out what [`room::state::RoomState`] (pure:
//!   membership, subscriptions, grace timers, recording per participant) decides;
//! - [`forward`]: the per-leg rewrite decision and the keyframe rules (pure, property-tested);
//!   [`crate::codec`], [`stun`], [`sdp`]: small pure parsers.
//!
//! Invariants: one socket for all media; bounded queues between tasks (media drops and counts
//! when full); a session's room exists only while someone is in it; ending a session closes
//! all of it.

pub mod check;
pub mod congestion;
pub mod feedback;
pub mod forward;
pub mod media_plane;
pub mod media_runtime;
pub mod peer;
pub mod room;
pub mod sdp;
pub mod stun;
pub mod types;
pub mod udp_batch;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use parking_lot::Mutex;

use serde_json::json;
use tokio::sync::oneshot;

use crate::audit::{Action, Entry, Target};
use crate::error::ErrorCode;
use crate::ids::{Identity, SessionId, SocketId};
use crate::messaging::{DomainError, DomainResult};
use crate::metrics::{KindLabels, Metrics};
use crate::recording::Recordings;
use crate::sessions::Sessions;
use crate::store::SessionStatus;
use media_plane::MediaPlane;
use peer::setup::PeerFactory;
use room::{ParticipantStats, RoomCommand, RoomHandle};
pub mod api;
pub use api::{Caller, RemoteError, SfuReply, SfuRequest, WaitingView};
use room::state::not_in_session;
pub use types::{PeerId, SignalError, SignalResult, TrackId};

/// What every room shares.
pub(crate) struct Shared {
    plane: Arc<MediaPlane>,
    factory: Arc<PeerFactory>,
    metrics: Arc<Metrics>,
    /// Sockets here, and (several nodes) sockets of other nodes that signal to rooms here.
    io: Arc<dyn crate::ports::ClientNotify>,
    sessions: Sessions,
    recordings: Recordings,
    grace: Duration,
    max_tracks: usize,
    rooms: Mutex<HashMap<SessionId, RoomHandle>>,
    /// The sessions each person is in, to rebind a reconnected socket.
    presence: Mutex<HashMap<Identity, HashSet<SessionId>>>,
    next_peer: AtomicU64,
    next_track_id: Arc<AtomicU64>,
    /// Pre-call checks running here ([`check`]).
    checks: check::Checks,
}

impl Shared {
    fn next_peer_id(&self) -> PeerId {
        PeerId(self.next_peer.fetch_add(1, Ordering::Relaxed))
    }

    fn forget_room(&self, handle: &RoomHandle) {
        let mut rooms = self.rooms.lock();
        if rooms
            .get(&handle.session)
            .is_some_and(|h| h.tx.same_channel(&handle.tx))
        {
            rooms.remove(&handle.session);
        }
    }

    fn presence_add(&self, who: Identity, session: SessionId) {
        self.presence.lock().entry(who).or_default().insert(session);
    }

    fn presence_remove(&self, who: Identity, session: SessionId) {
        let mut presence = self.presence.lock();
        if let Some(set) = presence.get_mut(&who) {
            set.remove(&session);
            if set.is_empty() {
                presence.remove(&who);
            }
        }
    }

    fn count_signal_error(&self, code: ErrorCode) {
        self.metrics
            .media
            .signaling_errors
            .get_or_create(&KindLabels {
                kind: code.as_str(),
            })
            .inc();
    }
}

/// The SFU's entry points for signaling and REST. Cheap to clone.
#[derive(Clone)]
pub struct Sfu {
    shared: Arc<Shared>,
    media_addr: SocketAddr,
    media_tcp_addr: Option<SocketAddr>,
    /// The media tasks' threads: dropped (and stopped) with the SFU.
    _runtime: Arc<media_runtime::MediaRuntime>,
}

/// Where the media socket is and what it advertises.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub udp_addr: SocketAddr,
    /// ICE-TCP listener; `None` disables ICE-TCP.
    pub tcp_addr: Option<SocketAddr>,
    /// The shared HTTPS port's bound address, when it also serves ICE-TCP (its connections
    /// come through [`Sfu::adopt_ice_tcp`]): candidates on that port are advertised too.
    pub shared_tcp_addr: Option<SocketAddr>,
    /// Addresses advertised as host candidates (the socket's port is added).
    pub public_ips: Vec<IpAddr>,
    pub reconnect_grace: Duration,
    /// Threads of the media runtime ([`media_runtime`]).
    pub workers: usize,
    /// Tracks one participant may publish.
    pub max_tracks: usize,
}

impl Sfu {
    /// Binds the media sockets and starts the media runtime that reads and writes them.
    pub fn start(
        settings: MediaSettings,
        metrics: Arc<Metrics>,
        io: Arc<dyn crate::ports::ClientNotify>,
        sessions: Sessions,
        recordings: Recordings,
    ) -> anyhow::Result<Self> {
        let runtime = media_runtime::MediaRuntime::start(settings.workers)
            .context("media.workers: cannot start the media threads")?;
        let socket = std::net::UdpSocket::bind(settings.udp_addr)
            .with_context(|| format!("media.udp_addr: cannot bind {}", settings.udp_addr))?;
        socket.set_nonblocking(true)?;
        crate::udp_buffers::enlarge(&socket, "media");
        let media_addr = socket.local_addr()?;
        let candidates = advertised(&settings.public_ips, media_addr);
        anyhow::ensure!(
            !candidates.is_empty(),
            "media.public_ips: no address to advertise (set media.public_ips)"
        );
        let tcp_listener = match settings.tcp_addr {
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("media.tcp_addr: cannot listen on {addr}"))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        let mut tcp_candidates = match &tcp_listener {
            Some(l) => advertised(&settings.public_ips, l.local_addr()?),
            None => Vec::new(),
        };
        if let (Some(_), Some(shared)) = (&tcp_listener, settings.shared_tcp_addr) {
            tcp_candidates.extend(advertised(&settings.public_ips, shared));
        }
        let media_tcp_addr = match &tcp_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let factory = Arc::new(PeerFactory::new(candidates, tcp_candidates)?);
        // Registered with the media runtime's I/O driver (see its invariants).
        let (socket, tcp_listener) = {
            let _media = runtime.enter();
            let listener = tcp_listener
                .map(tokio::net::TcpListener::from_std)
                .transpose()?;
            (tokio::net::UdpSocket::from_std(socket)?, listener)
        };
        let plane = MediaPlane::new(socket, metrics.clone(), runtime.handle().clone());
        plane.spawn(plane.clone().run());
        plane.spawn(plane.clone().run_sender());
        if let Some(listener) = tcp_listener {
            plane.spawn(plane.clone().run_tcp(listener));
        }
        Ok(Self {
            shared: Arc::new(Shared {
                plane,
                factory,
                metrics,
                io,
                sessions,
                recordings,
                grace: settings.reconnect_grace,
                max_tracks: settings.max_tracks,
                rooms: Mutex::new(HashMap::new()),
                presence: Mutex::new(HashMap::new()),
                next_peer: AtomicU64::new(1),
                next_track_id: Arc::new(AtomicU64::new(1)),
                checks: check::Checks::default(),
            }),
            media_addr,
            media_tcp_addr,
            _runtime: Arc::new(runtime),
        })
    }

    /// The media socket's bound address.
    pub fn media_addr(&self) -> SocketAddr {
        self.media_addr
    }

    /// The ICE-TCP listener's bound address, when ICE-TCP is on.
    pub fn media_tcp_addr(&self) -> Option<SocketAddr> {
        self.media_tcp_addr
    }

    /// The media plane (the embedded TURN server reaches it in-process and runs on its
    /// runtime).
    pub fn media_plane(&self) -> &Arc<MediaPlane> {
        &self.shared.plane
    }

    /// Serves an ICE-TCP connection the shared HTTPS port accepted and identified, on the
    /// media runtime. False (the connection is closed) when ICE-TCP is off or at its cap.
    pub fn adopt_ice_tcp(&self, stream: std::net::TcpStream, from: SocketAddr) -> bool {
        self.media_tcp_addr.is_some() && self.shared.plane.adopt_std_tcp(stream, from)
    }

    /// The host candidates advertised to clients.
    pub fn host_candidates(&self) -> &[SocketAddr] {
        self.shared.factory.candidates()
    }

    fn existing_room(&self, session: SessionId) -> Option<RoomHandle> {
        self.shared.rooms.lock().get(&session).cloned()
    }

    /// True when this node runs the session's room.
    pub fn has_room(&self, session: SessionId) -> bool {
        self.existing_room(session)
            .is_some_and(|h| !h.tx.is_closed())
    }

    /// True when `who` takes part in a session whose room is here.
    pub fn is_present(&self, who: Identity) -> bool {
        self.shared.presence.lock().contains_key(&who)
    }

    /// Closes the session's room here, if any (the session ended through another node).
    pub async fn close_room(&self, session: SessionId, reason: &'static str) {
        if let Some(room) = self.existing_room(session) {
            let _ = self
                .ask(&room, |reply| RoomCommand::End { reason, reply })
                .await;
        }
    }

    /// The session's room, started when needed (the session must not be over).
    async fn room(&self, session: SessionId) -> SignalResult<RoomHandle> {
        if let Some(h) = self.existing_room(session).filter(|h| !h.tx.is_closed()) {
            return Ok(h);
        }
        let record =
            self.shared.sessions.load(session).await.map_err(|_| {
                SignalError::new(ErrorCode::SessionNotFound, "no such consultation")
            })?;
        if record.statut == SessionStatus::Ended {
            return Err(session_ended());
        }
        let mut rooms = self.shared.rooms.lock();
        if let Some(h) = rooms.get(&session).filter(|h| !h.tx.is_closed()) {
            return Ok(h.clone());
        }
        let handle = room::spawn(record, self.shared.clone());
        rooms.insert(session, handle.clone());
        Ok(handle)
    }

    async fn ask<T>(
        &self,
        handle: &RoomHandle,
        make: impl FnOnce(oneshot::Sender<T>) -> RoomCommand,
    ) -> SignalResult<T> {
        let (tx, rx) = oneshot::channel();
        handle
            .tx
            .send(make(tx))
            .await
            .map_err(|_| SignalError::new(ErrorCode::SessionEnded, "this consultation is over"))?;
        rx.await
            .map_err(|_| SignalError::new(ErrorCode::SessionEnded, "this consultation is over"))
    }

    /// `webrtc_offer` from a participant.
    pub async fn publish(
        &self,
        who: Identity,
        sid: SocketId,
        session: SessionId,
        sdp: String,
    ) -> SignalResult<()> {
        // Someone with no part in the session hears what REST says: no such consultation
        // (whether it exists, is live or over is not theirs to know).
        self.shared
            .sessions
            .get_for(who, session)
            .await
            .map_err(|e| SignalError::new(e.code, e.message))?;
        let room = self.room(session).await?;
        self.ask(&room, |reply| RoomCommand::Publish {
            who,
            sid,
            sdp,
            reply,
        })
        .await?
    }

    /// Whether `who` takes part in a consultation whose room is on this node.
    /// Whether `who` is a participant of `session`'s room on this node.
    pub fn is_in(&self, who: Identity, session: SessionId) -> bool {
        self.shared
            .presence
            .lock()
            .get(&who)
            .is_some_and(|s| s.contains(&session))
    }

    pub fn in_a_session(&self, who: Identity) -> bool {
        self.shared
            .presence
            .lock()
            .get(&who)
            .is_some_and(|s| !s.is_empty())
    }

    /// `request_webrtc_offer` with a code: admission, then the server's offer, or a place in
    /// the waiting room (`Ok(true)`). A person the doctor declined or removed is refused, and
    /// their retries count as wrong codes (limited like guessing).
    pub async fn join(
        &self,
        who: Identity,
        name: Option<String>,
        ip: Option<IpAddr>,
        sid: SocketId,
        session: SessionId,
        code: &str,
    ) -> SignalResult<bool> {
        let sessions = &self.shared.sessions;
        let to_signal = |e: DomainError| SignalError::new(e.code, e.message);
        sessions
            .admit(who, ip, session, code)
            .await
            .map_err(to_signal)?;
        sessions
            .check_not_refused(session, who, ip)
            .await
            .map_err(to_signal)?;
        let admitted_before = sessions.took_part(session, who).await.map_err(to_signal)?;
        let room = self.room(session).await?;
        let at = self.shared.recordings.now();
        self.ask(&room, |reply| RoomCommand::Join {
            who,
            sid,
            name,
            at,
            admitted_before,
            reply,
        })
        .await?
    }

    /// The session's doctor admits, declines or removes someone.
    pub async fn admission(
        &self,
        by: Identity,
        ip: Option<IpAddr>,
        session: SessionId,
        who: Identity,
        decision: room::Admission,
    ) -> DomainResult<()> {
        self.shared.sessions.require_owner(by, session).await?;
        let room = self.existing_room(session).ok_or_else(|| {
            DomainError::conflict(
                ErrorCode::NotWaiting,
                "nobody waits or takes part in this consultation now",
            )
        })?;
        Ok(self
            .ask(&room, |reply| RoomCommand::Admission {
                by,
                ip,
                who,
                decision,
                reply,
            })
            .await??)
    }

    /// Who waits in the session's waiting room (its doctor only).
    pub async fn waiting(
        &self,
        by: Identity,
        session: SessionId,
    ) -> DomainResult<Vec<room::state::WaitingPerson>> {
        self.shared.sessions.require_owner(by, session).await?;
        let Some(room) = self.existing_room(session) else {
            return Ok(Vec::new());
        };
        Ok(self
            .ask(&room, |reply| RoomCommand::Waiting { reply })
            .await?)
    }

    /// `set_audio_only` from a participant.
    pub async fn audio_only(
        &self,
        who: Identity,
        ip: Option<IpAddr>,
        session: SessionId,
        on: bool,
        reason: Option<String>,
    ) -> SignalResult<()> {
        let room = self.existing_room(session).ok_or_else(not_in_session)?;
        self.ask(&room, |reply| RoomCommand::AudioOnly {
            who,
            ip,
            on,
            reason,
            reply,
        })
        .await?
    }

    pub async fn answer(&self, who: Identity, session: SessionId, sdp: String) -> SignalResult<()> {
        let room = self.existing_room(session).ok_or_else(not_in_session)?;
        self.ask(&room, |reply| RoomCommand::Answer { who, sdp, reply })
            .await?
    }

    pub async fn candidates(
        &self,
        who: Identity,
        session: SessionId,
        candidates: Vec<rtc::peer_connection::transport::RTCIceCandidateInit>,
    ) -> SignalResult<usize> {
        let Some(room) = self.existing_room(session) else {
            // Socket.IO handles a socket's events concurrently: a doctor's first candidates
            // may overtake the offer that opens the room. They are not needed (ICE-lite: the
            // server learns the path from the client's checks), so they are dropped quietly;
            // anyone else is told they are not in the session.
            return match self.shared.sessions.load(session).await {
                Ok(record) if record.created_by == who => Ok(0),
                _ => Err(not_in_session()),
            };
        };
        self.ask(&room, |reply| RoomCommand::Candidates {
            who,
            candidates,
            reply,
        })
        .await?
    }

    pub async fn leave(&self, who: Identity, session: SessionId) -> SignalResult<()> {
        let room = self.existing_room(session).ok_or_else(not_in_session)?;
        self.ask(&room, |reply| RoomCommand::Leave { who, reply })
            .await?
    }

    /// Ends a session (its doctor only): stored as ended, everyone told, all media closed.
    pub async fn end(
        &self,
        caller: Identity,
        session: SessionId,
        reason: &'static str,
    ) -> DomainResult<()> {
        let record = self.shared.sessions.require_owner(caller, session).await?;
        if record.statut == SessionStatus::Ended {
            return Err(DomainError::conflict(
                ErrorCode::SessionEnded,
                "this consultation is already over",
            ));
        }
        self.shared.sessions.mark_ended(session, reason).await?;
        if let Some(room) = self.existing_room(session) {
            let _ = self
                .ask(&room, |reply| RoomCommand::End { reason, reply })
                .await;
        }
        Ok(())
    }

    /// Starts recording a live session (its doctor only; `consent` must be true). Everyone
    /// in it gets `recording_started`; the audit trail gets the consent and the start.
    pub async fn start_recording(
        &self,
        caller: Identity,
        ip: Option<IpAddr>,
        session: SessionId,
        consent: Option<bool>,
    ) -> DomainResult<room::recording::RecordingStarted> {
        let record = self.shared.sessions.require_owner(caller, session).await?;
        if record.statut == SessionStatus::Ended {
            return Err(DomainError::conflict(
                ErrorCode::SessionEnded,
                "this consultation is over",
            ));
        }
        if consent != Some(true) {
            return Err(DomainError::bad_request(
                ErrorCode::ConsentRequired,
                "recording needs the participants' consent: send {\"consent\": true}",
            ));
        }
        let not_live = || {
            DomainError::conflict(
                ErrorCode::SessionNotLive,
                "nobody is connected to this consultation yet",
            )
        };
        let room = self
            .existing_room(session)
            .filter(|h| !h.tx.is_closed())
            .ok_or_else(not_live)?;
        let at = self.shared.recordings.now();
        let started = self
            .ask(&room, |reply| RoomCommand::StartRecording {
                by: caller,
                at,
                reply,
            })
            .await
            .map_err(|_| not_live())??;
        let audit = self.shared.sessions.audit();
        let entry = |action| {
            Entry::new(action, Target::Session(session))
                .by(caller)
                .ip(ip)
        };
        audit
            .note(entry(Action::ConsentGiven).detail(json!({
                "consent_at": crate::clock::to_rfc3339(at),
            })))
            .await;
        audit
            .note(entry(Action::RecordingStarted).detail(json!({
                "recordings": started.recordings,
            })))
            .await;
        Ok(started)
    }

    /// Stops recording (its doctor only) and waits until every file is finished; returns
    /// the recordings it closed.
    pub async fn stop_recording(
        &self,
        caller: Identity,
        ip: Option<IpAddr>,
        session: SessionId,
    ) -> DomainResult<Vec<crate::store::RecordingRecord>> {
        self.shared.sessions.require_owner(caller, session).await?;
        let not_recording = || {
            DomainError::conflict(
                ErrorCode::NotRecording,
                "this consultation is not being recorded",
            )
        };
        let room = self.existing_room(session).ok_or_else(not_recording)?;
        let closings = self
            .ask(&room, |reply| RoomCommand::StopRecording { reply })
            .await
            .map_err(|_| not_recording())??;
        let ids: Vec<String> = closings.iter().map(|(id, _)| id.clone()).collect();
        let all = futures_util::future::join_all(closings.into_iter().map(|(_, c)| c.wait()));
        if tokio::time::timeout(Duration::from_secs(15), all)
            .await
            .is_err()
        {
            tracing::warn!(session = %session, "recordings still closing after 15 s");
        }
        let entry = Entry::new(Action::RecordingStopped, Target::Session(session))
            .by(caller)
            .ip(ip)
            .detail(json!({ "recordings": ids }));
        self.shared.sessions.audit().note(entry).await;
        self.shared.recordings.in_session(session, &ids).await
    }

    pub async fn stats(&self, session: SessionId) -> Vec<ParticipantStats> {
        match self.existing_room(session) {
            Some(room) => self
                .ask(&room, |reply| RoomCommand::Stats { reply })
                .await
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    fn rooms_of(&self, who: Identity) -> Vec<RoomHandle> {
        let sessions: Vec<SessionId> = self
            .shared
            .presence
            .lock()
            .get(&who)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        sessions
            .into_iter()
            .filter_map(|s| self.existing_room(s))
            .collect()
    }

    /// A socket of `who` connected: rooms waiting for them get it back.
    pub fn socket_connected(&self, who: Identity, sid: SocketId) {
        for room in self.rooms_of(who) {
            let _ = room.tx.try_send(RoomCommand::SocketBack { who, sid });
        }
    }

    /// A socket of `who` went away: their rooms start the grace period.
    pub fn socket_disconnected(&self, who: Identity, sid: SocketId) {
        for room in self.rooms_of(who) {
            let _ = room.tx.try_send(RoomCommand::SocketGone { sid });
        }
    }

    /// Closes every room (process shutdown); sessions stay as they are in the store.
    pub async fn shutdown(&self) {
        let rooms: Vec<RoomHandle> = self.shared.rooms.lock().values().cloned().collect();
        for room in rooms {
            let _ = self
                .ask(&room, |reply| RoomCommand::End {
                    reason: "server_shutdown",
                    reply,
                })
                .await;
        }
    }

    pub(crate) fn count_signal_error(&self, code: ErrorCode) {
        self.shared.count_signal_error(code);
    }
}

/// Host candidates: the configured IPs (or the interface addresses) on the socket's port.
fn advertised(public_ips: &[IpAddr], bound: SocketAddr) -> Vec<SocketAddr> {
    let ips: Vec<IpAddr> = if !public_ips.is_empty() {
        public_ips.to_vec()
    } else if !bound.ip().is_unspecified() {
        vec![bound.ip()]
    } else {
        crate::net::interface_ips()
    };
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, bound.port()))
        .collect()
}

fn session_ended() -> SignalError {
    SignalError::new(ErrorCode::SessionEnded, "this consultation is over")
}
