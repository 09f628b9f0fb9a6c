//! The official socket.io JavaScript client (socket.io-client@4, run by node) against relais,
//! over WebSocket and over HTTP long-polling. `.ci/run` installs it (`npm ci` in tests/js).

use std::process::Command;

use relais::ids::Role;

use crate::common::*;

fn js_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

async fn run_official_client(transport: &str) {
    let dir = js_dir();
    assert!(
        dir.join("node_modules/socket.io-client").exists(),
        "socket.io-client is not installed: run `npm ci` in tests/js (.ci/run does)"
    );
    let app = spawn_app(Backend::Sqlite).await;
    let conv = app
        .doctor(79)
        .create_conversation("private", &[("patient", 11)])
        .await
        .unwrap();
    let out = tokio::process::Command::from({
        let mut c = Command::new("node");
        c.current_dir(&dir)
            .arg("sio_check.mjs")
            .arg(transport)
            .env("BASE", &app.base)
            .env("DOCTOR_TOKEN", app.token(Role::Medecin, 79))
            .env("PATIENT_TOKEN", app.token(Role::Patient, 11))
            .env("PATIENT_ID", "11")
            .env("CONVERSATION_ID", conv.to_string());
        c
    })
    .output()
    .await
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{transport}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["usedTransport"], transport);
    assert_eq!(report["message"]["sender"]["type"], "medecin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_client_over_websocket() {
    run_official_client("websocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_client_over_polling() {
    run_official_client("polling").await;
}
