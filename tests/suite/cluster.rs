//! Several nodes: three `relais serve` processes on loopback sharing one PostgreSQL database
//! (fresh per test) and one Redis (a key prefix per test). Messaging crosses nodes, a session
//! created through one node is joined through another with media flowing through its owner,
//! placement spreads sessions, and a node killed mid-call has its sessions moved.
//!
//! Skipped (saying so) unless both `RELAIS_TEST_POSTGRES_URL` and `RELAIS_TEST_REDIS_URL` are
//! set; `.ci/run` sets them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use relais::ids::{Identity, Role};
use relais_load::client::api::ApiClient;
use relais_load::client::peer::{ClientPeer, Entry, PeerConfig};
use relais_load::client::socketio::{ConnectOptions, SioClient};
use relais_load::load::TokenMinter;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

pub const REDIS_ENV: &str = "RELAIS_TEST_REDIS_URL";
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
/// May list the nodes (`auth.admins`).
const ADMIN: i64 = 900;

struct Node {
    id: String,
    server: Option<ServerProcess>,
    base: String,
    public_base_url: String,
    args: Vec<String>,
    dir: tempfile::TempDir,
}

struct TestCluster {
    nodes: Vec<Node>,
    minter: TokenMinter,
    http: reqwest::Client,
    redis: String,
    prefix: String,
    _pg: PgDatabase,
}

async fn serve_node(dir: &std::path::Path, args: &[String]) -> ServerProcess {
    let (path, args) = (dir.to_path_buf(), args.to_vec());
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        serve(&path, &args)
    })
    .await
    .unwrap()
}

fn redis_url() -> Option<String> {
    std::env::var(REDIS_ENV).ok().filter(|s| !s.is_empty())
}

impl TestCluster {
    /// Three nodes, `node-a` to `node-c`; `None` (after saying why) without the URLs.
    async fn start(test: &str) -> Option<Self> {
        let redis = redis_url();
        Self::start_with(test, redis, 3).await
    }

