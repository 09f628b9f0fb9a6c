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
