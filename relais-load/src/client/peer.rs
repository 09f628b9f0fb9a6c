//! A synthetic consultation participant: a WebRTC peer (webrtc-rs, as a browser would be) that
//! signals over Socket.IO exactly as the seed's clients do, publishes synthetic audio and
//! video, and accounts for everything it receives. Used by the tests and the load tool.
//!
//! A doctor publishes with `webrtc_offer`; a patient joins with `request_webrtc_offer` and the
//! code, answers the server's offer and publishes in that answer. Server re-offers (someone
//! joined or left) are answered as they come; candidates are trickled both ways.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use rtc::ice::network_type::NetworkType;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCIceServer,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription,
};

use super::media::Received;
use super::socketio::{ConnectOptions, SioClient};
use crate::peer_connection::{Codecs, PcConfig};
use crate::synthetic::{Pattern, TrackSender, VideoCodec};
use relais::ids::Identity;

/// How the participant enters the session.
#[derive(Debug, Clone)]
pub enum Entry {
    /// The doctor: sends its own offer (`webrtc_offer`).
    Publish,
    /// Anyone with the code: `request_webrtc_offer`, then answers the server's offer.
    Code(String),
}

#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Server origin (`http://127.0.0.1:3000`).
    pub base: String,
    pub token: String,
    pub who: Identity,
    pub session_id: i64,
    pub conversation_id: i64,
    pub entry: Entry,
    pub audio: bool,
    pub video: bool,
    pub video_bitrate_bps: u32,
    pub fps: u32,
    pub keyframe_interval: Duration,
    /// Local UDP address to bind (loopback by default).
    pub udp_bind: Vec<String>,
    pub tcp_bind: Vec<String>,
    pub ice_servers: Vec<RTCIceServer>,
    pub relay_only: bool,
    pub socket: ConnectOptions,
    /// A receiver that says its link takes only this much (bits per second): a REMB naming
    /// each video stream it receives, every half second.
    pub remb_bps: Option<u32>,
}

impl PeerConfig {
    pub fn new(base: &str, token: &str, who: Identity, session_id: i64, entry: Entry) -> Self {
        Self {
            base: base.to_string(),
            token: token.to_string(),
            who,
            session_id,
            conversation_id: 0,
            entry,
            audio: true,
            video: true,
            video_bitrate_bps: 600_000,
            fps: 30,
            keyframe_interval: Duration::from_secs(2),
            udp_bind: vec!["127.0.0.1:0".into()],
            tcp_bind: Vec::new(),
            ice_servers: Vec::new(),
            relay_only: false,
            socket: ConnectOptions::default(),
            remb_bps: None,
        }
    }

    /// What this participant sends: VP8-like video and Opus-sized audio.
    pub fn pattern(&self) -> Pattern {
        Pattern {
            audio: self.audio,
            video: self.video,
            codec: VideoCodec::Vp8,
            video_bitrate_bps: self.video_bitrate_bps,
            fps: self.fps,
            keyframe_interval: self.keyframe_interval,
        }
    }
}

/// The ICE candidate pair a peer uses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SelectedPair {
    /// `host`, `srflx`, `prflx` or `relay`.
    pub local_type: String,
    /// `None` when the statistics do not name it.
    pub remote_type: Option<String>,
    /// `udp` or `tcp`.
    pub protocol: String,
    pub remote_port: Option<u16>,
}

/// What the participant sent, per track.
#[derive(Debug, Default)]
pub struct Sent {
    pub audio_packets: AtomicU64,
    pub video_packets: AtomicU64,
    pub video_frames: AtomicU64,
    /// Keyframe requests (PLI) the server sent us.
    pub plis_received: AtomicU64,
    /// The last REMB the server sent us (bits per second), and how many.
    pub remb_bps: AtomicU64,
    pub rembs_received: AtomicU64,
}

enum Command {
    Emit {
        event: String,
        data: Value,
        ack: oneshot::Sender<Result<Value, String>>,
    },
}

