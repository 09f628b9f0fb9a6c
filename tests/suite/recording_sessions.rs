//! Recording control and access through the real server, with webrtc-rs client peers (their
//! synthetic video is recorded but does not decode; real media is checked with aiortc and
//! ffprobe in `recording_media`): start and stop over REST and Socket.IO, who may
//! do it, events to every participant, late joiners, departures, session end, shutdown,
//! listing and downloading (Range), retention.

use std::time::Duration;

use relais::clock::ManualClock;
use relais::ids::Role;
use relais_load::client::peer::{ClientPeer, Entry};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::common::*;

struct Call {
    session: i64,
    code: String,
    doctor: ClientPeer,
}

/// A consultation with the doctor (79) connected and publishing.
async fn doctor_call(app: &TestApp) -> Call {
    let (session, conversation, code) = create_session(app, 79, &[11], "audio_video").await;
    let mut cfg = peer_config(app, Role::Medecin, 79, session, Entry::Publish);
    cfg.conversation_id = conversation;
    let mut doctor = ClientPeer::start(cfg).await.unwrap();
    doctor
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("doctor connects");
    Call {
        session,
        code,
        doctor,
    }
}

async fn patient_joins(app: &TestApp, call: &Call, id: i64) -> ClientPeer {
    let mut patient = ClientPeer::start(peer_config(
        app,
        Role::Patient,
        id,
        call.session,
        Entry::Code(call.code.clone()),
    ))
    .await
    .unwrap();
    patient
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("patient connects");
    patient
}

fn recording_path(session: i64) -> String {
    format!("/api/messaging/webrtc/sessions/{session}/recording")
}

fn list_path(session: i64) -> String {
    format!("/api/messaging/webrtc/sessions/{session}/recordings")
}

