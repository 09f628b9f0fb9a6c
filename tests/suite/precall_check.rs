//! The pre-call check (`/api/messaging/webrtc/check`, `src/sfu/check.rs`) with a webrtc-rs
//! client as the browser: the echo returns the client's own media, bad input gets clear
//! errors, the limits answer 429, and no PeerConnection outlives its check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use relais::ids::Role;
use relais_load::client::media::Received;
use relais_load::peer_connection::{Codecs, PcConfig};
use relais_load::synthetic::{Pattern, TrackSender, VideoCodec};
use reqwest::StatusCode;
use rtc::ice::network_type::NetworkType;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{Value, json};
use tokio::sync::watch;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use crate::common::*;
use crate::impair::{Impairment, LossyUdpProxy};

const CHECK: &str = "/api/messaging/webrtc/check";

struct Handler {
    state: watch::Sender<RTCPeerConnectionState>,
    received: Arc<Received>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        let _ = self.state.send(s);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        let video = track.kind().await == RtpCodecKind::Video;
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

/// A client of the check: a webrtc-rs PeerConnection sending synthetic audio and video on
/// `sendrecv` m-lines, as the page does with the camera and microphone.
struct EchoClient {
    pc: Arc<dyn PeerConnection>,
    received: Arc<Received>,
    state: watch::Receiver<RTCPeerConnectionState>,
    tracks: Vec<(Arc<TrackLocalStaticRTP>, u32, bool)>,
}

fn local_track(video: bool) -> (Arc<TrackLocalStaticRTP>, u32, bool) {
    let ssrc: u32 = rand::random::<u32>() | 1;
    let (kind, codec) = if video {
        (
            RtpCodecKind::Video,
            RTCRtpCodec {
                mime_type: "video/VP8".into(),
                clock_rate: 90_000,
                ..Default::default()
            },
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
        )
    };
    let label = if video { "video" } else { "audio" };
    let track = MediaStreamTrack::new(
        "precall".into(),
        format!("precall-{label}"),
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
    (Arc::new(TrackLocalStaticRTP::new(track)), ssrc, video)
}

impl EchoClient {
    async fn new() -> Self {
        relais_load::synthetic::epoch();
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let received = Arc::new(Received::default());
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PcConfig::new(Codecs::Browser, vec![NetworkType::Udp4])
                .async_builder()
                .unwrap()
                .with_handler(Arc::new(Handler {
                    state: state_tx,
                    received: received.clone(),
                }))
                .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
                .build()
                .await
                .unwrap(),
        );
        let tracks = vec![local_track(false), local_track(true)];
        for (t, _, _) in &tracks {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendrecv,
                ..Default::default()
            };
            pc.add_transceiver_from_track(t.clone() as Arc<dyn TrackLocal>, Some(init))
                .await
                .unwrap();
        }
        Self {
            pc,
            received,
            state,
            tracks,
        }
    }

    async fn offer(&self) -> String {
        let offer = self.pc.create_offer(None).await.unwrap();
        self.pc.set_local_description(offer).await.unwrap();
        self.pc.local_description().await.unwrap().sdp
    }

