//! The audit trail through the real server: each act wired today leaves one record with its
//! actor, address, action and target and nothing secret in it; only administrators read the
//! trail (filters, pages); `relais audit verify` names a record changed or deleted in the
//! database; appends from two `Audit`s on one PostgreSQL database stay one chain; message
//! retention deletes old messages and attachment files and records it.

use std::sync::Arc;
use std::time::Duration;

use relais::audit::{Action, Audit, Entry, Target, Verdict};
use relais::clock::{Clock, ManualClock, SystemClock};
use relais::ids::{Identity, Role, SessionId};
use relais::metrics::Metrics;
use relais::store::Store;
use relais_load::client::api::ApiClient;
use relais_load::client::peer::{ClientPeer, Entry as PeerEntry};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

/// The administrator of these tests (`auth.admins`).
const ADMIN: i64 = 900;
const DAY: i64 = 86_400_000;

const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0, 0, 0,
    1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89, 0, 0, 0, 0x0a, 0x49, 0x44, 0x41, 0x54,
    0x78, 0x9c, 0x63, 0, 1, 0, 0, 5, 0, 1, 0x0d, 0x0a, 0x2d, 0xb4, 0, 0, 0, 0, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

fn manual_clock() -> Arc<ManualClock> {
    ManualClock::new(SystemClock.now_ms())
}

async fn spawn(
    clock: Arc<ManualClock>,
    f: impl FnOnce(&mut relais::config::Config) + Send + 'static,
) -> TestApp {
    spawn_on(Backend::Sqlite, clock, f).await
}

async fn spawn_on(
    backend: Backend,
    clock: Arc<ManualClock>,
    f: impl FnOnce(&mut relais::config::Config) + Send + 'static,
) -> TestApp {
    spawn_app_with(Options {
        clock: Some(clock),
        ..Options::new(backend).configure(move |c| {
            c.auth.admins = vec![format!("medecin:{ADMIN}")];
            f(c);
        })
    })
    .await
}

/// `GET /api/messaging/audit?{query}` as the administrator: (records, next_before).
async fn trail_page(app: &TestApp, query: &str) -> (Vec<Value>, Value) {
    let v = app
        .doctor(ADMIN)
        .call_ok(Method::GET, &format!("/api/messaging/audit?{query}"), None)
        .await
        .unwrap();
    assert_eq!(v["success"], true, "{v}");
    (
        v["data"]["records"].as_array().unwrap().clone(),
        v["data"]["next_before"].clone(),
    )
}

async fn trail(app: &TestApp, query: &str) -> Vec<Value> {
    trail_page(app, query).await.0
}

/// The one record of `action` (fails when there are none or several).
async fn only(app: &TestApp, action: &str) -> Value {
    let r = trail(app, &format!("action={action}")).await;
    assert_eq!(r.len(), 1, "{action}: {r:?}");
    r[0].clone()
}

fn actor(r: &Value) -> Value {
    r["actor"].clone()
}

fn person(role: &str, id: i64) -> Value {
    json!({"role": role, "id": id})
}

async fn upload(client: &ApiClient, conv: i64, name: &str) -> String {
    let part = reqwest::multipart::Part::bytes(PNG.to_vec())
        .file_name(name.to_string())
        .mime_str("image/png")
        .unwrap();
    let resp = client
        .request(
            Method::POST,
            &format!("/api/messaging/conversations/{conv}/attachments"),
        )
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: Value = resp.json().await.unwrap();
    v["data"]["attachment"]["id"].as_str().unwrap().to_string()
}

async fn send_image(client: &ApiClient, conv: i64, attachment: &str, text: &str) -> Value {
    client
        .call_ok(
            Method::POST,
            &format!("/api/messaging/conversations/{conv}/messages"),
            Some(&json!({"contenu": text, "type_message": "image", "attachment_id": attachment})),
        )
        .await
        .unwrap()["data"]["message"]
        .clone()
}

async fn validate(app: &TestApp, patient: i64, session: i64, code: &str) -> Value {
    app.patient(patient)
        .call_ok(
            Method::POST,
            "/api/messaging/webrtc/validate-code",
            Some(&json!({"code": code, "sessionId": session})),
        )
        .await
        .unwrap()
}

