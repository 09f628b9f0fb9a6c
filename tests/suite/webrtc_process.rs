//! The server as its own process: one media UDP socket whatever the number of peers, and a
//! client killed mid-call leaves nothing behind after the grace period.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use relais::ids::{Identity, Role};
use relais_load::client::peer::{ClientPeer, Entry, PeerConfig};
use relais_load::load::TokenMinter;
use serde_json::json;

use crate::common::*;

/// Socket inodes the process holds.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|t| {
            let t = t.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// UDP sockets of `pid`: (local port, inode), from /proc/net/udp{,6}.
fn udp_sockets(pid: u32) -> Vec<(u16, u64)> {
    let mine = socket_inodes(pid);
    let mut out = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (cols.get(1), cols.get(9)) else {
                continue;
            };
            let port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
                .unwrap_or(0);
            if let Ok(inode) = inode.parse::<u64>()
                && mine.contains(&inode)
            {
                out.push((port, inode));
            }
        }
    }
    out
}

struct Remote {
    server: ServerProcess,
    minter: TokenMinter,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Remote {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = serve(dir.path(), extra);
        let minter = TokenMinter::from_data_dir(&dir.path().join("data")).unwrap();
        Self {
            server,
            minter,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn api(&self, who: Identity) -> relais_load::client::api::ApiClient {
        relais_load::client::api::ApiClient::new(
            self.http.clone(),
            &self.server.base,
            &self.minter.token(who),
        )
    }

    async fn session(&self, doctor: i64, patient: i64) -> (i64, i64, String) {
        let api = self.api(Identity::new(Role::Medecin, doctor));
        let conv = api
            .create_conversation("private", &[("patient", patient)])
            .await
            .unwrap();
        let v = api
            .call_ok(
                reqwest::Method::POST,
                "/api/messaging/webrtc/sessions?generate_conference_link=true",
                Some(&json!({"conversation_id": conv, "waiting_room": false})),
            )
            .await
            .unwrap();
        (
            v["data"]["session"]["id"].as_i64().unwrap(),
            conv,
            v["data"]["conferenceLink"]["joinCode"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    }

    fn peer(&self, who: Identity, session: i64, entry: Entry) -> PeerConfig {
        let mut cfg = PeerConfig::new(
            &self.server.base,
            &self.minter.token(who),
            who,
            session,
            entry,
        );
        cfg.video_bitrate_bps = 200_000;
        cfg.keyframe_interval = Duration::from_millis(500);
        cfg
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_value(&text, name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_peers_one_media_socket() {
    let remote = Remote::start(&[]);
    let pid = remote.server.child.id();
    let mut peers = Vec::new();
    for i in 0..10 {
        let (session, conv, code) = remote.session(100 + i, 200 + i).await;
        let mut cfg = remote.peer(
            Identity::new(Role::Medecin, 100 + i),
            session,
            Entry::Publish,
        );
        cfg.conversation_id = conv;
        let mut d = ClientPeer::start(cfg).await.unwrap();
        d.wait_connected(Duration::from_secs(15)).await.unwrap();
        let mut p = ClientPeer::start(remote.peer(
            Identity::new(Role::Patient, 200 + i),
            session,
            Entry::Code(code),
        ))
        .await
        .unwrap();
        p.wait_connected(Duration::from_secs(15)).await.unwrap();
        peers.push(d);
        peers.push(p);
    }
    assert_eq!(remote.metric("relais_peer_connections").await, 20.0);
    let all = eventually(Duration::from_secs(20), || {
        peers.iter().all(|p| p.received.streams_with(10) == (1, 1))
    })
    .await;
    assert!(all, "every peer receives audio and video");
    let udp = udp_sockets(pid);
    assert_eq!(
        udp.len(),
        1,
        "the server holds exactly one UDP socket: {udp:?}"
    );
    assert_eq!(
        udp[0].0,
        remote.server.media_udp.port(),
        "and it is the media port"
    );
    for p in peers {
        p.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_client_leaves_nothing_after_the_grace_period() {
    let remote = Remote::start(&["--set", "sessions.reconnect_grace=1s"]);
    let (session, conv, code) = remote.session(79, 11).await;
    let mut cfg = remote.peer(Identity::new(Role::Medecin, 79), session, Entry::Publish);
    cfg.conversation_id = conv;
    let mut doctor = ClientPeer::start(cfg).await.unwrap();
    doctor
        .wait_connected(Duration::from_secs(15))
        .await
        .unwrap();

    // The patient runs in a process of its own, so it can die for real.
    let secret = std::fs::read_to_string(remote._dir.path().join("data/jwt-secret.dev")).unwrap();
    let mut child = std::process::Command::new(relais_load_bin())
        .args([
            "--url",
            &remote.server.base,
            "peer",
            "--session",
            &session.to_string(),
            "--role",
            "patient",
            "--id",
            "11",
            "--code",
            &code,
            "--duration",
            "120s",
        ])
        .env("RELAIS_JWT_SECRET", secret.trim())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let connected = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l == "connected")
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(20), connected)
            .await
            .unwrap()
            .unwrap(),
        "child peer connected"
    );
    assert!(
        eventually(Duration::from_secs(10), || doctor.received.streams_with(20)
            == (1, 1))
        .await
    );
    assert_eq!(remote.metric("relais_peer_connections").await, 2.0);
    assert_eq!(remote.metric("relais_tracks").await, 4.0);

    // SIGKILL: no goodbye on the socket, no DTLS close.
    let killed_at = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();
    let left = doctor
        .wait_event("participant_left", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        left["participant"],
        json!({"userId": 11, "userType": "patient"})
    );
    assert_eq!(left["reason"], "disconnected");
    assert!(
        killed_at.elapsed() >= Duration::from_millis(900),
        "the grace period was honoured"
    );
    let mut clean = false;
    for _ in 0..50 {
        if remote.metric("relais_peer_connections").await == 1.0
            && remote.metric("relais_tracks").await == 2.0
        {
            clean = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(clean, "only the doctor's PeerConnection and tracks remain");
    doctor.close().await;
}
