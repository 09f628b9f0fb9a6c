//! The browser client as the server serves it (`web_dir`, client routes answered by
//! `index.html`) and the development sign-in endpoint.

use serde_json::{Value, json};

use crate::common::*;

fn web_dir(dir: &std::path::Path) -> std::path::PathBuf {
    let web = dir.join("web-dist");
    std::fs::create_dir_all(web.join("assets")).unwrap();
    std::fs::write(
        web.join("index.html"),
        "<!doctype html><title>relais</title>",
    )
    .unwrap();
    std::fs::write(web.join("assets/app.js"), "console.log('relais')").unwrap();
    web
}

#[tokio::test]
async fn files_and_client_routes_are_served() {
    let holder = tempfile::tempdir().unwrap();
    let web = web_dir(holder.path());
    let app =
        spawn_app_with(Options::new(Backend::Sqlite).configure(move |c| c.web_dir = web)).await;
    for path in ["/", "/conference/193?code=81392D21", "/doctor"] {
        let r = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["cache-control"], "no-store", "{path}");
        assert_eq!(r.headers()["referrer-policy"], "no-referrer", "{path}");
        assert!(r.text().await.unwrap().contains("<title>relais</title>"));
    }
    let js = app
        .http
        .get(format!("{}/assets/app.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    // API paths never fall back to the page.
    let api = app
        .http
        .get(format!("{}/api/nothing", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
}

#[tokio::test]
async fn an_unbuilt_client_says_how_to_build_it() {
    let app = spawn_app_with(
        Options::new(Backend::Sqlite).configure(|c| c.web_dir = "/nonexistent/relais-web".into()),
    )
    .await;
    let r = app
        .http
        .get(format!("{}/doctor", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("scripts/run.sh"));
}

#[tokio::test]
async fn development_sign_in_exists_only_in_development_mode() {
    let dev =
        spawn_app_with(Options::new(Backend::Sqlite).configure(|c| c.auth.jwt_secret = None)).await;
    let url = format!("{}/api/dev/token", dev.base);
    let probe = dev.http.get(&url).send().await.unwrap();
    assert_eq!(probe.status(), 200);
    assert_eq!(
        probe.json::<Value>().await.unwrap()["data"]["developmentMode"],
        true
    );
    let minted: Value = dev
        .http
        .post(&url)
        .json(&json!({"role": "medecin", "id": 79, "name": "Dr. Martin"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["data"]["token"].as_str().unwrap();
    assert_eq!(
        minted["data"]["user"],
        json!({"userId": 79, "userType": "medecin", "role": "medecin"})
    );
    // The token works on the API.
    let me = dev
        .http
        .get(format!("{}/api/messaging/conversations", dev.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let bad = dev
        .http
        .post(&url)
        .json(&json!({"role": "patient", "id": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let wrong_role = dev
        .http
        .post(&url)
        .json(&json!({"role": "admin", "id": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_role.status(), 400);

    // With a configured secret neither exists.
    let prod = spawn_app(Backend::Sqlite).await;
    let url = format!("{}/api/dev/token", prod.base);
    assert_eq!(prod.http.get(&url).send().await.unwrap().status(), 404);
    let post = prod
        .http
        .post(&url)
        .json(&json!({"role": "medecin", "id": 79}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 404);
}
