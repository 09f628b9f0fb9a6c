//! Media through the SFU with webrtc-rs client peers: 1:1 both ways, byte-identical payloads,
//! continuous rewritten sequence numbers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use relais::ids::Role;
use relais_load::client::peer::{ClientPeer, Entry};

use crate::common::*;
use crate::impair::app_behind_lossy_proxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn doctor_and_patient_exchange_audio_and_video() {
    let app = spawn_app(Backend::Sqlite).await;
    let (session, conv, code) = create_session(&app, 79, &[11], "audio_video").await;

    let mut cfg = peer_config(&app, Role::Medecin, 79, session, Entry::Publish);
    cfg.conversation_id = conv;
    let mut doctor = ClientPeer::start(cfg).await.unwrap();
    doctor
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("doctor connects");

    let mut patient = ClientPeer::start(peer_config(
        &app,
        Role::Patient,
        11,
        session,
        Entry::Code(code),
    ))
    .await
    .unwrap();
    patient
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("patient connects");
    // The doctor hears of their own arrival, then of the patient's.
    let mut joined = doctor
        .wait_event("participant_joined", Duration::from_secs(5))
        .await
        .unwrap();
    if joined["participant"]["userType"] == "medecin" {
        joined = doctor
            .wait_event("participant_joined", Duration::from_secs(5))
            .await
            .unwrap();
    }
    assert_eq!(
        joined["participant"],
        serde_json::json!({"userId": 11, "userType": "patient"})
    );
    assert_eq!(joined["participants"].as_array().unwrap().len(), 2);

    // Both receive one audio and one video stream from the other.
    let ok = eventually(Duration::from_secs(15), || {
        doctor.received.streams_with(50) == (1, 1) && patient.received.streams_with(50) == (1, 1)
    })
    .await;
    assert!(
        ok,
        "doctor got {:?}, patient got {:?}",
        doctor
            .received
            .snapshot()
            .values()
            .map(|s| (s.video, s.packets))
            .collect::<Vec<_>>(),
        patient
            .received
            .snapshot()
            .values()
            .map(|s| (s.video, s.packets))
            .collect::<Vec<_>>()
    );

    for (name, peer) in [("doctor", &doctor), ("patient", &patient)] {
        for (ssrc, s) in peer.received.snapshot() {
            assert_eq!(
                s.corrupt, 0,
                "{name} {ssrc:#x}: payloads arrive byte-identical"
            );
            assert_eq!(
                s.seq_discontinuities, 0,
                "{name} {ssrc:#x}: rewritten sequence numbers are continuous"
            );
            assert_eq!(s.duplicates, 0, "{name} {ssrc:#x}");
        }
    }
    let m = app.metrics().await;
    assert_eq!(metric_value(&m, "relais_peer_connections"), 2.0, "{m}");
    assert_eq!(metric_value(&m, "relais_tracks"), 4.0, "{m}");
    assert!(metric_value(&m, "relais_rtp_packets_forwarded_total") > 100.0);

    doctor.close().await;
    patient.close().await;
}