/// Every act wired today, performed through the API, leaves its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_act_leaves_one_record_with_no_secret_in_it() {
    let clock = manual_clock();
    let app = spawn(clock.clone(), |c| c.recording.retention_days = 7).await;
    let secret_text = "résultats confidentiels du patient";

    // A consultation: session_created by its doctor, from loopback.
    let (session, conversation, code) = create_session(&app, 79, &[11], "audio_video").await;
    let r = only(&app, "session_created").await;
    assert_eq!(actor(&r), person("medecin", 79), "{r}");
    assert_eq!(r["ip"], "127.0.0.1", "{r}");
    assert_eq!(
        r["target"],
        json!({"kind": "session", "id": session.to_string(), "session_id": session, "conversation_id": null}),
        "{r}"
    );
    assert_eq!(r["detail"]["conversation_id"], conversation, "{r}");

    // Join codes: a wrong one refused, the right one validated; neither is in the trail.
    let wrong = if code.starts_with('A') {
        "BBBBBBBB"
    } else {
        "AAAAAAAA"
    };
    assert_eq!(
        validate(&app, 11, session, wrong).await["data"]["isValid"],
        false
    );
    assert_eq!(
        validate(&app, 11, session, &code).await["data"]["isValid"],
        true
    );
    let refused = only(&app, "code_refused").await;
    assert_eq!(actor(&refused), person("patient", 11));
    assert_eq!(refused["ip"], "127.0.0.1");
    assert_eq!(refused["target"]["kind"], "session");
    assert_eq!(refused["target"]["session_id"], session);
    assert_eq!(refused["detail"], json!({"outcome": "invalid"}));
    let valid = only(&app, "code_validated").await;
    assert_eq!(actor(&valid), person("patient", 11));
    assert_eq!(valid["detail"], json!({"outcome": "valid"}));
    assert_eq!(valid["target"]["session_id"], session);
    // Without a session number, a code that matches none of the patient's sessions.
    app.patient(11)
        .call_ok(
            Method::POST,
            "/api/messaging/webrtc/validate-code",
            Some(&json!({"code": wrong})),
        )
        .await
        .unwrap();
    let r = trail(&app, "action=code_refused&target_kind=sessions").await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        r[0]["target"],
        json!({"kind": "sessions", "id": null, "session_id": null, "conversation_id": null})
    );

    // An attachment downloaded by the doctor.
    let patient = app.patient(11);
    let attachment = upload(&patient, conversation, "radio.png").await;
    let message = send_image(&patient, conversation, &attachment, secret_text).await;
    let url = message["attachment"]["url"].as_str().unwrap().to_string();
    let resp = app
        .doctor(79)
        .request(Method::GET, &url)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let r = only(&app, "attachment_downloaded").await;
    assert_eq!(actor(&r), person("medecin", 79));
    assert_eq!(r["ip"], "127.0.0.1");
    assert_eq!(
        r["target"],
        json!({"kind": "attachment", "id": attachment, "session_id": null, "conversation_id": conversation})
    );
    assert_eq!(r["detail"]["content_type"], "image/png", "{r}");
    // A refused download (someone else's attachment) serves nothing and records nothing.
    let (status, _) = app.patient(12).call(Method::GET, &url, None).await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(trail(&app, "action=attachment_downloaded").await.len(), 1);

    // An administrator call.
    app.doctor(ADMIN)
        .call_ok(Method::GET, "/api/messaging/nodes", None)
        .await
        .unwrap();
    let r = trail(
        &app,
        "action=admin_call&target_id=GET%20/api/messaging/nodes",
    )
    .await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(actor(&r[0]), person("medecin", ADMIN));
    assert_eq!(r[0]["target"]["kind"], "api");
    assert_eq!(r[0]["detail"]["nodes"], 1);
    // Reading the trail is recorded too (the reads above included).
    let reads = trail(&app, "action=admin_call&target_kind=api").await;
    assert!(
        reads
            .iter()
            .any(|r| r["target"]["id"] == "GET /api/messaging/audit"
                && r["detail"]["filters"]["action"] == "code_refused"),
        "{reads:?}"
    );

    // Recording: consent and start, stop, download, and deletion by retention.
    let mut cfg = peer_config(&app, Role::Medecin, 79, session, PeerEntry::Publish);
    cfg.conversation_id = conversation;
    let mut doctor = ClientPeer::start(cfg).await.unwrap();
    doctor
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("doctor connects");
    let path = format!("/api/messaging/webrtc/sessions/{session}/recording");
    let started = app
        .doctor(79)
        .call_ok(Method::POST, &path, Some(&json!({"consent": true})))
        .await
        .unwrap();
    let recording_ids = started["data"]["recording"]["recordings"].clone();
    assert_eq!(recording_ids.as_array().unwrap().len(), 1, "{started}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stopped = app
        .doctor(79)
        .call_ok(Method::DELETE, &path, None)
        .await
        .unwrap();
    let rec = stopped["data"]["recordings"][0].clone();
    let rec_id = rec["id"].as_str().unwrap().to_string();
    let consent = only(&app, "consent_given").await;
    assert_eq!(actor(&consent), person("medecin", 79));
    assert_eq!(consent["ip"], "127.0.0.1");
    assert_eq!(consent["target"]["session_id"], session);
    let start = only(&app, "recording_started").await;
    assert_eq!(actor(&start), person("medecin", 79));
    assert_eq!(start["detail"]["recordings"], recording_ids);
    assert!(start["seq"].as_i64() > consent["seq"].as_i64());
    let stop = only(&app, "recording_stopped").await;
    assert_eq!(actor(&stop), person("medecin", 79));
    assert_eq!(stop["ip"], "127.0.0.1");
    assert_eq!(stop["detail"]["recordings"], json!([rec_id]));
    let resp = app
        .doctor(79)
        .request(Method::GET, rec["url"].as_str().unwrap())
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    let r = only(&app, "recording_downloaded").await;
    assert_eq!(actor(&r), person("medecin", 79));
    assert_eq!(
        r["target"],
        json!({"kind": "recording", "id": rec_id, "session_id": session, "conversation_id": null})
    );
    assert_eq!(r["detail"]["range"], "bytes=0-99");
    doctor.close().await;
    clock.advance(8 * DAY);
    assert_eq!(app.state().recordings.purge_expired().await.unwrap(), 1);
    let r = only(&app, "recording_deleted").await;
    assert_eq!(r["actor"], Value::Null, "the server itself: {r}");
    assert_eq!(r["ip"], Value::Null);
    assert_eq!(r["target"]["id"], rec_id.as_str());
    assert_eq!(r["detail"]["reason"], "retention");

    // Everything on the session, by the session filter; nothing secret anywhere.
    let on_session = trail(&app, &format!("session_id={session}&limit=500")).await;
    let actions: Vec<&str> = on_session
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for a in [
        "session_created",
        "code_refused",
        "code_validated",
        "consent_given",
        "recording_started",
        "recording_stopped",
        "recording_downloaded",
        "recording_deleted",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let all = serde_json::to_string(&trail(&app, "limit=500").await).unwrap();
    for secret in [
        code.as_str(),
        wrong,
        secret_text,
        "radio.png",
        &app.token(Role::Medecin, 79),
        &app.token(Role::Patient, 11),
    ] {
        assert!(!all.contains(secret), "`{secret}` is in the trail");
    }
    let m = app.metrics().await;
    assert!(
        metric_value(&m, "relais_audit_records_total") >= 14.0,
        "{m}"
    );
    assert_eq!(metric_value(&m, "relais_audit_write_failures_total"), 0.0);
}

/// A code checked over Socket.IO (the patient joins) is recorded like one over REST.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_over_socketio_records_the_code_check() {
    let app = spawn(manual_clock(), |_| {}).await;
    let (session, conversation, code) = create_session(&app, 79, &[11], "audio_video").await;
    let mut cfg = peer_config(&app, Role::Medecin, 79, session, PeerEntry::Publish);
    cfg.conversation_id = conversation;
    let mut doctor = ClientPeer::start(cfg).await.unwrap();
    doctor
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let mut patient = ClientPeer::start(peer_config(
        &app,
        Role::Patient,
        11,
        session,
        PeerEntry::Code(code.clone()),
    ))
    .await
    .unwrap();
    patient
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let r = only(&app, "code_validated").await;
    assert_eq!(actor(&r), person("patient", 11));
    assert_eq!(r["ip"], "127.0.0.1");
    assert_eq!(r["target"]["session_id"], session);
    assert!(!r.to_string().contains(&code));
    patient.close().await;
    doctor.close().await;
}