    /// `count` nodes on the Redis at `redis`.
    async fn start_with(test: &str, redis: Option<String>, count: usize) -> Option<Self> {
        let (Some(pg_admin), Some(redis)) = (postgres_url(), redis) else {
            eprintln!(
                "skipped: cluster test `{test}` needs {POSTGRES_ENV} and {REDIS_ENV} \
                 (PostgreSQL and Redis on loopback; .ci/run sets both)"
            );
            return None;
        };
        init_logs();
        let (pg, pg_url) = PgDatabase::create(&pg_admin).await;
        let prefix = format!("relais-t-{}", uuid::Uuid::new_v4().simple());
        let mut nodes = Vec::new();
        for name in ["a", "b", "c"].into_iter().take(count) {
            let dir = tempfile::tempdir().unwrap();
            let args: Vec<String> = vec![
                format!("redis_url={redis}"),
                format!("database_url={pg_url}"),
                format!("cluster.prefix={prefix}"),
                format!("cluster.node_id=node-{name}"),
                format!("auth.jwt_secret={SECRET}"),
                format!("auth.admins=medecin:{ADMIN}"),
            ]
            .into_iter()
            .flat_map(|kv| ["--set".to_string(), kv])
            .collect();
            // One at a time: the first applies the migrations.
            let server = serve_node(dir.path(), &args).await;
            nodes.push(Node {
                id: format!("node-{name}"),
                base: server.base.clone(),
                public_base_url: server.public_base_url.clone(),
                server: Some(server),
                args,
                dir,
            });
        }
        let cluster = Self {
            nodes,
            minter: TokenMinter::from_secret(SECRET),
            http: reqwest::Client::new(),
            redis,
            prefix,
            _pg: pg,
        };
        // Every node sees the others (one heartbeat at most).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listed = cluster.nodes_seen_by(A).await;
            if listed.len() == count {
                break;
            }
            assert!(Instant::now() < deadline, "directory: {listed:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Some(cluster)
    }

    fn token(&self, role: Role, id: i64) -> String {
        self.minter.token(Identity::new(role, id))
    }

    fn api(&self, node: usize, role: Role, id: i64) -> ApiClient {
        ApiClient::new(
            self.http.clone(),
            &self.nodes[node].base,
            &self.token(role, id),
        )
    }

    async fn socket(&self, node: usize, role: Role, id: i64) -> SioClient {
        let auth = json!({"token": self.token(role, id), "userType": role.as_str(), "userId": id});
        SioClient::connect_with(
            &self.nodes[node].base,
            auth,
            ConnectOptions {
                timeout: Some(Duration::from_secs(5)),
                ..Default::default()
            },
        )
        .await
        .expect("socket connects")
    }

    /// `GET /api/messaging/nodes` through `node`: the ids listed.
    async fn nodes_seen_by(&self, node: usize) -> Vec<String> {
        let v = self
            .api(node, Role::Medecin, ADMIN)
            .call_ok(Method::GET, "/api/messaging/nodes", None)
            .await
            .unwrap();
        v["data"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect()
    }

    fn index_of(&self, id: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("unknown node {id}"))
    }

    /// Creates a session through `via`: (session, node id, join code, conference URL).
    async fn create_session(
        &self,
        via: usize,
        doctor: i64,
        conv: i64,
    ) -> (i64, String, String, String) {
        let v = self
            .api(via, Role::Medecin, doctor)
            .call_ok(
                Method::POST,
                "/api/messaging/webrtc/sessions?generate_conference_link=true",
                Some(&json!({"conversation_id": conv, "session_type": "audio_video", "waiting_room": false})),
            )
            .await
            .unwrap();
        (
            v["data"]["session"]["id"].as_i64().unwrap(),
            v["data"]["node"]["id"].as_str().unwrap().to_string(),
            v["data"]["conferenceLink"]["joinCode"]
                .as_str()
                .unwrap()
                .to_string(),
            v["data"]["conferenceLink"]["conferenceUrl"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    }

    /// A session of `doctor` with `patient` created through `via` and placed on `owner`
    /// (sessions placed elsewhere on the way are ended): (session, conversation, code).
    async fn session_on(
        &self,
        owner: usize,
        via: usize,
        doctor: i64,
        patient: i64,
    ) -> (i64, i64, String) {
        let api = self.api(via, Role::Medecin, doctor);
        let conv = api
            .create_conversation("private", &[("patient", patient)])
            .await
            .unwrap();
        // Sessions placed elsewhere stay until the wanted one is placed (they count as load,
        // so placement turns to the other nodes), then end.
        let mut elsewhere = Vec::new();
        for _ in 0..9 {
            let (session, node, code, _) = self.create_session(via, doctor, conv).await;
            if node != self.nodes[owner].id {
                elsewhere.push(session);
                continue;
            }
            for other in &elsewhere {
                api.call_ok(
                    Method::POST,
                    &format!("/api/messaging/webrtc/sessions/{other}/end"),
                    None,
                )
                .await
                .unwrap();
            }
            return (session, conv, code);
        }
        let v = self
            .api(via, Role::Medecin, ADMIN)
            .call_ok(Method::GET, "/api/messaging/nodes", None)
            .await
            .unwrap();
        panic!(
            "no session was placed on {} (placed elsewhere: {elsewhere:?}); directory: {v}",
            self.nodes[owner].id
        );
    }

    fn peer(&self, node: usize, role: Role, id: i64, session: i64, entry: Entry) -> PeerConfig {
        let mut cfg = PeerConfig::new(
            &self.nodes[node].base,
            &self.token(role, id),
            Identity::new(role, id),
            session,
            entry,
        );
        cfg.keyframe_interval = Duration::from_millis(500);
        cfg.video_bitrate_bps = 200_000;
        cfg
    }

    /// The session's doctor publishing through `node`, connected (panics after 15 s).
    async fn publishing_doctor(&self, node: usize, id: i64, session: i64, conv: i64) -> ClientPeer {
        let mut cfg = self.peer(node, Role::Medecin, id, session, Entry::Publish);
        cfg.conversation_id = conv;
        let mut doctor = ClientPeer::start(cfg).await.unwrap();
        doctor
            .wait_connected(Duration::from_secs(15))
            .await
            .expect("doctor connects");
        doctor
    }

    /// SIGKILL: the node vanishes without a word.
    fn kill(&mut self, node: usize) {
        if let Some(mut s) = self.nodes[node].server.take() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }

    /// Starts a stopped node again, same name and settings (new ports).
    async fn restart(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        assert!(n.server.is_none(), "still running");
        let server = serve_node(n.dir.path(), &n.args).await;
        n.base = server.base.clone();
        n.public_base_url = server.public_base_url.clone();
        n.server = Some(server);
    }

    /// SIGTERM: the node shuts down gracefully (and hands its sessions over).
    async fn terminate(&mut self, node: usize) {
        if let Some(mut s) = self.nodes[node].server.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &s.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while s.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// SIGTERM to every node still running (they leave the directory), then the test's keys.
    async fn stop(mut self) {
        for node in 0..self.nodes.len() {
            self.terminate(node).await;
        }
        if let Ok(client) = redis::Client::open(self.redis.as_str())
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.prefix))
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> =
                    redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
            }
        }
    }
}