/// Starts the doctor (publishing) and `patients` (joining with the code), all connected.
async fn consultation(
    app: &TestApp,
    doctor: i64,
    patients: &[i64],
    kind: &str,
) -> (i64, ClientPeer, Vec<ClientPeer>) {
    let (session, conv, code) = create_session(app, doctor, patients, kind).await;
    let mut cfg = peer_config(app, Role::Medecin, doctor, session, Entry::Publish);
    cfg.conversation_id = conv;
    cfg.video = kind == "audio_video";
    let mut d = ClientPeer::start(cfg).await.unwrap();
    d.wait_connected(Duration::from_secs(10))
        .await
        .expect("doctor connects");
    let mut ps = Vec::new();
    for id in patients {
        let mut cfg = peer_config(app, Role::Patient, *id, session, Entry::Code(code.clone()));
        cfg.video = kind == "audio_video";
        let mut p = ClientPeer::start(cfg).await.unwrap();
        p.wait_connected(Duration::from_secs(10))
            .await
            .expect("patient connects");
        ps.push(p);
    }
    (session, d, ps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_of_four_each_receive_three_audio_and_video() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, doctor, patients) = consultation(&app, 5, &[21, 22, 23], "audio_video").await;
    let everyone: Vec<&ClientPeer> = std::iter::once(&doctor).chain(patients.iter()).collect();
    let ok = eventually(Duration::from_secs(20), || {
        everyone
            .iter()
            .all(|p| p.received.streams_with(30) == (3, 3))
    })
    .await;
    let seen: Vec<(usize, usize)> = everyone
        .iter()
        .map(|p| p.received.streams_with(30))
        .collect();
    assert!(
        ok,
        "each should receive 3 audio + 3 video streams: {seen:?}"
    );
    for p in &everyone {
        // Three distinct publishers, none of them itself.
        let tags: std::collections::HashSet<u32> = p
            .received
            .snapshot()
            .values()
            .flat_map(|s| s.tags.clone())
            .collect();
        assert_eq!(tags.len(), 6);
        for s in p.received.snapshot().values() {
            assert_eq!(s.corrupt, 0);
        }
    }
    let m = app.metrics().await;
    assert_eq!(metric_value(&m, "relais_peer_connections"), 4.0);
    assert_eq!(metric_value(&m, "relais_tracks"), 8.0);
    // A publisher was asked for keyframes as subscribers joined.
    assert!(
        doctor
            .sent
            .plis_received
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(metric_value(&m, "relais_plis_sent_total") > 0.0);
    doctor.close().await;
    for p in patients {
        p.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_statut_stats_and_end() {
    let app = spawn_app(Backend::Sqlite).await;
    let (session, mut doctor, mut patients) = consultation(&app, 79, &[11], "audio_video").await;
    let mut patient = patients.remove(0);
    let api = app.doctor(79);
    assert!(
        eventually(Duration::from_secs(10), || patient
            .received
            .streams_with(40)
            == (1, 1))
        .await
    );
    let (_, v) = api
        .call(
            reqwest::Method::GET,
            &format!("/api/messaging/webrtc/sessions/{session}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        v["data"]["session"]["statut"], "active",
        "first media made it active"
    );
    assert!(v["data"]["session"]["started_at"].is_string());
    assert_eq!(
        v["data"]["session"]["participants"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Per participant and track: packets, bytes, bitrate, loss, jitter, NACK/PLI counts.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, v) = api
        .call(
            reqwest::Method::GET,
            &format!("/api/messaging/webrtc/sessions/{session}/stats"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{v}");
    let parts = v["data"]["participants"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    for p in parts {
        assert_eq!(p["connected"], true, "{p}");
        let tracks = p["tracks"].as_array().unwrap();
        assert_eq!(tracks.len(), 4, "2 inbound + 2 outbound: {p}");
        for t in tracks {
            assert!(t["packets"].as_u64().unwrap() > 0, "{t}");
            for key in [
                "bytes",
                "bitrate_bps",
                "packets_lost",
                "fraction_lost",
                "jitter_ms",
                "nacks",
                "plis",
                "codec",
                "kind",
                "direction",
            ] {
                assert!(!t[key].is_null(), "{key} in {t}");
            }
        }
    }

    // Ending closes everything and tells everyone.
    let (status, _) = api
        .call(
            reqwest::Method::POST,
            &format!("/api/messaging/webrtc/sessions/{session}/end"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::OK);
    let e = patient
        .wait_event("session_ended", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(e["sessionId"], session);
    doctor
        .wait_event("session_ended", Duration::from_secs(5))
        .await
        .unwrap();
    let gone = async {
        for _ in 0..100 {
            let m = app.metrics().await;
            if metric_value(&m, "relais_peer_connections") == 0.0
                && metric_value(&m, "relais_tracks") == 0.0
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(gone.await, "{}", app.metrics().await);
    doctor.close().await;
    patient.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audio_only_sessions_forward_audio_only() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, doctor, patients) = consultation(&app, 79, &[11], "audio_only").await;
    assert!(
        eventually(Duration::from_secs(10), || patients[0]
            .received
            .streams_with(20)
            == (1, 0)
            && doctor.received.streams_with(20) == (1, 0))
        .await
    );
    doctor.close().await;
    for p in patients {
        p.close().await;
    }
}

/// 5 % of the media datagrams lost each way between the clients and the server (and 15 % late):
/// the server asks the publisher again for what it missed, and sends again what the subscriber
/// reports missing, so almost all of the video arrives (audio is not NACKed, as browsers do).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_video_is_repaired_by_nacks_both_ways() {
    let (app, proxy) = app_behind_lossy_proxy("127.0.0.3", 11).await;
    let (_, doctor, mut patients) = consultation(&app, 79, &[11], "audio_video").await;
    let patient = patients.remove(0);
    assert!(
        eventually(Duration::from_secs(15), || {
            doctor.received.streams_with(300) == (1, 1)
                && patient.received.streams_with(300) == (1, 1)
        })
        .await,
        "video flows both ways"
    );
    let dropped = proxy.stats.dropped.load(Ordering::Relaxed) as f64;
    let forwarded = proxy.stats.forwarded.load(Ordering::Relaxed) as f64;
    let path_loss = dropped / (dropped + forwarded);
    assert!((0.03..0.07).contains(&path_loss), "path loss {path_loss}");
    for (name, peer) in [("doctor", &doctor), ("patient", &patient)] {
        for (ssrc, s) in peer.received.snapshot() {
            let loss = s.loss_from_first() as f64 / s.packets.max(1) as f64;
            eprintln!(
                "{name} {ssrc:#x} video={}: {} packets, loss after repair {loss:.4}",
                s.video, s.packets
            );
            if s.video {
                // Without repair on either leg, about 10 % would be missing.
                assert!(loss < 0.02, "{name} {ssrc:#x}: {loss} of the video lost");
                assert_eq!(s.corrupt, 0, "{name} {ssrc:#x}");
            }
        }
    }
    let m = app.metrics().await;
    assert!(metric_value(&m, "relais_nacks_received_total") > 0.0, "{m}");
    assert!(
        metric_value(&m, "relais_rtp_packets_retransmitted_total") > 5.0,
        "{m}"
    );
    doctor.close().await;
    patient.close().await;
}
