//! aiortc (an independent WebRTC implementation, from PyPI) as doctor and patient through the
//! server: decoded video and audio frames counted on both sides. `.ci/run` prepares the venv
//! (scripts/prepare/30-python-aiortc.sh).

use relais::ids::Role;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_doctor_and_patient_decode_each_others_media() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "aiortc is not installed: run scripts/prepare/30-python-aiortc.sh (.ci/run does)"
    );
    let app = spawn_app(Backend::Sqlite).await;
    let (session, conv, code) = create_session(&app, 79, &[11], "audio_video").await;
    let out = tokio::process::Command::new(python)
        .arg(root.join("tests/py/aiortc_consultation.py"))
        .env("BASE", &app.base)
        .env("DOCTOR_TOKEN", app.token(Role::Medecin, 79))
        .env("PATIENT_TOKEN", app.token(Role::Patient, 11))
        .env("DOCTOR_ID", "79")
        .env("PATIENT_ID", "11")
        .env("SESSION_ID", session.to_string())
        .env("CONVERSATION_ID", conv.to_string())
        .env("CODE", &code)
        .env("SECONDS", "6")
        .envs(std::env::var("AIORTC_LOG").map(|v| ("AIORTC_LOG", v)))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or("");
    let report: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|_| panic!("no report: {stdout}\n{stderr}"));
    if std::env::var_os("AIORTC_LOG").is_some() {
        eprintln!("{stderr}\n{}", app.metrics().await);
    }
    assert_eq!(report["ok"], true, "{report}\n{stderr}");
    for side in ["doctor", "patient"] {
        let frames = &report[side]["frames"];
        let video = frames["video"].as_u64().unwrap();
        let audio = frames["audio"].as_u64().unwrap();
        // 6 s at 30 fps and 50 audio frames/s: most of them decoded.
        assert!(video >= 60, "{side} decoded {video} video frames: {report}");
        assert!(
            audio >= 100,
            "{side} decoded {audio} audio frames: {report}"
        );
        assert_eq!(
            report[side]["video_size"],
            serde_json::json!([640, 480]),
            "{report}"
        );
        assert_eq!(report[side]["errors"], serde_json::json!([]), "{report}");
    }
}

/// A group of four, every participant aiortc with its defaults (a doctor and three patients
/// joining by code): each decodes the three others' audio and video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_group_of_four_with_defaults_each_decodes_the_three_others() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "aiortc is not installed: run scripts/prepare/30-python-aiortc.sh (.ci/run does)"
    );
    let app = spawn_app(Backend::Sqlite).await;
    let patients = [11, 12, 13];
    let (session, conv, code) = create_session(&app, 79, &patients, "audio_video").await;
    let mut people = vec![(Role::Medecin, 79)];
    people.extend(patients.iter().map(|p| (Role::Patient, *p)));
    let roles: Vec<serde_json::Value> = people
        .iter()
        .enumerate()
        .map(|(i, (role, id))| {
            serde_json::json!({
                "cell": format!("p{i}"), "side": if *role == Role::Medecin { "doctor" } else { "patient" },
                "token": app.token(*role, *id), "userId": id, "userType": role.as_str(),
                "sessionId": session, "conversationId": conv, "code": code,
                "layout": ["audio", "video"], "seconds": 5.0, "linger": 3.0,
                "expectTracks": 6, "delay": i as f64 * 0.7,
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.json");
    std::fs::write(
        &job,
        serde_json::json!({"base": app.base, "roles": roles}).to_string(),
    )
    .unwrap();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::process::Command::new(&python)
            .arg(root.join("tests/py/interop_agent.py"))
            .arg(&job)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the agent ends")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let results: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(
        results.len(),
        4,
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for r in &results {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["errors"], serde_json::json!([]), "{r}");
        let me = people[r["cell"].as_str().unwrap()[1..].parse::<usize>().unwrap()];
        for (role, id) in people.iter().filter(|p| **p != me) {
            let owner = format!("{}-{id}", role.as_str());
            for (kind, min) in [("audio", 80), ("video", 25)] {
                let got = r["received"].as_array().unwrap().iter().find(|t| {
                    t["kind"] == kind
                        && t["id"]
                            .as_str()
                            .unwrap_or("")
                            .starts_with(&format!("{owner}-"))
                });
                let frames = got.and_then(|t| t["frames"].as_u64()).unwrap_or(0);
                assert!(
                    frames >= min,
                    "{me:?} decoded {frames} {kind} frames from {owner}: {r}"
                );
            }
        }
    }
}
