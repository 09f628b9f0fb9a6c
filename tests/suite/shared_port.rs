//! One port for everything (`https.multiplex`), on loopback: HTTPS (h2 and HTTP/1.1, REST,
//! Socket.IO, the web client), TURN over TLS (with and without ALPN `stun.turn`) and over
//! plain TCP, and ICE-TCP, all on the HTTPS listener; what speaks nothing served there is
//! closed; idle connections are closed within `https.identify_timeout` and starve nobody.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relais::ids::Role;
use relais_load::client::peer::{ClientPeer, Entry};
use relais_load::client::socketio::{ConnectOptions, SioClient};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;
use crate::turn::{credentials, ice_servers, relay_round_trip, with_loopback_peers};
use crate::turn_client::TurnClient;

const IDENTIFY: Duration = Duration::from_secs(2);

async fn shared_app() -> (TestApp, tempfile::TempDir) {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(
        web.path().join("index.html"),
        "<!doctype html><title>relais</title>",
    )
    .unwrap();
    let web_dir = web.path().to_path_buf();
    let app = spawn_app_with(Options::new(Backend::Sqlite).configure(move |c| {
        with_loopback_peers(c);
        c.https.multiplex = Some(true);
        c.https.identify_timeout = IDENTIFY;
        c.web_dir = web_dir;
    }))
    .await;
    (app, web)
}

fn https_addr(app: &TestApp) -> SocketAddr {
    app.running().https_addr.expect("https enabled")
}

fn cert_pem(app: &TestApp) -> Vec<u8> {
    std::fs::read(app.running().tls_cert_path.clone().unwrap()).unwrap()
}

fn https_client(app: &TestApp, http1: bool) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(&cert_pem(app)).unwrap();
    let b = reqwest::Client::builder().add_root_certificate(cert);
    let b = if http1 { b.http1_only() } else { b };
    b.build().unwrap()
}

/// Whether the server closes `s` within `wait` (end of stream or reset).
async fn closed_within(s: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A TLS connection to `addr` trusting the server's certificate, offering `alpn`.
async fn tls_connect(
    app: &TestApp,
    addr: SocketAddr,
    alpn: &[&str],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&cert_pem(app)) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await
}