pub struct ClientPeer {
    pub pc: Arc<dyn PeerConnection>,
    pub received: Arc<Received>,
    pub sent: Arc<Sent>,
    /// Socket events other than SDP and candidates (participant_joined, session_ended,
    /// webrtc_error, new_message, …).
    pub events: mpsc::UnboundedReceiver<(String, Value)>,
    state: watch::Receiver<RTCPeerConnectionState>,
    commands: mpsc::Sender<Command>,
    tasks: Vec<JoinHandle<()>>,
    session_id: i64,
}

struct Handler {
    candidates: mpsc::UnboundedSender<RTCIceCandidateInit>,
    state: watch::Sender<RTCPeerConnectionState>,
    received: Arc<Received>,
    remb_bps: Option<u32>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, ev: RTCPeerConnectionIceEvent) {
        if let Ok(c) = ev.candidate.to_json() {
            let _ = self.candidates.send(c);
        }
    }

    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        let _ = self.state.send(s);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        let video = track.kind().await == RtpCodecKind::Video;
        if let (true, Some(bps)) = (video, self.remb_bps) {
            tokio::spawn(send_remb(track.clone(), bps));
        }
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(p) => {
                        received.record(p.header.ssrc, video, p.header.sequence_number, &p.payload);
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

struct LocalTrack {
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    video: bool,
}

fn local_track(who: Identity, video: bool) -> LocalTrack {
    let ssrc: u32 = rand::random::<u32>() | 1;
    let (kind, codec, label) = if video {
        (
            RtpCodecKind::Video,
            RTCRtpCodec {
                mime_type: "video/VP8".into(),
                clock_rate: 90_000,
                ..Default::default()
            },
            "video",
        )
    } else {
        (
            RtpCodecKind::Audio,
            RTCRtpCodec {
                mime_type: "audio/opus".into(),
                clock_rate: 48_000,
                channels: 2,
                ..Default::default()
            },
            "audio",
        )
    };
    let stream = format!("{}-{}", who.role, who.id);
    let track = MediaStreamTrack::new(
        stream.clone(),
        format!("{stream}-{label}"),
        label.into(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    );
    LocalTrack {
        track: Arc::new(TrackLocalStaticRTP::new(track)),
        ssrc,
        video,
    }
}

impl ClientPeer {
    /// Connects the socket, negotiates, and returns once signaling started (not necessarily
    /// connected: see [`wait_connected`](Self::wait_connected)).
    pub async fn start(cfg: PeerConfig) -> anyhow::Result<Self> {
        crate::synthetic::epoch();
        let auth = json!({"token": cfg.token, "userType": cfg.who.role, "userId": cfg.who.id.0, "role": cfg.who.role});
        let sio = SioClient::connect_with(&cfg.base, auth, cfg.socket.clone())
            .await
            .context("socket.io connect")?;

        let mut network = Vec::new();
        if !cfg.udp_bind.is_empty() {
            network.push(NetworkType::Udp4);
        }
        if !cfg.tcp_bind.is_empty() {
            network.push(NetworkType::Tcp4);
        }
        let mut pc_config = PcConfig::new(Codecs::Browser, network);
        pc_config.ice_servers = cfg.ice_servers.clone();
        pc_config.relay_only = cfg.relay_only;
        let (cand_tx, cand_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let received = Arc::new(Received::default());
        let pc: Arc<dyn PeerConnection> = Arc::new(
            pc_config
                .async_builder()?
                .with_handler(Arc::new(Handler {
                    candidates: cand_tx,
                    state: state_tx,
                    received: received.clone(),
                    remb_bps: cfg.remb_bps,
                }))
                .with_udp_addrs(cfg.udp_bind.clone())
                .with_tcp_addrs(cfg.tcp_bind.clone())
                .build()
                .await?,
        );

        let mut tracks = Vec::new();
        if cfg.audio {
            tracks.push(local_track(cfg.who, false));
        }
        if cfg.video {
            tracks.push(local_track(cfg.who, true));
        }
        let sent = Arc::new(Sent::default());
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let keyframe_now = Arc::new(AtomicBool::new(true));
        let signaling = Signaling {
            cfg: cfg.clone(),
            pc: pc.clone(),
            sio,
            tracks,
            candidates: cand_rx,
            pending_remote: Vec::new(),
            remote_set: false,
            published: false,
            events: events_tx,
            sent: sent.clone(),
            keyframe_now,
            media_tasks: Vec::new(),
            state: state_rx.clone(),
        };
        let task = tokio::spawn(signaling.run(cmd_rx));
        let peer = Self {
            pc,
            received,
            sent,
            events: events_rx,
            state: state_rx,
            commands: cmd_tx,
            tasks: vec![task],
            session_id: cfg.session_id,
        };
        Ok(peer)
    }

    pub fn state(&self) -> RTCPeerConnectionState {
        *self.state.borrow()
    }

    /// Waits until the PeerConnection is connected (bounded by `timeout`).
    pub async fn wait_connected(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let mut state = self.state.clone();
        let wait = state.wait_for(|s| {
            matches!(
                s,
                RTCPeerConnectionState::Connected | RTCPeerConnectionState::Failed
            )
        });
        let outcome = match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(s)) => Ok(*s),
            Ok(Err(_)) => Err(anyhow::anyhow!("peer gone")),
            Err(_) => Err(anyhow::anyhow!("not connected after {timeout:?}")),
        };
        match outcome? {
            RTCPeerConnectionState::Connected => Ok(()),
            s => anyhow::bail!("connection {s} (state now {})", self.state()),
        }
    }

    /// The selected ICE candidate pair as this peer sees it, from its statistics.
    pub async fn selected_pair(&self) -> Option<SelectedPair> {
        use rtc::statistics::StatsSelector;
        use rtc::statistics::report::RTCStatsReportEntry;
        let report = self
            .pc
            .get_stats(std::time::Instant::now(), StatsSelector::None)
            .await;
        let transport = report.transport()?;
        let pair = report
            .candidate_pairs()
            .find(|p| p.stats.id == transport.selected_candidate_pair_id)?;
        // rtc 0.21 names candidate entries `RTC{Local,Remote}IceCandidate_{id}` while pairs
        // refer to the bare id: look under both.
        let candidate = |prefix: &str, id: &str| {
            let entry = report
                .get(id)
                .or_else(|| report.get(&format!("{prefix}{id}")));
            match entry {
                Some(
                    RTCStatsReportEntry::LocalCandidate(c)
                    | RTCStatsReportEntry::RemoteCandidate(c),
                ) => Some((c.candidate_type.to_string(), c.protocol.clone(), c.port)),
                _ => None,
            }
        };
        let (local_type, protocol, _) =
            candidate("RTCLocalIceCandidate_", &pair.local_candidate_id)?;
        // Candidates that came inside the SDP are missing from rtc 0.21's report.
        let remote = candidate("RTCRemoteIceCandidate_", &pair.remote_candidate_id);
        Some(SelectedPair {
            local_type,
            remote_type: remote.as_ref().map(|r| r.0.clone()),
            protocol,
            remote_port: remote.map(|r| r.2),
        })
    }

    /// The next socket event named `name` (others are skipped), bounded by `timeout`.
    pub async fn wait_event(&mut self, name: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((n, v))) if n == name => return Ok(v),
                Ok(Some(_)) => continue,
                Ok(None) => anyhow::bail!("signaling stopped"),
                Err(_) => anyhow::bail!("no {name} within {timeout:?}"),
            }
        }
    }

    /// Emits an event on the peer's socket and waits for its acknowledgement.
    pub async fn emit(&self, event: &str, data: Value) -> anyhow::Result<Value> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Emit {
                event: event.into(),
                data,
                ack: tx,
            })
            .await
            .map_err(|_| anyhow::anyhow!("signaling stopped"))?;
        rx.await?.map_err(|e| anyhow::anyhow!(e))
    }

    pub async fn leave(&self) -> anyhow::Result<Value> {
        self.emit("leave_session", json!({ "sessionId": self.session_id }))
            .await
    }

    /// Closes the PeerConnection and the socket.
    pub async fn close(self) {
        let _ = self.pc.close().await;
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Stops everything without a goodbye (a crashed client): the server learns only from
    /// the silence.
    pub async fn vanish(self) {
        self.close().await;
    }
}

