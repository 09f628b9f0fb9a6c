//! The `relais` binary: token minting, configuration errors, migrate, RS256, SIGTERM.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

fn relais() -> Command {
    relais_command()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_token_is_accepted_by_the_server() {
    let app =
        spawn_app_with(Options::new(Backend::Sqlite).configure(|c| c.auth.jwt_secret = None)).await;
    let out = relais()
        .args([
            "token", "--role", "medecin", "--id", "42", "--ttl", "10m", "--name", "Dr. Test",
        ])
        .arg("--data-dir")
        .arg(&app.config.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let client = relais_load::client::api::ApiClient::new(app.http.clone(), &app.base, &token);
    let id = client
        .create_conversation("private", &[("patient", 1)])
        .await
        .unwrap();
    let m = client.send_text(id, "x").await.unwrap();
    assert_eq!(m["sender"]["nom"], "Dr. Test");
    assert_eq!(m["expediteur_id"], 42);
}

#[test]
fn configuration_errors_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    // (environment, arguments, the setting the error must name)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (vec![("RELAIS_HTTP_ADDR", "nowhere")], vec![], "http.addr"),
        (vec![], vec!["--set", "http.bogus=1"], "http.bogus"),
        (
            vec![("RELAIS_JWT_SECRET", "short")],
            vec![],
            "auth.jwt_secret",
        ),
        (
            vec![("RELAIS_HTTPS_ENABLED", "perhaps")],
            vec![],
            "https.enabled",
        ),
    ];
    for (env, args, key) in cases {
        let mut cmd = relais();
        cmd.current_dir(dir.path()).args(&args).arg("serve");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key}: {err}");
    }
    let file = dir.path().join("relais.toml");
    std::fs::write(&file, "[http]\naddr = \"127.0.0.1:0\"\nunknown_key = 1\n").unwrap();
    let out = relais()
        .current_dir(dir.path())
        .arg("--config")
        .arg(&file)
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_key"));
}

#[test]
fn migrate_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = relais()
        .current_dir(dir.path())
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("data/relais.db").exists());
    // Twice is fine.
    let out = relais()
        .current_dir(dir.path())
        .arg("migrate")
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn audit_verify_on_a_fresh_database() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        relais()
            .current_dir(dir.path())
            .arg("migrate")
            .output()
            .unwrap()
            .status
            .success()
    );
    let out = relais()
        .current_dir(dir.path())
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "audit trail OK: 0 records"
    );
}

fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_with_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), &[]);
    let base = server.base.clone();
    let token = relais()
        .current_dir(dir.path())
        .args(["token", "--role", "patient", "--id", "3"])
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    // A connected socket does not hold the shutdown back.
    let sock = relais_load::client::socketio::SioClient::connect(&base, json!({"token": token}))
        .await
        .unwrap();
    let resp = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    sigterm(&server.child);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "server did not stop within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
    drop(sock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_with_a_public_key() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let public = fixtures.join("rs256-test-public.pem");
    let private = std::fs::read(fixtures.join("rs256-test-private.pem")).unwrap();
    let app = spawn_app_with(Options::new(Backend::Sqlite).configure(move |c| {
        c.auth.jwt_secret = None;
        c.auth.jwt_public_key_file = Some(public);
        c.auth.issuer = Some("clinic-sso".into());
    }))
    .await;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&private).unwrap();
    let sign = |claims: serde_json::Value, alg| {
        jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key).unwrap()
    };
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let good = sign(
        json!({"userType": "medecin", "userId": 7, "exp": exp, "iss": "clinic-sso"}),
        jsonwebtoken::Algorithm::RS256,
    );
    let client = relais_load::client::api::ApiClient::new(app.http.clone(), &app.base, &good);
    let (status, v) = client
        .call(Method::GET, "/api/messaging/conversations", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    // Wrong issuer, and an HS256 token made with the public key as secret (algorithm confusion).
    let wrong_iss = sign(
        json!({"userType": "medecin", "userId": 7, "exp": exp, "iss": "other"}),
        jsonwebtoken::Algorithm::RS256,
    );
    let client = relais_load::client::api::ApiClient::new(app.http.clone(), &app.base, &wrong_iss);
    let (status, _) = client
        .call(Method::GET, "/api/messaging/conversations", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let pem = std::fs::read(fixtures.join("rs256-test-public.pem")).unwrap();
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"userType": "medecin", "userId": 7, "exp": exp, "iss": "clinic-sso"}),
        &jsonwebtoken::EncodingKey::from_secret(&pem),
    )
    .unwrap();
    let client = relais_load::client::api::ApiClient::new(app.http.clone(), &app.base, &confused);
    let (status, v) = client
        .call(Method::GET, "/api/messaging/conversations", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
}

/// The container health check (`HEALTHCHECK ... relais ready`): 0 while the server answers
/// `/readyz`, non-zero when nothing answers on `http.addr`.
#[test]
fn the_ready_command_says_whether_the_server_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), &[]);
    let addr = server.base.trim_start_matches("http://").to_string();
    let ready = |addr: &str| {
        relais()
            .args(["ready", "--http-addr", addr, "--timeout", "3s"])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = ready(&addr);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = server.child.kill();
    let _ = server.child.wait();
    let out = ready(&addr);
    assert!(!out.status.success(), "nothing listens on {addr} any more");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("readyz"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
