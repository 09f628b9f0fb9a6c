//! Bad input gets a clear 4xx with the error envelope, never a 500, and the server stays up.

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

fn code(v: &Value) -> &str {
    assert_eq!(v["success"], false, "{v}");
    v["error"]["code"].as_str().unwrap_or_default()
}

async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    ctype: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.base))
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(c) = ctype {
        req = req.header("content-type", c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_and_ids() {
    let app = spawn_app_with(
        Options::new(Backend::Sqlite).configure(|c| c.http.json_body_limit = 64 * 1024),
    )
    .await;
    let token = app.token(relais::ids::Role::Medecin, 1);
    let doctor = app.doctor(1);
    let id = doctor
        .create_conversation("private", &[("patient", 2)])
        .await
        .unwrap();
    let send = format!("/api/messaging/conversations/{id}/messages");
    let json_ct = Some("application/json");
    let t = Some(token.as_str());

    // (name, method, path, content type, body, expected status, expected code)
    type Case<'a> = (
        &'a str,
        Method,
        String,
        Option<&'a str>,
        Vec<u8>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed json",
            Method::POST,
            send.clone(),
            json_ct,
            b"{\"contenu\": ".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "not an object",
            Method::POST,
            send.clone(),
            json_ct,
            b"[1,2]".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "wrong type",
            Method::POST,
            send.clone(),
            json_ct,
            br#"{"contenu": 5}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "unknown message type",
            Method::POST,
            send.clone(),
            json_ct,
            br#"{"contenu": "x", "type_message": "video"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "empty text",
            Method::POST,
            send.clone(),
            json_ct,
            br#"{"contenu": "   "}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "empty_message",
        ),
        (
            "metadata not an object",
            Method::POST,
            send.clone(),
            json_ct,
            br#"{"contenu": "x", "metadata": 3}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_metadata",
        ),
        (
            "no content type",
            Method::POST,
            send.clone(),
            None,
            br#"{"contenu": "x"}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "oversized body",
            Method::POST,
            send.clone(),
            json_ct,
            format!("{{\"contenu\": \"{}\"}}", "a".repeat(70 * 1024)).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "missing field",
            Method::POST,
            "/api/messaging/conversations".into(),
            json_ct,
            br#"{"type": "private"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "bad role",
            Method::POST,
            "/api/messaging/conversations".into(),
            json_ct,
            br#"{"type": "private", "participants": [{"role": "admin", "id": 3}]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "unknown conversation",
            Method::GET,
            "/api/messaging/conversations/999999".into(),
            None,
            vec![],
            StatusCode::NOT_FOUND,
            "conversation_not_found",
        ),
        (
            "non-numeric id",
            Method::GET,
            "/api/messaging/conversations/abc".into(),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            "id overflow",
            Method::GET,
            "/api/messaging/conversations/99999999999999999999999".into(),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            "limit too big",
            Method::GET,
            format!("{send}?limit=1000"),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_limit",
        ),
        (
            "limit zero",
            Method::GET,
            format!("{send}?limit=0"),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_limit",
        ),
        (
            "limit not a number",
            Method::GET,
            format!("{send}?limit=abc"),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "unknown read target",
            Method::POST,
            format!("/api/messaging/conversations/{id}/read"),
            json_ct,
            br#"{"messageId": 424242}"#.to_vec(),
            StatusCode::NOT_FOUND,
            "message_not_found",
        ),
        (
            "unknown attachment",
            Method::GET,
            "/api/messaging/attachments/not-a-uuid".into(),
            None,
            vec![],
            StatusCode::NOT_FOUND,
            "attachment_not_found",
        ),
        (
            "unknown endpoint",
            Method::GET,
            "/api/messaging/nope".into(),
            None,
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "wrong method",
            Method::DELETE,
            "/api/messaging/conversations".into(),
            None,
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (name, method, path, ctype, body, want_status, want_code) in cases {
        let (status, v) = raw(&app, method, &path, t, ctype, body).await;
        assert_eq!(status, want_status, "{name}: {v}");
        assert_eq!(code(&v), want_code, "{name}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: {v}"
        );
    }
    // A too-long message.
    let long = "é".repeat(10_001);
    let (status, v) = doctor
        .call(Method::POST, &send, Some(&json!({"contenu": long})))
        .await
        .unwrap();
    assert_eq!(
        (status, code(&v)),
        (StatusCode::BAD_REQUEST, "message_too_long")
    );

    // Nothing above was stored, and the server is fine.
    let (_, page) = doctor.call(Method::GET, &send, None).await.unwrap();
    assert_eq!(page["data"]["messages"].as_array().unwrap().len(), 0);
    let health = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

fn sign(claims: Value, secret: &str, alg: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let path = "/api/messaging/conversations";
    let cases = [
        ("no token", None, "missing token"),
        ("garbage", Some("abc.def".to_string()), "malformed token"),
        (
            "expired",
            Some(sign(
                json!({"role": "patient", "sub": "1", "exp": now() - 3600}),
                SECRET,
                jsonwebtoken::Algorithm::HS256,
            )),
            "token expired",
        ),
        (
            "forged",
            Some(sign(
                json!({"role": "patient", "sub": "1", "exp": now() + 3600}),
                "another-secret-another-secret-12345",
                jsonwebtoken::Algorithm::HS256,
            )),
            "invalid token signature",
        ),
        (
            "wrong algorithm",
            Some(sign(
                json!({"role": "patient", "sub": "1", "exp": now() + 3600}),
                SECRET,
                jsonwebtoken::Algorithm::HS384,
            )),
            "token algorithm not accepted",
        ),
        (
            "no exp",
            Some(sign(
                json!({"role": "patient", "sub": "1"}),
                SECRET,
                jsonwebtoken::Algorithm::HS256,
            )),
            "exp",
        ),
        (
            "unknown role",
            Some(sign(
                json!({"role": "admin", "sub": "1", "exp": now() + 3600}),
                SECRET,
                jsonwebtoken::Algorithm::HS256,
            )),
            "role",
        ),
    ];
    for (name, token, want) in cases {
        let (status, v) = raw(&app, Method::GET, path, token.as_deref(), None, vec![]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {v}");
        assert_eq!(code(&v), "unauthorized", "{name}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(want),
            "{name}: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_auth_failures_are_rate_limited() {
    let app = spawn_app_with(
        Options::new(Backend::Sqlite).configure(|c| c.http.auth_failures_per_minute = 5),
    )
    .await;
    let path = "/api/messaging/conversations";
    for _ in 0..5 {
        let (status, _) = raw(&app, Method::GET, path, Some("bad"), None, vec![]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, v) = raw(&app, Method::GET, path, Some("bad"), None, vec![]).await;
    assert_eq!(
        (status, code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_auth_failures")
    );
    // A valid token from that address is still accepted: one client's failures never lock
    // out the others behind the same address (a clinic's NAT, a load balancer).
    let good = app.token(relais::ids::Role::Patient, 1);
    let (status, v) = raw(&app, Method::GET, path, Some(&good), None, vec![]).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    app.try_socket(relais::ids::Role::Patient, 1)
        .await
        .expect("a valid token connects whatever others failed");
    // An invalid handshake from that address is told to wait.
    let err = relais_load::client::socketio::SioClient::connect(
        &app.base,
        json!({"token": "bad", "userType": "patient", "userId": 1}),
    )
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("too many"), "{err}");
    let failures = app
        .metric("relais_auth_failures_total{transport=\"http\"}")
        .await;
    assert!(failures >= 5.0, "{failures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_configured_origins_only() {
    let app = spawn_app_with(
        Options::new(Backend::Sqlite)
            .configure(|c| c.http.cors_origins = vec!["https://clinic.example".into()]),
    )
    .await;
    let preflight = |origin: &'static str| {
        app.http
            .request(
                Method::OPTIONS,
                format!("{}/api/messaging/conversations", app.base),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let ok = preflight("https://clinic.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://clinic.example"
    );
    let evil = preflight("https://evil.example").await.unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());

    // Default: the server's own origins only, never `*`.
    let app = spawn_app(Backend::Sqlite).await;
    let resp = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let own = app.base.clone();
    let resp = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("origin", own.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], own.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints() {
    let app = spawn_app(Backend::Sqlite).await;
    let doctor = app.doctor(1);
    let id = doctor
        .create_conversation("private", &[("patient", 2)])
        .await
        .unwrap();
    doctor.send_text(id, "hello").await.unwrap();
    let h = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), StatusCode::OK);
    let r: Value = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["database"], "ok");
    let m = app.metrics().await;
    assert_eq!(metric_value(&m, "relais_messages_stored_total"), 1.0, "{m}");
    assert!(m.contains("relais_http_requests_total{method=\"POST\",route=\"/api/messaging/conversations/{id}/messages\",status=\"201\"} 1"), "{m}");
    assert!(m.contains("relais_db_pool_connections{"), "{m}");
    assert!(m.contains("relais_socketio_connections"), "{m}");
    let doc: Value = app
        .http
        .get(format!("{}/api-docs/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/api/messaging/conversations/{id}/messages"]["post"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_content_or_token_in_logs() {
    let app = spawn_app(Backend::Sqlite).await;
    let doctor = app.doctor(1);
    let id = doctor
        .create_conversation("private", &[("patient", 2)])
        .await
        .unwrap();
    let secret_text = format!("diagnostic-confidentiel-{}", uuid::Uuid::new_v4());
    doctor.send_text(id, &secret_text).await.unwrap();
    // Failures log too; make sure they carry no content or token either.
    let (_, _) = doctor
        .call(
            Method::POST,
            &format!("/api/messaging/conversations/{id}/messages"),
            Some(&json!({"contenu": 7, "x": secret_text})),
        )
        .await
        .unwrap();
    let mut sock = app.socket(relais::ids::Role::Patient, 2).await;
    let ack = sock
        .emit_with_ack(
            "join_conversation",
            &json!({"conversationId": id}),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    ack_ok(&ack);
    let bad_token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.forgedforgedforged";
    let _ = raw(
        &app,
        Method::GET,
        "/api/messaging/conversations",
        Some(bad_token),
        None,
        vec![],
    )
    .await;
    doctor.send_text(id, &secret_text).await.unwrap();
    sock.wait_for("new_message", WAIT).await.unwrap();
    let logs = captured_logs();
    assert!(!logs.is_empty());
    assert!(
        !logs.contains(&secret_text),
        "message content leaked into logs"
    );
    assert!(!logs.contains(doctor.token()), "a token leaked into logs");
    assert!(!logs.contains("forgedforged"), "a token leaked into logs");
}

/// `GET /api/messaging/nodes` on a single node: administrators see this node with its load,
/// anyone else gets 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_lists_itself_to_administrators_only() {
    let app = spawn_app_with(
        Options::new(Backend::Sqlite).configure(|c| c.auth.admins = vec!["medecin:7".into()]),
    )
    .await;
    let v = app
        .doctor(7)
        .call_ok(Method::GET, "/api/messaging/nodes", None)
        .await
        .unwrap();
    assert_eq!(v["data"]["mode"], "single", "{v}");
    let nodes = v["data"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{v}");
    assert_eq!(nodes[0]["load"]["peerConnections"], 0, "{v}");
    assert_eq!(nodes[0]["load"]["sessions"], 0, "{v}");
    let (status, v) = app
        .doctor(8)
        .call(Method::GET, "/api/messaging/nodes", None)
        .await
        .unwrap();
    assert_eq!((status, code(&v)), (StatusCode::FORBIDDEN, "admin_only"));
}
