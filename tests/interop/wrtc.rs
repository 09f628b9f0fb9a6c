//! webrtc-rs participants of the interop matrix: the `webrtc` crate as an application would use
//! it (`add_track`, its default configuration), publishing real encoded media (VP8, VP9 or H264
//! and Opus, encoded by ffmpeg once per run) so that browsers and aiortc decode what it sends,
//! and counting the frames it receives as its own stack delivers them (webrtc-rs has no decoder:
//! a frame counts when all its packets arrived, from its first to its marker, with no gap).
//!
//! Same role contract and result shape as `tests/py/interop_agent.py`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use relais::codec::Codec;
use relais_load::client::socketio::SioClient;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCBundlePolicy;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, RTCSignalingState,
    register_default_interceptors,
};

use crate::{media, rtp};

/// One side of one cell (see `tests/py/interop_agent.py`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub cell: String,
    pub side: String,
    pub token: String,
    pub user_id: i64,
    pub user_type: String,
    pub session_id: i64,
    pub conversation_id: i64,
    #[serde(default)]
    pub code: Option<String>,
    pub layout: Vec<String>,
    #[serde(default)]
    pub codec: Option<String>,
    #[serde(default)]
    pub bundle_policy: Option<String>,
    #[serde(default)]
    pub delay: f64,
    pub seconds: f64,
    /// Seconds the connection stays up after the report (the other side is still measuring).
    #[serde(default)]
    pub linger: f64,
    /// Tracks the other side publishes: the measure waits for them (within SETTLE).
    #[serde(default)]
    pub expect_tracks: usize,
}

/// How much later than `seconds` after connecting a role may report, waiting for tracks that
/// start late (a publisher that arrives after us).
const SETTLE: Duration = Duration::from_secs(12);
/// The last seconds in which received frames must keep coming.
const TAIL: Duration = Duration::from_secs(2);
const MEDIA_SECONDS: u32 = 6;
const GOP: u32 = 30;
/// Sizes by video track, so that receivers tell them apart (as the other agents).
const SIZES: [(u32, u32); 3] = [(320, 240), (480, 270), (240, 160)];

#[derive(Default)]
struct Received {
    kind: String,
    stream: String,
    id: String,
    frames: u64,
    times: Vec<Instant>,
    lost: u64,
    last_seq: Option<u16>,
    frame_ok: bool,
    frame_ts: Option<u32>,
}

struct Handler {
    candidates: mpsc::UnboundedSender<RTCIceCandidateInit>,
    state: watch::Sender<RTCPeerConnectionState>,
    signaling: watch::Sender<RTCSignalingState>,
    negotiation: mpsc::UnboundedSender<()>,
    received: Arc<Mutex<Vec<Received>>>,
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

    async fn on_signaling_state_change(&self, s: RTCSignalingState) {
        let _ = self.signaling.send(s);
    }