/// Administrators only; bad filter values are 400 naming the parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_administrators_read_the_trail() {
    let app = spawn(manual_clock(), |_| {}).await;
    create_session(&app, 79, &[11], "audio_video").await;
    let path = "/api/messaging/audit";
    for (who, client) in [("patient", app.patient(11)), ("doctor", app.doctor(79))] {
        let (status, v) = client.call(Method::GET, path, None).await.unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {v}");
        assert_eq!(v["error"]["code"], "admin_only", "{who}: {v}");
    }
    let status = app
        .http
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Refused reads are not served and not recorded as reads.
    assert!(trail(&app, "action=admin_call").await.is_empty());

    let admin = app.doctor(ADMIN);
    for (query, names) in [
        ("action=opened", "action"),
        ("actor_role=root", "actor_role"),
        ("actor_id=abc", "actor_id"),
        ("session_id=-4", "session_id"),
        ("target_kind=file", "target_kind"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("before=x", "before"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("actor_role=system&actor_id=3", "actor_id"),
        ("sessionid=3", "sessionid"),
    ] {
        let (status, v) = admin
            .call(Method::GET, &format!("{path}?{query}"), None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert_eq!(v["error"]["code"], "invalid_query", "{query}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{query}: {message}");
    }
    let (status, _) = admin.call(Method::GET, path, None).await.unwrap();
    assert_eq!(status, StatusCode::OK);
}

/// Cursor pages (newest first) cover the trail once; filters narrow it.
async fn pages_and_filters(backend: Backend) {
    let clock = manual_clock();
    let app = spawn_on(backend, clock.clone(), |_| {}).await;
    let t0 = relais::clock::to_rfc3339(clock.now_ms());
    let (s1, _, code1) = create_session(&app, 79, &[11, 12], "audio_video").await;
    clock.advance(60_000);
    let t1 = relais::clock::to_rfc3339(clock.now_ms());
    let (s2, _, _) = create_session(&app, 80, &[13], "audio_only").await;
    for p in [11, 12] {
        validate(&app, p, s1, "ZZZZZZZZ").await;
        validate(&app, p, s1, &code1).await;
    }
    validate(&app, 13, s2, "ZZZZZZZZ").await;
    clock.advance(60_000);
    let t2 = relais::clock::to_rfc3339(clock.now_ms());
    validate(&app, 12, s1, "YYYYYYYY").await;
    // 2 sessions + 5 + 1 code checks before the first read.
    let total = 8;

    let mut seen = Vec::new();
    let mut before = String::new();
    loop {
        let (records, next) = trail_page(&app, &format!("limit=3{before}&until={t2}")).await;
        assert!(records.len() <= 3);
        seen.extend(records.iter().map(|r| r["seq"].as_i64().unwrap()));
        match next.as_i64() {
            Some(n) => {
                assert_eq!(n, records.last().unwrap()["seq"].as_i64().unwrap());
                before = format!("&before={n}");
            }
            None => break,
        }
    }
    // Each read adds an admin_call record (at t2 too, newer than the page's cursor): only the
    // acts before the first read are compared.
    let wanted: Vec<i64> = (1..=total).rev().collect();
    let mut acts: Vec<i64> = seen.into_iter().filter(|s| *s <= total).collect();
    acts.dedup();
    assert_eq!(acts, wanted, "newest first, each once");

    let r = trail(&app, "action=code_refused").await;
    assert_eq!(r.len(), 4, "{r:?}");
    let r = trail(&app, "actor_role=patient&actor_id=12").await;
    assert_eq!(r.len(), 3, "{r:?}");
    assert!(r.iter().all(|r| actor(r) == person("patient", 12)));
    let r = trail(&app, "actor_id=12").await;
    assert_eq!(r.len(), 3);
    let r = trail(&app, &format!("session_id={s2}")).await;
    assert_eq!(r.len(), 2, "{r:?}");
    let r = trail(
        &app,
        &format!("target_kind=session&target_id={s1}&action=code_validated"),
    )
    .await;
    assert_eq!(r.len(), 2, "{r:?}");
    let r = trail(&app, &format!("since={t0}&until={t0}")).await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["action"], "session_created");
    let r = trail(
        &app,
        &format!("since={t1}&until={t1}&action=session_created"),
    )
    .await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["target"]["session_id"], s2);
    let r = trail(&app, &format!("since={t2}&action=code_refused")).await;
    assert_eq!(r.len(), 1, "{r:?}");
    let r = trail(&app, "actor_role=system").await;
    assert!(r.is_empty(), "{r:?}");
    let r = trail(
        &app,
        "action=session_created&actor_role=medecin&actor_id=80",
    )
    .await;
    assert_eq!(r.len(), 1);
    // The chain links each record to the one before.
    let all = trail(&app, "limit=500").await;
    for pair in all.windows(2) {
        assert_eq!(pair[0]["prev_hash"], pair[1]["hash"]);
        assert_eq!(
            pair[0]["seq"].as_i64().unwrap(),
            pair[1]["seq"].as_i64().unwrap() + 1
        );
    }
    assert_eq!(all.last().unwrap()["prev_hash"], "0".repeat(64));
}

