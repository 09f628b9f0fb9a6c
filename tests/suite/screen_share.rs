//! Screen sharing mid-call, with aiortc (an independent stack) as both sides: the doctor adds a
//! second video track in a stream of its own while the consultation is recorded, then stops it.
//! The patient's stack must decode the screen beside the camera, see it stop, and keep the
//! camera; the recording must hold the screen in a file of its own, finished when the share
//! stopped. (The browser client's *Partager l'écran* is driven in Chromium by
//! `tests/e2e/consultation.mjs`.)

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use relais::ids::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Width and height of the first video stream of `file` (ffprobe).
fn video_size(file: &Path) -> (u64, u64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["stream=width,height", "-of", "json"])
        .arg(file)
        .output()
        .expect("ffprobe");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let s = &v["streams"][0];
    (
        s["width"].as_u64().unwrap_or(0),
        s["height"].as_u64().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_shared_mid_call_is_seen_recorded_apart_and_removed_everywhere() {
    crate::probe::require_ffmpeg();
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "aiortc is not installed: run scripts/prepare/30-python-aiortc.sh (.ci/run does)"
    );
    let app = spawn_app(Backend::Sqlite).await;
    let (session, conv, code) = create_session(&app, 79, &[11], "audio_video").await;
    let doctor = app.token(Role::Medecin, 79);
    let role = |side: &str, token: String, id: i64, kind: &str| {
        json!({"cell": "screen", "side": side, "token": token, "userId": id, "userType": kind,
               "sessionId": session, "conversationId": conv, "code": code,
               "layout": ["audio", "video"], "seconds": 13.0, "linger": 2.0, "expectTracks": 2})
    };
    let mut doctor_role = role("doctor", doctor.clone(), 79, "medecin");
    doctor_role["share"] = json!({"at": 3.0, "until": 9.0});
    let patient_role = role("patient", app.token(Role::Patient, 11), 11, "patient");
    let job = json!({"base": app.base, "roles": [doctor_role, patient_role]});
    let dir = tempfile::tempdir().unwrap();
    let job_path = dir.path().join("job.json");
    std::fs::write(&job_path, job.to_string()).unwrap();
    let agent = tokio::process::Command::new(&python)
        .arg(root().join("tests/py/interop_agent.py"))
        .arg(&job_path)
        .kill_on_drop(true)
        .output();
    let agent = tokio::spawn(agent);

    // Recording on once both are connected (before the share starts).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = app.metrics().await;
        if metric_value(&m, "relais_peer_connections") >= 2.0
            && metric_value(&m, "relais_tracks") >= 4.0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "both sides publish: {m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let path = format!("/api/messaging/webrtc/sessions/{session}/recording");
    let api = relais_load::client::api::ApiClient::new(reqwest::Client::new(), &app.base, &doctor);
    let (status, v) = api
        .call(Method::POST, &path, Some(&json!({"consent": true})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // The share runs from 3 to 9 s after connecting; recording stops after it, the call goes on.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (status, v) = api.call(Method::DELETE, &path, None).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");

    let out = tokio::time::timeout(Duration::from_secs(90), agent)
        .await
        .expect("the agent ends")
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let results: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let side = |name: &str| {
        results
            .iter()
            .find(|r| r["side"] == name)
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "no {name} result: {stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
    };
    let (d, p) = (side("doctor"), side("patient"));
    assert_eq!(d["ok"], true, "{d}");
    assert_eq!(p["ok"], true, "{p}");
    assert_eq!(
        d["notes"],
        json!(["screen shared", "screen share stopped"]),
        "{d}"
    );
    assert_eq!(d["errors"], json!([]), "{d}");
    assert_eq!(p["errors"], json!([]), "{p}");

    // The patient decoded the screen (480x270) beside the camera (320x240); the screen stopped
    // (nothing for seconds before the report) while the camera went on.
    let videos: Vec<&Value> = p["received"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "video")
        .collect();
    let screen = videos
        .iter()
        .find(|r| r["width"] == 480)
        .unwrap_or_else(|| panic!("no screen decoded: {p}"));
    let camera = videos
        .iter()
        .find(|r| r["width"] == 320)
        .unwrap_or_else(|| panic!("no camera decoded: {p}"));
    assert!(screen["frames"].as_u64().unwrap() >= 40, "{p}");
    assert!(
        screen["sinceLastFrame"].as_f64().unwrap() >= 2.0,
        "the screen stopped for the patient too: {p}"
    );
    assert!(camera["sinceLastFrame"].as_f64().unwrap() < 1.0, "{p}");
    assert!(camera["tailFrames"].as_u64().unwrap() >= 10, "{p}");

    // The recording: the doctor's camera and microphone, the doctor's screen (its own file,
    // finished when the share stopped), the patient.
    let list = format!("/api/messaging/webrtc/sessions/{session}/recordings");
    let (_, v) = api.call(Method::GET, &list, None).await.unwrap();
    let rows = v["data"]["recordings"].as_array().unwrap().clone();
    let mut streams: Vec<&str> = rows.iter().map(|r| r["stream"].as_str().unwrap()).collect();
    streams.sort();
    assert_eq!(
        streams,
        vec!["medecin-79", "medecin-79.2", "patient-11"],
        "{v}"
    );
    let screen_row = rows.iter().find(|r| r["stream"] == "medecin-79.2").unwrap();
    assert_eq!(screen_row["status"], "finished", "{screen_row}");
    assert_eq!(screen_row["end_reason"], "stream_ended", "{screen_row}");
    let file = app
        .config
        .recordings_dir()
        .join(session.to_string())
        .read_dir()
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|f| {
            f.to_string_lossy()
                .contains(screen_row["id"].as_str().unwrap())
        })
        .expect("the screen's file");
    assert!(
        file.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("medecin-79.2-"),
        "{file:?}"
    );
    let probe = crate::probe::probe(&file);
    let errors = crate::probe::decode_errors(&file);
    assert!(errors.trim().is_empty(), "{errors}");
    assert_eq!(probe.stream("video").codec_name, "vp8", "{probe:#?}");
    assert!(
        probe.streams.iter().all(|s| s.codec_type != "audio"),
        "{probe:#?}"
    );
    assert!(
        (3.0..=7.5).contains(&probe.duration),
        "about the 6 s shared: {probe:#?}"
    );
    assert_eq!(video_size(&file), (480, 270));
}
