//! Media through the SFU with webrtc-rs client peers: 1:1 both ways, byte-identical payloads,
//! continuous rewritten sequence numbers.

use std::time::Duration;

use relais::client::peer::{ClientPeer, Entry};
use relais::ids::Role;

use crate::common::*;

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