    async fn on_negotiation_needed(&self) {
        let _ = self.negotiation.send(());
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        let kind = match track.kind().await {
            RtpCodecKind::Video => "video",
            _ => "audio",
        };
        let stream = track.stream_id().await;
        let id = track.track_id().await;
        let index = {
            let mut r = received.lock();
            r.push(Received {
                kind: kind.into(),
                stream,
                id,
                ..Received::default()
            });
            r.len() - 1
        };
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(p) => {
                        let mut all = received.lock();
                        count(&mut all[index], &p.header, Instant::now());
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

/// A frame is counted at its marker when every packet since its first arrived (audio: each
/// packet is a frame).
fn count(r: &mut Received, h: &Header, now: Instant) {
    let in_order = match r.last_seq {
        None => true,
        Some(last) => {
            let d = h.sequence_number.wrapping_sub(last);
            if d == 0 || d >= 0x8000 {
                return; // duplicate or late
            }
            r.lost += u64::from(d - 1);
            d == 1
        }
    };
    r.last_seq = Some(h.sequence_number);
    if r.kind == "audio" {
        r.frames += 1;
        r.times.push(now);
        return;
    }
    if r.frame_ts != Some(h.timestamp) {
        // A new frame: whole so far if it starts right after the previous one's last packet.
        r.frame_ts = Some(h.timestamp);
        r.frame_ok = in_order;
    } else if !in_order {
        r.frame_ok = false;
    }
    if h.marker && r.frame_ok {
        r.frames += 1;
        r.times.push(now);
    }
}

struct Local {
    track: Arc<TrackLocalStaticRTP>,
    kind: RtpCodecKind,
    ssrc: u32,
    size: (u32, u32),
    /// What it sends now: the first codec negotiated it can produce, and its payload type.
    sending: Option<(Codec, u8, tokio::task::JoinHandle<()>)>,
    /// Numbering that continues across a change of codec (one stream, one SSRC).
    seq: Arc<std::sync::atomic::AtomicU16>,
    epoch: Instant,
}

fn codec_of(name: Option<&str>) -> Codec {
    match name.map(str::to_ascii_uppercase).as_deref() {
        Some("VP9") => Codec::Vp9,
        Some("H264") => Codec::H264,
        _ => Codec::Vp8,
    }
}

fn named_codec(codec: Codec) -> RTCRtpCodec {
    let (mime, fmtp) = match codec {
        Codec::Vp9 => ("video/VP9", "profile-id=0"),
        Codec::H264 => (
            "video/H264",
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        ),
        _ => ("video/VP8", ""),
    };
    RTCRtpCodec {
        mime_type: mime.into(),
        clock_rate: 90_000,
        sdp_fmtp_line: fmtp.into(),
        ..Default::default()
    }
}

fn local_tracks(spec: &Spec) -> Vec<Local> {
    let stream = format!("{}-{}", spec.user_type, spec.user_id);
    let mut videos = 0;
    spec.layout
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let ssrc = rand::random::<u32>() | 1;
            let video = kind == "video";
            // A webrtc-rs application picks its video codec by naming it on the track (0.21
            // ignores the order given to set_codec_preferences): it then offers that codec only.
            // Without one, every codec is offered in the stack's default order.
            let (kind, rtc, size) = if video {
                let size = SIZES[videos.min(SIZES.len() - 1)];
                videos += 1;
                let rtc = match spec.codec.as_deref() {
                    Some(name) => named_codec(codec_of(Some(name))),
                    None => RTCRtpCodec::default(),
                };
                (RtpCodecKind::Video, rtc, size)
            } else {
                let opus = RTCRtpCodec {
                    mime_type: "audio/opus".into(),
                    clock_rate: 48_000,
                    channels: 2,
                    ..Default::default()
                };
                (RtpCodecKind::Audio, opus, (0, 0))
            };
            let track = MediaStreamTrack::new(
                stream.clone(),
                format!("{stream}-{i}"),
                format!("{stream}-{i}"),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: rtc,
                    ..Default::default()
                }],
            );
            Local {
                track: Arc::new(TrackLocalStaticRTP::new(track)),
                kind,
                ssrc,
                size,
                sending: None,
                seq: Arc::new(std::sync::atomic::AtomicU16::new(rand::random())),
                epoch: Instant::now(),
            }
        })
        .collect()
}

/// Runs one role to its end; never panics (failures are in the result).
pub async fn run(base: String, bind_ip: String, spec: Spec) -> Value {
    let limit = Duration::from_secs_f64(spec.delay + spec.seconds + spec.linger + 30.0) + SETTLE;
    let errors = Arc::new(Mutex::new(Vec::<Value>::new()));
    let notes = Arc::new(Mutex::new(Vec::<String>::new()));
    let outcome = tokio::time::timeout(
        limit,
        run_inner(&base, &bind_ip, &spec, errors.clone(), notes.clone()),
    )
    .await;
    let mut result = match outcome {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => json!({"ok": false, "error": e.to_string()}),
        Err(_) => json!({"ok": false, "error": format!("timed out after {limit:?}")}),
    };
    result["cell"] = json!(spec.cell);
    result["side"] = json!(spec.side);
    result["errors"] = json!(*errors.lock());
    result["notes"] = json!(*notes.lock());
    result
}