    /// Applies the server's answer and echo offer; returns our answer to the latter.
    async fn accept(&self, answer: &str, offer: &str) -> String {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer.to_string()).unwrap())
            .await
            .unwrap();
        self.pc
            .set_remote_description(RTCSessionDescription::offer(offer.to_string()).unwrap())
            .await
            .unwrap();
        let a = self.pc.create_answer(None).await.unwrap();
        self.pc.set_local_description(a).await.unwrap();
        self.pc.local_description().await.unwrap().sdp
    }

    async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut s = self.state.clone();
        tokio::time::timeout(
            timeout,
            s.wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    /// Sends synthetic media for `how_long` (payloads tagged with the track's SSRC).
    async fn send_for(&self, how_long: Duration) {
        let pattern = Pattern {
            audio: true,
            video: true,
            codec: VideoCodec::Vp8,
            video_bitrate_bps: 300_000,
            fps: 30,
            keyframe_interval: Duration::from_millis(500),
        };
        let senders = self.pc.get_senders().await;
        let mut pts = Vec::new();
        for (_, ssrc, _) in &self.tracks {
            let mut pt = None;
            for s in &senders {
                let Ok(p) = s.get_parameters().await else {
                    continue;
                };
                if p.encodings
                    .iter()
                    .any(|e| e.rtp_coding_parameters.ssrc == Some(*ssrc))
                {
                    pt = p.rtp_parameters.codecs.first().map(|c| c.payload_type);
                }
            }
            pts.push(pt.expect("our track is negotiated"));
        }
        let start = Instant::now();
        let mut out_senders: Vec<TrackSender> = self
            .tracks
            .iter()
            .map(|(_, ssrc, video)| TrackSender::new(&pattern, *video, *ssrc, start, 0.0))
            .collect();
        let mut out = Vec::new();
        while start.elapsed() < how_long {
            tokio::time::sleep(Duration::from_millis(10)).await;
            for (i, (track, ssrc, _)) in self.tracks.iter().enumerate() {
                out_senders[i].due(&pattern, Instant::now(), &mut out);
                for o in out.drain(..) {
                    let packet = Packet {
                        header: Header {
                            version: 2,
                            marker: o.marker,
                            payload_type: pts[i],
                            sequence_number: o.seq,
                            timestamp: o.ts,
                            ssrc: *ssrc,
                            ..Default::default()
                        },
                        payload: o.payload,
                    };
                    let _ = track.write_rtp(packet).await;
                }
            }
        }
    }

    async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .request(method, format!("{}{CHECK}{path}", app.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn peer_connections(app: &TestApp) -> f64 {
    app.metric("relais_peer_connections").await
}

async fn gauge_back_to_zero(app: &TestApp, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if peer_connections(app).await == 0.0 && app.state().sfu.checks().live() == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Starts a check: (id, our client, the answer's status and body when it failed).
async fn start(app: &TestApp, token: &str) -> (i64, EchoClient) {
    let client = EchoClient::new().await;
    let offer = client.offer().await;
    let (status, body) = call(
        app,
        reqwest::Method::POST,
        "",
        Some(token),
        Some(json!({"sdp": offer})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let d = &body["data"];
    let id = d["checkId"].as_i64().unwrap();
    assert_eq!(d["expiresInSeconds"], 20, "{body}");
    let answer = client
        .accept(d["answer"].as_str().unwrap(), d["offer"].as_str().unwrap())
        .await;
    let (status, body) = call(
        app,
        reqwest::Method::POST,
        &format!("/{id}/answer"),
        Some(token),
        Some(json!({"sdp": answer})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (id, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_check_echoes_the_clients_media_and_leaves_nothing() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.token(Role::Patient, 11);
    assert_eq!(peer_connections(&app).await, 0.0);

    // What to test against: the server's own ports and TURN URLs.
    let (status, plan) = call(&app, reqwest::Method::GET, "", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    let ports = &plan["data"]["ports"];
    let media = app.state().sfu.media_addr().port();
    assert_eq!(ports["mediaUdp"], json!([media]), "{plan}");
    let tcp = app.state().sfu.media_tcp_addr().unwrap().port();
    assert!(
        ports["mediaTcp"].as_array().unwrap().contains(&json!(tcp)),
        "{plan}"
    );
    let turn = app.state().turn.as_ref().unwrap();
    assert_eq!(ports["turnUdp"], turn.udp_addr().port(), "{plan}");
    assert_eq!(ports["turnTcp"], turn.tcp_addr().port(), "{plan}");
    assert!(!ports["turnTls"].as_array().unwrap().is_empty(), "{plan}");
    assert_eq!(plan["data"]["durationSeconds"], 20);
    let urls = plan["data"]["iceServers"][0]["urls"].as_array().unwrap();
    assert!(
        urls.iter()
            .any(|u| u.as_str().unwrap().starts_with("turns:")),
        "{plan}"
    );

    let (id, client) = start(&app, &token).await;
    assert!(
        client.wait_connected(Duration::from_secs(10)).await,
        "the check connects"
    );
    // Connected, before any media: the server already knows the path.
    let (status, stats) = call(
        &app,
        reqwest::Method::GET,
        &format!("/{id}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["data"]["transport"], "udp", "{stats}");
    client.send_for(Duration::from_secs(3)).await;

    // Our own audio and video came back: streams whose payloads carry our tracks' tags.
    let ours: Vec<u32> = client.tracks.iter().map(|(_, s, _)| *s).collect();
    let ok = eventually(Duration::from_secs(5), || {
        client.received.streams_with(30) == (1, 1)
    })
    .await;
    let snapshot = client.received.snapshot();
    assert!(
        ok,
        "echo: {:?}",
        snapshot
            .values()
            .map(|s| (s.video, s.packets))
            .collect::<Vec<_>>()
    );
    for s in snapshot.values() {
        assert_eq!(s.corrupt, 0, "payloads come back intact");
        assert!(
            s.tags.iter().all(|t| ours.contains(t)),
            "an echoed stream carries our own payloads: {:?} vs {ours:?}",
            s.tags
        );
    }

    // The server's side: what it received (the upload) and what it sent back.
    let (status, stats) = call(
        &app,
        reqwest::Method::GET,
        &format!("/{id}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    let d = &stats["data"];
    assert_eq!(d["connected"], true, "{stats}");
    assert_eq!(d["transport"], "udp", "{stats}");
    assert_eq!(d["serverPort"], media, "{stats}");
    let bytes = |dir: &str| -> u64 {
        d["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["direction"] == dir)
            .map(|t| t["bytes"].as_u64().unwrap())
            .sum()
    };
    assert!(bytes("inbound") > 50_000, "{stats}");
    assert!(bytes("outbound") > 50_000, "{stats}");
    assert_eq!(peer_connections(&app).await, 1.0);

    // Someone else cannot see or close it.
    let other = app.token(Role::Patient, 12);
    let (status, body) = call(
        &app,
        reqwest::Method::GET,
        &format!("/{id}"),
        Some(&other),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "check_not_found");
    let (status, _) = call(
        &app,
        reqwest::Method::DELETE,
        &format!("/{id}"),
        Some(&other),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Closed by its owner: the peer goes, the gauge returns to idle.
    let (status, body) = call(
        &app,
        reqwest::Method::DELETE,
        &format!("/{id}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        gauge_back_to_zero(&app, Duration::from_secs(5)).await,
        "{}",
        app.metrics().await
    );
    let (status, body) = call(
        &app,
        reqwest::Method::GET,
        &format!("/{id}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_check_whose_client_vanishes_ends_by_itself() {
    // The client reaches the media port only through a proxy of the test's, which then goes
    // silent both ways: no DTLS close, no more consent checks, as when a laptop lid closes.
    let ip: std::net::IpAddr = "127.0.0.61".parse().unwrap();
    let app = spawn_app_with(Options::new(Backend::Sqlite).configure(move |c| {
        c.media.public_ips = vec![ip];
        c.media.ice_tcp = false;
        c.turn.enabled = false;
    }))
    .await;
    let media = app.state().sfu.media_addr();
    let proxy = LossyUdpProxy::start(
        std::net::SocketAddr::new(ip, media.port()),
        media,
        Impairment {
            loss: 0.0,
            reorder: 0.0,
            delay_ms: (0, 0),
            seed: 7,
        },
    )
    .await;
    let token = app.token(Role::Medecin, 79);
    let (_, client) = start(&app, &token).await;
    assert!(client.wait_connected(Duration::from_secs(10)).await);
    assert_eq!(peer_connections(&app).await, 1.0);
    drop(proxy);
    let t0 = Instant::now();
    assert!(
        gauge_back_to_zero(&app, Duration::from_secs(25)).await,
        "{}",
        app.metrics().await
    );
    let took = t0.elapsed();
    println!("check closed {took:?} after its client went silent");
    // Ended by the silence (ICE's consent timeout, or the check's 20 s), not by a goodbye.
    assert!(took >= Duration::from_secs(5), "{took:?}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_checks_get_clear_errors_and_limits() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.token(Role::Patient, 11);

    // No token: 401 everywhere.
    for (method, path) in [
        (reqwest::Method::GET, ""),
        (reqwest::Method::POST, ""),
        (reqwest::Method::GET, "/1"),
        (reqwest::Method::DELETE, "/1"),
        (reqwest::Method::POST, "/1/answer"),
    ] {
        let (status, body) = call(
            &app,
            method.clone(),
            path,
            None,
            Some(json!({"sdp": "v=0"})),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
    }

    // Garbage, an SDP with no media, a body without `sdp`.
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        "",
        Some(&token),
        Some(json!({"sdp": "hello"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "bad_sdp", "{body}");
    let no_media = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        "",
        Some(&token),
        Some(json!({"sdp": no_media})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "bad_sdp", "{body}");
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        "",
        Some(&token),
        Some(json!({"offer": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // An offer that only receives: nothing to echo.
    let recv_only = {
        let pc = PcConfig::new(Codecs::Browser, vec![NetworkType::Udp4])
            .async_builder()
            .unwrap()
            .with_handler(Arc::new(Handler {
                state: watch::channel(RTCPeerConnectionState::New).0,
                received: Arc::default(),
            }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
            .build()
            .await
            .unwrap();
        pc.add_transceiver_from_kind(
            RtpCodecKind::Audio,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
        let o = pc.create_offer(None).await.unwrap();
        pc.set_local_description(o).await.unwrap();
        let sdp = pc.local_description().await.unwrap().sdp;
        let _ = pc.close().await;
        sdp
    };
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        "",
        Some(&token),
        Some(json!({"sdp": recv_only})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "bad_sdp", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("echo"),
        "{body}"
    );
    // None of these left a peer behind.
    assert!(
        gauge_back_to_zero(&app, Duration::from_secs(5)).await,
        "{}",
        app.metrics().await
    );

    // Unknown check, garbage answer.
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        "/999/answer",
        Some(&token),
        Some(json!({"sdp": no_media})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "check_not_found");
    let (id, c1) = start(&app, &token).await;
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        &format!("/{id}/answer"),
        Some(&token),
        Some(json!({"sdp": "nonsense"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "bad_sdp", "{body}");

    // Two at once per person; the third is refused, someone else is not.
    let (id2, c2) = start(&app, &token).await;
    let c3 = EchoClient::new().await;
    let offer = c3.offer().await;
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        "",
        Some(&token),
        Some(json!({"sdp": offer})),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "too_many_checks", "{body}");
    let other = app.token(Role::Patient, 12);
    let (id3, c4) = start(&app, &other).await;
    assert_eq!(app.state().sfu.checks().live(), 3);
    assert_eq!(peer_connections(&app).await, 3.0);

    for (id, t) in [(id, &token), (id2, &token), (id3, &other)] {
        let (status, _) = call(
            &app,
            reqwest::Method::DELETE,
            &format!("/{id}"),
            Some(t),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(
        gauge_back_to_zero(&app, Duration::from_secs(5)).await,
        "{}",
        app.metrics().await
    );
    // Closed, a place is free again.
    let (_, c5) = start(&app, &token).await;
    let (status, _) = call(&app, reqwest::Method::DELETE, "/0", Some(&token), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for c in [c1, c2, c3, c4, c5] {
        c.close().await;
    }
}