/// Media arrives at both, one audio and one video stream each.
/// The next `session_moved` about `session` (others are skipped), each wait bounded by `wait`.
async fn session_moved(
    peer: &mut ClientPeer,
    session: i64,
    wait: Duration,
) -> anyhow::Result<serde_json::Value> {
    loop {
        let ev = peer.wait_event("session_moved", wait).await?;
        if ev["sessionId"] == session {
            return Ok(ev);
        }
    }
}

async fn media_flows(a: &ClientPeer, b: &ClientPeer, within: Duration) -> bool {
    eventually(within, || {
        a.received.streams_with(30) == (1, 1) && b.received.streams_with(30) == (1, 1)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_typing_and_reads_cross_nodes() {
    let Some(c) = TestCluster::start("messages_typing_and_reads_cross_nodes").await else {
        return;
    };
    let conv = c
        .api(A, Role::Medecin, 1)
        .create_conversation("private", &[("patient", 2)])
        .await
        .unwrap();
    let mut doctor = c.socket(A, Role::Medecin, 1).await;
    let mut patient = c.socket(B, Role::Patient, 2).await;
    for s in [&doctor, &patient] {
        let ack = s
            .emit_with_ack("join_conversation", &json!({"conversationId": conv}), WAIT)
            .await
            .unwrap();
        ack_ok(&ack);
    }

    // Stored through C, heard on A and on B.
    let message = c
        .api(C, Role::Medecin, 1)
        .send_text(conv, "bonjour")
        .await
        .unwrap();
    let on_b = patient.wait_for("new_message", WAIT).await.unwrap();
    assert_eq!(on_b["contenu"], "bonjour");
    assert_eq!(on_b["id"], message["id"]);
    let on_a = doctor.wait_for("new_message", WAIT).await.unwrap();
    assert_eq!(on_a["id"], message["id"]);

    // Sent over the socket on B, heard on A.
    let ack = patient
        .emit_with_ack(
            "send_message",
            &json!({"conversationId": conv, "contenu": "merci", "type_message": "texte"}),
            WAIT,
        )
        .await
        .unwrap();
    ack_ok(&ack);
    let heard = doctor.wait_for("new_message", WAIT).await.unwrap();
    assert_eq!(heard["contenu"], "merci");

    // Typing on B reaches A (not stored, not echoed to the typist).
    let ack = patient
        .emit_with_ack(
            "typing",
            &json!({"conversationId": conv, "isTyping": true}),
            WAIT,
        )
        .await
        .unwrap();
    ack_ok(&ack);
    let typing = doctor.wait_for("typing", WAIT).await.unwrap();
    assert_eq!(typing["user"], json!({"userId": 2, "userType": "patient"}));
    assert_eq!(typing["isTyping"], true);

    // A read marker set on A reaches B.
    let ack = doctor
        .emit_with_ack(
            "message_read",
            &json!({"conversationId": conv, "messageId": heard["id"]}),
            WAIT,
        )
        .await
        .unwrap();
    ack_ok(&ack);
    let read = patient.wait_for("message_read", WAIT).await.unwrap();
    assert_eq!(read["messageId"], heard["id"]);
    assert_eq!(read["user"], json!({"userId": 1, "userType": "medecin"}));

    // The directory: administrators see the three nodes with their addresses and load.
    let v = c
        .api(C, Role::Medecin, ADMIN)
        .call_ok(Method::GET, "/api/messaging/nodes", None)
        .await
        .unwrap();
    assert_eq!(v["data"]["mode"], "cluster");
    assert_eq!(v["data"]["self"], "node-c");
    let nodes = v["data"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{v}");
    for n in nodes {
        let node = &c.nodes[c.index_of(n["id"].as_str().unwrap())];
        assert_eq!(n["publicBaseUrl"], node.public_base_url.as_str());
        assert!(!n["media"]["udp"].as_array().unwrap().is_empty(), "{n}");
        assert!(n["load"]["peerConnections"].is_i64(), "{n}");
        assert!(n["heartbeatAt"].as_i64().unwrap() > 0);
    }
    let (status, body) = c
        .api(A, Role::Medecin, 1)
        .call(Method::GET, "/api/messaging/nodes", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "admin_only");

    doctor.close().await;
    patient.close().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_created_on_a_joined_through_c_with_media() {
    let Some(c) = TestCluster::start("session_created_on_a_joined_through_c_with_media").await
    else {
        return;
    };
    // Placed on B, created through A: neither participant's socket is on the owner.
    let (session, conv, code) = c.session_on(B, A, 10, 20).await;
    let mut doctor = c.publishing_doctor(A, 10, session, conv).await;
    let mut patient = ClientPeer::start(c.peer(C, Role::Patient, 20, session, Entry::Code(code)))
        .await
        .unwrap();
    patient
        .wait_connected(Duration::from_secs(15))
        .await
        .expect("patient connects");
    assert!(
        media_flows(&doctor, &patient, Duration::from_secs(15)).await,
        "doctor got {:?}, patient got {:?}",
        doctor.received.streams_with(1),
        patient.received.streams_with(1)
    );
    // The room is on B: its statistics (asked through C) show both participants connected.
    let v = c
        .api(C, Role::Medecin, 10)
        .call_ok(
            Method::GET,
            &format!("/api/messaging/webrtc/sessions/{session}/stats"),
            None,
        )
        .await
        .unwrap();
    let parts = v["data"]["participants"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{v}");
    assert!(parts.iter().all(|p| p["connected"] == true), "{v}");

    // Recording runs where the room is: started through C (REST), stopped through A's
    // socket; both participants hear of it through their own nodes.
    let v = c
        .api(C, Role::Medecin, 10)
        .call_ok(
            Method::POST,
            &format!("/api/messaging/webrtc/sessions/{session}/recording"),
            Some(&json!({"consent": true})),
        )
        .await
        .unwrap();
    assert_eq!(v["data"]["recording"]["active"], true, "{v}");
    for p in [&mut doctor, &mut patient] {
        let started = p
            .wait_event("recording_started", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(started["sessionId"], session);
    }
    let (status, v) = c
        .api(A, Role::Medecin, 10)
        .call(
            Method::POST,
            &format!("/api/messaging/webrtc/sessions/{session}/recording"),
            Some(&json!({"consent": true})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "already_recording");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ack = doctor
        .emit("stop_recording", json!({"sessionId": session}))
        .await
        .unwrap();
    assert_eq!(ack["success"], true, "{ack}");
    let recordings = ack["data"]["recordings"].as_array().unwrap();
    assert_eq!(recordings.len(), 2, "{ack}");
    patient
        .wait_event("recording_stopped", Duration::from_secs(5))
        .await
        .unwrap();

    // Ending it through C (REST) closes the room on B; both hear it through their nodes.
    c.api(C, Role::Medecin, 10)
        .call_ok(
            Method::POST,
            &format!("/api/messaging/webrtc/sessions/{session}/end"),
            None,
        )
        .await
        .unwrap();
    for p in [&mut doctor, &mut patient] {
        let ended = p
            .wait_event("session_ended", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(ended["sessionId"], session);
    }
    doctor.close().await;
    patient.close().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_sessions_spread_over_three_nodes() {
    let Some(c) = TestCluster::start("thirty_sessions_spread_over_three_nodes").await else {
        return;
    };
    let api = c.api(A, Role::Medecin, 30);
    let conv = api
        .create_conversation("private", &[("patient", 31)])
        .await
        .unwrap();
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for i in 0..30 {
        // Through each node in turn: placement is the cluster's, not the entry node's.
        let (session, node, _, url) = c.create_session(i % 3, 30, conv).await;
        let owner = &c.nodes[c.index_of(&node)];
        assert_eq!(
            url,
            format!("{}/conference/{session}", owner.public_base_url),
            "the conference link points to the node the session is on"
        );
        let v = api
            .call_ok(
                Method::GET,
                &format!("/api/messaging/webrtc/sessions/{session}"),
                None,
            )
            .await
            .unwrap();
        assert_eq!(v["data"]["session"]["node_id"], node.as_str());
        *per_node.entry(node).or_default() += 1;
    }
    println!("placement of 30 sessions: {per_node:?}");
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    let (min, max) = (
        per_node.values().min().unwrap(),
        per_node.values().max().unwrap(),
    );
    assert!(max - min <= 2, "uneven: {per_node:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_killed_mid_call_its_session_moves() {
    let Some(mut c) = TestCluster::start("node_killed_mid_call_its_session_moves").await else {
        return;
    };
    let (session, conv, code) = c.session_on(B, A, 40, 41).await;
    let mut doctor = c.publishing_doctor(A, 40, session, conv).await;
    let mut patient =
        ClientPeer::start(c.peer(C, Role::Patient, 41, session, Entry::Code(code.clone())))
            .await
            .unwrap();
    patient
        .wait_connected(Duration::from_secs(15))
        .await
        .expect("patient connects");
    assert!(
        media_flows(&doctor, &patient, Duration::from_secs(15)).await,
        "media before the kill"
    );

    // Messaging sockets of the same two people, on the surviving nodes.
    let mut d_sock = c.socket(A, Role::Medecin, 40).await;
    let mut p_sock = c.socket(C, Role::Patient, 41).await;
    for s in [&d_sock, &p_sock] {
        ack_ok(
            &s.emit_with_ack("join_conversation", &json!({"conversationId": conv}), WAIT)
                .await
                .unwrap(),
        );
    }

    // Recording on B when it dies.
    c.api(A, Role::Medecin, 40)
        .call_ok(
            Method::POST,
            &format!("/api/messaging/webrtc/sessions/{session}/recording"),
            Some(&json!({"consent": true})),
        )
        .await
        .unwrap();

    c.kill(B);
    let killed = Instant::now();

    // Messages sent while the cluster notices: none lost.
    let sender = c.api(A, Role::Medecin, 40);
    let mut sent = Vec::new();
    for i in 0..5 {
        let m = sender
            .send_text(conv, &format!("pendant la panne {i}"))
            .await
            .unwrap();
        sent.push(m["id"].as_i64().unwrap());
    }

    // Both participants are told where the session went.
    let mut moved_to = None;
    for (name, p) in [("doctor", &mut doctor), ("patient", &mut patient)] {
        let moved = session_moved(p, session, Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let node = moved["node"]["id"].as_str().unwrap().to_string();
        assert_ne!(node, "node-b");
        assert_eq!(moved["from"], "node-b");
        assert_eq!(moved["reason"], "node_lost");
        let owner = &c.nodes[c.index_of(&node)];
        assert_eq!(
            moved["node"]["publicBaseUrl"],
            owner.public_base_url.as_str()
        );
        assert_eq!(
            moved["conferenceUrl"],
            format!("{}/conference/{session}", owner.public_base_url)
        );
        if let Some(before) = &moved_to {
            assert_eq!(before, &node, "both told the same node");
        }
        moved_to = Some(node);
    }
    let detected = killed.elapsed();
    assert!(
        detected < Duration::from_secs(15),
        "detected after {detected:?}"
    );
    let new_owner = moved_to.unwrap();

    // The database says so.
    let v = c
        .api(A, Role::Medecin, 40)
        .call_ok(
            Method::GET,
            &format!("/api/messaging/webrtc/sessions/{session}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(v["data"]["session"]["node_id"], new_owner.as_str());
    assert_eq!(v["data"]["session"]["moved_from"], "node-b");
    assert_ne!(v["data"]["session"]["statut"], "ended");

    // B's recordings were closed by the node that moved the session (interrupted or failed:
    // the files are on B's disk), not left `recording`.
    let v = c
        .api(A, Role::Medecin, 40)
        .call_ok(
            Method::GET,
            &format!("/api/messaging/webrtc/sessions/{session}/recordings"),
            None,
        )
        .await
        .unwrap();
    let rows = v["data"]["recordings"].as_array().unwrap();
    assert!(!rows.is_empty(), "{v}");
    assert!(rows.iter().all(|r| r["status"] != "recording"), "{v}");

    // The clients reconnect their media, through the same nodes; it flows on the new owner.
    doctor.close().await;
    patient.close().await;
    let doctor = c.publishing_doctor(A, 40, session, conv).await;
    let mut patient = ClientPeer::start(c.peer(C, Role::Patient, 41, session, Entry::Code(code)))
        .await
        .unwrap();
    patient
        .wait_connected(Duration::from_secs(15))
        .await
        .expect("patient reconnects");
    assert!(
        media_flows(&doctor, &patient, Duration::from_secs(15)).await,
        "media after the move"
    );
    let restored = killed.elapsed();
    let v = c
        .api(C, Role::Medecin, 40)
        .call_ok(
            Method::GET,
            &format!("/api/messaging/webrtc/sessions/{session}/stats"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        v["data"]["participants"].as_array().unwrap().len(),
        2,
        "{v}"
    );

    // Every message sent meanwhile reached the patient's socket, and is stored.
    let mut heard = Vec::new();
    while heard.len() < sent.len() {
        let m = p_sock
            .wait_for("new_message", WAIT)
            .await
            .expect("no message lost");
        heard.push(m["id"].as_i64().unwrap());
    }
    assert_eq!(heard, sent);
    let _ = d_sock
        .wait_for("new_message", Duration::from_millis(10))
        .await;
    let page = c
        .api(C, Role::Patient, 41)
        .call_ok(
            Method::GET,
            &format!("/api/messaging/conversations/{conv}/messages?limit=50"),
            None,
        )
        .await
        .unwrap();
    let stored = page["data"]["messages"].as_array().unwrap().len();
    assert!(stored >= sent.len(), "{page}");

    println!(
        "node B killed: session_moved after {:.1} s, media flowing again on {new_owner} after {:.1} s",
        detected.as_secs_f64(),
        restored.as_secs_f64()
    );
    doctor.close().await;
    patient.close().await;
    d_sock.close().await;
    p_sock.close().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_stopped_gracefully_hands_its_sessions_over() {
    let Some(mut c) = TestCluster::start("node_stopped_gracefully_hands_its_sessions_over").await
    else {
        return;
    };
    let (session, conv, _) = c.session_on(B, A, 50, 51).await;
    let mut doctor = c.publishing_doctor(C, 50, session, conv).await;

    let stopping = Instant::now();
    c.terminate(B).await;
    // Told where to go, without being told the consultation ended.
    let mut seen = Vec::new();
    let moved = loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), doctor.events.recv())
            .await
            .expect("session_moved after a graceful stop")
            .expect("signaling alive");
        seen.push(ev.0.clone());
        if ev.0 == "session_moved" && ev.1["sessionId"] == session {
            break ev.1;
        }
    };
    assert_eq!(moved["reason"], "node_shutdown");
    assert_eq!(moved["from"], "node-b");
    assert!(!seen.iter().any(|e| e == "session_ended"), "{seen:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(ev) = doctor.events.try_recv() {
        assert_ne!(ev.0, "session_ended", "{ev:?}");
    }
    println!(
        "node B stopped: session_moved after {:.2} s",
        stopping.elapsed().as_secs_f64()
    );
    doctor.close().await;
    c.stop().await;
}

/// A Redis server of the test's own on a free loopback port (stopped on drop).
struct OwnRedis {
    child: std::process::Child,
    port: u16,
}

impl OwnRedis {
    fn start(port: u16) -> Option<Self> {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--protected-mode", "yes"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self { child, port });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_degrades_then_recovers() {
    if redis_url().is_none() || postgres_url().is_none() {
        eprintln!(
            "skipped: redis_restart_degrades_then_recovers needs {POSTGRES_ENV} and {REDIS_ENV}"
        );
        return;
    }
    let port = free_port();
    let Some(redis) = OwnRedis::start(port) else {
        eprintln!("skipped: redis_restart_degrades_then_recovers needs the redis-server program");
        return;
    };
    let c = TestCluster::start_with("redis_restart_degrades_then_recovers", Some(redis.url()), 2)
        .await
        .unwrap();
    let (session, conv, _) = c.session_on(B, A, 60, 61).await;
    let mut d_sock = c.socket(A, Role::Medecin, 60).await;
    let mut p_sock = c.socket(B, Role::Patient, 61).await;
    for s in [&d_sock, &p_sock] {
        ack_ok(
            &s.emit_with_ack("join_conversation", &json!({"conversationId": conv}), WAIT)
                .await
                .unwrap(),
        );
    }
    let api = c.api(A, Role::Medecin, 60);
    api.send_text(conv, "avant").await.unwrap();
    assert_eq!(
        p_sock.wait_for("new_message", WAIT).await.unwrap()["contenu"],
        "avant"
    );
    assert_eq!(
        d_sock.wait_for("new_message", WAIT).await.unwrap()["contenu"],
        "avant"
    );

    // Redis goes away: messages are still stored and reach the sockets of their own node.
    drop(redis);
    let m = api
        .send_text(conv, "pendant")
        .await
        .expect("sending works without Redis");
    let here = d_sock
        .wait_for("new_message", WAIT)
        .await
        .expect("local delivery");
    assert_eq!(here["id"], m["id"]);
    for node in [A, B] {
        let r = c
            .http
            .get(format!("{}/healthz", c.nodes[node].base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Back (empty: Redis lost everything): cross-node delivery resumes by itself.
    let _redis = OwnRedis::start(port).expect("redis restarts on the same port");
    let back = Instant::now();
    let mut recovered = false;
    while back.elapsed() < Duration::from_secs(30) && !recovered {
        let m = api.send_text(conv, "après").await.unwrap();
        while let Ok(ev) = p_sock
            .wait_for("new_message", Duration::from_millis(500))
            .await
        {
            if ev["id"] == m["id"] {
                recovered = true;
                break;
            }
        }
    }
    assert!(
        recovered,
        "messages cross nodes again after Redis came back"
    );
    println!(
        "Redis restarted: messages cross nodes again after {:.1} s",
        back.elapsed().as_secs_f64()
    );
    // Nodes registered again, and nothing moved: losing Redis does not mean losing a node.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.nodes_seen_by(A).await.len() < 2 {
        assert!(Instant::now() < deadline, "nodes register again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    let v = api
        .call_ok(
            Method::GET,
            &format!("/api/messaging/webrtc/sessions/{session}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(v["data"]["session"]["node_id"], "node-b", "{v}");
    assert!(v["data"]["session"]["moved_from"].is_null(), "{v}");
    d_sock.close().await;
    p_sock.close().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_in_redis_harms_no_node() {
    let Some(c) = TestCluster::start_with("garbage_in_redis_harms_no_node", redis_url(), 2).await
    else {
        return;
    };
    let client = redis::Client::open(c.redis.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let p = &c.prefix;
    let channels = [
        format!("{p}:bus:all"),
        format!("{p}:bus:node:node-a"),
        format!("{p}:sio-request#/#"),
    ];
    let payloads: [&[u8]; 5] = [
        b"",
        b"\xff\xfe garbage",
        br#"{"from":"node-x","type":"signal","id":1}"#,
        br#"{"from":"node-x","type":"signal_reply","id":99,"error":{"code":"Bad Code!","message":"x"}}"#,
        br#"{"from":"node-x","type":"emit","sid":"AAAAAAAAAAAAAAAA","event":"x","data":{}}"#,
    ];
    for chan in &channels {
        for payload in payloads {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(chan)
                .arg(payload)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
    // A routed request for a session this node does not have, from a node that does not exist.
    let signal = json!({"from": "node-x", "type": "signal", "id": 5, "event": "webrtc_answer",
        "caller": {"who": {"role": "patient", "id": 1}, "sid": null, "ip": null},
        "payload": {"sessionId": 424242, "sdpAnswer": "v=0"}});
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("{p}:bus:node:node-a"))
        .arg(signal.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    // A directory entry that is not one.
    let _: () = redis::cmd("SET")
        .arg(format!("{p}:node:evil"))
        .arg("{not json")
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = redis::cmd("SADD")
        .arg(format!("{p}:nodes"))
        .arg("evil")
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Both nodes still list exactly the two real nodes and carry messages across.
    for node in [A, B] {
        let mut seen = c.nodes_seen_by(node).await;
        seen.sort();
        assert_eq!(seen, ["node-a", "node-b"]);
    }
    let conv = c
        .api(A, Role::Medecin, 70)
        .create_conversation("private", &[("patient", 71)])
        .await
        .unwrap();
    let mut p_sock = c.socket(B, Role::Patient, 71).await;
    ack_ok(
        &p_sock
            .emit_with_ack("join_conversation", &json!({"conversationId": conv}), WAIT)
            .await
            .unwrap(),
    );
    c.api(A, Role::Medecin, 70)
        .send_text(conv, "toujours là")
        .await
        .unwrap();
    assert_eq!(
        p_sock.wait_for("new_message", WAIT).await.unwrap()["contenu"],
        "toujours là"
    );
    p_sock.close().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_restarted_under_the_same_name_places_its_sessions_again() {
    let Some(mut c) = TestCluster::start_with(
        "node_restarted_under_the_same_name_places_its_sessions_again",
        redis_url(),
        2,
    )
    .await
    else {
        return;
    };
    let (session, conv, _) = c.session_on(B, A, 80, 81).await;
    let mut doctor = c.publishing_doctor(A, 80, session, conv).await;
    // Killed and back before its entry expired: nobody noticed, yet its rooms are gone.
    c.kill(B);
    c.restart(B).await;
    let moved = session_moved(&mut doctor, session, Duration::from_secs(10))
        .await
        .expect("session_moved after the restart");
    assert_eq!(moved["reason"], "node_restarted");
    assert_eq!(moved["from"], "node-b");
    doctor.close().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_starting_leaves_recordings_of_live_nodes_alone() {
    let Some(mut c) = TestCluster::start_with(
        "a_node_starting_leaves_recordings_of_live_nodes_alone",
        redis_url(),
        2,
    )
    .await
    else {
        return;
    };
    let (session, conv, _) = c.session_on(B, A, 90, 91).await;
    let doctor = c.publishing_doctor(B, 90, session, conv).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ack = doctor
        .emit(
            "start_recording",
            json!({"sessionId": session, "consent": true}),
        )
        .await
        .unwrap();
    assert_eq!(ack["success"], true, "{ack}");
    // A restarts (same name) while B records: it must not close B's rows.
    c.kill(A);
    c.restart(A).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ack = doctor
        .emit("stop_recording", json!({"sessionId": session}))
        .await
        .unwrap();
    assert_eq!(ack["success"], true, "{ack}");
    let rows = ack["data"]["recordings"].as_array().unwrap();
    assert!(!rows.is_empty(), "{ack}");
    assert!(rows.iter().all(|r| r["status"] == "finished"), "{ack}");
    doctor.close().await;
    c.stop().await;
}