async fn rows(app: &TestApp, session: i64) -> Vec<Value> {
    let (status, v) = app
        .doctor(79)
        .call(Method::GET, &list_path(session), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    v["data"]["recordings"].as_array().unwrap().clone()
}

fn code_of(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn doctor_records_over_rest_and_everyone_is_told() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut call = doctor_call(&app).await;
    let mut patient = patient_joins(&app, &call, 11).await;
    let doctor_api = app.doctor(79);
    let path = recording_path(call.session);

    // Who may start, and with what.
    let (status, v) = app
        .patient(11)
        .call(Method::POST, &path, Some(&json!({"consent": true})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["success"], false);
    let (status, v) = app
        .doctor(80)
        .call(Method::POST, &path, Some(&json!({"consent": true})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "another doctor: {v}");
    for body in [
        json!({}),
        json!({"consent": false}),
        json!({"consent": null}),
    ] {
        let (status, v) = doctor_api
            .call(Method::POST, &path, Some(&body))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(code_of(&v), "consent_required", "{v}");
    }
    let (status, v) = doctor_api
        .call(Method::POST, &path, Some(&json!({"consent": "yes"})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = doctor_api
        .call(
            Method::POST,
            &recording_path(987_654),
            Some(&json!({"consent": true})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v) = doctor_api.call(Method::DELETE, &path, None).await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(code_of(&v), "not_recording");

    // Start: both participants are told, both are recorded.
    let (status, v) = doctor_api
        .call(Method::POST, &path, Some(&json!({"consent": true})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "success");
    let rec = &v["data"]["recording"];
    assert_eq!(rec["active"], true);
    assert_eq!(
        rec["consent"]["confirmed_by"],
        json!({"userId": 79, "userType": "medecin"})
    );
    assert_eq!(rec["recordings"].as_array().unwrap().len(), 2, "{v}");
    for peer in [&mut call.doctor, &mut patient] {
        let e = peer
            .wait_event("recording_started", WAIT)
            .await
            .expect("recording_started");
        assert_eq!(e["sessionId"], call.session, "{e}");
        assert_eq!(e["startedBy"], json!({"userId": 79, "userType": "medecin"}));
        assert!(e["startedAt"].as_str().unwrap().ends_with('Z'), "{e}");
    }
    let (status, v) = doctor_api
        .call(Method::POST, &path, Some(&json!({"consent": true})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(code_of(&v), "already_recording");
    let listed = rows(&app, call.session).await;
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|r| r["status"] == "recording"),
        "{listed:?}"
    );
    // Nobody downloads a file still being written.
    let (status, _) = doctor_api
        .call(Method::GET, listed[0]["url"].as_str().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT);
    let m = app.metrics().await;
    assert_eq!(metric_value(&m, "relais_recordings_active"), 2.0, "{m}");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, v) = app
        .patient(11)
        .call(Method::DELETE, &path, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    // Stop (the POST …/recording/stop form): files are finished before the answer.
    let (status, v) = doctor_api
        .call(Method::POST, &format!("{path}/stop"), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    let closed = v["data"]["recordings"].as_array().unwrap();
    assert_eq!(closed.len(), 2, "{v}");
    let mut who: Vec<String> = Vec::new();
    for r in closed {
        assert_eq!(r["status"], "finished", "{r}");
        assert_eq!(r["end_reason"], "stopped_by_doctor", "{r}");
        assert!(r["duration_ms"].as_i64().unwrap() > 1000, "{r}");
        assert!(r["size_bytes"].as_i64().unwrap() > 1000, "{r}");
        assert!(
            r["content_type"].as_str().unwrap().ends_with("/webm"),
            "{r}"
        );
        assert_eq!(
            r["consent"]["confirmed_by"],
            json!({"userId": 79, "userType": "medecin"})
        );
        who.push(format!(
            "{}:{}",
            r["participant"]["role"].as_str().unwrap(),
            r["participant"]["id"]
        ));
    }
    who.sort();
    assert_eq!(who, ["medecin:79", "patient:11"]);
    for peer in [&mut call.doctor, &mut patient] {
        let e = peer.wait_event("recording_stopped", WAIT).await.unwrap();
        assert_eq!(e["reason"], "stopped_by_doctor", "{e}");
    }
    let (status, v) = doctor_api.call(Method::DELETE, &path, None).await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{v}");

    // Files: one per participant, under media/recordings/{session}/, named by the server.
    let dir = app.config.recordings_dir().join(call.session.to_string());
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 2, "{dir:?}");
    let m = app.metrics().await;
    assert_eq!(metric_value(&m, "relais_recordings_active"), 0.0, "{m}");
    assert_eq!(
        metric_value(&m, "relais_recordings_closed_total{status=\"finished\"}"),
        2.0,
        "{m}"
    );

    // The session ended: no more recording.
    let (status, _) = doctor_api
        .call(
            Method::POST,
            &format!("/api/messaging/webrtc/sessions/{}/end", call.session),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let (status, v) = doctor_api
        .call(Method::POST, &path, Some(&json!({"consent": true})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(code_of(&v), "session_ended");
    patient.close().await;
    call.doctor.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nobody_connected_means_nothing_to_record() {
    let app = spawn_app(Backend::Sqlite).await;
    let (session, _, _) = create_session(&app, 79, &[11], "audio_video").await;
    let (status, v) = app
        .doctor(79)
        .call(
            Method::POST,
            &recording_path(session),
            Some(&json!({"consent": true})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(code_of(&v), "session_not_live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn socket_events_start_and_stop_recording() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut call = doctor_call(&app).await;
    let mut patient = patient_joins(&app, &call, 11).await;
    let s = call.session;

    // Failures come back in the ack and as webrtc_error {sessionId, code, message}.
    let ack = call
        .doctor
        .emit("start_recording", json!({"sessionId": s}))
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "consent_required", "{ack}");
    let e = call.doctor.wait_event("webrtc_error", WAIT).await.unwrap();
    assert_eq!(e["code"], "consent_required");
    assert_eq!(e["sessionId"], s);
    let ack = patient
        .emit("start_recording", json!({"sessionId": s, "consent": true}))
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "forbidden", "{ack}");
    let e = patient.wait_event("webrtc_error", WAIT).await.unwrap();
    assert_eq!(e["code"], "forbidden");
    let ack = call
        .doctor
        .emit("stop_recording", json!({"sessionId": s}))
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "not_recording", "{ack}");

    let ack = call
        .doctor
        .emit(
            "start_recording",
            json!({"sessionId": s.to_string(), "consent": true}),
        )
        .await
        .unwrap();
    let data = ack_ok(&ack);
    assert_eq!(data["sessionId"], s);
    assert_eq!(data["recordings"].as_array().unwrap().len(), 2, "{ack}");
    patient
        .wait_event("recording_started", WAIT)
        .await
        .expect("the patient is told");
    let ack = call
        .doctor
        .emit("start_recording", json!({"sessionId": s, "consent": true}))
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "already_recording", "{ack}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ack = patient
        .emit("stop_recording", json!({"sessionId": s}))
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "forbidden", "{ack}");
    let ack = call
        .doctor
        .emit("stop_recording", json!({"sessionId": s}))
        .await
        .unwrap();
    let data = ack_ok(&ack);
    assert_eq!(data["recordings"].as_array().unwrap().len(), 2, "{ack}");
    let e = patient.wait_event("recording_stopped", WAIT).await.unwrap();
    assert_eq!(e["reason"], "stopped_by_doctor");
    patient.close().await;
    call.doctor.close().await;
}

/// A participant joining while recording is on is told on entering and recorded; one who
/// leaves has their file finished while the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_joiners_are_recorded_and_leavers_finished() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut call = doctor_call(&app).await;
    let (status, v) = app
        .doctor(79)
        .call(
            Method::POST,
            &recording_path(call.session),
            Some(&json!({"consent": true})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["data"]["recording"]["recordings"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    call.doctor
        .wait_event("recording_started", WAIT)
        .await
        .unwrap();

    let mut patient = patient_joins(&app, &call, 11).await;
    let e = patient
        .wait_event("recording_started", WAIT)
        .await
        .expect("a newcomer hears the consultation is recorded");
    assert_eq!(e["sessionId"], call.session);
    let mut two = Vec::new();
    for _ in 0..50 {
        two = rows(&app, call.session).await;
        if two.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        two.len(),
        2,
        "the patient is recorded once publishing: {two:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The patient leaves: their file is finished, the doctor's goes on.
    patient.leave().await.unwrap();
    let mut finished = false;
    for _ in 0..50 {
        let now = rows(&app, call.session).await;
        let p = now.iter().find(|r| r["participant"]["role"] == "patient");
        let d = now.iter().find(|r| r["participant"]["role"] == "medecin");
        if p.is_some_and(|p| p["status"] != "recording") {
            assert_eq!(d.unwrap()["status"], "recording");
            assert_eq!(p.unwrap()["end_reason"], "participant_left", "{now:?}");
            finished = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(finished, "the patient's file is finished when they leave");

    // Ending the session finishes the rest and tells who is left.
    let (status, _) = app
        .doctor(79)
        .call(
            Method::POST,
            &format!("/api/messaging/webrtc/sessions/{}/end", call.session),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let e = call
        .doctor
        .wait_event("recording_stopped", WAIT)
        .await
        .unwrap();
    assert_eq!(e["reason"], "session_ended");
    let mut closed = false;
    for _ in 0..50 {
        let now = rows(&app, call.session).await;
        if now.iter().all(|r| r["status"] != "recording") {
            let d = now
                .iter()
                .find(|r| r["participant"]["role"] == "medecin")
                .unwrap();
            assert_eq!(d["end_reason"], "session_ended", "{now:?}");
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed);
    patient.close().await;
    call.doctor.close().await;
}

/// Listing and downloading: the session's doctor only; Range requests for seeking.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_sessions_doctor_lists_and_downloads_with_ranges() {
    let app = spawn_app(Backend::Sqlite).await;
    let call = doctor_call(&app).await;
    let patient = patient_joins(&app, &call, 11).await;
    let doctor_api = app.doctor(79);
    let path = recording_path(call.session);
    doctor_api
        .call_ok(Method::POST, &path, Some(&json!({"consent": true})))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = doctor_api
        .call_ok(Method::DELETE, &path, None)
        .await
        .unwrap();
    let recs = v["data"]["recordings"].as_array().unwrap().clone();
    assert_eq!(recs.len(), 2);
    let rec = &recs[0];
    let url = rec["url"].as_str().unwrap().to_string();
    let size = rec["size_bytes"].as_u64().unwrap();
    assert!(
        url.starts_with("/api/messaging/webrtc/recordings/"),
        "{url}"
    );

    // Listing: the doctor sees both; the patient (a member) is refused, another doctor and
    // strangers do not even see the session.
    assert_eq!(rows(&app, call.session).await.len(), 2);
    let list = list_path(call.session);
    let (status, v) = app
        .patient(11)
        .call(Method::GET, &list, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, v) = app.doctor(80).call(Method::GET, &list, None).await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v) = app
        .patient(12)
        .call(Method::GET, &list, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, _) = doctor_api
        .call(Method::GET, &list_path(987_654), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .http
        .get(format!("{}{list}", app.base))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Download: the whole file, with its type and a file name.
    let r = doctor_api.request(Method::GET, &url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(ct, rec["content_type"].as_str().unwrap());
    assert!(
        r.headers()[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"consultation-"),
        "{:?}",
        r.headers()
    );
    assert_eq!(r.headers()[header::ACCEPT_RANGES], "bytes");
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len() as u64, size);
    assert_eq!(&body[..4], &[0x1A, 0x45, 0xDF, 0xA3], "an EBML file");

    // Ranges: a slice (206), the tail, and past the end (416).
    let r = doctor_api
        .request(Method::GET, &url)
        .header(header::RANGE, "bytes=100-1099")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()[header::CONTENT_RANGE],
        format!("bytes 100-1099/{size}").as_str()
    );
    assert_eq!(r.headers()[header::CONTENT_TYPE].to_str().unwrap(), ct);
    let part = r.bytes().await.unwrap();
    assert_eq!(&part[..], &body[100..1100]);
    let r = doctor_api
        .request(Method::GET, &url)
        .header(header::RANGE, "bytes=-500")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.bytes().await.unwrap()[..], &body[body.len() - 500..]);
    let r = doctor_api
        .request(Method::GET, &url)
        .header(header::RANGE, format!("bytes={}-", size + 10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        r.headers()[header::CONTENT_RANGE],
        format!("bytes */{size}").as_str()
    );

    // Nobody else downloads: the patient (403), another doctor, a stranger, unknown ids (404).
    let (status, v) = app.patient(11).call(Method::GET, &url, None).await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    for (client, who) in [
        (app.doctor(80), "doctor 80"),
        (app.patient(12), "patient 12"),
    ] {
        let (status, v) = client.call(Method::GET, &url, None).await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{who}: {v}");
        assert_eq!(code_of(&v), "recording_not_found", "{v}");
    }
    for bad in [
        "/api/messaging/webrtc/recordings/00000000-0000-4000-8000-000000000000",
        "/api/messaging/webrtc/recordings/not-a-uuid",
        "/api/messaging/webrtc/recordings/..%2F..%2Fdata%2Frelais.db",
    ] {
        let (status, v) = doctor_api.call(Method::GET, bad, None).await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}: {v}");
    }
    patient.close().await;
    call.doctor.close().await;
}

/// `recording.retention_days`: recordings (rows and files) older than that go; newer stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_deletes_old_recordings() {
    let clock = ManualClock::new(relais::clock::Clock::now_ms(&relais::clock::SystemClock));
    let app = spawn_app_with(Options {
        clock: Some(clock.clone()),
        ..Options::new(Backend::Sqlite).configure(|c| c.recording.retention_days = 7)
    })
    .await;
    let call = doctor_call(&app).await;
    let doctor_api = app.doctor(79);
    let path = recording_path(call.session);
    let record = async || {
        doctor_api
            .call_ok(Method::POST, &path, Some(&json!({"consent": true})))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        doctor_api
            .call_ok(Method::DELETE, &path, None)
            .await
            .unwrap()
    };
    let old = record().await["data"]["recordings"][0].clone();
    clock.advance(5 * 86_400_000);
    let recent = record().await["data"]["recordings"][0].clone();
    let dir = app.config.recordings_dir().join(call.session.to_string());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);

    // Six days after the first: nothing is older than seven days yet.
    clock.advance(86_400_000);
    assert_eq!(app.state().recordings.purge_expired().await.unwrap(), 0);
    // Eight days after the first, three after the second.
    clock.advance(2 * 86_400_000);
    assert_eq!(app.state().recordings.purge_expired().await.unwrap(), 1);
    let left = rows(&app, call.session).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], recent["id"]);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    let (status, _) = doctor_api
        .call(Method::GET, old["url"].as_str().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let m = app.metrics().await;
    assert_eq!(metric_value(&m, "relais_recordings_expired_total"), 1.0);
    call.doctor.close().await;
}

/// A graceful shutdown finishes every file and closes its row before the database goes; the
/// next start has nothing to repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_finishes_recordings() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let call = doctor_call(&app).await;
    app.doctor(79)
        .call_ok(
            Method::POST,
            &recording_path(call.session),
            Some(&json!({"consent": true})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    app.stop().await;
    call.doctor.close().await;
    app.start().await;
    let r = rows(&app, call.session).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["status"], "finished", "{r:?}");
    assert_eq!(r[0]["end_reason"], "server_shutdown", "{r:?}");
    assert!(r[0]["duration_ms"].as_i64().unwrap() > 500, "{r:?}");
}
