//! Bad signaling input: each answered by the right `webrtc_error` (and ack), while the server
//! and another live consultation keep running.

use std::time::Duration;

use relais::clock::ManualClock;
use relais::ids::Role;
use relais_load::client::peer::{ClientPeer, Entry};
use relais_load::client::socketio::SioClient;
use serde_json::{Value, json};

use crate::common::*;

const NO_MEDIA_SDP: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
/// Structurally an SDP with media, but nothing a WebRTC stack can use (no ICE, no DTLS).
const UNUSABLE_SDP: &str =
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\n";

/// Emits with an ack and expects a failure with `code`, plus the `webrtc_error` event.
async fn expect_error(sock: &mut SioClient, event: &str, data: Value, code: &str) {
    let ack = sock.emit_with_ack(event, &data, WAIT).await.unwrap();
    assert_eq!(ack_code(&ack), code, "{event} {data}: {ack}");
    let err = sock.wait_for("webrtc_error", WAIT).await.unwrap();
    assert_eq!(err["code"], code, "{err}");
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    if let Some(id) = data.get("sessionId").and_then(Value::as_i64) {
        assert_eq!(err["sessionId"], id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_signaling_gets_webrtc_errors_and_harms_nothing() {
    let clock = ManualClock::new(1_800_000_000_000);
    let app = spawn_app_with(Options {
        clock: Some(clock.clone()),
        ..Options::new(Backend::Sqlite)
    })
    .await;

    // A live consultation that must keep running through all of this.
    let (live, live_conv, live_code) = create_session(&app, 1, &[2], "audio_video").await;
    let mut cfg = peer_config(&app, Role::Medecin, 1, live, Entry::Publish);
    cfg.conversation_id = live_conv;
    let mut d = ClientPeer::start(cfg).await.unwrap();
    d.wait_connected(Duration::from_secs(10)).await.unwrap();
    let mut p = ClientPeer::start(peer_config(
        &app,
        Role::Patient,
        2,
        live,
        Entry::Code(live_code),
    ))
    .await
    .unwrap();
    p.wait_connected(Duration::from_secs(10)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || p.received.streams_with(20)
            == (1, 1))
        .await
    );

    let (id, conv, code) = create_session(&app, 79, &[11], "audio_video").await;
    let mut doctor = app.socket(Role::Medecin, 79).await;
    let mut patient = app.socket(Role::Patient, 11).await;
    let mut stranger = app.socket(Role::Patient, 12).await;
    let offer = |sdp: &str| json!({"sessionId": id, "conversationId": conv, "sdpOffer": sdp, "sessionType": "audio_video"});

    expect_error(&mut doctor, "webrtc_offer", offer("garbage"), "bad_sdp").await;
    expect_error(&mut doctor, "webrtc_offer", offer(NO_MEDIA_SDP), "bad_sdp").await;
    expect_error(&mut doctor, "webrtc_offer", offer(UNUSABLE_SDP), "bad_sdp").await;
    expect_error(
        &mut doctor,
        "webrtc_offer",
        json!({"sessionId": "abc", "sdpOffer": 3}),
        "invalid_payload",
    )
    .await;
    expect_error(
        &mut doctor,
        "webrtc_offer",
        json!({"sessionId": 999_999, "sdpOffer": "v=0"}),
        "session_not_found",
    )
    .await;
    // A patient offering into a session they are not in.
    expect_error(
        &mut patient,
        "webrtc_offer",
        offer(UNUSABLE_SDP),
        "not_in_session",
    )
    .await;
    // Candidates and answers for sessions one is not in.
    let cand = json!({"sessionId": 999_999, "candidates": [{"candidate": "candidate:1 1 UDP 2113667326 127.0.0.1 54400 typ host", "sdpMid": "0", "sdpMLineIndex": 0}]});
    expect_error(
        &mut stranger,
        "webrtc_ice_candidates",
        cand,
        "not_in_session",
    )
    .await;
    expect_error(
        &mut stranger,
        "webrtc_answer",
        json!({"sessionId": id, "sdpAnswer": "v=0"}),
        "not_in_session",
    )
    .await;
    expect_error(
        &mut stranger,
        "leave_session",
        json!({"sessionId": id}),
        "not_in_session",
    )
    .await;
    // Wrong codes.
    let join = |code: &str| json!({"code": code, "sessionId": id, "user": {"userId": 11, "userType": "patient"}, "action": "join_conference"});
    expect_error(
        &mut patient,
        "request_webrtc_offer",
        join("00000000"),
        "invalid_code",
    )
    .await;
    expect_error(
        &mut patient,
        "request_webrtc_offer",
        join("not a code"),
        "invalid_code",
    )
    .await;

    // Joining for real: the server offers; a second offer while it waits is refused, as is an
    // answer nobody asked for elsewhere.
    let ack = patient
        .emit_with_ack("request_webrtc_offer", &join(&code), WAIT)
        .await
        .unwrap();
    ack_ok(&ack);
    let server_offer = patient.wait_for("webrtc_offer", WAIT).await.unwrap();
    assert_eq!(server_offer["sessionId"], id);
    assert_eq!(server_offer["conversationId"], conv);
    assert_eq!(server_offer["from"]["userType"], "server");
    assert!(
        server_offer["sdpOffer"]
            .as_str()
            .unwrap()
            .contains("m=audio")
    );
    expect_error(
        &mut patient,
        "webrtc_offer",
        offer(UNUSABLE_SDP),
        "negotiation_in_progress",
    )
    .await;
    expect_error(
        &mut patient,
        "webrtc_answer",
        json!({"sessionId": id, "sdpAnswer": "garbage"}),
        "bad_sdp",
    )
    .await;
    // The doctor's candidates may overtake their offer (a socket's events are handled
    // concurrently): accepted and dropped, no error.
    let early = json!({"sessionId": id, "candidates": [{"candidate": "candidate:1 1 UDP 2113667326 127.0.0.1 54400 typ host", "sdpMid": "0", "sdpMLineIndex": 0}]});
    let ack = doctor
        .emit_with_ack("webrtc_ice_candidates", &early, WAIT)
        .await
        .unwrap();
    assert_eq!(ack["success"], true, "{ack}");
    // The doctor has no PeerConnection yet: nothing of theirs to answer.
    expect_error(
        &mut doctor,
        "webrtc_answer",
        json!({"sessionId": id, "sdpAnswer": UNUSABLE_SDP}),
        "not_in_session",
    )
    .await;
    // Only the doctor ends it.
    expect_error(
        &mut patient,
        "end_session",
        json!({"sessionId": id}),
        "forbidden",
    )
    .await;

    // Expired code, then an ended session.
    let (id3, _, code3) = create_session(&app, 79, &[11], "audio_only").await;
    clock.advance(3 * 3600 * 1000);
    let join3 = json!({"code": code3, "sessionId": id3});
    expect_error(&mut patient, "request_webrtc_offer", join3, "expired_code").await;
    ack_ok(
        &doctor
            .emit_with_ack("end_session", &json!({"sessionId": id}), WAIT)
            .await
            .unwrap(),
    );
    let ended = patient.wait_for("session_ended", WAIT).await.unwrap();
    assert_eq!(ended["sessionId"], id);
    expect_error(
        &mut patient,
        "request_webrtc_offer",
        join(&code),
        "session_ended",
    )
    .await;
    expect_error(
        &mut doctor,
        "end_session",
        json!({"sessionId": id}),
        "session_ended",
    )
    .await;

    // The live consultation never noticed.
    let before = p
        .received
        .snapshot()
        .values()
        .map(|s| s.packets)
        .sum::<u64>();
    assert!(
        eventually(Duration::from_secs(5), || p
            .received
            .snapshot()
            .values()
            .map(|s| s.packets)
            .sum::<u64>()
            > before + 50)
        .await
    );
    assert_eq!(
        d.state(),
        webrtc::peer_connection::RTCPeerConnectionState::Connected
    );
    let m = app.metrics().await;
    assert!(
        m.contains("relais_signaling_errors_total{kind=\"bad_sdp\"}"),
        "{m}"
    );
    d.close().await;
    p.close().await;
}