crate::on_both_backends!(pages_and_filters);

fn verify(app: &TestApp) -> std::process::Output {
    relais_command()
        .arg("--data-dir")
        .arg(&app.config.data_dir)
        .args(["audit", "verify"])
        .output()
        .unwrap()
}

async fn sqlite(app: &TestApp) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&app.config.database_url())
        .await
        .unwrap()
}

/// `relais audit verify` on the database: OK with the count, then it names the record edited
/// (and the one after a deleted record) behind the server's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_the_record_changed_in_the_database() {
    let app = spawn(manual_clock(), |_| {}).await;
    let (s, _, code) = create_session(&app, 79, &[11], "audio_video").await;
    validate(&app, 11, s, "ZZZZZZZZ").await;
    validate(&app, 11, s, &code).await;
    create_session(&app, 79, &[12], "audio_video").await;
    validate(&app, 12, s, "ZZZZZZZZ").await;

    let out = verify(&app);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("audit trail OK: 5 records"), "{stdout}");

    let db = sqlite(&app).await;
    // relais itself cannot change a record: the table refuses updates and deletes.
    let e = sqlx::query("UPDATE audit_log SET actor_id = 12 WHERE seq = 3")
        .execute(&db)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    assert!(
        sqlx::query("DELETE FROM audit_log WHERE seq = 3")
            .execute(&db)
            .await
            .is_err()
    );

    // Someone with write access to the file drops the triggers and edits record 3.
    sqlx::query("DROP TRIGGER audit_log_no_update")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("DROP TRIGGER audit_log_no_delete")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET actor_id = 12 WHERE seq = 3")
        .execute(&db)
        .await
        .unwrap();
    let out = verify(&app);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BROKEN: record 3:"), "{stderr}");
    assert!(stderr.contains("was changed"), "{stderr}");
    assert!(stderr.contains("2 records before it"), "{stderr}");

    // Put back, the chain checks again; a deleted record is named by the one after it.
    sqlx::query("UPDATE audit_log SET actor_id = 11 WHERE seq = 3")
        .execute(&db)
        .await
        .unwrap();
    assert!(verify(&app).status.success());
    sqlx::query("DELETE FROM audit_log WHERE seq = 2")
        .execute(&db)
        .await
        .unwrap();
    let out = verify(&app);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("record 3: record 2 was expected"),
        "{stderr}"
    );
    db.close().await;
}