struct Signaling {
    cfg: PeerConfig,
    pc: Arc<dyn PeerConnection>,
    sio: SioClient,
    tracks: Vec<LocalTrack>,
    candidates: mpsc::UnboundedReceiver<RTCIceCandidateInit>,
    pending_remote: Vec<RTCIceCandidateInit>,
    remote_set: bool,
    published: bool,
    events: mpsc::UnboundedSender<(String, Value)>,
    sent: Arc<Sent>,
    keyframe_now: Arc<AtomicBool>,
    media_tasks: Vec<JoinHandle<()>>,
    state: watch::Receiver<RTCPeerConnectionState>,
}

impl Drop for Signaling {
    fn drop(&mut self) {
        for t in &self.media_tasks {
            t.abort();
        }
    }
}

impl Signaling {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        if let Err(e) = self.enter().await {
            let _ = self
                .events
                .send(("client_error".into(), json!({ "message": e.to_string() })));
            return;
        }
        loop {
            tokio::select! {
                ev = self.sio.next_event() => {
                    let Some(ev) = ev else { break };
                    tracing::trace!(event = %ev.name, "client signaling in");
                    if let Err(e) = self.on_event(&ev.name, ev.data).await {
                        tracing::warn!(error = %e, event = %ev.name, "client signaling failed");
                        let _ = self.events.send(("client_error".into(), json!({ "message": e.to_string() })));
                    }
                }
                Some(c) = self.candidates.recv() => self.send_candidate(c).await,

                cmd = commands.recv() => match cmd {
                    Some(Command::Emit { event, data, ack }) => {
                        let r = self
                            .sio
                            .emit_with_ack(&event, &data, Duration::from_secs(10))
                            .await
                            .map_err(|e| e.to_string());
                        let _ = ack.send(r);
                    }
                    None => break,
                },
            }
        }
    }

    async fn enter(&mut self) -> anyhow::Result<()> {
        match self.cfg.entry.clone() {
            Entry::Publish => {
                for t in &self.tracks {
                    let init = webrtc::rtp_transceiver::RTCRtpTransceiverInit {
                        direction: webrtc::rtp_transceiver::RTCRtpTransceiverDirection::Sendonly,
                        ..Default::default()
                    };
                    self.pc
                        .add_transceiver_from_track(t.track.clone(), Some(init))
                        .await?;
                }
                let offer = self.pc.create_offer(None).await?;
                self.pc.set_local_description(offer).await?;
                let sdp = self
                    .pc
                    .local_description()
                    .await
                    .context("no local description")?
                    .sdp;
                let data = json!({
                    "sessionId": self.cfg.session_id,
                    "conversationId": self.cfg.conversation_id,
                    "sdpOffer": sdp,
                    "sessionType": if self.cfg.video { "audio_video" } else { "audio_only" },
                });
                self.sio.emit("webrtc_offer", &data).await?;
            }
            Entry::Code(code) => {
                let data = json!({
                    "code": code,
                    "sessionId": self.cfg.session_id,
                    "user": {"userId": self.cfg.who.id.0, "userType": self.cfg.who.role},
                    "action": "join_conference",
                });
                self.sio.emit("request_webrtc_offer", &data).await?;
            }
        }
        Ok(())
    }

    async fn on_event(&mut self, name: &str, data: Value) -> anyhow::Result<()> {
        match name {
            "webrtc_answer" => {
                let sdp = data["sdpAnswer"].as_str().context("sdpAnswer")?.to_string();
                self.pc
                    .set_remote_description(RTCSessionDescription::answer(sdp.clone())?)
                    .await?;
                self.add_sdp_tcp_candidates(&sdp).await;
                self.remote_ready().await;
                self.start_media().await;
            }
            "webrtc_offer" => {
                let sdp = data["sdpOffer"].as_str().context("sdpOffer")?.to_string();
                self.pc
                    .set_remote_description(RTCSessionDescription::offer(sdp.clone())?)
                    .await?;
                self.add_sdp_tcp_candidates(&sdp).await;
                if !self.published && matches!(self.cfg.entry, Entry::Code(_)) {
                    // Our own media goes in the slots the server offered for it.
                    for t in &self.tracks {
                        self.pc.add_track(t.track.clone()).await?;
                    }
                }
                let answer = self.pc.create_answer(None).await?;
                self.pc.set_local_description(answer).await?;
                let sdp = self
                    .pc
                    .local_description()
                    .await
                    .context("no local description")?
                    .sdp;
                self.sio
                    .emit(
                        "webrtc_answer",
                        &json!({"sessionId": self.cfg.session_id, "sdpAnswer": sdp}),
                    )
                    .await?;
                self.remote_ready().await;
                self.start_media().await;
            }
            "webrtc_ice_candidates" => {
                let list: Vec<RTCIceCandidateInit> =
                    serde_json::from_value(data["candidates"].clone()).unwrap_or_default();
                for c in list {
                    if self.remote_set {
                        if let Err(e) = self.pc.add_ice_candidate(c).await {
                            tracing::debug!(error = %e, "remote candidate refused");
                        }
                    } else {
                        self.pending_remote.push(c);
                    }
                }
            }
            _ => {
                let _ = self.events.send((name.to_string(), data));
            }
        }
        Ok(())
    }

    /// webrtc-rs 0.21 opens ICE-TCP connections only to passive candidates added with
    /// `add_ice_candidate`, not to those inside a description: hand it the description's.
    async fn add_sdp_tcp_candidates(&mut self, sdp: &str) {
        if self.cfg.tcp_bind.is_empty() {
            return;
        }
        for line in sdp.lines() {
            let Some(candidate) = line.strip_prefix("a=candidate:") else {
                continue;
            };
            if !candidate.contains(" tcp ") || !candidate.contains("tcptype passive") {
                continue;
            }
            let init = RTCIceCandidateInit {
                candidate: format!("candidate:{}", candidate.trim_end()),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
                ..Default::default()
            };
            if let Err(e) = self.pc.add_ice_candidate(init).await {
                tracing::debug!(error = %e, "ICE-TCP candidate refused");
            }
        }
    }

    async fn remote_ready(&mut self) {
        self.remote_set = true;
        for c in std::mem::take(&mut self.pending_remote) {
            if let Err(e) = self.pc.add_ice_candidate(c).await {
                tracing::debug!(error = %e, "remote candidate refused");
            }
        }
    }

    async fn send_candidate(&mut self, mut c: RTCIceCandidateInit) {
        // webrtc-rs leaves the mid empty; point it at the first m-line.
        c.sdp_mid = Some("0".into());
        c.sdp_mline_index = Some(0);
        let data = json!({"sessionId": self.cfg.session_id, "candidates": [c]});
        let _ = self.sio.emit("webrtc_ice_candidates", &data).await;
    }

    /// Starts the synthetic senders once our tracks are negotiated (first time only).
    async fn start_media(&mut self) {
        if self.published || self.tracks.is_empty() {
            return;
        }
        self.published = true;
        let senders = self.pc.get_senders().await;
        for t in &self.tracks {
            let mut payload_type = None;
            for s in &senders {
                let Ok(params) = s.get_parameters().await else {
                    continue;
                };
                let ours = params
                    .encodings
                    .iter()
                    .any(|e| e.rtp_coding_parameters.ssrc == Some(t.ssrc));
                if ours {
                    payload_type = params.rtp_parameters.codecs.first().map(|c| c.payload_type);
                }
            }
            let Some(pt) = payload_type else { continue };
            let connected = wait_until_connected(self.state.clone());
            let task = tokio::spawn(after(
                connected,
                send_track(
                    t.track.clone(),
                    t.ssrc,
                    pt,
                    t.video,
                    self.cfg.pattern(),
                    self.sent.clone(),
                    self.keyframe_now.clone(),
                ),
            ));
            self.media_tasks.push(task);
            if t.video {
                self.media_tasks.push(tokio::spawn(watch_feedback(
                    t.track.clone(),
                    self.keyframe_now.clone(),
                    self.sent.clone(),
                )));
            }
        }
    }
}

