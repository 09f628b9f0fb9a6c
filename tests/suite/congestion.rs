//! Congestion control end to end (`relais::sfu::congestion`), with webrtc-rs client peers:
//! relais numbers what it sends each subscriber, reads its transport-cc feedback (or REMB), and
//! caps the publisher (REMB) to what its weakest subscriber can take.

use std::sync::atomic::Ordering;
use std::time::Duration;

use relais::ids::Role;
use relais_load::client::peer::{ClientPeer, Entry};

use crate::common::*;

async fn one_to_one(
    app: &TestApp,
    patients: &[(i64, Option<u32>)],
) -> (i64, ClientPeer, Vec<ClientPeer>) {
    let ids: Vec<i64> = patients.iter().map(|(id, _)| *id).collect();
    let (session, conv, code) = create_session(app, 79, &ids, "audio_video").await;
    let mut cfg = peer_config(app, Role::Medecin, 79, session, Entry::Publish);
    cfg.conversation_id = conv;
    cfg.video_bitrate_bps = 800_000;
    let mut doctor = ClientPeer::start(cfg).await.unwrap();
    doctor
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("doctor connects");
    let mut ps = Vec::new();
    for (id, remb) in patients {
        let mut cfg = peer_config(app, Role::Patient, *id, session, Entry::Code(code.clone()));
        cfg.remb_bps = *remb;
        let mut p = ClientPeer::start(cfg).await.unwrap();
        p.wait_connected(Duration::from_secs(10))
            .await
            .expect("patient connects");
        ps.push(p);
    }
    (session, doctor, ps)
}

/// The subscriber's transport-cc feedback names the numbers relais wrote: feedback arrives,
/// almost none of it is about numbers relais does not know, and on loopback nothing is capped
/// (no REMB to the doctor, no share in the statistics).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriber_feedback_names_what_relais_numbered_and_an_ample_link_is_not_capped() {
    let app = spawn_app(Backend::Sqlite).await;
    let (session, doctor, patients) = one_to_one(&app, &[(11, None)]).await;
    let patient = &patients[0];
    assert!(
        eventually(Duration::from_secs(15), || patient
            .received
            .streams_with(100)
            == (1, 1))
        .await
    );
    let mut received = 0.0;
    for _ in 0..50 {
        received = app.metric("relais_twcc_feedback_received_total").await;
        if received >= 20.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ignored = app.metric("relais_twcc_feedback_ignored_total").await;
    assert!(
        received >= 20.0,
        "transport-cc feedback from the subscriber: {received}"
    );
    assert!(
        ignored <= received * 0.1,
        "feedback about unknown numbers: {ignored} of {received}"
    );
    assert_eq!(app.metric("relais_bwe_decreases_total").await, 0.0);
    assert_eq!(app.metric("relais_remb_sent_total").await, 0.0);
    assert_eq!(doctor.sent.rembs_received.load(Ordering::Relaxed), 0);
    for p in session_stats(&app, 79, session).await {
        for t in p["tracks"].as_array().unwrap() {
            assert!(t.get("available_bps").is_none(), "{t}");
            assert!(t.get("subscriber_cap_bps").is_none(), "{t}");
            // The round trip, from the client's reports on relais's Sender Reports (loopback).
            if t["direction"] == "outbound" {
                let rtt = t["round_trip_ms"].as_f64();
                assert!(rtt.is_some_and(|r| r < 100.0), "{t}");
            }
        }
    }
}

/// A subscriber whose link takes 300 kbit/s (it says so by REMB, as a client without
/// transport-cc does): the doctor is asked for no more than that (its audio included), the
/// statistics show the share and the cap; when that subscriber leaves, the cap is lifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_publisher_is_capped_to_its_weakest_subscriber_and_released_when_it_leaves() {
    let app = spawn_app(Backend::Sqlite).await;
    let (session, doctor, mut patients) =
        one_to_one(&app, &[(11, None), (12, Some(300_000))]).await;
    let rembs = |d: &ClientPeer| d.sent.rembs_received.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(15), || rembs(&doctor) >= 2).await,
        "the doctor got no REMB"
    );
    let capped = doctor.sent.remb_bps.load(Ordering::Relaxed);
    // The weak subscriber receives audio and video from the doctor only (the other patient
    // sends too): its 300 kbit/s less the audio of the two others, for the doctor's video,
    // plus the doctor's own audio.
    assert!(
        (100_000..=300_000).contains(&capped),
        "the doctor was asked for {capped} bit/s"
    );
    let parts = session_stats(&app, 79, session).await;
    let tracks_of = |role: &str, id: i64| -> Vec<serde_json::Value> {
        parts
            .iter()
            .find(|p| p["participant"]["userType"] == role && p["participant"]["userId"] == id)
            .map(|p| p["tracks"].as_array().unwrap().clone())
            .unwrap_or_default()
    };
    let doctor_video_in = tracks_of("medecin", 79)
        .into_iter()
        .find(|t| t["direction"] == "inbound" && t["kind"] == "video")
        .unwrap();
    assert!(
        doctor_video_in["subscriber_cap_bps"].as_u64().is_some(),
        "{doctor_video_in}"
    );
    let weak_video_out: Vec<_> = tracks_of("patient", 12)
        .into_iter()
        .filter(|t| t["direction"] == "outbound" && t["kind"] == "video")
        .collect();
    assert!(
        weak_video_out
            .iter()
            .all(|t| t["available_bps"].as_u64().is_some_and(|b| b <= 300_000)),
        "{weak_video_out:?}"
    );
    // The strong patient is not capped by anyone.
    assert!(
        tracks_of("patient", 11)
            .iter()
            .all(|t| t.get("available_bps").is_none()),
        "{parts:?}"
    );

    // Its video is paced to its link: the synthetic publishers do not slow down (a browser
    // would), so the pacer drops what waited too long; its audio is not paced, and all of it
    // arrives.
    let weak = patients.last().unwrap();
    let audio = |p: &ClientPeer| -> u64 {
        p.received
            .snapshot()
            .values()
            .filter(|s| !s.video)
            .map(|s| s.packets)
            .sum()
    };
    let before = audio(weak);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let heard = audio(weak) - before;
    // Two audio streams (the doctor's, the other patient's) at 50 packets a second.
    assert!(heard >= 180, "audio packets in 2 s: {heard}");
    assert!(app.metric("relais_pacer_dropped_total").await > 0.0);

    // The weak subscriber leaves: one REMB lifts the cap.
    let weak = patients.pop().unwrap();
    weak.close().await;
    assert!(
        eventually(Duration::from_secs(10), || doctor
            .sent
            .remb_bps
            .load(Ordering::Relaxed)
            >= 10_000_000)
        .await,
        "the cap was not lifted: {}",
        doctor.sent.remb_bps.load(Ordering::Relaxed)
    );
}
