//! HTTPS with the generated certificate: a client that trusts it connects, REST and Socket.IO.

use relais_load::client::socketio::{ConnectOptions, SioClient};
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_generated_certificate() {
    let app = spawn_app(Backend::Sqlite).await;
    let https = app.https_base.clone().expect("https enabled");
    let cert_path = app.running().tls_cert_path.clone().unwrap();
    assert!(cert_path.starts_with(&app.config.https.certs_dir));
    let pem = std::fs::read(&cert_path).unwrap();
    let key = std::fs::metadata(app.config.https.certs_dir.join("relais-selfsigned.key")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
    }

    // An untrusting client fails; a client that trusts the certificate succeeds on 127.0.0.1
    // and on localhost (both names are in the certificate).
    assert!(
        reqwest::Client::new()
            .get(format!("{https}/healthz"))
            .send()
            .await
            .is_err()
    );
    let cert = reqwest::Certificate::from_pem(&pem).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(cert)
        .build()
        .unwrap();
    let resp = client.get(format!("{https}/healthz")).send().await.unwrap();
    assert!(resp.status().is_success());
    let port = app.running().https_addr.unwrap().port();
    let resp = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());

    // The same API over TLS.
    let doctor = relais_load::client::api::ApiClient::new(
        client.clone(),
        &https,
        &app.token(relais::ids::Role::Medecin, 1),
    );
    let id = doctor
        .create_conversation("private", &[("patient", 2)])
        .await
        .unwrap();

    // Socket.IO over wss.
    let auth = json!({"token": app.token(relais::ids::Role::Patient, 2), "userType": "patient", "userId": 2});
    let mut sock = SioClient::connect_with(
        &https,
        auth,
        ConnectOptions {
            root_cert_pem: Some(pem.clone()),
            timeout: None,
            ..Default::default()
        },
    )
    .await
    .expect("wss connects");
    ack_ok(
        &sock
            .emit_with_ack("join_conversation", &json!({"conversationId": id}), WAIT)
            .await
            .unwrap(),
    );
    doctor.send_text(id, "chiffré").await.unwrap();
    let m = sock.wait_for("new_message", WAIT).await.unwrap();
    assert_eq!(m["contenu"], "chiffré");

    // A restart keeps the same certificate.
    let mut app = app;
    app.stop().await;
    app.start().await;
    assert_eq!(std::fs::read(&cert_path).unwrap(), pem);
}
