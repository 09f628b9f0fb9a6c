//! Data survives a restart on the same data directory.

use reqwest::Method;

use crate::common::*;
use crate::on_both_backends;

async fn survives_restart(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let doctor = app.doctor(1);
    let id = doctor
        .create_conversation("private", &[("patient", 2)])
        .await
        .unwrap();
    for i in 0..3 {
        doctor.send_text(id, &format!("avant {i}")).await.unwrap();
    }
    let token = doctor.token().to_string();
    app.stop().await;
    app.start().await;
    // The same token still works (same secret), the history is intact, ids keep growing.
    let doctor = relais_load::client::api::ApiClient::new(app.http.clone(), &app.base, &token);
    let after = doctor.send_text(id, "après").await.unwrap();
    let (_, page) = doctor
        .call(
            Method::GET,
            &format!("/api/messaging/conversations/{id}/messages"),
            None,
        )
        .await
        .unwrap();
    let msgs = page["data"]["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[0]["contenu"], "avant 0");
    assert_eq!(msgs[3]["id"], after["id"]);
    assert!(after["id"].as_i64().unwrap() > msgs[2]["id"].as_i64().unwrap());
}
on_both_backends!(survives_restart);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_secret_is_kept_per_data_dir() {
    let mut app =
        spawn_app_with(Options::new(Backend::Sqlite).configure(|c| c.auth.jwt_secret = None)).await;
    assert!(app.state().verifier.development_mode);
    let token = app.token(relais::ids::Role::Patient, 5);
    app.stop().await;
    app.start().await;
    let client = relais_load::client::api::ApiClient::new(app.http.clone(), &app.base, &token);
    let (status, _) = client
        .call(Method::GET, "/api/messaging/conversations", None)
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::OK);
}