async fn run_inner(
    base: &str,
    bind_ip: &str,
    spec: &Spec,
    errors: Arc<Mutex<Vec<Value>>>,
    notes: Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<Value> {
    tokio::time::sleep(Duration::from_secs_f64(spec.delay)).await;
    let auth = json!({"token": spec.token, "userType": spec.user_type, "userId": spec.user_id,
                      "role": spec.user_type});
    let mut sio = SioClient::connect(base, auth).await?;
    let mut engine = MediaEngine::default();
    engine.register_default_codecs()?;
    let registry = register_default_interceptors(rtc::interceptor::Registry::new(), &mut engine)?;
    let mut config = RTCConfigurationBuilder::new();
    if let Some(policy) = spec.bundle_policy.as_deref() {
        config = config.with_bundle_policy(match policy {
            "max-bundle" => RTCBundlePolicy::MaxBundle,
            "max-compat" => RTCBundlePolicy::MaxCompat,
            _ => RTCBundlePolicy::Balanced,
        });
    }
    let (cand_tx, mut cand_rx) = mpsc::unbounded_channel();
    let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
    let (sig_tx, sig_rx) = watch::channel(RTCSignalingState::Stable);
    let (neg_tx, mut neg_rx) = mpsc::unbounded_channel();
    let received = Arc::new(Mutex::new(Vec::new()));
    let pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_configuration(config.build())
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                candidates: cand_tx,
                state: state_tx,
                signaling: sig_tx,
                negotiation: neg_tx,
                received: received.clone(),
            }))
            .with_udp_addrs(vec![format!("{bind_ip}:0")])
            .build()
            .await?,
    );
    let mut locals = local_tracks(spec);
    let mut unplaced: Vec<usize> = Vec::new();
    let mut pending_remote: Vec<RTCIceCandidateInit> = Vec::new();
    let mut remote_set = false;
    let mut offering = false;
    let ack = |v: Result<Value, relais_load::client::socketio::SioError>, event: &str| match v {
        Ok(v) if v["success"] == false => {
            errors.lock().push(json!({"code": v["error"]["code"], "message": v["error"]["message"], "event": event}));
        }
        Ok(_) => {}
        Err(e) => errors
            .lock()
            .push(json!({"code": "no_ack", "message": e.to_string(), "event": event})),
    };
    let wait = Duration::from_secs(15);
    // webrtc-rs fires no negotiationneeded for tracks added before the first negotiation:
    // an application offers by itself then (as ours does after adding leftover tracks).
    let (kick_tx, mut kick_rx) = mpsc::unbounded_channel::<()>();
    if spec.side == "doctor" {
        for l in &locals {
            pc.add_track(l.track.clone()).await?;
        }
        let _ = kick_tx.send(());
    } else {
        let r = sio
            .emit_with_ack(
                "request_webrtc_offer",
                &json!({"code": spec.code, "sessionId": spec.session_id,
                        "user": {"userId": spec.user_id, "userType": spec.user_type},
                        "action": "join_conference"}),
                wait,
            )
            .await;
        ack(r, "request_webrtc_offer");
    }
    let mut first_offer = true;
    let mut other_left: Option<Instant> = None;
    let mut connected_at: Option<Instant> = None;
    let window = Duration::from_secs_f64(spec.seconds);
    let end = loop {
        // The call is measured for `seconds` from when the last of the tracks received so far
        // started (a late publisher's media gets its full window), at most SETTLE later.
        if let Some(t) = connected_at {
            let (started, last_start) = {
                let r = received.lock();
                let starts: Vec<Instant> =
                    r.iter().filter_map(|r| r.times.first().copied()).collect();
                (starts.len(), starts.into_iter().max().unwrap_or(t).max(t))
            };
            if other_left.is_some() {
                notes
                    .lock()
                    .push("the other side left before the end of the measure".into());
                break Ok(());
            }
            let due = if started >= spec.expect_tracks {
                (last_start + window).min(t + window + SETTLE)
            } else {
                t + window + SETTLE
            };
            if Instant::now() >= due {
                break Ok(());
            }
        }
        if connected_at.is_none() && *state_rx.borrow() == RTCPeerConnectionState::Connected {
            connected_at = Some(Instant::now());
        }
        if *state_rx.borrow() == RTCPeerConnectionState::Failed {
            break Err(anyhow::anyhow!("PeerConnection failed"));
        }
        tokio::select! {
            ev = sio.next_event() => {
                let Some(ev) = ev else { break Err(anyhow::anyhow!("socket closed")) };
                match ev.name.as_str() {
                    "webrtc_offer" => {
                        let sdp = ev.data["sdpOffer"].as_str().unwrap_or_default().to_string();
                        if *sig_rx.borrow() == RTCSignalingState::HaveLocalOffer {
                            // The polite side: our offer gives way to the server's.
                            notes.lock().push("rolled back our offer for the server's".into());
                            pc.set_local_description(RTCSessionDescription::rollback(None)?).await?;
                            offering = false;
                        }
                        pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
                        remote_set = true;
                        for c in pending_remote.drain(..) {
                            let _ = pc.add_ice_candidate(c).await;
                        }
                        if spec.side == "patient" && first_offer {
                            // The server offers one slot per kind: the first track of each kind
                            // goes there (add_track reuses it), the rest after our answer.
                            let mut kinds = Vec::new();
                            for (i, l) in locals.iter().enumerate() {
                                if kinds.contains(&l.kind) {
                                    unplaced.push(i);
                                } else {
                                    kinds.push(l.kind);
                                    pc.add_track(l.track.clone()).await?;
                                }
                            }
                        }
                        first_offer = false;
                        let answer = pc.create_answer(None).await?;
                        pc.set_local_description(answer).await?;
                        let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
                        let r = sio.emit_with_ack("webrtc_answer", &json!({"sessionId": spec.session_id, "sdpAnswer": sdp}), wait).await;
                        ack(r, "webrtc_answer");
                        if !unplaced.is_empty() {
                            for i in unplaced.drain(..) {
                                pc.add_track(locals[i].track.clone()).await?;
                            }
                            let _ = kick_tx.send(());
                        }
                        sync_media(&pc, &mut locals, state_rx.clone()).await;
                    }
                    "webrtc_answer" => {
                        let sdp = ev.data["sdpAnswer"].as_str().unwrap_or_default().to_string();
                        pc.set_remote_description(RTCSessionDescription::answer(sdp)?).await?;
                        remote_set = true;
                        offering = false;
                        for c in pending_remote.drain(..) {
                            let _ = pc.add_ice_candidate(c).await;
                        }
                        sync_media(&pc, &mut locals, state_rx.clone()).await;
                    }
                    "webrtc_ice_candidates" => {
                        let list: Vec<RTCIceCandidateInit> = serde_json::from_value(ev.data["candidates"].clone()).unwrap_or_default();
                        for c in list {
                            if remote_set { let _ = pc.add_ice_candidate(c).await; } else { pending_remote.push(c); }
                        }
                    }
                    "webrtc_error" => errors.lock().push(json!({"code": ev.data["code"], "message": ev.data["message"]})),
                    // The other side leaving ends the measure: its media stops there.
                    "participant_left" => {
                        let p = &ev.data["participant"];
                        if (p["userId"] != spec.user_id || p["userType"] != spec.user_type.as_str()) && other_left.is_none() {
                            other_left = Some(Instant::now());
                        }
                    }
                    _ => {}
                }
            }
            Some(()) = async { tokio::select! { v = neg_rx.recv() => v, v = kick_rx.recv() => v } } => {
                let stable = *sig_rx.borrow() == RTCSignalingState::Stable;
                // A patient's first negotiation comes from the server's offer.
                if stable && !offering && (spec.side == "doctor" || !first_offer) {
                    offering = true;
                    let offer = pc.create_offer(None).await?;
                    pc.set_local_description(offer).await?;
                    let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
                    let r = sio.emit_with_ack("webrtc_offer", &json!({"sessionId": spec.session_id, "conversationId": spec.conversation_id, "sdpOffer": sdp, "sessionType": "audio_video"}), wait).await;
                    if let Ok(v) = &r && v["success"] == false { offering = false; }
                    ack(r, "webrtc_offer");
                }
            }
            Some(mut c) = cand_rx.recv() => {
                c.sdp_mid = Some("0".into());
                c.sdp_mline_index = Some(0);
                let _ = sio.emit("webrtc_ice_candidates", &json!({"sessionId": spec.session_id, "candidates": [c]})).await;
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    let now = other_left.unwrap_or_else(Instant::now);
    let sent: Vec<Value> = locals
        .iter()
        .map(|l| {
            json!({"kind": if l.kind == RtpCodecKind::Video { "video" } else { "audio" },
                        "codec": l.sending.as_ref().map(|(c, _, _)| c.name())})
        })
        .collect();
    let received: Vec<Value> = received
        .lock()
        .iter()
        .map(|r| {
            let gaps = r.times.windows(2).map(|w| w[1] - w[0]).max();
            json!({
                "kind": r.kind, "stream": r.stream, "id": r.id, "frames": r.frames,
                "tailFrames": r.times.iter().filter(|t| **t <= now && now.duration_since(**t) <= TAIL).count(),
                "maxGapMs": gaps.map(|g| g.as_millis() as u64),
                "packetsLost": r.lost,
            })
        })
        .collect();
    if end.is_ok() {
        tokio::time::sleep(Duration::from_secs_f64(spec.linger)).await;
    }
    for l in &locals {
        if let Some((_, _, t)) = &l.sending {
            t.abort();
        }
    }
    let _ = pc.close().await;
    sio.close().await;
    end?;
    Ok(json!({"ok": true, "received": received, "sent": sent}))
}

/// What each track should send after a negotiation: the first codec the other side lists on
/// its m-line that this side can produce (its way of asking for a codec); a change of codec
/// restarts the source. (Read from the remote description: the stack caches the parameters it
/// returns from before the negotiation.)
async fn sync_media(
    pc: &Arc<dyn PeerConnection>,
    locals: &mut [Local],
    state: watch::Receiver<RTCPeerConnectionState>,
) {
    let Some(remote) = pc.remote_description().await else {
        return;
    };
    let remote = relais::sfu::sdp::sections::Sections::parse(&remote.sdp);
    for t in pc.get_transceivers().await {
        let (Ok(Some(sender)), Ok(Some(mid))) = (t.sender().await, t.mid().await) else {
            continue;
        };
        let Ok(params) = sender.get_parameters().await else {
            continue;
        };
        let Some(l) = locals.iter_mut().find(|l| {
            params
                .encodings
                .iter()
                .any(|e| e.rtp_coding_parameters.ssrc == Some(l.ssrc))
        }) else {
            continue;
        };
        let Some(section) = remote.by_mid(&mid) else {
            continue;
        };
        let ours = &params.rtp_parameters.codecs;
        let chosen = section.formats.iter().find_map(|f| {
            let codec = Codec::from_mime(&f.mime);
            let usable = match codec {
                Codec::Opus => l.kind == RtpCodecKind::Audio,
                Codec::H264 => f.fmtp.contains("packetization-mode=1"),
                Codec::Vp8 | Codec::Vp9 => l.kind == RtpCodecKind::Video,
                Codec::Other => false,
            };
            // Only what this side offered or accepted (its track may name one codec).
            let offered = ours
                .iter()
                .any(|c| Codec::from_mime(&c.rtp_codec.mime_type) == codec);
            (usable && offered).then_some((codec, f.payload_type))
        });
        let Some((codec, pt)) = chosen else { continue };
        if l.sending
            .as_ref()
            .is_some_and(|(c, p, _)| *c == codec && *p == pt)
        {
            continue;
        }
        if let Some((_, _, old)) = l.sending.take() {
            old.abort();
        }
        let track = l.track.clone();
        let (ssrc, size, seq, epoch) = (l.ssrc, l.size, l.seq.clone(), l.epoch);
        let mut state = state.clone();
        let task = tokio::spawn(async move {
            if state
                .wait_for(|s| *s == RTCPeerConnectionState::Connected)
                .await
                .is_err()
            {
                return;
            }
            if codec == Codec::Opus {
                send_audio(track, ssrc, pt, seq, epoch).await;
            } else {
                send_video(track, codec, ssrc, pt, size, seq, epoch).await;
            }
        });
        l.sending = Some((codec, pt, task));
    }
}

async fn send_audio(
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    pt: u8,
    seq: Arc<std::sync::atomic::AtomicU16>,
    epoch: Instant,
) {
    let packets = tokio::task::spawn_blocking(|| media::opus(MEDIA_SECONDS))
        .await
        .unwrap_or_default();
    if packets.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for n in 0usize.. {
        tick.tick().await;
        let payload = packets[n % packets.len()].clone();
        let ts = (epoch.elapsed().as_millis() as u64 / 20 * 960) as u32;
        let packet = Packet {
            header: Header {
                version: 2,
                payload_type: pt,
                sequence_number: seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                timestamp: ts,
                ssrc,
                ..Default::default()
            },
            payload: payload.into(),
        };
        if track.write_rtp(packet).await.is_err() {
            return;
        }
    }
}

async fn send_video(
    track: Arc<TrackLocalStaticRTP>,
    codec: Codec,
    ssrc: u32,
    pt: u8,
    size: (u32, u32),
    seq: Arc<std::sync::atomic::AtomicU16>,
    epoch: Instant,
) {
    let frames = tokio::task::spawn_blocking(move || media::sized(codec, MEDIA_SECONDS, GOP, size))
        .await
        .unwrap_or_default();
    if frames.is_empty() {
        return;
    }
    // A keyframe request (PLI) makes the next frame sent the next keyframe of the clip.
    let keyframe_wanted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let track = track.clone();
        let wanted = keyframe_wanted.clone();
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(packets) = ev
                    && packets
                        .iter()
                        .any(|p| p.as_any().downcast_ref::<PictureLossIndication>().is_some())
                {
                    wanted.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    let fps = media::FPS;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(fps)));
    let mut index = 0usize;
    let mut picture_id: u16 = 0;
    loop {
        tick.tick().await;
        let ts = (epoch.elapsed().as_micros() as u64 * 9 / 100) as u32;
        if keyframe_wanted.swap(false, std::sync::atomic::Ordering::Relaxed) {
            let next = (0..frames.len())
                .map(|k| (index + k) % frames.len())
                .find(|&k| frames[k].keyframe);
            index = next.unwrap_or(index);
        }
        let frame = &frames[index % frames.len()];
        index = (index + 1) % frames.len();
        let payloads = match codec {
            Codec::Vp9 => rtp::vp9(&frame.nals[0], frame.keyframe, picture_id, false),
            Codec::H264 => rtp::h264(&frame.nals),
            _ => rtp::vp8(&frame.nals[0], picture_id),
        };
        picture_id = (picture_id + 1) & 0x7FFF;
        let last = payloads.len() - 1;
        for (i, payload) in payloads.into_iter().enumerate() {
            let packet = Packet {
                header: Header {
                    version: 2,
                    marker: i == last,
                    payload_type: pt,
                    sequence_number: seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    timestamp: ts,
                    ssrc,
                    ..Default::default()
                },
                payload: payload.into(),
            };
            if track.write_rtp(packet).await.is_err() {
                watcher.abort();
                return;
            }
        }
    }
}

/// Runs many roles at once.
pub async fn run_all(
    base: String,
    bind_ip: String,
    specs: Vec<Spec>,
) -> HashMap<(String, String), Value> {
    let tasks: Vec<_> = specs
        .into_iter()
        .map(|s| tokio::spawn(run(base.clone(), bind_ip.clone(), s)))
        .collect();
    let mut out = HashMap::new();
    for t in tasks {
        if let Ok(v) = t.await {
            let key = (
                v["cell"].as_str().unwrap_or_default().to_string(),
                v["side"].as_str().unwrap_or_default().to_string(),
            );
            out.insert(key, v);
        }
    }
    out
}