/// The TURN URLs handed to patient 11.
async fn turn_urls(app: &TestApp) -> Vec<String> {
    let data = ice_servers(app, Role::Patient, 11).await;
    data["iceServers"][0]["urls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u.as_str().map(String::from))
        .collect()
}

async fn shared_port_count(app: &TestApp, kind: &str) -> f64 {
    app.metric(&format!(
        "relais_shared_port_connections_total{{kind=\"{kind}\"}}"
    ))
    .await
}

/// A doctor publishing over UDP and a patient with ICE-TCP only, both signaling over the
/// shared port; media both ways. Returns once both received audio and video.
async fn call_over_the_shared_port(app: &TestApp, patient: i64) {
    let https = app.https_base.clone().unwrap();
    let (session, conv, code) = create_session(app, 79, &[patient], "audio_video").await;
    let over_https = |cfg: &mut relais_load::client::peer::PeerConfig| {
        cfg.base = https.clone();
        cfg.socket.root_cert_pem = Some(cert_pem(app));
    };
    let mut cfg = peer_config(app, Role::Medecin, 79, session, Entry::Publish);
    cfg.conversation_id = conv;
    over_https(&mut cfg);
    let mut doctor = ClientPeer::start(cfg).await.unwrap();
    doctor
        .wait_connected(Duration::from_secs(15))
        .await
        .expect("the doctor connects");
    let mut cfg = peer_config(app, Role::Patient, patient, session, Entry::Code(code));
    over_https(&mut cfg);
    cfg.udp_bind = Vec::new();
    cfg.tcp_bind = vec!["127.0.0.1:0".into()];
    let mut patient = ClientPeer::start(cfg).await.unwrap();
    patient
        .wait_connected(Duration::from_secs(15))
        .await
        .expect("the patient connects over ICE-TCP");
    let ok = eventually(Duration::from_secs(15), || {
        doctor.received.streams_with(50) == (1, 1) && patient.received.streams_with(50) == (1, 1)
    })
    .await;
    assert!(ok, "media flows both ways");
    let pair = patient.selected_pair().await.expect("a selected pair");
    assert_eq!(pair.protocol, "tcp", "{pair:?}");
    doctor.close().await;
    patient.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_turn_and_ice_tcp_share_one_port() {
    let (app, _web) = shared_app().await;
    let addr = https_addr(&app);
    let https = app.https_base.clone().unwrap();

    // HTTPS: h2 by ALPN, HTTP/1.1 by ALPN, the API and the web client.
    let r = https_client(&app, false)
        .get(format!("{https}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let r = https_client(&app, true)
        .get(format!("{https}/conference/12"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert!(r.text().await.unwrap().contains("<title>relais</title>"));

    // The shared port is handed out as a `turns:` URL.
    let wanted = format!("turns:127.0.0.1:{}?transport=tcp", addr.port());
    let urls = turn_urls(&app).await;
    assert!(urls.contains(&wanted), "{urls:?}");

    // TURN over TLS (ALPN `stun.turn`, and none) and over plain TCP relay on the same port.
    let cert = app.running().tls_cert_path.clone().unwrap();
    for (id, alpn) in [(11, Some("stun.turn")), (12, None)] {
        let (u, p) = credentials(&app, id).await;
        let mut c = TurnClient::tls_with_alpn(addr, &cert, alpn, &u, &p).await;
        relay_round_trip(&mut c, &app).await;
    }
    let (u, p) = credentials(&app, 13).await;
    let mut c = TurnClient::tcp(addr, &u, &p).await;
    relay_round_trip(&mut c, &app).await;
    drop(c);

    // ICE-TCP: a patient without UDP reaches the media plane through the shared port too.
    call_over_the_shared_port(&app, 14).await;

    // What is served nowhere here is closed: plain HTTP (it has its own port), garbage.
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost: relais\r\n\r\n"[..],
        &[0xFF; 64][..],
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        assert!(closed_within(&mut s, Duration::from_secs(2)).await);
    }

    // An HTTPS client that offers no ALPN (as old clients do) is handshaken where TURN clients
    // are, then served HTTP all the same.
    let mut legacy = tls_connect(&app, addr, &[]).await.expect("handshake");
    legacy
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: relais\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), legacy.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A TLS client offering a protocol not served here fails its handshake; one that offers
    // none and then says nothing is closed when its time to identify itself is up.
    assert!(tls_connect(&app, addr, &["spdy/3"]).await.is_err());
    let mut silent = tls_connect(&app, addr, &[]).await.expect("handshake");
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(IDENTIFY + Duration::from_secs(3), silent.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0) | Err(_))),
        "a silent TLS client is closed"
    );
    assert!(
        t.elapsed() <= IDENTIFY + Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );

    assert_eq!(shared_port_count(&app, "tls_failed").await, 1.0);
    assert_eq!(shared_port_count(&app, "timeout").await, 1.0);
    assert_eq!(shared_port_count(&app, "turn_tls").await, 2.0);
    assert_eq!(shared_port_count(&app, "turn_tcp").await, 1.0);
    assert!(shared_port_count(&app, "ice_tcp").await >= 1.0);
    assert!(shared_port_count(&app, "https").await >= 4.0);
    assert_eq!(shared_port_count(&app, "unrecognised").await, 2.0);
    // The server is still whole.
    let r = https_client(&app, false)
        .get(format!("{https}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_idle_connections_starve_nobody_and_are_closed_in_time() {
    let (app, _web) = shared_app().await;
    let addr = https_addr(&app);
    let https = app.https_base.clone().unwrap();

    // 500 connections from another address that never say anything.
    let started = Instant::now();
    let closed_after = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    for _ in 0..500 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        let closed_after = closed_after.clone();
        readers.push(tokio::spawn(async move {
            if closed_within(&mut s, IDENTIFY + Duration::from_secs(10)).await {
                closed_after.lock().push(started.elapsed());
            }
        }));
    }

    // Meanwhile REST, Socket.IO and a call work.
    let r = https_client(&app, false)
        .get(format!("{https}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let auth = json!({"token": app.token(Role::Patient, 2), "userType": "patient", "userId": 2});
    let sock = SioClient::connect_with(
        &https,
        auth,
        ConnectOptions {
            root_cert_pem: Some(cert_pem(&app)),
            ..Default::default()
        },
    )
    .await
    .expect("Socket.IO over the shared port connects");
    call_over_the_shared_port(&app, 11).await;
    drop(sock);

    for r in readers {
        r.await.unwrap();
    }
    let closed = closed_after.lock().clone();
    assert_eq!(closed.len(), 500, "every idle connection is closed");
    // Past the per-address cap, at once; the others when their time to identify is up.
    let at_once = closed.iter().filter(|d| **d < IDENTIFY / 2).count();
    let slowest = closed.iter().max().unwrap();
    eprintln!(
        "idle connections: {at_once} closed at once, the last after {:.2} s (identify timeout {:?})",
        slowest.as_secs_f64(),
        IDENTIFY
    );
    assert!(at_once >= 500 - 16, "{at_once}");
    assert!(*slowest < IDENTIFY + Duration::from_secs(2), "{slowest:?}");
    assert!(shared_port_count(&app, "pending_cap").await >= 484.0);
    assert!(shared_port_count(&app, "timeout").await >= 1.0);
    assert_eq!(app.metric("relais_shared_port_pending").await, 0.0);
}

/// TURN/TLS on an address of its own: `turn.tls_host` names it in the `turns:` URLs (the
/// public base URL's host would reach the HTTPS server instead); without multiplexing, the
/// HTTPS port is not one of them.
#[tokio::test]
async fn the_turns_host_is_a_setting() {
    let app = spawn_app_with(Options::new(Backend::Sqlite).configure(|c| {
        c.turn.tls_host = Some("turn.clinique.example".into());
    }))
    .await;
    let urls = turn_urls(&app).await;
    let turn = app.state().turn.as_deref().unwrap();
    let tls_port = turn.tls_addrs()[0].port();
    let turns: Vec<&str> = urls
        .iter()
        .map(String::as_str)
        .filter(|u| u.starts_with("turns:"))
        .collect();
    assert_eq!(
        turns,
        [format!(
            "turns:turn.clinique.example:{tls_port}?transport=tcp"
        )],
        "{urls:?}"
    );
}
