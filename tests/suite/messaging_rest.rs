//! REST messaging flows end to end, on SQLite and PostgreSQL.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;
use crate::on_both_backends;

async fn conversation_and_messages(backend: Backend) {
    let app = spawn_app(backend).await;
    let doctor = app.doctor(79);
    let patient = app.patient(11);

    // Create, and creating again returns the same private conversation.
    let body = json!({"type": "private", "participants": [{"role": "patient", "id": 11}]});
    let (status, created) = doctor
        .call(Method::POST, "/api/messaging/conversations", Some(&body))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let conv = &created["data"]["conversation"];
    let id = conv["id"].as_i64().unwrap();
    assert_eq!(conv["type"], "private");
    assert_eq!(conv["participants"].as_array().unwrap().len(), 2);
    assert!(conv["created_at"].as_str().unwrap().ends_with('Z'));
    let (status, again) = doctor
        .call(Method::POST, "/api/messaging/conversations", Some(&body))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["data"]["conversation"]["id"], id);
    // The patient asking for the same pair finds it too.
    let from_patient =
        json!({"type": "private", "participants": [{"userType": "medecin", "userId": "79"}]});
    let (status, same) = patient
        .call(
            Method::POST,
            "/api/messaging/conversations",
            Some(&from_patient),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(same["data"]["conversation"]["id"], id);

    // Send with the seed's body; the answer has exactly the seed's fields.
    let seed_body = json!({
        "contenu": "Contenu du message",
        "type_message": "texte",
        "metadata": {"timestamp": "2024-01-15T10:30:00Z", "sender_id": 79, "conversation_id": id}
    });
    let (status, sent) = doctor
        .call(
            Method::POST,
            &format!("/api/messaging/conversations/{id}/messages"),
            Some(&seed_body),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    assert_eq!(sent["success"], true);
    let m = &sent["data"]["message"];
    for field in [
        "id",
        "contenu",
        "type_message",
        "expediteur_id",
        "conversation_id",
        "timestamp",
        "created_at",
    ] {
        assert!(!m[field].is_null(), "missing {field} in {m}");
    }
    assert_eq!(m["contenu"], "Contenu du message");
    assert_eq!(m["type_message"], "texte");
    assert_eq!(m["expediteur_id"], 79);
    assert_eq!(m["conversation_id"], id);
    assert!(m["id"].is_i64());
    assert_eq!(m["metadata"]["sender_id"], 79);

    // The patient sees it: last message and unread count.
    let (_, list) = patient
        .call(Method::GET, "/api/messaging/conversations", None)
        .await
        .unwrap();
    let c = &list["data"]["conversations"][0];
    assert_eq!(c["id"], id);
    assert_eq!(c["unread_count"], 1);
    assert_eq!(c["last_message"]["contenu"], "Contenu du message");
    // The sender's own messages are never unread for them.
    let (_, list) = doctor
        .call(Method::GET, "/api/messaging/conversations", None)
        .await
        .unwrap();
    assert_eq!(list["data"]["conversations"][0]["unread_count"], 0);

    // Read marker.
    let mid = m["id"].as_i64().unwrap();
    let (status, _) = patient
        .call(
            Method::POST,
            &format!("/api/messaging/conversations/{id}/read"),
            Some(&json!({"messageId": mid})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let (_, list) = patient
        .call(Method::GET, "/api/messaging/conversations", None)
        .await
        .unwrap();
    assert_eq!(list["data"]["conversations"][0]["unread_count"], 0);
    assert_eq!(
        list["data"]["conversations"][0]["last_read_message_id"],
        mid
    );

    // GET one conversation.
    let (status, one) = patient
        .call(
            Method::GET,
            &format!("/api/messaging/conversations/{id}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["data"]["conversation"]["id"], id);
}
on_both_backends!(conversation_and_messages);

async fn cursor_pagination(backend: Backend) {
    let app = spawn_app(backend).await;
    let doctor = app.doctor(1);
    let id = doctor
        .create_conversation("private", &[("patient", 2)])
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..7 {
        let m = doctor.send_text(id, &format!("m{i}")).await.unwrap();
        ids.push(m["id"].as_i64().unwrap());
    }
    let page = |q: String| {
        let doctor = doctor.clone();
        async move {
            let (status, v) = doctor
                .call(
                    Method::GET,
                    &format!("/api/messaging/conversations/{id}/messages{q}"),
                    None,
                )
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK, "{v}");
            let got: Vec<i64> = v["data"]["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_i64().unwrap())
                .collect();
            (got, v["data"]["pagination"]["has_more"].as_bool().unwrap())
        }
    };
    // Newest first page, returned oldest first.
    assert_eq!(page("?limit=3".into()).await, (ids[4..7].to_vec(), true));
    // Older than the oldest shown.
    assert_eq!(
        page(format!("?limit=3&before={}", ids[4])).await,
        (ids[1..4].to_vec(), true)
    );
    assert_eq!(
        page(format!("?limit=3&before={}", ids[1])).await,
        (ids[0..1].to_vec(), false)
    );
    // Catch-up after a reconnect: what came after the last one seen.
    assert_eq!(
        page(format!("?after={}", ids[2])).await,
        (ids[3..7].to_vec(), false)
    );
    assert_eq!(
        page(format!("?after={}&limit=2", ids[2])).await,
        (ids[3..5].to_vec(), true)
    );
    // Both cursors: the oldest in between.
    assert_eq!(
        page(format!("?after={}&before={}", ids[0], ids[3])).await,
        (ids[1..3].to_vec(), false)
    );
    assert_eq!(page("".into()).await, (ids.clone(), false));
}
on_both_backends!(cursor_pagination);

async fn idempotent_send(backend: Backend) {
    let app = spawn_app(backend).await;
    let doctor = app.doctor(1);
    let id = doctor
        .create_conversation("private", &[("patient", 2)])
        .await
        .unwrap();
    let path = format!("/api/messaging/conversations/{id}/messages");
    let body =
        json!({"contenu": "une fois", "type_message": "texte", "client_message_id": "c-123"});
    let (s1, a) = doctor.call(Method::POST, &path, Some(&body)).await.unwrap();
    let (s2, b) = doctor.call(Method::POST, &path, Some(&body)).await.unwrap();
    assert_eq!(s1, StatusCode::CREATED);
    assert_eq!(
        s2,
        StatusCode::OK,
        "a retry answers 200 with the first message"
    );
    assert_eq!(a["data"]["message"]["id"], b["data"]["message"]["id"]);
    // The header form works as well, and a different sender may reuse the same id.
    let resp = doctor
        .request(Method::POST, &path)
        .header("Idempotency-Key", "c-123")
        .json(&json!({"contenu": "une fois"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (s4, _) = app
        .patient(2)
        .call(Method::POST, &path, Some(&body))
        .await
        .unwrap();
    assert_eq!(s4, StatusCode::CREATED);
    let (_, page) = doctor.call(Method::GET, &path, None).await.unwrap();
    assert_eq!(page["data"]["messages"].as_array().unwrap().len(), 2);
}
on_both_backends!(idempotent_send);

async fn group_conversations(backend: Backend) {
    let app = spawn_app(backend).await;
    let doctor = app.doctor(5);
    let body = json!({"type": "group", "participants": [
        {"role": "patient", "id": 20}, {"role": "medecin", "id": 6}, {"role": "patient", "id": 21}
    ]});
    let (status, v) = doctor
        .call(Method::POST, "/api/messaging/conversations", Some(&body))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["data"]["conversation"]["participants"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let id = v["data"]["conversation"]["id"].as_i64().unwrap();
    for p in [app.patient(20), app.patient(21), app.doctor(6)] {
        p.send_text(id, "présent").await.unwrap();
    }
    // Patient 20 and doctor 20 are different people.
    let (status, _) = app
        .doctor(20)
        .call(
            Method::GET,
            &format!("/api/messaging/conversations/{id}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Only patients: refused.
    let (status, v) = app
        .patient(20)
        .call(
            Method::POST,
            "/api/messaging/conversations",
            Some(&json!({"type": "private", "participants": [{"role": "patient", "id": 21}]})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "doctor_required");
    // A private conversation with three people: refused.
    let (status, v) = doctor
        .call(
            Method::POST,
            "/api/messaging/conversations",
            Some(&json!({"type": "private", "participants": [
            {"role": "patient", "id": 20}, {"role": "patient", "id": 21}]})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "invalid_participants");
}
on_both_backends!(group_conversations);

const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0, 0, 0,
    1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89, 0, 0, 0, 0x0a, 0x49, 0x44, 0x41, 0x54,
    0x78, 0x9c, 0x63, 0, 1, 0, 0, 5, 0, 1, 0x0d, 0x0a, 0x2d, 0xb4, 0, 0, 0, 0, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

async fn upload(
    client: &relais_load::client::api::ApiClient,
    conv: i64,
    name: &str,
    bytes: Vec<u8>,
    mime: &str,
) -> (StatusCode, Value) {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name.to_string())
        .mime_str(mime)
        .unwrap();
    let form = reqwest::multipart::Form::new().part("file", part);
    let resp = client
        .request(
            Method::POST,
            &format!("/api/messaging/conversations/{conv}/attachments"),
        )
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn attachments(backend: Backend) {
    let app = spawn_app_with(
        Options::new(backend).configure(|c| c.messaging.attachment_max_bytes = 64 * 1024),
    )
    .await;
    let doctor = app.doctor(1);
    let patient = app.patient(2);
    let id = doctor
        .create_conversation("private", &[("patient", 2)])
        .await
        .unwrap();

    // The client says PDF; the content is a PNG: the server believes the content.
    let (status, v) = upload(
        &patient,
        id,
        "../photo.pdf",
        PNG.to_vec(),
        "application/pdf",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let a = &v["data"]["attachment"];
    assert_eq!(a["content_type"], "image/png");
    assert_eq!(a["file_name"], "photo.pdf");
    assert_eq!(a["size_bytes"], PNG.len());
    let attachment_id = a["id"].as_str().unwrap().to_string();
    // Stored under a server-made name, not the client's.
    let stored: Vec<String> = std::fs::read_dir(app.config.media_dir.join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(stored, vec![format!("{attachment_id}.png")]);

    // An image message carrying it; the doctor sees it and downloads the same bytes.
    let (status, sent) = patient
        .call(
            Method::POST,
            &format!("/api/messaging/conversations/{id}/messages"),
            Some(&json!({"contenu": "ma radio", "type_message": "image", "attachment_id": attachment_id})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    let url = sent["data"]["message"]["attachment"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = doctor.request(Method::GET, &url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "image/png");
    let disposition = resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("inline; filename=\"photo.pdf\""),
        "{disposition}"
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), PNG);

    // Nobody else downloads it.
    let resp = app
        .patient(3)
        .request(Method::GET, &url)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = app
        .http
        .get(format!("{}{url}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // A PDF as `file`: attachment disposition.
    let (status, v) = upload(
        &doctor,
        id,
        "ordonnance.pdf",
        b"%PDF-1.7\n%\xe2\xe3\n1 0 obj\n".to_vec(),
        "application/pdf",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let pdf_id = v["data"]["attachment"]["id"].as_str().unwrap().to_string();
    let resp = doctor
        .request(Method::GET, &format!("/api/messaging/attachments/{pdf_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/pdf");
    assert!(
        resp.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment;")
    );
    // A PDF cannot be sent as an image; someone else's attachment cannot be sent at all.
    let path = format!("/api/messaging/conversations/{id}/messages");
    let (status, v) = doctor
        .call(
            Method::POST,
            &path,
            Some(&json!({"type_message": "image", "attachment_id": pdf_id})),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("attachment_type_mismatch"))
    );
    let (status, v) = patient
        .call(
            Method::POST,
            &path,
            Some(&json!({"type_message": "file", "attachment_id": pdf_id})),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("attachment_not_found"))
    );
    let (status, v) = doctor
        .call(Method::POST, &path, Some(&json!({"type_message": "audio"})))
        .await
        .unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("attachment_required"))
    );

    // Refused content, oversize, missing field, stranger: nothing left on disk.
    let (status, v) = upload(
        &doctor,
        id,
        "x.exe",
        b"MZ\x90\x00\x03\x00\x00\x00".to_vec(),
        "image/png",
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_attachment_type")
        )
    );
    let mut big = PNG.to_vec();
    big.resize(65 * 1024, 0);
    let (status, v) = upload(&doctor, id, "big.png", big, "image/png").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("attachment_too_large"))
    );
    let (status, v) = upload(&app.patient(3), id, "x.png", PNG.to_vec(), "image/png").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("conversation_not_found"))
    );
    let form = reqwest::multipart::Form::new().text("other", "x");
    let resp = doctor
        .request(
            Method::POST,
            &format!("/api/messaging/conversations/{id}/attachments"),
        )
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let count = std::fs::read_dir(app.config.media_dir.join("uploads"))
        .unwrap()
        .count();
    assert_eq!(count, 2, "only the two accepted files are on disk");
}
on_both_backends!(attachments);

async fn strangers_cannot_touch_a_conversation(backend: Backend) {
    let app = spawn_app(backend).await;
    let doctor = app.doctor(1);
    let id = doctor
        .create_conversation("private", &[("patient", 2)])
        .await
        .unwrap();
    let msg = doctor.send_text(id, "confidentiel").await.unwrap();
    let mid = msg["id"].as_i64().unwrap();
    // Another patient, another doctor, and the same number with the other role.
    for stranger in [app.patient(3), app.doctor(2), app.patient(1)] {
        for (method, path, body) in [
            (
                Method::GET,
                format!("/api/messaging/conversations/{id}"),
                None,
            ),
            (
                Method::GET,
                format!("/api/messaging/conversations/{id}/messages"),
                None,
            ),
            (
                Method::POST,
                format!("/api/messaging/conversations/{id}/messages"),
                Some(json!({"contenu": "intrus"})),
            ),
            (
                Method::POST,
                format!("/api/messaging/conversations/{id}/read"),
                Some(json!({"messageId": mid})),
            ),
        ] {
            let (status, v) = stranger
                .call(method.clone(), &path, body.as_ref())
                .await
                .unwrap();
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {v}");
            assert_eq!(v["error"]["code"], "conversation_not_found");
        }
        let (_, list) = stranger
            .call(Method::GET, "/api/messaging/conversations", None)
            .await
            .unwrap();
        assert_eq!(list["data"]["conversations"].as_array().unwrap().len(), 0);
    }
    // Nothing was stored by the attempts.
    let (_, page) = doctor
        .call(
            Method::GET,
            &format!("/api/messaging/conversations/{id}/messages"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(page["data"]["messages"].as_array().unwrap().len(), 1);
}
on_both_backends!(strangers_cannot_touch_a_conversation);
