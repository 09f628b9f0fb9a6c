//! Socket.IO with our Rust client: handshake, rooms, messaging events.

use std::time::Duration;

use relais::ids::Role;
use relais_load::client::socketio::{SioClient, SioError};
use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_checks_the_token_against_the_claimed_identity() {
    let app = spawn_app(Backend::Sqlite).await;
    let good = app.socket(Role::Medecin, 79).await;
    assert!(!good.sid.is_empty());

    let refused = |auth: serde_json::Value| {
        let base = app.base.clone();
        async move {
            match SioClient::connect(&base, auth).await {
                Err(SioError::Refused(msg)) => msg,
                Err(e) => panic!("expected a connect_error, got {e}"),
                Ok(_) => panic!("connection should have been refused"),
            }
        }
    };
    let token = app.token(Role::Medecin, 79);
    assert!(refused(json!({})).await.contains("missing token"));
    assert!(
        refused(json!({"token": "nope"}))
            .await
            .contains("malformed token")
    );
    let msg = refused(json!({"token": token, "userType": "patient", "userId": 79})).await;
    assert!(msg.contains("userType does not match"), "{msg}");
    let msg = refused(json!({"token": token, "userType": "medecin", "userId": 80})).await;
    assert!(msg.contains("userId does not match"), "{msg}");
    let msg = refused(json!({"token": token, "role": "patient"})).await;
    assert!(msg.contains("role does not match"), "{msg}");
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"role": "medecin", "sub": "79", "exp": jsonwebtoken::get_current_timestamp() - 60}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert!(
        refused(json!({"token": expired}))
            .await
            .contains("token expired")
    );
    // The userId may come as a string.
    SioClient::connect(
        &app.base,
        json!({"token": token, "userType": "medecin", "userId": "79", "role": "medecin"}),
    )
    .await
    .expect("string userId accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_messaging_events() {
    let app = spawn_app(Backend::Sqlite).await;
    let doctor_api = app.doctor(79);
    let conv = doctor_api
        .create_conversation("private", &[("patient", 11)])
        .await
        .unwrap();
    let mut doctor = app.socket(Role::Medecin, 79).await;
    let mut patient = app.socket(Role::Patient, 11).await;
    let mut stranger = app.socket(Role::Patient, 12).await;

    // Join: participants only.
    let join = json!({"conversationId": conv, "user": {"userId": 79, "userType": "medecin", "role": "medecin"}});
    ack_ok(
        &doctor
            .emit_with_ack("join_conversation", &join, WAIT)
            .await
            .unwrap(),
    );
    let ack = patient
        .emit_with_ack(
            "join_conversation",
            &json!({"conversationId": conv.to_string()}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(ack_ok(&ack)["conversationId"], conv);
    let ack = stranger
        .emit_with_ack("join_conversation", &json!({"conversationId": conv}), WAIT)
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "conversation_not_found");
    let ack = stranger
        .emit_with_ack("join_conversation", &json!({"conversation": "x"}), WAIT)
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "invalid_payload");

    // A REST send reaches the room as `new_message` with the seed's shape.
    doctor_api.send_text(conv, "Bonjour").await.unwrap();
    let m = patient.wait_for("new_message", WAIT).await.unwrap();
    assert_eq!(m["contenu"], "Bonjour");
    assert_eq!(m["type_message"], "texte");
    assert_eq!(m["expediteur_id"], 79);
    assert_eq!(m["conversation_id"], conv);
    assert_eq!(m["sender"]["id"], 79);
    assert_eq!(m["sender"]["type"], "medecin");
    assert!(m["sender"]["nom"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(m["timestamp"].as_str().is_some());
    let mid = m["id"].as_i64().unwrap();

    // Typing goes to the others, not back to the typist; only after joining.
    ack_ok(
        &patient
            .emit_with_ack(
                "typing",
                &json!({"conversationId": conv, "isTyping": true}),
                WAIT,
            )
            .await
            .unwrap(),
    );
    let t = doctor.wait_for("typing", WAIT).await.unwrap();
    assert_eq!(t["isTyping"], true);
    assert_eq!(t["user"], json!({"userId": 11, "userType": "patient"}));
    let ack = stranger
        .emit_with_ack(
            "typing",
            &json!({"conversationId": conv, "isTyping": true}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "not_joined");

    // Read markers are stored and relayed.
    ack_ok(
        &patient
            .emit_with_ack(
                "message_read",
                &json!({"conversationId": conv, "messageId": mid}),
                WAIT,
            )
            .await
            .unwrap(),
    );
    let r = doctor.wait_for("message_read", WAIT).await.unwrap();
    assert_eq!(r["messageId"], mid);
    assert_eq!(r["user"]["userType"], "patient");
    let (_, list) = app
        .patient(11)
        .call(Method::GET, "/api/messaging/conversations", None)
        .await
        .unwrap();
    assert_eq!(list["data"]["conversations"][0]["unread_count"], 0);

    // Sending over the socket stores and announces too; a retry is answered, not repeated.
    let send = json!({"conversationId": conv, "contenu": "Merci docteur", "type_message": "texte", "client_message_id": "p-1"});
    let ack = patient
        .emit_with_ack("send_message", &send, WAIT)
        .await
        .unwrap();
    let sent_id = ack_ok(&ack)["message"]["id"].as_i64().unwrap();
    let m = doctor.wait_for("new_message", WAIT).await.unwrap();
    assert_eq!(m["id"], sent_id);
    // The sender's own sockets in the room get it too (other tabs stay in sync).
    let own = patient.wait_for("new_message", WAIT).await.unwrap();
    assert_eq!(own["id"], sent_id);
    assert_eq!(m["sender"]["type"], "patient");
    let again = patient
        .emit_with_ack("send_message", &send, WAIT)
        .await
        .unwrap();
    assert_eq!(ack_ok(&again)["message"]["id"], sent_id);
    let ack = stranger
        .emit_with_ack(
            "send_message",
            &json!({"conversationId": conv, "contenu": "intrus"}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(ack_code(&ack), "conversation_not_found");

    // The stranger never saw any of it.
    assert!(
        stranger
            .wait_for("new_message", Duration::from_millis(300))
            .await
            .is_err()
    );

    // Errors without an ack come back as `messaging_error`.
    stranger
        .emit("join_conversation", &json!({"conversationId": conv}))
        .await
        .unwrap();
    let e = stranger.wait_for("messaging_error", WAIT).await.unwrap();
    assert_eq!(e["event"], "join_conversation");
    assert_eq!(e["code"], "conversation_not_found");

    // Leaving stops the flow.
    ack_ok(
        &patient
            .emit_with_ack("leave_conversation", &json!({"conversationId": conv}), WAIT)
            .await
            .unwrap(),
    );
    doctor_api.send_text(conv, "encore là ?").await.unwrap();
    assert!(
        patient
            .wait_for("new_message", Duration::from_millis(300))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_gauge_follows_sockets() {
    let app = spawn_app(Backend::Sqlite).await;
    let a = app.socket(Role::Patient, 1).await;
    let b = app.socket(Role::Patient, 2).await;
    assert_eq!(app.metric("relais_socketio_connections").await, 2.0);
    a.close().await;
    b.close().await;
    let mut left = 2.0;
    for _ in 0..50 {
        left = app.metric("relais_socketio_connections").await;
        if left == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0.0);
}
