//! The embedded TURN server on loopback: credentials handed out over REST, the long-term
//! authentication dance, allocations over UDP, TCP and TLS, permissions towards relais's own
//! media address only, channels, quotas, garbage; and a webrtc-rs call forced through it.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relais::ids::Role;
use relais::turn::credentials::Credentials;
use relais_load::client::peer::{ClientPeer, Entry};
use rtc::stun::attributes::*;
use rtc::stun::message::{BINDING_REQUEST, METHOD_ALLOCATE};
use rtc::turn::proto::PROTO_UDP;
use rtc::turn::proto::reqtrans::RequestedTransport;
use serde_json::Value;

use crate::common::*;
use crate::turn_client::{TurnClient, decode};

const SHORT: Duration = Duration::from_millis(300);

pub(crate) async fn ice_servers(app: &TestApp, role: Role, id: i64) -> Value {
    let api = if role == Role::Patient {
        app.patient(id)
    } else {
        app.doctor(id)
    };
    let (status, v) = api
        .call(
            reqwest::Method::GET,
            "/api/messaging/webrtc/ice-servers",
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    v["data"].clone()
}

/// Username and password handed to patient `id`.
pub(crate) async fn credentials(app: &TestApp, id: i64) -> (String, String) {
    credentials_of(app, Role::Patient, id).await
}

/// Username and password handed to `role` `id`.
async fn credentials_of(app: &TestApp, role: Role, id: i64) -> (String, String) {
    let data = ice_servers(app, role, id).await;
    let server = &data["iceServers"][0];
    (
        server["username"].as_str().unwrap().to_string(),
        server["credential"].as_str().unwrap().to_string(),
    )
}

fn turn(app: &TestApp) -> &relais::turn::TurnServer {
    app.state().turn.as_deref().expect("TURN enabled")
}

fn media_addr(app: &TestApp) -> SocketAddr {
    app.state().sfu.host_candidates()[0]
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn ice_servers_come_with_sessions_and_on_their_own() {
    let app = spawn_app(Backend::Sqlite).await;
    let t = turn(&app);
    let data = ice_servers(&app, Role::Patient, 11).await;
    let server = &data["iceServers"][0];
    let urls: Vec<&str> = server["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            format!("turn:127.0.0.1:{}?transport=udp", t.udp_addr().port()),
            format!("turn:127.0.0.1:{}?transport=tcp", t.tcp_addr().port()),
            format!("turns:127.0.0.1:{}?transport=tcp", t.tls_addrs()[0].port()),
        ]
    );
    assert_eq!(data["ttl"], 12 * 3600);
    let username = server["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "patient-11");
    assert!(expiry.parse::<u64>().unwrap() > now() + 11 * 3600);
    // The password is the REST scheme's HMAC of the username with the shared secret.
    let secret = app
        .state()
        .store
        .server_secret("turn_secret", String::new)
        .await
        .unwrap();
    assert_eq!(
        server["credential"].as_str().unwrap(),
        Credentials::new(secret).password(username)
    );

    // No token, no credentials.
    let status = app
        .http
        .get(format!("{}/api/messaging/webrtc/ice-servers", app.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);

    // The doctor creating a session gets them in the answer.
    let api = app.doctor(79);
    let conv = api
        .create_conversation("private", &[("patient", 11)])
        .await
        .unwrap();
    let (status, v) = api
        .call(
            reqwest::Method::POST,
            "/api/messaging/webrtc/sessions",
            Some(&serde_json::json!({"conversation_id": conv, "waiting_room": false})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{v}");
    let created = &v["data"]["iceServers"][0];
    assert!(
        created["username"]
            .as_str()
            .unwrap()
            .ends_with(":medecin-79")
    );
    assert_eq!(created["urls"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn without_turn_there_are_no_ice_servers() {
    let app =
        spawn_app_with(Options::new(Backend::Sqlite).configure(|c| c.turn.enabled = false)).await;
    assert!(app.state().turn.is_none());
    let data = ice_servers(&app, Role::Patient, 11).await;
    assert_eq!(data["iceServers"], serde_json::json!([]));
}

#[tokio::test]
async fn authentication_and_bad_requests_get_the_right_errors() {
    let app = spawn_app(Backend::Sqlite).await;
    let server = turn(&app).udp_addr();
    let (username, password) = credentials(&app, 11).await;

    // No integrity: 401 with the realm and a nonce.
    let mut c = TurnClient::udp(server, &username, &password).await;
    let m = c.build(
        METHOD_ALLOCATE,
        vec![Box::new(RequestedTransport {
            protocol: PROTO_UDP,
        })],
        false,
    );
    let a = c.transact(&m).await;
    assert_eq!(a.code(), Some(401));
    assert_eq!(a.text(ATTR_REALM).as_deref(), Some("relais"));
    let nonce = a.text(ATTR_NONCE).expect("a nonce");

    // Wrong password: 401 with a fresh nonce.
    let mut wrong = TurnClient::udp(server, &username, "not-the-password").await;
    wrong.nonce = Some(nonce.clone());
    let a = wrong.allocate().await;
    assert_eq!(a.code(), Some(401));
    assert!(a.text(ATTR_NONCE).is_some());

    // Expired credentials (right password for an expired username): 401.
    let secret = app
        .state()
        .store
        .server_secret("turn_secret", String::new)
        .await
        .unwrap();
    let (old_user, old_pass) = Credentials::new(secret).issue("patient-11", now() - 10);
    let mut expired = TurnClient::udp(server, &old_user, &old_pass).await;
    expired.nonce = Some(nonce.clone());
    let a = expired.allocate().await;
    assert_eq!(a.code(), Some(401));
    assert!(a.text(ATTR_NONCE).is_some());

    // A nonce that is not ours: 438 Stale Nonce, then the retry with the fresh one works.
    c.nonce = Some("1-forged".into());
    let a = c.allocate().await;
    assert!(a.is_success(), "code {:?}", a.code());
    assert_ne!(c.nonce.as_deref(), Some("1-forged"));
    let relayed = a
        .xor_addr(ATTR_XOR_RELAYED_ADDRESS)
        .expect("relayed address");
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");
    assert_eq!(a.lifetime(), Some(Duration::from_secs(600)));
    assert_eq!(a.xor_addr(ATTR_XORMAPPED_ADDRESS), c.local_addr());
    assert_eq!(turn(&app).allocation_count(), 1);

    // A second allocation on the same 5-tuple: 437.
    assert_eq!(c.allocate().await.code(), Some(437));
    // A TCP relay is not offered: 442.
    let mut tcp_relay = TurnClient::udp(server, &username, &password).await;
    assert_eq!(tcp_relay.allocate_tcp_relay().await.code(), Some(442));

    // Not an open relay: an address that is not relais's media → 403.
    let outside: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    assert_eq!(c.create_permission(outside).await.code(), Some(403));
    assert_eq!(c.channel_bind(0x4000, outside).await.code(), Some(403));
    // relais's own IP but another port (HTTP, SSH…): no channel to it either.
    let other_port = SocketAddr::new(media_addr(&app).ip(), 22);
    assert_eq!(c.channel_bind(0x4000, other_port).await.code(), Some(403));
    // The media address itself is fine.
    assert!(c.create_permission(media_addr(&app)).await.is_success());
    assert!(c.channel_bind(0x4000, media_addr(&app)).await.is_success());
    // Bad channel number, or a channel already bound elsewhere: 400.
    assert_eq!(
        c.channel_bind(0x3000, media_addr(&app)).await.code(),
        Some(400)
    );

    // Another user cannot touch this allocation from its 5-tuple... (441 needs the same
    // tuple: a client that changes username on its own allocation).
    let (other_user, other_pass) = credentials(&app, 12).await;
    let own_nonce = c.nonce.clone();
    c.username = other_user;
    c.password = other_pass;
    c.nonce = own_nonce;
    assert_eq!(c.refresh(Duration::from_secs(600)).await.code(), Some(441));
    c.username = username.clone();
    c.password = password.clone();

    // Malformed STUN is dropped without an answer; the server keeps answering.
    c.send_raw(&[0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42])
        .await;
    c.send_raw(b"GET / HTTP/1.1\r\n\r\n").await;
    let mut garbage = decode(&{
        let mut m = rtc::stun::message::Message::new();
        m.build(&[
            Box::new(BINDING_REQUEST),
            Box::new(rtc::stun::message::TransactionId::new()),
        ])
        .unwrap();
        m.raw
    })
    .unwrap()
    .raw;
    garbage[3] = 0xff; // length beyond the datagram
    c.send_raw(&garbage).await;
    assert!(c.recv_raw(SHORT).await.is_none(), "garbage gets no answer");
    let mut binding = rtc::stun::message::Message::new();
    binding
        .build(&[
            Box::new(BINDING_REQUEST),
            Box::new(rtc::stun::message::TransactionId::new()),
        ])
        .unwrap();
    let a = c.transact(&binding).await;
    assert_eq!(a.xor_addr(ATTR_XORMAPPED_ADDRESS), c.local_addr());

    // Refresh with lifetime 0 deletes the allocation.
    let a = c.refresh(Duration::ZERO).await;
    assert!(a.is_success(), "{:?}", a.code());
    assert!(
        eventually(Duration::from_secs(2), || turn(&app).allocation_count()
            == 0)
        .await
    );
    assert_eq!(c.refresh(Duration::from_secs(600)).await.code(), Some(437));

    let m = app.metrics().await;
    assert!(
        metric_value(
            &m,
            "relais_turn_requests_total{method=\"allocate\",outcome=\"401\"}"
        ) >= 2.0,
        "{m}"
    );
    assert!(
        metric_value(&m, "relais_turn_dropped_total{reason=\"malformed\"}") >= 2.0,
        "{m}"
    );
    // The rest of the server did not notice.
    let health = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // Credentials never reach the logs.
    let logs = captured_logs();
    assert!(!logs.contains(&password));
}

/// Relays both ways once permitted, by Send/Data indications and by channels.
pub(crate) async fn relay_round_trip(c: &mut TurnClient, app: &TestApp) {
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let a = c.allocate().await;
    assert!(a.is_success(), "{:?}", a.code());
    let relayed = a.xor_addr(ATTR_XOR_RELAYED_ADDRESS).unwrap();
    let mut buf = [0u8; 2048];

    // No permission yet: nothing goes out.
    c.send_indication(peer_addr, b"too early").await;
    assert!(
        tokio::time::timeout(SHORT, peer.recv_from(&mut buf))
            .await
            .is_err()
    );

    assert!(c.create_permission(peer_addr).await.is_success());
    c.send_indication(peer_addr, b"hello").await;
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf))
        .await
        .expect("peer hears the client")
        .unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from.port(), relayed.port());

    // Back as a Data indication naming the peer.
    peer.send_to(b"pong", from).await.unwrap();
    let data = loop {
        let bytes = c.recv_raw(Duration::from_secs(2)).await.expect("data back");
        if let Some(m) = decode(&bytes) {
            break m;
        }
    };
    let mut d = rtc::turn::proto::data::Data::default();
    rtc::stun::message::Getter::get_from(&mut d, &data).unwrap();
    assert_eq!(d.0, b"pong");

    // Channels: both ways as ChannelData.
    assert!(c.channel_bind(0x4001, peer_addr).await.is_success());
    c.send_channel_data(0x4001, b"over the channel").await;
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"over the channel");
    peer.send_to(b"abc", from).await.unwrap();
    let bytes = c
        .recv_raw(Duration::from_secs(2))
        .await
        .expect("channel data back");
    assert_eq!(
        relais::turn::wire::parse_channel_data(&bytes),
        Some((0x4001, &b"abc"[..]))
    );
    assert!(app.metric("relais_turn_packets_to_peer_total").await >= 2.0);
}

pub(crate) fn with_loopback_peers(c: &mut relais::config::Config) {
    // The peer sockets of these tests are on loopback, not the media port.
    c.turn.extra_peer_ips = vec!["127.0.0.1".parse().unwrap()];
}

#[tokio::test]
async fn relays_over_udp() {
    let app = spawn_app_with(Options::new(Backend::Sqlite).configure(with_loopback_peers)).await;
    let (u, p) = credentials(&app, 11).await;
    let mut c = TurnClient::udp(turn(&app).udp_addr(), &u, &p).await;
    relay_round_trip(&mut c, &app).await;
}

#[tokio::test]
async fn relays_over_tcp_and_closing_releases_the_allocation() {
    let app = spawn_app_with(Options::new(Backend::Sqlite).configure(with_loopback_peers)).await;
    let (u, p) = credentials(&app, 11).await;
    let mut c = TurnClient::tcp(turn(&app).tcp_addr(), &u, &p).await;
    relay_round_trip(&mut c, &app).await;
    assert_eq!(turn(&app).allocation_count(), 1);
    assert_eq!(
        app.metric("relais_turn_connections{transport=\"tcp\"}")
            .await,
        1.0
    );
    drop(c);
    assert!(
        eventually(Duration::from_secs(3), || turn(&app).allocation_count()
            == 0)
        .await
    );
    let mut open = 1.0;
    for _ in 0..30 {
        open = app
            .metric("relais_turn_connections{transport=\"tcp\"}")
            .await;
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open, 0.0, "the connection is gone");
}

/// What a client relays to relais's own media address reaches the media plane without a
/// socket (as if from the relayed address), and the link goes with the allocation.
#[tokio::test]
async fn own_media_is_reached_in_process_until_the_client_vanishes() {
    let app = spawn_app(Backend::Sqlite).await;
    let plane = app.state().sfu.media_plane().clone();
    let (u, p) = credentials(&app, 11).await;
    let mut c = TurnClient::tcp(turn(&app).tcp_addr(), &u, &p).await;
    let a = c.allocate().await;
    assert!(a.is_success(), "{:?}", a.code());
    assert_eq!(plane.relayed_count(), 1);
    let media = media_addr(&app);
    assert!(c.create_permission(media).await.is_success());
    let unrouted = app.metric("relais_udp_datagrams_unrouted_total").await;
    // Not STUN for a known ufrag: the plane counts it as unrouted, which shows it got there.
    c.send_indication(media, b"not for anyone").await;
    let mut now_unrouted = unrouted;
    for _ in 0..30 {
        now_unrouted = app.metric("relais_udp_datagrams_unrouted_total").await;
        if now_unrouted > unrouted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(now_unrouted, unrouted + 1.0, "the media plane got it");
    assert_eq!(
        app.metric("relais_turn_packets_in_process_total").await,
        1.0
    );
    drop(c);
    assert!(
        eventually(Duration::from_secs(3), || turn(&app).allocation_count()
            == 0)
        .await
    );
    assert_eq!(
        plane.relayed_count(),
        0,
        "the link went with the allocation"
    );
}

#[tokio::test]
async fn relays_over_tls() {
    let app = spawn_app_with(Options::new(Backend::Sqlite).configure(with_loopback_peers)).await;
    let (u, p) = credentials(&app, 11).await;
    let cert = app.running().tls_cert_path.clone().expect("a certificate");
    let mut c = TurnClient::tls(turn(&app).tls_addrs()[0], &cert, &u, &p).await;
    relay_round_trip(&mut c, &app).await;
}

#[tokio::test]
async fn a_stream_that_is_not_turn_is_closed() {
    let app = spawn_app(Backend::Sqlite).await;
    let (u, p) = credentials(&app, 11).await;
    let mut c = TurnClient::tcp(turn(&app).tcp_addr(), &u, &p).await;
    c.send_raw(b"\xff\xffnot turn at all").await;
    assert!(c.closed_within(Duration::from_secs(2)).await);
    // The server still serves TURN and HTTP.
    let mut ok = TurnClient::tcp(turn(&app).tcp_addr(), &u, &p).await;
    assert!(ok.allocate().await.is_success());
    let health = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn allocation_floods_hit_the_per_user_quota() {
    let app = spawn_app_with(
        Options::new(Backend::Sqlite).configure(|c| c.turn.max_allocations_per_user = 3),
    )
    .await;
    let server = turn(&app).udp_addr();
    let (u, p) = credentials(&app, 11).await;
    let mut held = Vec::new();
    for i in 0..6 {
        let mut c = TurnClient::udp(server, &u, &p).await;
        let a = c.allocate().await;
        if i < 3 {
            assert!(a.is_success(), "allocation {i}: {:?}", a.code());
        } else {
            assert_eq!(a.code(), Some(486), "allocation {i}");
        }
        held.push(c);
    }
    // Another user is not affected.
    let (u2, p2) = credentials(&app, 12).await;
    let mut other = TurnClient::udp(server, &u2, &p2).await;
    assert!(other.allocate().await.is_success());
    // Releasing one makes room again.
    assert!(held[0].refresh(Duration::ZERO).await.is_success());
    let mut again = TurnClient::udp(server, &u, &p).await;
    assert!(again.allocate().await.is_success());
    assert_eq!(turn(&app).allocation_count(), 4);
}

/// One client taking the whole TURN capacity left the next doctor with 508: the last
/// `turn.reserved_for_sessions` places go only to people in a live consultation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_allocations_are_kept_for_people_in_a_consultation() {
    let app = spawn_app_with(Options::new(Backend::Sqlite).configure(|c| {
        c.turn.max_allocations = 6;
        c.turn.reserved_for_sessions = 2;
        c.turn.max_allocations_per_user = 20;
    }))
    .await;
    let server = turn(&app).udp_addr();
    // A patient in no call floods: four places, then 508.
    let (u, p) = credentials(&app, 11).await;
    let mut held = Vec::new();
    for i in 0..6 {
        let mut c = TurnClient::udp(server, &u, &p).await;
        let a = c.allocate().await;
        if i < 4 {
            assert!(a.is_success(), "allocation {i}: {:?}", a.code());
        } else {
            assert_eq!(
                a.code(),
                Some(508),
                "allocation {i}: kept for consultations"
            );
        }
        held.push(c);
    }
    // A doctor in a live consultation still gets the places kept for them.
    let (session, conv, _code) = create_session(&app, 79, &[12], "audio_only").await;
    let mut cfg = peer_config(&app, Role::Medecin, 79, session, Entry::Publish);
    cfg.conversation_id = conv;
    cfg.video = false;
    let doctor = ClientPeer::start(cfg).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || app
            .state()
            .sfu
            .in_a_session(relais::ids::Identity::new(Role::Medecin, 79)))
        .await
    );
    let (du, dp) = credentials_of(&app, Role::Medecin, 79).await;
    for i in 0..2 {
        let mut c = TurnClient::udp(server, &du, &dp).await;
        let a = c.allocate().await;
        assert!(
            a.is_success(),
            "the doctor's allocation {i}: {:?}",
            a.code()
        );
        held.push(c);
    }
    let mut c = TurnClient::udp(server, &du, &dp).await;
    assert_eq!(
        c.allocate().await.code(),
        Some(508),
        "now the server is full"
    );
    assert_eq!(turn(&app).allocation_count(), 6);
    doctor.close().await;
}

#[tokio::test]
async fn relayed_bandwidth_is_capped_per_allocation() {
    let app = spawn_app_with(Options::new(Backend::Sqlite).configure(|c| {
        with_loopback_peers(c);
        c.turn.max_kbps_per_allocation = 64; // 8000 bytes/s, one second of burst
    }))
    .await;
    let (u, p) = credentials(&app, 11).await;
    let mut c = TurnClient::udp(turn(&app).udp_addr(), &u, &p).await;
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    assert!(c.allocate().await.is_success());
    assert!(c.channel_bind(0x4002, peer_addr).await.is_success());
    let mut buf = [0u8; 2048];
    // A small probe first, until one is relayed (twice in clean-clone CI runs, none of a
    // burst sent right after the ChannelBind success was: not explained yet, see the drop
    // counters printed below if it happens here).
    let mut relayed = false;
    for _ in 0..10 {
        c.send_channel_data(0x4002, b"probe").await;
        if tokio::time::timeout(Duration::from_millis(500), peer.recv_from(&mut buf))
            .await
            .is_ok()
        {
            relayed = true;
            break;
        }
    }
    let drops = || async {
        app.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("relais_turn_dropped_total"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(relayed, "no probe relayed in 5 s:\n{}", drops().await);
    // Then a burst of 40 kB at 8 kB/s with one second of burst: about 8 pass.
    let payload = vec![7u8; 1000];
    for _ in 0..40 {
        c.send_channel_data(0x4002, &payload).await;
    }
    let mut received = 0;
    while tokio::time::timeout(SHORT, peer.recv_from(&mut buf))
        .await
        .is_ok()
    {
        received += 1;
    }
    assert!(
        (6..=12).contains(&received),
        "received {received} of 40:\n{}",
        drops().await
    );
    assert!(
        app.metric("relais_turn_dropped_total{reason=\"bandwidth\"}")
            .await
            >= 28.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_forced_through_turn_over_udp() {
    let app = spawn_app(Backend::Sqlite).await;
    let (session, conv, code) = create_session(&app, 79, &[11], "audio_video").await;
    let relay_config = |cfg: &mut relais_load::client::peer::PeerConfig, servers: &Value| {
        let s = &servers["iceServers"][0];
        cfg.ice_servers = vec![rtc::peer_connection::configuration::RTCIceServer {
            urls: vec![s["urls"][0].as_str().unwrap().to_string()],
            username: s["username"].as_str().unwrap().to_string(),
            credential: s["credential"].as_str().unwrap().to_string(),
        }];
        cfg.relay_only = true;
    };
    let mut cfg = peer_config(&app, Role::Medecin, 79, session, Entry::Publish);
    cfg.conversation_id = conv;
    relay_config(&mut cfg, &ice_servers(&app, Role::Medecin, 79).await);
    let mut doctor = ClientPeer::start(cfg).await.unwrap();
    doctor
        .wait_connected(Duration::from_secs(15))
        .await
        .expect("doctor connects through TURN");
    let mut cfg = peer_config(&app, Role::Patient, 11, session, Entry::Code(code));
    relay_config(&mut cfg, &ice_servers(&app, Role::Patient, 11).await);
    let mut patient = ClientPeer::start(cfg).await.unwrap();
    patient
        .wait_connected(Duration::from_secs(15))
        .await
        .expect("patient connects through TURN");

    let ok = eventually(Duration::from_secs(15), || {
        doctor.received.streams_with(50) == (1, 1) && patient.received.streams_with(50) == (1, 1)
    })
    .await;
    assert!(ok, "media flows both ways through the relay");
    for peer in [&doctor, &patient] {
        let pair = peer.selected_pair().await.expect("a selected pair");
        assert_eq!(pair.local_type, "relay", "{pair:?}");
        assert_eq!(pair.protocol, "udp", "{pair:?}");
    }
    assert_eq!(
        server_transports(&app, 79, session).await,
        ["udp", "udp"],
        "the server reaches both over its UDP port"
    );
    assert_eq!(turn(&app).allocation_count(), 2);
    assert!(app.metric("relais_turn_packets_to_client_total").await > 100.0);
    // relais's own media is reached in-process, both ways: every relayed packet.
    // One scrape (media still flows: separate scrapes would race it), and a margin for the
    // packets in flight between the counters of one scrape.
    let m = app.metrics().await;
    let in_process = metric_value(&m, "relais_turn_packets_in_process_total");
    let relayed = metric_value(&m, "relais_turn_packets_to_client_total")
        + metric_value(&m, "relais_turn_packets_to_peer_total");
    assert!(
        in_process > 200.0 && in_process >= relayed * 0.99,
        "{in_process} of {relayed}"
    );
    doctor.close().await;
    patient.close().await;
}

/// aiortc (aioice's TURN client) relayed over TURN/TCP and TURN/TLS, relay candidates only.
async fn aiortc_through_turn(scheme: &str, transport: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "aiortc is not installed: run scripts/prepare/30-python-aiortc.sh (.ci/run does)"
    );
    let app = spawn_app(Backend::Sqlite).await;
    let (session, conv, code) = create_session(&app, 79, &[11], "audio_video").await;
    let mut cfg = peer_config(&app, Role::Medecin, 79, session, Entry::Publish);
    cfg.conversation_id = conv;
    let mut doctor = ClientPeer::start(cfg).await.unwrap();
    doctor
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let servers = ice_servers(&app, Role::Patient, 11).await;
    let s = &servers["iceServers"][0];
    let url = s["urls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u.as_str())
        .find(|u| u.starts_with(scheme) && u.ends_with(transport))
        .unwrap()
        .to_string();
    let cert = app.running().tls_cert_path.clone().unwrap();
    let out = tokio::process::Command::new(python)
        .arg(root.join("tests/py/aiortc_peer.py"))
        .env("BASE", &app.base)
        .env("TOKEN", app.token(Role::Patient, 11))
        .env("USER_ID", "11")
        .env("USER_TYPE", "patient")
        .env("SESSION_ID", session.to_string())
        .env("CODE", &code)
        .env("HOST_IPS", "127.0.0.1")
        .env("SECONDS", "4")
        .env("ICE_URL", &url)
        .env("ICE_USERNAME", s["username"].as_str().unwrap())
        .env("ICE_CREDENTIAL", s["credential"].as_str().unwrap())
        .env("ICE_POLICY", "relay")
        .env("SSL_CERT_FILE", &cert)
        .envs(std::env::var("AIORTC_LOG").map(|v| ("AIORTC_LOG", v)))
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no report: {stdout}\n{stderr}"));
    if std::env::var_os("AIORTC_LOG").is_some() {
        eprintln!("{stderr}");
    }
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["local_candidate"], "relay", "{report}");
    // The doctor's synthetic media does not decode: count what arrived.
    assert!(
        report["packets"]["video"].as_u64().unwrap() >= 40,
        "{report}"
    );
    assert!(
        report["packets"]["audio"].as_u64().unwrap() >= 100,
        "{report}"
    );
    assert!(
        eventually(Duration::from_secs(5), || doctor.received.streams_with(50)
            == (1, 1))
        .await,
        "the doctor receives the patient through the relay"
    );
    doctor.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_through_turn_over_tcp() {
    aiortc_through_turn("turn:", "transport=tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_through_turn_over_tls() {
    aiortc_through_turn("turns:", "transport=tcp").await;
}
