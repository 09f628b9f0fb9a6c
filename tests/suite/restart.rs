//! A single node killed with SIGKILL mid-call and started again by the same command: the
//! session and its code are still valid, the sockets that come back are told to reconnect
//! their media (`session_moved`, reason `node_restarted`), the call resumes, and a message the
//! server acknowledged before it died is still there.

use std::time::Duration;

use relais::ids::{Identity, Role};
use relais_load::client::api::ApiClient;
use relais_load::client::peer::{ClientPeer, Entry, PeerConfig};
use relais_load::client::socketio::SioClient;
use serde_json::json;

use crate::common::*;

fn token(dir: &std::path::Path, role: &str, id: i64) -> String {
    let out = relais_command()
        .current_dir(dir)
        .args([
            "token",
            "--role",
            role,
            "--id",
            &id.to_string(),
            "--ttl",
            "1h",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn peer(base: &str, token: &str, who: Identity, session: i64, entry: Entry) -> PeerConfig {
    let mut cfg = PeerConfig::new(base, token, who, session, entry);
    cfg.keyframe_interval = Duration::from_millis(500);
    cfg.video_bitrate_bps = 300_000;
    cfg
}

/// Doctor 79 publishing in `session`, connected.
async fn doctor_peer(base: &str, token: &str, session: i64, conv: i64, why: &str) -> ClientPeer {
    let who = Identity::new(Role::Medecin, 79);
    let mut cfg = peer(base, token, who, session, Entry::Publish);
    cfg.conversation_id = conv;
    let mut d = ClientPeer::start(cfg).await.unwrap();
    d.wait_connected(Duration::from_secs(10)).await.expect(why);
    d
}

/// Patient 11 joining `session` with `code`, connected.
async fn patient_peer(base: &str, token: &str, session: i64, code: &str, why: &str) -> ClientPeer {
    let who = Identity::new(Role::Patient, 11);
    let entry = Entry::Code(code.to_string());
    let mut p = ClientPeer::start(peer(base, token, who, session, entry))
        .await
        .unwrap();
    p.wait_connected(Duration::from_secs(10)).await.expect(why);
    p
}

/// Each side receives the other's audio and video.
async fn assert_media_flows(d: &ClientPeer, p: &ClientPeer, what: &str) {
    let flowing = eventually(Duration::from_secs(15), || {
        d.received.streams_with(30) == (1, 1) && p.received.streams_with(30) == (1, 1)
    })
    .await;
    assert!(flowing, "{what}");
}

/// The returning socket of `token` is told to reconnect `session`'s media.
async fn told_to_reconnect(base: &str, token: &str, session: i64, why: &str) {
    let mut sock = SioClient::connect(base, json!({"token": token}))
        .await
        .unwrap();
    let moved = sock
        .wait_for("session_moved", Duration::from_secs(5))
        .await
        .expect(why);
    assert_eq!(moved["sessionId"], session, "{moved}");
    assert_eq!(moved["reason"], "node_restarted", "{moved}");
    sock.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_call_resumes_it_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = serve(dir.path(), &[]);
    let doctor = token(dir.path(), "medecin", 79);
    let patient = token(dir.path(), "patient", 11);
    let http = reqwest::Client::new();
    let api = ApiClient::new(http.clone(), &first.base, &doctor);
    let conv = api
        .create_conversation("private", &[("patient", 11)])
        .await
        .unwrap();
    let (status, v) = api
        .call(
            reqwest::Method::POST,
            "/api/messaging/webrtc/sessions?generate_conference_link=true",
            Some(
                &json!({"conversation_id": conv, "session_type": "audio_video", "waiting_room": false,
                         "initiator": {"userType": "medecin", "userId": 79}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::CREATED, "{v}");
    let session = v["data"]["session"]["id"].as_i64().unwrap();
    let code = v["data"]["conferenceLink"]["joinCode"]
        .as_str()
        .unwrap()
        .to_string();
    let d = doctor_peer(&first.base, &doctor, session, conv, "doctor connects").await;
    let p = patient_peer(&first.base, &patient, session, &code, "patient connects").await;
    assert_media_flows(&d, &p, "media flows both ways").await;
    let acked = api.send_text(conv, "juste avant la panne").await.unwrap();

    // kill -9: no goodbye, no participant marked as gone, the rooms vanish with the process.
    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    d.vanish().await;
    p.vanish().await;
    let second = serve(dir.path(), &[]);

    // The patient's socket comes back first: told to reconnect the media of the interrupted
    // session; the code still admits them, and the session's room exists again.
    told_to_reconnect(
        &second.base,
        &patient,
        session,
        "a returning socket hears that its call must reconnect",
    )
    .await;
    let p = patient_peer(
        &second.base,
        &patient,
        session,
        &code,
        "the code still admits the patient",
    )
    .await;
    // Then the doctor's: the room is there, without them: told too.
    told_to_reconnect(
        &second.base,
        &doctor,
        session,
        "the doctor is told as well, though the room exists again",
    )
    .await;
    let d = doctor_peer(
        &second.base,
        &doctor,
        session,
        conv,
        "the doctor publishes again",
    )
    .await;
    assert_media_flows(&d, &p, "media flows both ways again").await;

    // A socket that connects while the call runs here hears nothing of the kind.
    let mut tab = SioClient::connect(&second.base, json!({"token": doctor}))
        .await
        .unwrap();
    assert!(
        tab.wait_for("session_moved", Duration::from_millis(1_500))
            .await
            .is_err(),
        "a call running here is left alone"
    );

    // The message acknowledged before the kill is stored.
    let api = ApiClient::new(http, &second.base, &doctor);
    let (status, v) = api
        .call(
            reqwest::Method::GET,
            &format!("/api/messaging/conversations/{conv}/messages"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(v.to_string().contains(&acked["id"].to_string()), "{v}");
    assert!(v.to_string().contains("juste avant la panne"));
}
