//! Consultation sessions over REST: creation (doctors only), links and codes, visibility,
//! code validation and its limits, ending.

use std::time::Duration;

use relais::clock::ManualClock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;
use crate::on_both_backends;

const CREATE: &str = "/api/messaging/webrtc/sessions?generate_conference_link=true";

async fn create_with_seed_body(backend: Backend) {
    let app = spawn_app_with(Options::new(backend).configure(|c| {
        c.public_base_url = Some(url::Url::parse("https://192.168.4.81:3443").unwrap())
    }))
    .await;
    let doctor = app.doctor(79);
    // The seed's body: a temporary conversation id between patient 11 and doctor 79.
    let body = json!({"conversation_id": "temp_conv_11_79", "session_type": "audio_video", "sdp_offer": null,
                      "initiator": {"userType": "medecin", "userId": 79}});
    let (status, v) = doctor
        .call(Method::POST, CREATE, Some(&body))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "success");
    let s = &v["data"]["session"];
    let id = s["id"].as_i64().unwrap();
    let conv = s["conversation_id"].as_i64().unwrap();
    assert_eq!(s["session_type"], "audio_video");
    assert_eq!(s["statut"], "initiating");
    let link = &v["data"]["conferenceLink"];
    assert_eq!(link["sessionId"], id);
    let code = link["joinCode"].as_str().unwrap();
    assert_eq!(code.len(), 8);
    assert!(
        code.chars()
            .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
        "{code}"
    );
    assert_eq!(
        link["conferenceUrl"],
        format!("https://192.168.4.81:3443/conference/{id}")
    );
    assert_eq!(
        link["fullLink"],
        format!("https://192.168.4.81:3443/conference/{id}?code={code}")
    );

    // The temporary id became the private conversation between them, visible to the patient.
    let (_, c) = app
        .patient(11)
        .call(
            Method::GET,
            &format!("/api/messaging/conversations/{conv}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(c["data"]["conversation"]["type"], "private");
    // A second session for the same pair reuses the conversation; codes differ.
    let (_, v2) = doctor
        .call(Method::POST, CREATE, Some(&body))
        .await
        .unwrap();
    assert_eq!(v2["data"]["session"]["conversation_id"], conv);
    assert_ne!(v2["data"]["conferenceLink"]["joinCode"], link["joinCode"]);
    // A numeric conversation id works too, as a number or a string.
    for cid in [json!(conv), json!(conv.to_string())] {
        let (status, _) = doctor
            .call(Method::POST, CREATE, Some(&json!({"conversation_id": cid})))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED);
    }

    // GET: the conversation's members; nobody else.
    let path = format!("/api/messaging/webrtc/sessions/{id}");
    let (status, got) = app
        .patient(11)
        .call(Method::GET, &path, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(
        got["data"]["session"]["created_by"],
        json!({"userId": 79, "userType": "medecin"})
    );
    let (status, _) = app
        .patient(12)
        .call(Method::GET, &path, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = doctor
        .call(Method::GET, "/api/messaging/webrtc/sessions/424242", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
}
on_both_backends!(create_with_seed_body);

async fn who_may_create(backend: Backend) {
    let app = spawn_app(backend).await;
    let conv = app
        .doctor(1)
        .create_conversation("private", &[("patient", 2)])
        .await
        .unwrap();
    let cases: Vec<(relais_load::client::api::ApiClient, Value, StatusCode, &str)> = vec![
        (
            app.patient(2),
            json!({"conversation_id": conv}),
            StatusCode::FORBIDDEN,
            "doctor_only",
        ),
        (
            app.doctor(1),
            json!({"conversation_id": conv, "initiator": {"userType": "medecin", "userId": 9}}),
            StatusCode::FORBIDDEN,
            "initiator_mismatch",
        ),
        (
            app.doctor(3),
            json!({"conversation_id": conv}),
            StatusCode::NOT_FOUND,
            "conversation_not_found",
        ),
        (
            app.doctor(1),
            json!({"conversation_id": "temp_conv_2_5"}),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            app.doctor(1),
            json!({"conversation_id": "temp_conv_x"}),
            StatusCode::BAD_REQUEST,
            "invalid_conversation_id",
        ),
        (
            app.doctor(1),
            json!({"conversation_id": conv, "session_type": "hologram"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            app.doctor(1),
            json!({"session_type": "audio_video"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ];
    for (client, body, status, code) in cases {
        let (got, v) = client
            .call(Method::POST, CREATE, Some(&body))
            .await
            .unwrap();
        assert_eq!(got, status, "{body}: {v}");
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
    }
}
on_both_backends!(who_may_create);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_validation_expiry_and_limits() {
    let clock = ManualClock::new(1_800_000_000_000);
    let app = spawn_app_with(Options {
        clock: Some(clock.clone()),
        ..Options::new(Backend::Sqlite)
    })
    .await;
    let (id, _, code) = create_session(&app, 79, &[11], "audio_video").await;
    let patient = app.patient(11);
    let validate = |code: String, session: Option<i64>| {
        let patient = patient.clone();
        async move {
            patient
                .call(
                    Method::POST,
                    "/api/messaging/webrtc/validate-code",
                    Some(&json!({"code": code, "sessionId": session})),
                )
                .await
                .unwrap()
        }
    };
    let (status, v) = validate(code.to_lowercase(), Some(id)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let d = &v["data"];
    assert_eq!(d["conferenceCode"], code);
    assert_eq!(d["sessionId"], id);
    assert_eq!(d["isValid"], true);
    assert_eq!(d["createdBy"], json!({"userType": "medecin", "userId": 79}));
    assert!(d["expiresAt"].as_str().unwrap().ends_with('Z'));
    // Valid code, other session: not valid for it.
    let (_, v) = validate(code.clone(), Some(id + 1)).await;
    assert_eq!(
        (v["data"]["isValid"].as_bool(), v["data"]["reason"].as_str()),
        (Some(false), Some("invalid_code"))
    );
    let (_, v) = validate("ZZZZ".into(), None).await;
    assert_eq!(v["data"]["reason"], "invalid_code");

    // Two hours later the code has expired (default code_ttl).
    clock.advance(2 * 3600 * 1000 + 1);
    let (_, v) = validate(code.clone(), Some(id)).await;
    assert_eq!(
        (v["data"]["isValid"].as_bool(), v["data"]["reason"].as_str()),
        (Some(false), Some("expired_code"))
    );

    // Guessing is limited per address.
    let mut limited = false;
    for i in 0..40 {
        let (status, v) = validate(format!("{:08X}", i), Some(id)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(v["error"]["code"], "too_many_attempts");
            limited = true;
            break;
        }
    }
    assert!(limited, "wrong guesses are rate-limited");
    clock.advance(61_000);

    // An ended session's code says so.
    let (id2, _, code2) = create_session(&app, 79, &[11], "audio_only").await;
    let (status, v) = app
        .doctor(79)
        .call(
            Method::POST,
            &format!("/api/messaging/webrtc/sessions/{id2}/end"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["session"]["statut"], "ended");
    let (_, v) = validate(code2, Some(id2)).await;
    assert_eq!(v["data"]["reason"], "session_ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_sessions_doctor_ends_it_or_reads_its_stats() {
    let app = spawn_app(Backend::Sqlite).await;
    let (id, conv, _) = create_session(&app, 79, &[11], "audio_video").await;
    // Another doctor in the conversation (group) may see it but not end it.
    let end = format!("/api/messaging/webrtc/sessions/{id}/end");
    let stats = format!("/api/messaging/webrtc/sessions/{id}/stats");
    let (status, v) = app
        .patient(11)
        .call(Method::POST, &end, None)
        .await
        .unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (status, _) = app
        .patient(11)
        .call(Method::GET, &stats, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.doctor(80).call(Method::POST, &end, None).await.unwrap();
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a stranger does not even see it"
    );
    let (status, v) = app
        .doctor(79)
        .call(Method::GET, &stats, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["participants"], json!([]));
    let (status, _) = app.doctor(79).call(Method::POST, &end, None).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let (status, v) = app.doctor(79).call(Method::POST, &end, None).await.unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("session_ended"))
    );
    let _ = conv;
    let _ = Duration::ZERO;
}
