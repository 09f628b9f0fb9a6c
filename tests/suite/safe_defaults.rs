//! Safe by default (issue 20): what an attacker on the network, a noisy client or a shared
//! address could do to others, each shown refused — and the invited, the valid token and the
//! other users unaffected. Clients behind a proxy are played with `X-Forwarded-For` through
//! `http.trusted_proxies = ["127.0.0.1"]`; what needs a real non-loopback address is in
//! `netns.rs`.

use std::time::Duration;

use relais::ids::Role;
use relais_load::client::socketio::{ConnectOptions, SioClient};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

async fn validate(
    app: &TestApp,
    who: (Role, i64),
    code: &str,
    session: Option<i64>,
    forwarded_for: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .post(format!("{}/api/messaging/webrtc/validate-code", app.base))
        .bearer_auth(app.token(who.0, who.1))
        .json(&json!({"code": code, "sessionId": session}));
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn is_valid(v: &Value) -> bool {
    v["data"]["isValid"] == true
}

/// Behind a trusted proxy on loopback, with limits small enough to reach.
async fn app_behind_proxy(
    configure: impl FnOnce(&mut relais::config::Config) + Send + 'static,
) -> TestApp {
    spawn_app_with(Options::new(Backend::Sqlite).configure(move |c| {
        c.http.trusted_proxies = vec!["127.0.0.1".into()];
        configure(c);
    }))
    .await
}

/// Finding 2: wrong codes for a session, from anyone, never make the right code fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_never_lock_out_the_invited_patient() {
    let app = spawn_app(Backend::Sqlite).await;
    let (session, _, code) = create_session(&app, 79, &[11], "audio_video").await;
    // 30 wrong codes for this session in a minute, from many people at one address.
    for i in 0..30 {
        let (status, v) = validate(
            &app,
            (Role::Patient, 500 + i),
            "ABCD2345",
            Some(session),
            None,
        )
        .await;
        assert!(
            status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS,
            "{v}"
        );
        assert!(!is_valid(&v), "{v}");
    }
    // The invited patient's code is still checked and valid, and admits them.
    let (status, v) = validate(&app, (Role::Patient, 11), &code, Some(session), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(is_valid(&v), "{v}");
    let patient = app.socket(Role::Patient, 11).await;
    let ack = patient
        .emit_with_ack(
            "request_webrtc_offer",
            &json!({"sessionId": session, "code": code, "action": "join_conference"}),
            WAIT,
        )
        .await
        .unwrap();
    ack_ok(&ack);
    // One guesser alone is stopped after its own allowance (10 a minute by default).
    let mut stopped = None;
    for i in 0..15 {
        let (status, _) = validate(
            &app,
            (Role::Patient, 900),
            &format!("{i:08}"),
            Some(session),
            None,
        )
        .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            stopped = Some(i);
            break;
        }
    }
    // (Its address used its allowance already: it is stopped at once, or after 10 of its own.)
    assert!(
        stopped.is_some_and(|i| i <= 10),
        "the guesser is stopped: {stopped:?}"
    );
    patient.close().await;
}

/// Finding 3: a code admits only the people of its conversation, and is never tried against
/// the sessions of others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_admits_only_the_people_it_was_made_for() {
    let app = spawn_app(Backend::Sqlite).await;
    let (session, _, code) = create_session(&app, 79, &[11], "audio_video").await;
    // Patient 12 holds the right code but is not in the conversation.
    let (_, v) = validate(&app, (Role::Patient, 12), &code, Some(session), None).await;
    assert!(!is_valid(&v), "{v}");
    assert_eq!(v["data"]["reason"], "invalid_code");
    assert_eq!(
        v["data"]["sessionId"],
        Value::Null,
        "nothing about the session leaks"
    );
    // Without a session id, the code is looked for among the caller's own sessions only.
    let (_, v) = validate(&app, (Role::Patient, 12), &code, None, None).await;
    assert!(!is_valid(&v), "{v}");
    let (_, v) = validate(&app, (Role::Patient, 11), &code, None, None).await;
    assert!(is_valid(&v), "{v}");
    assert_eq!(v["data"]["sessionId"], session);
    // Joining with it: refused for 12, like a wrong code.
    let stranger = app.socket(Role::Patient, 12).await;
    let ack = stranger
        .emit_with_ack(
            "request_webrtc_offer",
            &json!({"sessionId": session, "code": code, "action": "join_conference"}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "invalid_code", "{ack}");
    stranger.close().await;
}