/// When the trail cannot be written: reads (downloads, administrator calls) are refused with
/// `audit_unavailable` and serve nothing; acts already done (a session created) go on; every
/// failure is counted and logged with the action's name and nothing of the act's content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_audit_write_fails_reads_closed_and_acts_open() {
    let app = spawn(manual_clock(), |_| {}).await;
    let patient = app.patient(11);
    let conv = app
        .doctor(79)
        .create_conversation("private", &[("patient", 11)])
        .await
        .unwrap();
    let attachment = upload(&patient, conv, "analyse-secrete.png").await;
    send_image(&patient, conv, &attachment, "texte secret").await;
    let url = format!("/api/messaging/attachments/{attachment}");
    let db = sqlite(&app).await;
    sqlx::query("ALTER TABLE audit_log RENAME TO audit_log_away")
        .execute(&db)
        .await
        .unwrap();

    let (status, v) = app.doctor(79).call(Method::GET, &url, None).await.unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert_eq!(v["error"]["code"], "audit_unavailable", "{v}");
    let (status, v) = app
        .doctor(ADMIN)
        .call(Method::GET, "/api/messaging/nodes", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    let (session, _, _) = create_session(&app, 79, &[11], "audio_video").await;
    assert!(session > 0);
    let m = app.metrics().await;
    assert_eq!(
        metric_value(&m, "relais_audit_write_failures_total"),
        3.0,
        "{m}"
    );
    let logs = captured_logs();
    for action in ["attachment_downloaded", "admin_call", "session_created"] {
        assert!(
            logs.lines()
                .any(|l| l.contains("audit record not written") && l.contains(action)),
            "{action}"
        );
    }
    assert!(!logs.contains("texte secret") && !logs.contains("analyse-secrete"));

    // Back: the download is served (and recorded), and the chain is whole.
    sqlx::query("ALTER TABLE audit_log_away RENAME TO audit_log")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let (status, _) = app.doctor(79).call(Method::GET, &url, None).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        only(&app, "attachment_downloaded").await["actor"],
        person("medecin", 79)
    );
    let out = verify(&app);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `messaging.retention_days`: old messages and their attachment files go (and uploads never
/// sent), recent ones stay, conversation views follow, and each run that deleted something
/// leaves one `messages_expired` record with counts only.
async fn retention_deletes_old_messages_and_attachments(backend: Backend) {
    let clock = manual_clock();
    let app = spawn_on(backend, clock.clone(), |c| {
        c.messaging.retention_days = Some(30)
    })
    .await;
    let doctor = app.doctor(1);
    let patient = app.patient(2);
    let conv = doctor
        .create_conversation("private", &[("patient", 2)])
        .await
        .unwrap();
    doctor
        .send_text(conv, "ancien message confidentiel")
        .await
        .unwrap();
    let old_attachment = upload(&doctor, conv, "ancien.png").await;
    send_image(&doctor, conv, &old_attachment, "ancienne image").await;
    let never_sent = upload(&patient, conv, "brouillon.png").await;
    clock.advance(20 * DAY);
    let recent_attachment = upload(&doctor, conv, "recent.png").await;
    send_image(&doctor, conv, &recent_attachment, "image récente").await;
    let recent = doctor.send_text(conv, "message récent").await.unwrap();
    let uploads = app.config.uploads_dir();
    let files = || {
        let mut v: Vec<String> = std::fs::read_dir(&uploads)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(files().len(), 3);

    // 20 days after the first messages: nothing is 30 days old.
    let retention = &app.state().message_retention;
    assert_eq!(retention.purge_expired().await.unwrap().messages, 0);
    assert!(trail(&app, "action=messages_expired").await.is_empty());

    clock.advance(11 * DAY);
    let expired = retention.purge_expired().await.unwrap();
    assert_eq!(
        (expired.messages, expired.attachments),
        (2, 2),
        "{expired:?}"
    );
    assert_eq!(files(), vec![format!("{recent_attachment}.png")]);
    let history = patient
        .call_ok(
            Method::GET,
            &format!("/api/messaging/conversations/{conv}/messages"),
            None,
        )
        .await
        .unwrap();
    let left: Vec<&str> = history["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["contenu"].as_str().unwrap())
        .collect();
    assert_eq!(left, vec!["image récente", "message récent"]);
    let list = patient
        .call_ok(Method::GET, "/api/messaging/conversations", None)
        .await
        .unwrap();
    let c = &list["data"]["conversations"][0];
    assert_eq!(c["last_message"]["id"], recent["id"], "{c}");
    assert_eq!(c["unread_count"], 2, "{c}");
    for gone in [&old_attachment, &never_sent] {
        let (status, _) = doctor
            .call(
                Method::GET,
                &format!("/api/messaging/attachments/{gone}"),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    let r = only(&app, "messages_expired").await;
    assert_eq!(r["actor"], Value::Null);
    assert_eq!(r["target"]["kind"], "messages");
    assert_eq!(r["detail"]["messages"], 2, "{r}");
    assert_eq!(r["detail"]["attachments"], 2, "{r}");
    assert_eq!(r["detail"]["retention_days"], 30, "{r}");
    let text = r.to_string();
    for secret in [
        "confidentiel",
        "ancienne image",
        "ancien.png",
        "brouillon.png",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert_eq!(trail(&app, "actor_role=system").await.len(), 1);
    // A run with nothing to delete records nothing.
    assert_eq!(retention.purge_expired().await.unwrap().messages, 0);
    assert_eq!(trail(&app, "action=messages_expired").await.len(), 1);
    let m = app.metrics().await;
    assert_eq!(metric_value(&m, "relais_messages_expired_total"), 2.0);
    assert_eq!(metric_value(&m, "relais_attachments_expired_total"), 2.0);
}

crate::on_both_backends!(retention_deletes_old_messages_and_attachments);

/// Appends from many tasks (and, on PostgreSQL, from two `Audit`s on two pools, as two nodes
/// would) form one chain with no gap.
async fn concurrent_appends_stay_one_chain(url: &str) {
    let a = Store::connect(url).await.unwrap();
    a.migrate().await.unwrap();
    let b = Store::connect(url).await.unwrap();
    let metrics = Metrics::new();
    let clock: relais::clock::SharedClock = Arc::new(SystemClock);
    let audits = [
        Audit::new(a.clone(), clock.clone(), &metrics),
        Audit::new(b.clone(), clock.clone(), &metrics),
    ];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let audit = audits[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            audit
                .record(
                    Entry::new(
                        Action::CodeRefused,
                        Target::Session(SessionId(i as i64 + 1)),
                    )
                    .by(Identity::new(Role::Patient, i as i64))
                    .ip(Some("127.0.0.1".parse().unwrap()))
                    .detail(json!({"outcome": "invalid", "n": i})),
                )
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    match Audit::verify(&a).await.unwrap() {
        Verdict::Intact { count, head } => {
            assert_eq!(count, 40);
            assert_eq!(head.unwrap().seq, 40);
        }
        other => panic!("{other:?}"),
    }
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("audit.db").display()
    );
    concurrent_appends_stay_one_chain(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_postgres_two_nodes() {
    let Some(admin) = postgres_url() else {
        eprintln!(
            "skipped: {POSTGRES_ENV} is not set, so the PostgreSQL audit chain test did not run"
        );
        return;
    };
    let (_db, url) = PgDatabase::create(&admin).await;
    concurrent_appends_stay_one_chain(&url).await;

    // Tampering on PostgreSQL is named the same way.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let e = sqlx::query("UPDATE audit_log SET ip = '10.0.0.9' WHERE seq = 7")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET ip = '10.0.0.9' WHERE seq = 7")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let store = Store::connect(&url).await.unwrap();
    match Audit::verify(&store).await.unwrap() {
        Verdict::Broken { checked, broken } => {
            assert_eq!((checked, broken.seq), (6, 7), "{broken}");
        }
        other => panic!("{other:?}"),
    }
    store.close().await;
}
