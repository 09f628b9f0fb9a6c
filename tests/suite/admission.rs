//! Who enters a consultation (issue 21): the waiting room, admission by the doctor, guest links
//! for a third participant, removal, audio-only mode — with real media between webrtc-rs peers,
//! and the refusals each step owes to the wrong person.

use std::time::Duration;

use relais::ids::{Identity, Role};
use relais_load::client::peer::{ClientPeer, Entry, PeerConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

const CONNECT: Duration = Duration::from_secs(15);
/// The administrator who reads the audit trail (`auth.admins`).
const ADMIN: i64 = 900;

/// Packets received so far, as (audio, video) totals.
fn totals(p: &ClientPeer) -> (u64, u64) {
    p.received.snapshot().values().fold((0, 0), |(a, v), s| {
        if s.video {
            (a, v + s.packets)
        } else {
            (a + s.packets, v)
        }
    })
}

/// POST without a token (the guest-token exchange).
async fn post_anonymous(app: &TestApp, path: &str, body: Value) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", app.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn invite(app: &TestApp, session: i64, name: &str) -> (i64, String, String) {
    let (status, v) = app
        .doctor(79)
        .call(
            Method::POST,
            &format!("/api/messaging/webrtc/sessions/{session}/guests"),
            Some(&json!({"display_name": name, "expires_in_minutes": 30})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let g = &v["data"]["guest"];
    (
        g["id"].as_i64().unwrap(),
        g["code"].as_str().unwrap().to_string(),
        g["url"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_patient_waits_the_doctor_admits_a_guest_joins_by_link_and_is_removed() {
    let app = spawn_app_with(
        Options::new(Backend::Sqlite)
            .configure(|c| c.auth.admins = vec![format!("medecin:{ADMIN}")]),
    )
    .await;
    let (session, conv, code) = create_session(&app, 79, &[11], "audio_video").await;
    let doctor_api = app.doctor(79);
    // The waiting room on (what a new session gets by default), through the settings call.
    let (status, v) = doctor_api
        .call(
            Method::PATCH,
            &format!("/api/messaging/webrtc/sessions/{session}"),
            Some(&json!({"waiting_room": true})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["session"]["waiting_room"], true);
    let (status, _) = app
        .patient(11)
        .call(
            Method::PATCH,
            &format!("/api/messaging/webrtc/sessions/{session}"),
            Some(&json!({"waiting_room": false})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "only the doctor changes it");

    let mut cfg = peer_config(&app, Role::Medecin, 79, session, Entry::Publish);
    cfg.conversation_id = conv;
    let mut doctor = ClientPeer::start(cfg).await.unwrap();
    doctor.wait_connected(CONNECT).await.unwrap();

    // The patient asks to join: waits, with no media, and the doctor is told.
    let mut patient = ClientPeer::start(peer_config(
        &app,
        Role::Patient,
        11,
        session,
        Entry::Code(code.clone()),
    ))
    .await
    .unwrap();
    let waiting = patient.wait_event("waiting", WAIT).await.unwrap();
    assert_eq!(waiting["sessionId"], session);
    let told = doctor
        .wait_event("participant_waiting", WAIT)
        .await
        .unwrap();
    assert_eq!(told["user"], json!({"userId": 11, "userType": "patient"}));
    let (_, list) = doctor_api
        .call(
            Method::GET,
            &format!("/api/messaging/webrtc/sessions/{session}/waiting"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(list["data"]["waiting"][0]["user"]["userId"], 11, "{list}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(totals(&patient), (0, 0), "no media before admission");
    assert_eq!(totals(&doctor), (0, 0));

    // Someone else cannot admit; nor can anyone admit a person who is not waiting.
    let patient_socket = app.socket(Role::Patient, 11).await;
    let ack = patient_socket
        .emit_with_ack(
            "admit_participant",
            &json!({"sessionId": session, "user": {"userId": 11, "userType": "patient"}}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "forbidden", "{ack}");
    let (status, v) = doctor_api
        .call(
            Method::POST,
            &format!("/api/messaging/webrtc/sessions/{session}/admit"),
            Some(&json!({"user": {"userId": 12, "userType": "patient"}})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "not_waiting");

    // Admitted over REST: told, then media both ways.
    let (status, v) = doctor_api
        .call(
            Method::POST,
            &format!("/api/messaging/webrtc/sessions/{session}/admit"),
            Some(&json!({"user": {"userId": "11", "userType": "patient"}})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    patient.wait_event("admitted", WAIT).await.unwrap();
    patient.wait_connected(CONNECT).await.unwrap();
    assert!(
        eventually(CONNECT, || patient.received.streams_with(20) == (1, 1)
            && doctor.received.streams_with(20) == (1, 1))
        .await,
        "media both ways after admission"
    );

    // A guest link: shown once, exchanged once (two exchanges at once: one wins).
    let (guest_id, guest_code, url) = invite(&app, session, "Interprète").await;
    assert!(url.ends_with(&format!("/conference/{session}?guest={guest_code}")));
    let (_, second_code, _) = invite(&app, session, "Fils").await;
    let exchange = |c: String| {
        let app = &app;
        async move {
            post_anonymous(
                app,
                "/api/messaging/webrtc/guest-token",
                json!({"sessionId": session, "code": c}),
            )
            .await
        }
    };
    let (a, b) = tokio::join!(exchange(second_code.clone()), exchange(second_code.clone()));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{a:?} {b:?}"
    );
    let loser = if a.0 == StatusCode::CONFLICT {
        &a.1
    } else {
        &b.1
    };
    assert_eq!(loser["error"]["code"], "guest_code_used");
    let (status, v) = exchange("0000000000000000".into()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "invalid_code");
    let (status, v) = exchange(guest_code.to_lowercase()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let token = v["data"]["token"].as_str().unwrap().to_string();
    assert_eq!(
        v["data"]["user"],
        json!({"userId": guest_id, "userType": "invite"})
    );
    assert_eq!(exchange(guest_code.clone()).await.0, StatusCode::CONFLICT);

    // The guest has no access to the conversation.
    let guest_api =
        relais_load::client::api::ApiClient::new(reqwest::Client::new(), &app.base, &token);
    for (method, path, body) in [
        (
            Method::GET,
            format!("/api/messaging/conversations/{conv}/messages"),
            None,
        ),
        (
            Method::GET,
            format!("/api/messaging/conversations/{conv}"),
            None,
        ),
        (
            Method::POST,
            format!("/api/messaging/conversations/{conv}/messages"),
            Some(json!({"contenu": "x", "type_message": "texte"})),
        ),
        (
            Method::POST,
            "/api/messaging/conversations".to_string(),
            Some(json!({"type": "private", "participants": [{"role": "patient", "id": 11}]})),
        ),
    ] {
        let (status, v) = guest_api
            .call(method.clone(), &path, body.as_ref())
            .await
            .unwrap();
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
            "{method} {path}: {status} {v}"
        );
    }

    // The guest joins with its token, waits, is admitted by the doctor's socket event.
    let guest_who = Identity::new(Role::Invite, guest_id);
    let mut gcfg = PeerConfig::new(
        &app.base,
        &token,
        guest_who,
        session,
        Entry::Code(String::new()),
    );
    gcfg.keyframe_interval = Duration::from_millis(500);
    gcfg.video_bitrate_bps = 300_000;
    let mut guest = ClientPeer::start(gcfg).await.unwrap();
    guest.wait_event("waiting", WAIT).await.unwrap();
    let told = doctor
        .wait_event("participant_waiting", WAIT)
        .await
        .unwrap();
    assert_eq!(told["user"]["userType"], "invite");
    assert_eq!(told["name"], "Interprète");
    let doctor_socket = app.socket(Role::Medecin, 79).await;
    let ack = doctor_socket
        .emit_with_ack(
            "admit_participant",
            &json!({"sessionId": session, "user": {"userId": guest_id, "userType": "invite"}}),
            WAIT,
        )
        .await
        .unwrap();
    ack_ok(&ack);
    guest.wait_connected(CONNECT).await.unwrap();
    // Everyone sees everyone: two others' audio and video at each.
    assert!(
        eventually(CONNECT, || {
            [&doctor, &patient, &guest]
                .iter()
                .all(|p| p.received.streams_with(20) == (2, 2))
        })
        .await,
        "three-way media: doctor {:?} patient {:?} guest {:?}",
        doctor.received.streams_with(1),
        patient.received.streams_with(1),
        guest.received.streams_with(1)
    );

    // The doctor removes the guest: told, gone for the others, and cannot come back.
    let ack = doctor_socket
        .emit_with_ack(
            "remove_participant",
            &json!({"sessionId": session, "user": {"userId": guest_id, "userType": "invite"}}),
            WAIT,
        )
        .await
        .unwrap();
    ack_ok(&ack);
    guest.wait_event("removed", WAIT).await.unwrap();
    let left = patient.wait_event("participant_left", WAIT).await.unwrap();
    assert_eq!(left["reason"], "removed", "{left}");
    let guest_socket = relais_load::client::socketio::SioClient::connect(
        &app.base,
        json!({"token": token, "userType": "invite", "userId": guest_id}),
    )
    .await
    .unwrap();
    let ack = guest_socket
        .emit_with_ack("request_webrtc_offer", &json!({"sessionId": session}), WAIT)
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "removed", "{ack}");
    // A guest cannot act as a member of the conversation over Socket.IO either.
    let ack = guest_socket
        .emit_with_ack("join_conversation", &json!({"conversationId": conv}), WAIT)
        .await
        .unwrap();
    assert_ne!(ack["success"], true, "{ack}");
    guest.close().await;

    // The patient switches to audio only: the doctor is told and stops receiving their video,
    // audio goes on.
    let ack = patient_socket
        .emit_with_ack(
            "set_audio_only",
            &json!({"sessionId": session, "audioOnly": true, "reason": "connexion insuffisante"}),
            WAIT,
        )
        .await
        .unwrap();
    ack_ok(&ack);
    let told = doctor.wait_event("audio_only", WAIT).await.unwrap();
    assert_eq!(told["user"]["userId"], 11);
    assert_eq!(told["audioOnly"], true);
    assert_eq!(told["reason"], "connexion insuffisante");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (a0, v0) = totals(&doctor);
    let (pa0, pv0) = totals(&patient);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (a1, v1) = totals(&doctor);
    let (pa1, pv1) = totals(&patient);
    assert!(a1 > a0 + 20, "audio goes on: {a0} -> {a1}");
    assert_eq!(v1, v0, "no video from the audio-only patient");
    assert!(pa1 > pa0 + 20, "the patient still hears: {pa0} -> {pa1}");
    assert_eq!(pv1, pv0, "no video to the audio-only patient");
    // Back to video.
    let ack = patient_socket
        .emit_with_ack(
            "set_audio_only",
            &json!({"sessionId": session, "audioOnly": false}),
            WAIT,
        )
        .await
        .unwrap();
    ack_ok(&ack);
    assert!(
        eventually(CONNECT, || totals(&doctor).1 > v1 + 20
            && totals(&patient).1 > pv1 + 20)
        .await,
        "video back both ways"
    );
    patient.close().await;
    doctor.close().await;

    // Every act is in the audit trail: who, on whom, why; never a code or a token.
    let v = app
        .doctor(ADMIN)
        .call_ok(
            Method::GET,
            &format!("/api/messaging/audit?session_id={session}&limit=500"),
            None,
        )
        .await
        .unwrap();
    let records = v["data"]["records"].as_array().unwrap();
    let acts: Vec<(String, Value)> = records
        .iter()
        .map(|r| (r["action"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    let count = |a: &str| acts.iter().filter(|(n, _)| n == a).count();
    assert_eq!(count("participant_admitted"), 2, "{records:#?}");
    assert_eq!(count("participant_removed"), 1);
    assert_eq!(count("guest_invited"), 2);
    assert_eq!(
        count("guest_token_issued"),
        2,
        "the two successful exchanges"
    );
    assert_eq!(count("audio_only_on"), 1);
    assert_eq!(count("audio_only_off"), 1);
    let on = &acts.iter().find(|(n, _)| n == "audio_only_on").unwrap().1;
    assert_eq!(on["actor"], json!({"role": "patient", "id": 11}), "{on}");
    assert!(on.to_string().contains("connexion insuffisante"), "{on}");
    let removed = &acts
        .iter()
        .find(|(n, _)| n == "participant_removed")
        .unwrap()
        .1;
    assert_eq!(
        removed["actor"],
        json!({"role": "medecin", "id": 79}),
        "{removed}"
    );
    let text = serde_json::to_string(records).unwrap();
    for secret in [&guest_code, &second_code, &code, &token] {
        assert!(
            !text.contains(secret.as_str()),
            "a secret in the audit trail"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declined_patient_is_told_and_retrying_with_the_same_code_is_refused_then_limited() {
    let app = spawn_app(Backend::Sqlite).await;
    // Created without saying: the default (sessions.waiting_room) is a waiting room.
    let api = app.doctor(79);
    let conv = api
        .create_conversation("private", &[("patient", 11)])
        .await
        .unwrap();
    let (status, v) = api
        .call(
            Method::POST,
            "/api/messaging/webrtc/sessions?generate_conference_link=true",
            Some(&json!({"conversation_id": conv})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["data"]["session"]["waiting_room"], true);
    let session = v["data"]["session"]["id"].as_i64().unwrap();
    let code = v["data"]["conferenceLink"]["joinCode"]
        .as_str()
        .unwrap()
        .to_string();

    let doctor_socket = app.socket(Role::Medecin, 79).await;
    let mut patient_socket = app.socket(Role::Patient, 11).await;
    let join = json!({"sessionId": session, "code": code});
    // The patient waits before the doctor is even there.
    let ack = patient_socket
        .emit_with_ack("request_webrtc_offer", &join, WAIT)
        .await
        .unwrap();
    assert_eq!(ack_ok(&ack)["waiting"], true, "{ack}");
    // Declining needs the doctor; then the patient is told.
    let decline = json!({"sessionId": session, "user": {"userId": 11, "userType": "patient"},
                         "reason": "merci de reprendre rendez-vous"});
    let ack = patient_socket
        .emit_with_ack("decline_participant", &decline, WAIT)
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "forbidden");
    let ack = doctor_socket
        .emit_with_ack("decline_participant", &decline, WAIT)
        .await
        .unwrap();
    ack_ok(&ack);
    let declined = patient_socket.wait_for("declined", WAIT).await.unwrap();
    assert!(
        declined["message"]
            .as_str()
            .unwrap()
            .contains("merci de reprendre rendez-vous")
    );
    // Declining twice: not waiting any more.
    let ack = doctor_socket
        .emit_with_ack("decline_participant", &decline, WAIT)
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "not_waiting");
    // Retrying with the same code: a clear refusal, then the wrong-code limit.
    let mut codes = Vec::new();
    for _ in 0..14 {
        let ack = patient_socket
            .emit_with_ack("request_webrtc_offer", &join, WAIT)
            .await
            .unwrap();
        codes.push(ack_code(&ack).to_string());
    }
    assert_eq!(codes[0], "declined", "{codes:?}");
    assert_eq!(
        codes.last().map(String::as_str),
        Some("too_many_attempts"),
        "{codes:?}"
    );
    // Admitting someone who never asked is refused, and the session still works for others.
    let ack = doctor_socket
        .emit_with_ack(
            "admit_participant",
            &json!({"sessionId": session, "user": {"userId": 12, "userType": "patient"}}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "not_waiting");
    // Malformed admission payloads are refused as such.
    let ack = doctor_socket
        .emit_with_ack(
            "admit_participant",
            &json!({"sessionId": session, "user": {"userId": "x", "userType": "pirate"}}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "invalid_payload");
}

#[tokio::test]
async fn guest_links_are_the_doctors_and_expire() {
    let clock = relais::clock::ManualClock::new(1_800_000_000_000);
    let app = spawn_app_with(Options {
        clock: Some(clock.clone()),
        ..Options::new(Backend::Sqlite)
    })
    .await;
    let (session, _, _) = create_session(&app, 79, &[11], "audio_video").await;
    let path = format!("/api/messaging/webrtc/sessions/{session}/guests");
    // Only the session's doctor invites, lists and revokes.
    for api in [app.patient(11), app.doctor(80)] {
        let (status, v) = api
            .call(Method::POST, &path, Some(&json!({"display_name": "x"})))
            .await
            .unwrap();
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
            "{status} {v}"
        );
    }
    for bad in [
        json!({"display_name": "   "}),
        json!({"display_name": "x", "expires_in_minutes": 0}),
        json!({"display_name": "x", "expires_in_minutes": 100000}),
        json!({"name": "x"}),
    ] {
        let (status, v) = app
            .doctor(79)
            .call(Method::POST, &path, Some(&bad))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    let (guest_id, code, _) = invite(&app, session, "Interprète").await;
    let (_, list) = app.doctor(79).call(Method::GET, &path, None).await.unwrap();
    assert_eq!(list["data"]["guests"][0]["id"], guest_id);
    assert!(
        list["data"]["guests"][0].get("code").is_none(),
        "codes are shown once"
    );
    // Expired after its 30 minutes.
    clock.advance(31 * 60 * 1000);
    let (status, v) = post_anonymous(
        &app,
        "/api/messaging/webrtc/guest-token",
        json!({"sessionId": session, "code": code}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "expired_code");
    // Revoked links are refused like wrong codes.
    let (id2, code2, _) = invite(&app, session, "Fille").await;
    let (status, _) = app
        .doctor(79)
        .call(Method::DELETE, &format!("{path}/{id2}"), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post_anonymous(
        &app,
        "/api/messaging/webrtc/guest-token",
        json!({"sessionId": session, "code": code2}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