/// Resolves once the connection is up (media written before DTLS completes is dropped).
async fn wait_until_connected(mut state: watch::Receiver<RTCPeerConnectionState>) -> bool {
    state
        .wait_for(|s| *s == RTCPeerConnectionState::Connected)
        .await
        .is_ok()
}

async fn after(
    ready: impl std::future::Future<Output = bool>,
    then: impl std::future::Future<Output = ()>,
) {
    if ready.await {
        then.await;
    }
}

/// Sends one track's synthetic media ([`crate::synthetic`], tagged with the SSRC) at its
/// pattern's pace, a keyframe next whenever the server asked for one.
async fn send_track(
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    pt: u8,
    video: bool,
    pattern: Pattern,
    sent: Arc<Sent>,
    keyframe_now: Arc<AtomicBool>,
) {
    let mut sender = TrackSender::new(&pattern, video, ssrc, std::time::Instant::now(), 0.0);
    let mut ticker = tokio::time::interval(sender.interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::new();
    loop {
        ticker.tick().await;
        if video && keyframe_now.swap(false, Ordering::Relaxed) {
            sender.request_keyframe();
        }
        sender.due(&pattern, std::time::Instant::now(), &mut out);
        for o in out.drain(..) {
            let packet = Packet {
                header: Header {
                    version: 2,
                    marker: o.marker,
                    payload_type: pt,
                    sequence_number: o.seq,
                    timestamp: o.ts,
                    ssrc,
                    ..Default::default()
                },
                payload: o.payload,
            };
            if track.write_rtp(packet).await.is_err() {
                return;
            }
            if !video {
                sent.audio_packets.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            sent.video_packets.fetch_add(1, Ordering::Relaxed);
            if o.marker {
                sent.video_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A receiver capped to `bps`: a REMB on `track` every half second while it lives (bounded:
/// at most an hour of them).
async fn send_remb(track: Arc<dyn TrackRemote>, bps: u32) {
    use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
    for _ in 0..7200 {
        let ssrcs = track.ssrcs().await;
        let remb = ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 1,
            bitrate: bps as f32,
            ssrcs,
        };
        if track.write_rtcp(vec![Box::new(remb)]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// PLI from the server: send a keyframe next; REMB: remembered.
async fn watch_feedback(
    track: Arc<TrackLocalStaticRTP>,
    keyframe_now: Arc<AtomicBool>,
    sent: Arc<Sent>,
) {
    while let Some(ev) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = ev else {
            continue;
        };
        if packets
            .iter()
            .any(|p| p.as_any().downcast_ref::<PictureLossIndication>().is_some())
        {
            keyframe_now.store(true, Ordering::Relaxed);
            sent.plis_received.fetch_add(1, Ordering::Relaxed);
        }
        for p in &packets {
            if let Some(remb) = p
                .as_any()
                .downcast_ref::<rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate>()
            {
                sent.remb_bps.store(remb.bitrate as u64, Ordering::Relaxed);
                sent.rembs_received.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