/// Finding 3: past the whole server's budget of wrong codes, people who failed are stopped,
/// people who did not are still checked; failures count per client address, IPv6 per /64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_budget_and_ipv6_per_64_stop_rotating_guessers() {
    let app = app_behind_proxy(|c| {
        c.limits.code_failures_per_minute = 20;
        c.limits.code_failures_per_address = 5;
    })
    .await;
    let (session, _, code) = create_session(&app, 79, &[11], "audio_video").await;
    // One /64, rotating through its addresses and identities: 5 wrong codes, then a person
    // who failed once there is stopped.
    for i in 0..5 {
        let ip = format!("2001:db8:7:7::{:x}", i + 1);
        let (status, _) = validate(
            &app,
            (Role::Patient, 100 + i),
            "ABCD2345",
            Some(session),
            Some(&ip),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = validate(
        &app,
        (Role::Patient, 100),
        "ABCD2346",
        Some(session),
        Some("2001:db8:7:7::99"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the /64 used its allowance"
    );
    // Another /64 is another client.
    let (status, _) = validate(
        &app,
        (Role::Patient, 100),
        "ABCD2346",
        Some(session),
        Some("2001:db8:7:8::1"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Rotating IPv4 addresses and identities: the server's budget (20) runs out.
    for i in 0..20 {
        let ip = format!("198.51.100.{}", i + 1);
        validate(
            &app,
            (Role::Patient, 200 + i),
            "ABCD2345",
            Some(session),
            Some(&ip),
        )
        .await;
    }
    let (status, _) = validate(
        &app,
        (Role::Patient, 200),
        "ABCD2347",
        Some(session),
        Some("198.51.100.200"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the global budget is spent"
    );
    // The invited patient, who never failed, is still admitted.
    let (status, v) = validate(
        &app,
        (Role::Patient, 11),
        &code,
        Some(session),
        Some("203.0.113.5"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(is_valid(&v), "{v}");
}

/// Finding 9: failures behind a shared address never refuse a valid token; forwarding headers
/// count only from trusted proxies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_behind_a_proxy_count_per_client_and_valid_tokens_pass() {
    let app = app_behind_proxy(|c| c.http.auth_failures_per_minute = 5).await;
    let get = |token: String, ip: &'static str| {
        let req = app
            .http
            .get(format!("{}/api/messaging/conversations", app.base))
            .bearer_auth(token)
            .header("x-forwarded-for", ip);
        async move {
            let r = req.send().await.unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    for _ in 0..6 {
        get("bad".into(), "198.51.100.1").await;
    }
    let (status, v) = get("bad".into(), "198.51.100.1").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (
            StatusCode::TOO_MANY_REQUESTS,
            Some("too_many_auth_failures")
        )
    );
    // Another client behind the same proxy is not concerned.
    let (status, _) = get("bad".into(), "198.51.100.2").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A valid token from the failing client itself passes.
    let (status, v) = get(app.token(Role::Medecin, 79), "198.51.100.1").await;
    assert_eq!(status, StatusCode::OK, "{v}");

    // Without trusted proxies the header is the client's word: ignored.
    let direct = spawn_app_with(
        Options::new(Backend::Sqlite).configure(|c| c.http.auth_failures_per_minute = 3),
    )
    .await;
    for i in 0..4 {
        let ip = format!("198.51.100.{}", 10 + i);
        direct
            .http
            .get(format!("{}/api/messaging/conversations", direct.base))
            .bearer_auth("bad")
            .header("x-forwarded-for", ip)
            .send()
            .await
            .unwrap();
    }
    let r = direct
        .http
        .get(format!("{}/api/messaging/conversations", direct.base))
        .bearer_auth("bad")
        .header("x-forwarded-for", "198.51.100.99")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "counted against the real peer"
    );
}

/// Finding 4: a client chooses the method string; `/metrics` does not grow with it, and the
/// log says a few lines and how many it left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_make_no_new_series_and_few_log_lines() {
    let app = spawn_app(Backend::Sqlite).await;
    let before = app.metrics().await.len();
    for i in 0..300 {
        let method = Method::from_bytes(format!("XMETHOD{i}").as_bytes()).unwrap();
        let r = app
            .http
            .request(method, format!("{}/api/messaging/conversations", app.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error());
    }
    let text = app.metrics().await;
    assert!(!text.contains("XMETHOD"), "no series per method string");
    assert!(
        text.contains("method=\"other\""),
        "unknown methods count as other"
    );
    assert!(
        text.len() < before + 4096,
        "{} → {} bytes",
        before,
        text.len()
    );
    let lines = captured_logs()
        .lines()
        .filter(|l| l.contains("method=other"))
        .count();
    assert!(lines <= 25, "{lines} log lines for 300 bad requests");
}

/// Finding 5: one socket flooding events is slowed down with `rate_limited`; sends are
/// limited per person; others' messages still flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_socket_is_rate_limited_and_others_are_not_delayed() {
    let app = spawn_app(Backend::Sqlite).await;
    let conv = app
        .doctor(79)
        .create_conversation("private", &[("patient", 11)])
        .await
        .unwrap();
    let other_conv = app
        .doctor(80)
        .create_conversation("private", &[("patient", 12)])
        .await
        .unwrap();
    let first = app.doctor(79).send_text(conv, "bonjour").await.unwrap();
    let first_id = first["id"].as_i64().unwrap();

    let mut flooder = app.socket(Role::Patient, 11).await;
    ack_ok(
        &flooder
            .emit_with_ack("join_conversation", &json!({"conversationId": conv}), WAIT)
            .await
            .unwrap(),
    );
    // 2,000 read markers as fast as the socket takes them, without acknowledgements.
    for _ in 0..2000 {
        flooder
            .emit(
                "message_read",
                &json!({"conversationId": conv, "messageId": first_id}),
            )
            .await
            .unwrap();
    }
    let err = flooder.wait_for("messaging_error", WAIT).await.unwrap();
    assert_eq!(err["code"], "rate_limited", "{err}");

    // Meanwhile another person's message is stored and delivered at once.
    let mut reader = app.socket(Role::Patient, 12).await;
    ack_ok(
        &reader
            .emit_with_ack(
                "join_conversation",
                &json!({"conversationId": other_conv}),
                WAIT,
            )
            .await
            .unwrap(),
    );
    let started = std::time::Instant::now();
    app.doctor(80)
        .send_text(other_conv, "ça va ?")
        .await
        .unwrap();
    reader
        .wait_for("new_message", Duration::from_secs(2))
        .await
        .unwrap();
    eprintln!("other user's message delivered in {:?}", started.elapsed());

    // Sends: a burst, then the rate; the rest is refused, not stored.
    let mut refused = 0;
    for i in 0..100 {
        let ack = flooder
            .emit_with_ack(
                "send_message",
                &json!({"conversationId": conv, "contenu": format!("m{i}"), "type_message": "texte"}),
                WAIT,
            )
            .await
            .unwrap();
        if ack["success"] == false {
            assert_eq!(ack["error"]["code"], "rate_limited", "{ack}");
            refused += 1;
        }
    }
    assert!(refused >= 70, "{refused} of 100 refused");
    let history = app
        .patient(11)
        .call(
            Method::GET,
            &format!("/api/messaging/conversations/{conv}/messages?limit=100"),
            None,
        )
        .await
        .unwrap()
        .1;
    let stored = history["data"]["messages"].as_array().map_or(0, Vec::len);
    assert!(stored <= 31, "{stored} messages stored");
    assert!(
        app.metric("relais_limited_total{limit=\"socketio_event\"}")
            .await
            >= 1.0
    );
    flooder.close().await;
    reader.close().await;
}

/// Finding 6: sockets per person and per address are capped; a valid token over the cap is
/// told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_are_capped_per_person_and_per_address() {
    let app = app_behind_proxy(|c| {
        c.limits.sockets_per_user = 3;
        c.limits.sockets_per_address = 4;
    })
    .await;
    let connect = |id: i64, ip: &'static str| {
        let token = app.token(Role::Patient, id);
        let base = app.base.clone();
        async move {
            SioClient::connect_with(
                &base,
                json!({"token": token}),
                ConnectOptions {
                    timeout: Some(WAIT),
                    headers: vec![("x-forwarded-for".into(), ip.into())],
                    ..Default::default()
                },
            )
            .await
        }
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(1, "198.51.100.1").await.unwrap());
    }
    let err = connect(1, "198.51.100.2")
        .await
        .err()
        .expect("4th socket of one person");
    assert!(
        err.to_string().contains("too many connections of yours"),
        "{err}"
    );
    held.push(connect(2, "198.51.100.1").await.unwrap());
    let err = connect(3, "198.51.100.1")
        .await
        .err()
        .expect("5th socket of one address");
    assert!(err.to_string().contains("this address"), "{err}");
    // Another address is fine, and a closed socket gives its place back.
    held.push(connect(3, "198.51.100.3").await.unwrap());
    held.remove(0).close().await;
    assert!(
        eventually(WAIT, || app
            .state()
            .socket_limits
            .sockets_of(relais::ids::Identity::new(Role::Patient, 1))
            == 2)
        .await
    );
    held.push(connect(1, "198.51.100.4").await.unwrap());
    for s in held {
        s.close().await;
    }
}

/// Finding 10: patients write to doctors; they do not bring other patients in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patients_start_conversations_with_doctors_only() {
    let app = spawn_app(Backend::Sqlite).await;
    let patient = app.patient(11);
    let (status, v) = patient
        .call(
            Method::POST,
            "/api/messaging/conversations",
            Some(&json!({"type": "group", "participants": [{"role": "medecin", "id": 79}, {"role": "patient", "id": 12}]})),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("patients_add_doctors_only")),
        "{v}"
    );
    let (status, v) = patient
        .call(
            Method::POST,
            "/api/messaging/conversations",
            Some(&json!({"type": "private", "participants": [{"role": "patient", "id": 12}]})),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("doctor_required")),
        "{v}"
    );
    let (status, v) = patient
        .call(
            Method::POST,
            "/api/messaging/conversations",
            Some(&json!({"type": "group", "participants": [{"role": "medecin", "id": 79}, {"role": "medecin", "id": 80}]})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // A doctor still builds groups with several patients.
    let (status, v) = app
        .doctor(79)
        .call(
            Method::POST,
            "/api/messaging/conversations",
            Some(&json!({"type": "group", "participants": [{"role": "patient", "id": 11}, {"role": "patient", "id": 12}]})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{v}");
}

/// Findings 1, 11, 12: development sign-in, `/metrics`, browser hardening headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_sign_in_and_metrics_answer_this_machine_and_pages_are_hardened() {
    let app = app_behind_proxy(|c| {
        c.auth.jwt_secret = None;
        c.http.metrics_token = Some("a-metrics-token-of-length".into());
    })
    .await;
    let dev = |ip: Option<&'static str>| {
        let mut req = app
            .http
            .post(format!("{}/api/dev/token", app.base))
            .json(&json!({"role": "patient", "id": 11}));
        if let Some(ip) = ip {
            req = req.header("x-forwarded-for", ip);
        }
        async move {
            let r = req.send().await.unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, v) = dev(None).await;
    assert_eq!(status, StatusCode::OK, "this machine signs in: {v}");
    let (status, v) = dev(Some("198.51.100.7")).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("dev_sign_in_local_only")),
        "{v}"
    );
    let probe: Value = app
        .http
        .get(format!("{}/api/dev/token", app.base))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(probe["data"]["signInHere"], false, "{probe}");

    // /metrics: this machine, or the token.
    let metrics = |ip: Option<&'static str>, token: Option<&'static str>| {
        let mut req = app.http.get(format!("{}/metrics", app.base));
        if let Some(ip) = ip {
            req = req.header("x-forwarded-for", ip);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(metrics(None, None).await, StatusCode::OK);
    assert_eq!(
        metrics(Some("198.51.100.7"), None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        metrics(Some("198.51.100.7"), Some("wrong-token-of-some-length")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        metrics(Some("198.51.100.7"), Some("a-metrics-token-of-length")).await,
        StatusCode::OK
    );

    // Hardening headers on the web client and the API; HSTS on HTTPS only.
    for path in ["/", "/api/messaging/conversations"] {
        let r = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(r.headers().get("strict-transport-security").is_none());
    }
    let https = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = https
        .get(format!("{}/healthz", app.https_base.as_ref().unwrap()))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["strict-transport-security"]
            .to_str()
            .unwrap()
            .starts_with("max-age="),
        "HSTS on HTTPS"
    );
}

/// Finding 12: on Socket.IO as on REST, a session that is not yours answers like one that does
/// not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_yours_and_not_there_answer_the_same_on_socketio() {
    let app = spawn_app(Backend::Sqlite).await;
    let (session, _, _) = create_session(&app, 79, &[11], "audio_video").await;
    let stranger = app.socket(Role::Medecin, 80).await;
    let offer = |id: i64| json!({"sessionId": id, "sdpOffer": "v=0\r\n"});
    let mine_not = stranger
        .emit_with_ack("webrtc_offer", &offer(session), WAIT)
        .await
        .unwrap();
    let absent = stranger
        .emit_with_ack("webrtc_offer", &offer(session + 1000), WAIT)
        .await
        .unwrap();
    assert_eq!(ack_code(&mine_not), "session_not_found", "{mine_not}");
    assert_eq!(ack_code(&absent), "session_not_found", "{absent}");
    assert_eq!(mine_not["error"]["message"], absent["error"]["message"]);
    // Ended: still the same answer for a stranger.
    app.doctor(79)
        .call(
            Method::POST,
            &format!("/api/messaging/webrtc/sessions/{session}/end"),
            None,
        )
        .await
        .unwrap();
    let ended = stranger
        .emit_with_ack("webrtc_offer", &offer(session), WAIT)
        .await
        .unwrap();
    assert_eq!(ack_code(&ended), "session_not_found", "{ended}");
    stranger.close().await;
}

/// Finding 6: a connection that sends nothing, or stays idle after a request, is closed after
/// `http.header_timeout`; an oversized request head gets 431.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed_and_heads_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(
        Options::new(Backend::Sqlite).configure(|c| c.http.header_timeout = Duration::from_secs(1)),
    )
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();
    // Silent from the start.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed within the timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    // Idle after one request on a kept-alive connection.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle kept-alive connection is closed");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    // A request head of 40 KiB: refused.
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-filler", "a".repeat(40 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

/// Findings 1 and 7, and the open-file limit: the real binary with the README's defaults
/// (development mode, SQLite, a generated certificate) keeps every file it creates to its own
/// user, raises its soft file limit, and says who can reach what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_process_keeps_patient_data_to_itself() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut child = relais_command()
        .current_dir(dir.path())
        .args([
            "--set",
            "http.addr=127.0.0.1:0",
            "--set",
            "https.addr=127.0.0.1:0",
            "--set",
            "media.udp_addr=127.0.0.1:0",
            "--set",
            "media.tcp_addr=127.0.0.1:0",
            "--set",
            "media.public_ips=127.0.0.1",
            "--set",
            "turn.enabled=false",
        ])
        .env("RELAIS_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let server = ChildGuard(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut base = None;
    let mut exposure = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline && (base.is_none() || exposure.is_none()) {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["message"] == "relais listening" {
            base = Some(format!("http://{}", v["http"].as_str().unwrap()));
        }
        if let Some(m) = v["message"].as_str()
            && m.starts_with("development mode")
        {
            exposure = Some(m.to_string());
        }
    }
    let base = base.expect("the server listens");
    let exposure = exposure.expect("the start-up log says who can sign in");
    assert!(
        exposure.contains("only clients on this machine"),
        "{exposure}"
    );

    // The README's local sign-in still works, then a message and an attachment.
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{base}/api/dev/token"))
        .json(&json!({"role": "medecin", "id": 79}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["data"]["token"]
        .as_str()
        .expect("a token for this machine")
        .to_string();
    let api = relais_load::client::api::ApiClient::new(http.clone(), &base, &token);
    let conv = api
        .create_conversation("private", &[("patient", 11)])
        .await
        .unwrap();
    api.send_text(conv, "données de santé").await.unwrap();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"%PDF-1.4 ordonnance".to_vec()).file_name("o.pdf"),
    );
    let r = api
        .request(
            Method::POST,
            &format!("/api/messaging/conversations/{conv}/attachments"),
        )
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    // Every file and directory under the data, media and certificate directories.
    let mut checked = 0;
    let mut stack = vec![
        dir.path().join("data"),
        dir.path().join("media"),
        dir.path().join("certs"),
    ];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", p.display());
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
        }
        checked += 1;
    }
    assert!(checked >= 8, "{checked} entries checked");

    // The soft open-file limit was raised to the hard one (capped at 2^20).
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.0.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let hard = nums.get(1).copied().unwrap_or(u64::MAX);
    assert_eq!(nums[0], hard.min(1 << 20), "{line}");
}

/// Stops a child process when the test ends, however it ends.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
