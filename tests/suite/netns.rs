//! Clinics behind strict networks, built with network namespaces: the server in one namespace,
//! a clinic's client in another (behind a firewall or a masquerading router), the doctor in
//! the test's own namespace over a veth of its own. Every address belongs to these veths.
//!
//! ```text
//!  test (doctor)                 srv (relais)                     cli (clinic)
//!  10.210.N.1 ── veth ── 10.210.N.2   10.211.N.1 ── veth ── 10.211.N.2
//!                                                 └─ or: rtr 10.211.N.2 (masquerade)
//!                                                        rtr 10.212.N.1 ── veth ── 10.212.N.2 cli
//! ```
//!
//! Needs root (namespaces, veths, nftables): without, each test says so and skips. CI runs as
//! root. Each test uses its own `N`, namespace names carry the process id, and everything is
//! deleted on drop (processes started in a namespace are stopped by pid first).

use std::process::{Command, Stdio};
use std::time::Duration;

use relais::ids::{Identity, Role};
use relais_load::client::peer::{ClientPeer, Entry, PeerConfig};
use relais_load::load::TokenMinter;
use serde_json::{Value, json};

use crate::common::*;

use crate::netns_support::{Netns as Ns, ip, is_root, run};

/// What the test's namespace presents to read `/metrics` (it is not the server's machine).
const METRICS_TOKEN: &str = "netns-metrics-token";

/// Why namespace tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    if !is_root() {
        return Some("not root: network namespaces need CAP_NET_ADMIN".into());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "`{tool}` is missing (scripts/prepare/50-netns.sh installs it)"
            ));
        }
    }
    None
}

macro_rules! require_netns {
    () => {
        if let Some(why) = unavailable() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

/// Drops everything `ns` sends except TCP to these ports (and loopback).
fn only_tcp_out_to(ns: &Ns, ports: &[&str]) -> Result<(), String> {
    ns.nft(&format!(
        "table inet clinic {{\n chain out {{\n  type filter hook output priority 0; policy drop;\n  \
         oifname \"lo\" accept\n  tcp dport {{ {} }} accept\n }}\n}}\n",
        ports.join(", ")
    ))
}

/// Drops everything `ns` sends except TCP to `ip` port `port` (and loopback).
fn only_tcp_out_to_one_address(ns: &Ns, ip: &str, port: u16) -> Result<(), String> {
    ns.nft(&format!(
        "table inet clinic {{\n chain out {{\n  type filter hook output priority 0; policy drop;\n  \
         oifname \"lo\" accept\n  ip daddr {ip} tcp dport {port} accept\n }}\n}}\n"
    ))
}

/// How the clinic reaches the server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clinic {
    /// A direct link.
    Direct,
    /// Behind a router that masquerades (NAT) the clinic's addresses.
    Masqueraded,
}

/// The namespaces and links of one test. Field order is drop order: clients first.
struct Lab {
    n: u8,
    cli: Ns,
    rtr: Option<Ns>,
    srv: Ns,
    root_link: String,
}

impl Lab {
    fn build(n: u8, clinic: Clinic) -> Result<Self, String> {
        let pid = std::process::id();
        let srv = Ns::create(format!("relais-srv{n}-{pid}"))?;
        let cli = Ns::create(format!("relais-cli{n}-{pid}"))?;
        let rtr = match clinic {
            Clinic::Direct => None,
            Clinic::Masqueraded => Some(Ns::create(format!("relais-rtr{n}-{pid}"))?),
        };
        let root_link = format!("rl{n}-{}", pid % 100_000);
        let _ = Command::new("ip")
            .args(["link", "del", &root_link])
            .stderr(Stdio::null())
            .status();
        let lab = Self {
            n,
            cli,
            rtr,
            srv,
            root_link,
        };
        // The test's namespace (the doctor) ↔ srv.
        ip(&[
            "link",
            "add",
            &lab.root_link,
            "type",
            "veth",
            "peer",
            "name",
            "s0",
            "netns",
            &lab.srv.name,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("10.210.{n}.1/24"),
            "dev",
            &lab.root_link,
        ])?;
        ip(&["link", "set", &lab.root_link, "up"])?;
        lab.srv
            .ip(&["addr", "add", &format!("10.210.{n}.2/24"), "dev", "s0"])?;
        lab.srv.ip(&["link", "set", "s0", "up"])?;
        // srv ↔ the clinic side (the client, or its router).
        let edge = lab.rtr.as_ref().unwrap_or(&lab.cli);
        lab.srv.ip(&[
            "link", "add", "s1", "type", "veth", "peer", "name", "e1", "netns", &edge.name,
        ])?;
        lab.srv
            .ip(&["addr", "add", &format!("10.211.{n}.1/24"), "dev", "s1"])?;
        lab.srv.ip(&["link", "set", "s1", "up"])?;
        edge.ip(&["addr", "add", &format!("10.211.{n}.2/24"), "dev", "e1"])?;
        edge.ip(&["link", "set", "e1", "up"])?;
        if let Some(rtr) = &lab.rtr {
            rtr.ip(&[
                "link",
                "add",
                "r2",
                "type",
                "veth",
                "peer",
                "name",
                "c2",
                "netns",
                &lab.cli.name,
            ])?;
            rtr.ip(&["addr", "add", &format!("10.212.{n}.1/24"), "dev", "r2"])?;
            rtr.ip(&["link", "set", "r2", "up"])?;
            lab.cli
                .ip(&["addr", "add", &format!("10.212.{n}.2/24"), "dev", "c2"])?;
            lab.cli.ip(&["link", "set", "c2", "up"])?;
            lab.cli
                .ip(&["route", "add", "default", "via", &format!("10.212.{n}.1")])?;
            run(rtr.command("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]))?;
            rtr.nft(
                "table ip nat {\n chain post {\n  type nat hook postrouting priority 100;\n  \
                 oifname \"e1\" masquerade\n }\n}\n",
            )?;
        }
        Ok(lab)
    }

    fn doctor_ip(&self) -> String {
        format!("10.210.{}.1", self.n)
    }

    /// The server's address on the doctor's link.
    fn srv_doctor_side(&self) -> String {
        format!("10.210.{}.2", self.n)
    }

    /// The server's address on the clinic's link.
    fn srv_clinic_side(&self) -> String {
        format!("10.211.{}.1", self.n)
    }

    /// The client's own address.
    fn client_ip(&self) -> String {
        match self.rtr {
            Some(_) => format!("10.212.{}.2", self.n),
            None => format!("10.211.{}.2", self.n),
        }
    }

    /// Starts relais in `srv` with `extra` settings; media advertised on both links.
    fn serve(&self, dir: &std::path::Path, extra: &[String]) -> ServerProcess {
        self.serve_signed(dir, extra, Some(SECRET))
    }

    /// The same with `secret` as the JWT secret, or in development mode (`None`).
    fn serve_signed(
        &self,
        dir: &std::path::Path,
        extra: &[String],
        secret: Option<&str>,
    ) -> ServerProcess {
        let mut cmd = self.srv.command(env!("CARGO_BIN_EXE_relais"));
        cmd.env_remove("RUST_LOG").env_remove("DATABASE_URL");
        for (k, _) in std::env::vars() {
            if k.starts_with("RELAIS_") {
                cmd.env_remove(k);
            }
        }
        let mut args: Vec<String> = [
            "http.addr=0.0.0.0:0".to_string(),
            "https.enabled=false".into(),
            "media.udp_addr=0.0.0.0:0".into(),
            format!(
                "media.public_ips={},{}",
                self.srv_clinic_side(),
                self.srv_doctor_side()
            ),
            "turn.udp_addr=0.0.0.0:0".into(),
            "turn.tcp_addr=0.0.0.0:0".into(),
            format!("http.metrics_token={METRICS_TOKEN}"),
        ]
        .into_iter()
        .chain(secret.map(|s| format!("auth.jwt_secret={s}")))
        .chain(extra.iter().cloned())
        .flat_map(|kv| ["--set".to_string(), kv])
        .collect();
        if !extra.iter().any(|kv| kv.starts_with("media.tcp_addr=")) {
            args.extend(["--set".into(), "media.tcp_addr=0.0.0.0:0".into()]);
        }
        if !extra.iter().any(|kv| kv.starts_with("turn.tls_addr=")) {
            args.extend(["--set".into(), "turn.tls_addr=0.0.0.0:0".into()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        serve_with(cmd, dir, &refs)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting srv removes its veths, the test's end included; this is for a half-built lab.
        let _ = Command::new("ip")
            .args(["link", "del", &self.root_link])
            .stderr(Stdio::null())
            .status();
    }
}

/// A consultation on a server in the lab: REST from the test's namespace.
struct Consultation {
    base_for_doctor: String,
    base_for_clinic: String,
    /// The certificate clinic clients trust, when `base_for_clinic` is `https`.
    clinic_ca: Option<String>,
    session: i64,
    conversation: i64,
    code: String,
    minter: TokenMinter,
}

impl Consultation {
    async fn create(lab: &Lab, server: &ServerProcess, patients: &[i64]) -> Self {
        let port = server.base.rsplit(':').next().unwrap().to_string();
        let base_for_doctor = format!("http://{}:{port}", lab.srv_doctor_side());
        let base_for_clinic = format!("http://{}:{port}", lab.srv_clinic_side());
        let minter = TokenMinter::from_secret(SECRET);
        let api = relais_load::client::api::ApiClient::new(
            reqwest::Client::new(),
            &base_for_doctor,
            &minter.token(Identity::new(Role::Medecin, 79)),
        );
        let members: Vec<(&str, i64)> = patients.iter().map(|p| ("patient", *p)).collect();
        let kind = if patients.len() == 1 {
            "private"
        } else {
            "group"
        };
        let conversation = api.create_conversation(kind, &members).await.unwrap();
        let (status, v) = api
            .call(
                reqwest::Method::POST,
                "/api/messaging/webrtc/sessions",
                Some(&json!({"conversation_id": conversation, "waiting_room": false})),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{v}");
        Self {
            base_for_doctor,
            base_for_clinic,
            clinic_ca: None,
            session: v["data"]["session"]["id"].as_i64().unwrap(),
            conversation,
            code: v["data"]["conferenceLink"]["joinCode"]
                .as_str()
                .unwrap()
                .into(),
            minter,
        }
    }

    /// The doctor, publishing from the test's namespace over UDP.
    async fn doctor(&self, lab: &Lab) -> ClientPeer {
        let who = Identity::new(Role::Medecin, 79);
        let mut cfg = PeerConfig::new(
            &self.base_for_doctor,
            &self.minter.token(who),
            who,
            self.session,
            Entry::Publish,
        );
        cfg.conversation_id = self.conversation;
        cfg.udp_bind = vec![format!("{}:0", lab.doctor_ip())];
        cfg.keyframe_interval = Duration::from_millis(500);
        cfg.video_bitrate_bps = 300_000;
        let mut peer = ClientPeer::start(cfg).await.unwrap();
        peer.wait_connected(Duration::from_secs(15))
            .await
            .expect("the doctor connects");
        peer
    }

    /// A webrtc-rs patient in the clinic (`relais-load peer`), run for a few seconds; its report.
    async fn webrtc_rs_patient(&self, lab: &Lab, id: i64, options: &[&str]) -> Value {
        let out = lab
            .cli
            .tokio_command(relais_load_bin())
            .args([
                "--url",
                &self.base_for_clinic,
                "--jwt-secret",
                SECRET,
                "peer",
            ])
            .args(
                self.clinic_ca
                    .iter()
                    .flat_map(|ca| ["--ca-cert", ca.as_str()]),
            )
            .args(["--session", &self.session.to_string()])
            .args(["--id", &id.to_string(), "--code", &self.code])
            .args(["--bind", &lab.client_ip(), "--duration", "5s"])
            .args(options)
            .env("RUST_LOG", "warn")
            .output()
            .await
            .unwrap();
        last_json(&out)
    }

    /// An aiortc patient in the clinic, run for a few seconds; its report.
    async fn aiortc_patient(&self, lab: &Lab, id: i64, env: &[(&str, String)]) -> Value {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "aiortc is not installed: run scripts/prepare/30-python-aiortc.sh (.ci/run does)"
        );
        let out = lab
            .cli
            .tokio_command(python)
            .arg(root.join("tests/py/aiortc_peer.py"))
            .env("BASE", &self.base_for_clinic)
            .env("TOKEN", self.minter.token(Identity::new(Role::Patient, id)))
            .env("USER_ID", id.to_string())
            .env("USER_TYPE", "patient")
            .env("SESSION_ID", self.session.to_string())
            .env("CODE", &self.code)
            .env("HOST_IPS", lab.client_ip())
            .env("SECONDS", "5")
            .envs(
                self.clinic_ca
                    .iter()
                    .map(|ca| ("SSL_CERT_FILE", ca.as_str())),
            )
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(std::env::var("AIORTC_LOG").map(|v| ("AIORTC_LOG", v)))
            .output()
            .await
            .unwrap();
        let mut report = last_json(&out);
        if report["ok"] != true {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr
                .chars()
                .rev()
                .take(4000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            report["stderr"] = Value::String(tail);
        }
        report
    }

    /// TURN credentials and the URL for `scheme_transport` (`turn:…udp`, `turn:…tcp`, `turns:`).
    async fn turn_url(
        &self,
        id: i64,
        wanted: impl Fn(&str) -> bool,
    ) -> Vec<(&'static str, String)> {
        let api = relais_load::client::api::ApiClient::new(
            reqwest::Client::new(),
            &self.base_for_doctor,
            &self.minter.token(Identity::new(Role::Patient, id)),
        );
        let (status, v) = api
            .call(
                reqwest::Method::GET,
                "/api/messaging/webrtc/ice-servers",
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{v}");
        let s = &v["data"]["iceServers"][0];
        let url = s["urls"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| u.as_str())
            .find(|u| wanted(u))
            .unwrap_or_else(|| panic!("no such TURN URL in {s}"))
            .to_string();
        vec![
            ("ICE_URL", url),
            ("ICE_USERNAME", s["username"].as_str().unwrap().into()),
            ("ICE_CREDENTIAL", s["credential"].as_str().unwrap().into()),
        ]
    }

    /// What the server says of patient `id` in the session's statistics once its media
    /// path is chosen (polled for at most 15 s; `Null` if it never is).
    async fn participant_path(&self, id: i64) -> Value {
        let api = relais_load::client::api::ApiClient::new(
            reqwest::Client::new(),
            &self.base_for_doctor,
            &self.minter.token(Identity::new(Role::Medecin, 79)),
        );
        let path = format!("/api/messaging/webrtc/sessions/{}/stats", self.session);
        for _ in 0..75 {
            let (status, v) = api.call(reqwest::Method::GET, &path, None).await.unwrap();
            assert_eq!(status, 200, "{v}");
            let found = v["data"]["participants"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["participant"]["userId"] == id && !p["transport"].is_null());
            if let Some(p) = found {
                return p.clone();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Value::Null
    }

    /// `/metrics` from the test's namespace: not this machine, so with the token.
    async fn metrics(&self) -> String {
        reqwest::Client::new()
            .get(format!("{}/metrics", self.base_for_doctor))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn last_json(out: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("no report ({}): {stdout}\n{stderr}", out.status))
}

/// Waits (bounded) until the doctor receives one audio and one video stream per patient;
/// returns what it receives.
async fn doctor_receives(doctor: &ClientPeer, patients: usize) -> (usize, usize) {
    eventually(Duration::from_secs(10), || {
        doctor.received.streams_with(50) == (patients, patients)
    })
    .await;
    doctor.received.streams_with(50)
}

/// A webrtc-rs patient received audio and video from each of the `others`; when all of them
/// send the synthetic media of webrtc-rs peers, every payload arrived intact.
fn assert_webrtc_rs_received(report: &Value, others: u64, all_synthetic: bool) {
    assert_eq!(report["audio_streams"], others, "{report}");
    assert_eq!(report["video_streams"], others, "{report}");
    if all_synthetic {
        assert_eq!(report["corrupt"], 0, "{report}");
    }
}

/// aiortc received the doctor's media (synthetic, so counted as RTP packets, not frames).
fn assert_aiortc_received(report: &Value) {
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["packets"]["video"].as_u64().unwrap() >= 50,
        "{report}"
    );
    assert!(
        report["packets"]["audio"].as_u64().unwrap() >= 100,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn udp_blocked_clinic_connects_over_ice_tcp_and_turn_tcp() {
    require_netns!();
    let lab = Lab::build(1, Clinic::Direct).unwrap();
    lab.cli
        .nft(
            "table inet clinic {\n chain out {\n  type filter hook output priority 0;\n  \
             meta l4proto udp drop\n }\n}\n",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = lab.serve(dir.path(), &[]);
    let c = Consultation::create(&lab, &server, &[11, 12]).await;
    let doctor = c.doctor(&lab).await;

    // webrtc-rs: no UDP, so its active ICE-TCP candidate meets the server's passive one.
    let webrtc_rs = c.webrtc_rs_patient(&lab, 11, &["--transports", "udp,tcp"]);
    // aiortc has no ICE-TCP: it goes through TURN over TCP.
    let turn = c
        .turn_url(12, |u| u.starts_with("turn:") && u.ends_with("tcp"))
        .await;
    let aiortc = c.aiortc_patient(&lab, 12, &turn);
    let ((webrtc_rs, aiortc), at_doctor) = tokio::join!(
        async { tokio::join!(webrtc_rs, aiortc) },
        doctor_receives(&doctor, 2)
    );
    assert_eq!(at_doctor, (2, 2), "{webrtc_rs}\n{aiortc}");
    assert_webrtc_rs_received(&webrtc_rs, 2, false);
    assert_eq!(webrtc_rs["protocol"], "tcp", "{webrtc_rs}");
    assert_eq!(webrtc_rs["local_candidate"], "host", "{webrtc_rs}");
    assert_aiortc_received(&aiortc);
    assert_eq!(aiortc["local_candidate"], "relay", "{aiortc}");
    let m = c.metrics().await;
    assert!(
        metric_value(&m, "relais_turn_packets_to_client_total") > 100.0,
        "{m}"
    );
    assert!(
        metric_value(
            &m,
            "relais_turn_requests_total{method=\"allocate\",outcome=\"ok\"}"
        ) >= 1.0,
        "{m}"
    );
    doctor.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_only_clinic_connects_through_turn_tls_on_443() {
    require_netns!();
    let lab = Lab::build(2, Clinic::Direct).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = lab.serve(dir.path(), &["turn.tls_addr=0.0.0.0:443".into()]);
    let http_port = server.base.rsplit(':').next().unwrap().to_string();
    // Nothing out but TCP to 443 (and to the web app's port, for signaling).
    only_tcp_out_to(&lab.cli, &["443", &http_port]).unwrap();
    let c = Consultation::create(&lab, &server, &[11]).await;
    let doctor = c.doctor(&lab).await;
    let mut env = c.turn_url(11, |u| u.starts_with("turns:")).await;
    assert!(env[0].1.ends_with(":443?transport=tcp"), "{env:?}");
    env.push((
        "SSL_CERT_FILE",
        dir.path()
            .join("certs/relais-selfsigned.crt")
            .display()
            .to_string(),
    ));
    let (aiortc, at_doctor) = tokio::join!(
        c.aiortc_patient(&lab, 11, &env),
        doctor_receives(&doctor, 1)
    );
    assert_eq!(at_doctor, (1, 1), "{aiortc}");
    assert_aiortc_received(&aiortc);
    assert_eq!(aiortc["local_candidate"], "relay", "{aiortc}");
    let m = c.metrics().await;
    assert!(
        metric_value(&m, "relais_turn_packets_to_client_total") > 100.0,
        "{m}"
    );
    doctor.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_only_clinic_connects_over_ice_tcp_on_443() {
    require_netns!();
    let lab = Lab::build(3, Clinic::Direct).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = lab.serve(dir.path(), &["media.tcp_addr=0.0.0.0:443".into()]);
    let http_port = server.base.rsplit(':').next().unwrap().to_string();
    only_tcp_out_to(&lab.cli, &["443", &http_port]).unwrap();
    let c = Consultation::create(&lab, &server, &[11]).await;
    let doctor = c.doctor(&lab).await;
    let (report, at_doctor) = tokio::join!(
        c.webrtc_rs_patient(&lab, 11, &["--transports", "udp,tcp"]),
        doctor_receives(&doctor, 1)
    );
    assert_eq!(at_doctor, (1, 1), "{report}");
    assert_webrtc_rs_received(&report, 1, true);
    assert_eq!(report["protocol"], "tcp", "{report}");
    doctor.close().await;
}

/// One address, one port: the clinic lets out only TCP to the server's clinic-side address on
/// 443. With `https.addr = 0.0.0.0:443` (shared by default on 443), the web client, the API,
/// Socket.IO, TURN over TLS (aiortc) and ICE-TCP (webrtc-rs) all go through that one port.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clinic_allowed_only_tcp_443_to_one_address_gets_everything_there() {
    require_netns!();
    let lab = Lab::build(9, Clinic::Direct).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(
        web.join("index.html"),
        "<!doctype html><title>relais-443</title>",
    )
    .unwrap();
    let server = lab.serve(
        dir.path(),
        &[
            "https.enabled=true".into(),
            "https.addr=0.0.0.0:443".into(),
            format!("web_dir={}", web.display()),
        ],
    );
    let ip = lab.srv_clinic_side();
    only_tcp_out_to_one_address(&lab.cli, &ip, 443).unwrap();
    let ca = dir
        .path()
        .join("certs/relais-selfsigned.crt")
        .display()
        .to_string();
    let curl = |url: String| {
        let mut cmd = lab.cli.tokio_command("curl");
        cmd.args(["-sS", "--max-time", "3", "--cacert", &ca, &url]);
        cmd.output()
    };

    // The firewall holds: the plain HTTP port is out of reach from the clinic.
    let http_port = server.base.rsplit(':').next().unwrap().to_string();
    let out = curl(format!("http://{ip}:{http_port}/healthz"))
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "the clinic must not reach port {http_port}"
    );
    // The web client loads over 443.
    let out = curl(format!("https://{ip}/conference/1")).await.unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.contains("relais-443"),
        "{page}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut c = Consultation::create(&lab, &server, &[11, 12]).await;
    c.base_for_clinic = format!("https://{ip}");
    c.clinic_ca = Some(ca.clone());
    let doctor = c.doctor(&lab).await;
    let mut env = c.turn_url(12, |u| u.starts_with("turns:")).await;
    assert_eq!(env[0].1, format!("turns:{ip}:443?transport=tcp"), "{env:?}");
    env.push(("ICE_POLICY", "all".into()));
    let ice_tcp = c.webrtc_rs_patient(&lab, 11, &["--transports", "udp,tcp"]);
    let turn_tls = c.aiortc_patient(&lab, 12, &env);
    let ((ice_tcp, turn_tls), at_doctor, stats) = tokio::join!(
        async { tokio::join!(ice_tcp, turn_tls) },
        doctor_receives(&doctor, 2),
        c.participant_path(11)
    );
    assert_eq!(at_doctor, (2, 2), "{ice_tcp}\n{turn_tls}");
    // webrtc-rs: a host candidate pair over TCP (its statistics do not name the remote port:
    // the server says which of its ports the media arrives on). It receives the doctor and
    // the aiortc patient, whose media is not synthetic.
    assert_webrtc_rs_received(&ice_tcp, 2, false);
    assert_eq!(ice_tcp["protocol"], "tcp", "{ice_tcp}");
    assert_eq!(ice_tcp["local_candidate"], "host", "{ice_tcp}");
    assert_eq!(stats["transport"], "tcp", "{stats}");
    assert_eq!(stats["server_port"], 443, "{stats}");
    // aiortc: relayed through TURN over TLS on 443 (its only way out).
    assert_aiortc_received(&turn_tls);
    assert_eq!(turn_tls["local_candidate"], "relay", "{turn_tls}");
    let m = c.metrics().await;
    for (kind, at_least) in [("https", 3.0), ("turn_tls", 1.0), ("ice_tcp", 1.0)] {
        let v = metric_value(
            &m,
            &format!("relais_shared_port_connections_total{{kind=\"{kind}\"}}"),
        );
        assert!(v >= at_least, "{kind}: {v}\n{m}");
    }
    assert!(
        metric_value(&m, "relais_turn_packets_to_client_total") > 100.0,
        "{m}"
    );
    doctor.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clinic_behind_nat_connects_over_udp_and_through_turn_when_forced() {
    require_netns!();
    let lab = Lab::build(4, Clinic::Masqueraded).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = lab.serve(dir.path(), &[]);
    let c = Consultation::create(&lab, &server, &[11, 12]).await;
    let doctor = c.doctor(&lab).await;
    let direct = c.webrtc_rs_patient(&lab, 11, &[]);
    let relayed = c.webrtc_rs_patient(&lab, 12, &["--turn", "udp", "--relay"]);
    let ((direct, relayed), at_doctor) = tokio::join!(
        async { tokio::join!(direct, relayed) },
        doctor_receives(&doctor, 2)
    );
    assert_eq!(at_doctor, (2, 2), "{direct}\n{relayed}");
    assert_webrtc_rs_received(&direct, 2, true);
    assert_eq!(direct["protocol"], "udp", "{direct}");
    assert_eq!(direct["local_candidate"], "host", "{direct}");
    assert_webrtc_rs_received(&relayed, 2, true);
    assert_eq!(relayed["local_candidate"], "relay", "{relayed}");
    let m = c.metrics().await;
    assert!(
        metric_value(&m, "relais_turn_packets_to_peer_total") > 100.0,
        "{m}"
    );
    doctor.close().await;
}

/// relais behind a 1:1 NAT with `examples/nat-1to1.toml` (only addresses overridden): the
/// clinic sees the public address alone, and connects directly and through TURN.
///
/// ```text
///  test ── 10.220.5.1 ─ admin link ─ 10.220.5.2 ┐
///                                     srv 10.221.5.2 ── gw 10.221.5.1 | 10.222.5.1 (+ .10 public)
///                                                                     └── cli 10.222.5.2
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_behind_nat_1to1_with_the_example_configuration() {
    require_netns!();
    let pid = std::process::id();
    let srv = Ns::create(format!("relais-nsrv-{pid}")).unwrap();
    let gw = Ns::create(format!("relais-ngw-{pid}")).unwrap();
    let cli = Ns::create(format!("relais-ncli-{pid}")).unwrap();
    let admin = format!("rla-{}", pid % 100_000);
    let _ = Command::new("ip")
        .args(["link", "del", &admin])
        .stderr(Stdio::null())
        .status();
    let public = "10.222.5.10";
    (|| -> Result<(), String> {
        ip(&["link", "add", &admin, "type", "veth", "peer", "name", "a0", "netns", &srv.name])?;
        ip(&["addr", "add", "10.220.5.1/24", "dev", &admin])?;
        ip(&["link", "set", &admin, "up"])?;
        srv.ip(&["addr", "add", "10.220.5.2/24", "dev", "a0"])?;
        srv.ip(&["link", "set", "a0", "up"])?;
        srv.ip(&["link", "add", "s1", "type", "veth", "peer", "name", "g1", "netns", &gw.name])?;
        srv.ip(&["addr", "add", "10.221.5.2/24", "dev", "s1"])?;
        srv.ip(&["link", "set", "s1", "up"])?;
        srv.ip(&["route", "add", "default", "via", "10.221.5.1"])?;
        gw.ip(&["addr", "add", "10.221.5.1/24", "dev", "g1"])?;
        gw.ip(&["link", "set", "g1", "up"])?;
        gw.ip(&["link", "add", "g2", "type", "veth", "peer", "name", "c2", "netns", &cli.name])?;
        gw.ip(&["addr", "add", "10.222.5.1/24", "dev", "g2"])?;
        gw.ip(&["addr", "add", &format!("{public}/24"), "dev", "g2"])?;
        gw.ip(&["link", "set", "g2", "up"])?;
        cli.ip(&["addr", "add", "10.222.5.2/24", "dev", "c2"])?;
        cli.ip(&["link", "set", "c2", "up"])?;
        run(gw.command("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]))?;
        gw.nft(&format!(
            "table ip nat {{\n chain pre {{\n  type nat hook prerouting priority -100;\n  \
             ip daddr {public} dnat to 10.221.5.2\n }}\n chain post {{\n  \
             type nat hook postrouting priority 100;\n  ip saddr 10.221.5.2 snat to {public}\n }}\n}}\n"
        ))
    })()
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nat-1to1.toml");
    let mut cmd = srv.command(env!("CARGO_BIN_EXE_relais"));
    cmd.env_remove("RUST_LOG").env_remove("DATABASE_URL");
    for (k, _) in std::env::vars() {
        if k.starts_with("RELAIS_") {
            cmd.env_remove(k);
        }
    }
    let example = example.display().to_string();
    let base_url = format!("public_base_url=https://{public}:3443");
    let media_ips = format!("media.public_ips={public}");
    let turn_ip = format!("turn.public_ip={public}");
    let secret = format!("auth.jwt_secret={SECRET}");
    let server = serve_with(
        cmd,
        dir.path(),
        &[
            "--config", &example, "--set", &base_url, "--set", &media_ips, "--set", &turn_ip,
            "--set", &secret,
        ],
    );
    let port = server.base.rsplit(':').next().unwrap().to_string();
    assert_eq!(port, "3000", "the example keeps the default HTTP port");

    // Session set up over the admin link, as the clinic's back office would.
    let minter = TokenMinter::from_secret(SECRET);
    let api = relais_load::client::api::ApiClient::new(
        reqwest::Client::new(),
        "http://10.220.5.2:3000",
        &minter.token(Identity::new(Role::Medecin, 79)),
    );
    let conversation = api
        .create_conversation("group", &[("patient", 11), ("patient", 12)])
        .await
        .unwrap();
    let (status, v) = api
        .call(
            reqwest::Method::POST,
            "/api/messaging/webrtc/sessions",
            Some(&json!({"conversation_id": conversation, "waiting_room": false})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{v}");
    assert!(
        v["data"]["conferenceLink"]["conferenceUrl"]
            .as_str()
            .unwrap()
            .starts_with(&format!("https://{public}:3443/")),
        "{v}"
    );
    let session = v["data"]["session"]["id"].as_i64().unwrap().to_string();
    let code = v["data"]["conferenceLink"]["joinCode"]
        .as_str()
        .unwrap()
        .to_string();

    // Everyone in the clinic, which knows only the public address.
    let url = format!("http://{public}:3000");
    let peer = |role: &str, id: &str, extra: Vec<String>| {
        let mut c = cli.tokio_command(relais_load_bin());
        c.args([
            "--url",
            &url,
            "--jwt-secret",
            SECRET,
            "peer",
            "--session",
            &session,
        ])
        .args([
            "--role",
            role,
            "--id",
            id,
            "--bind",
            "10.222.5.2",
            "--duration",
            "6s",
        ])
        .args(extra)
        .env("RUST_LOG", "warn");
        c.output()
    };
    let doctor = peer(
        "medecin",
        "79",
        vec!["--conversation".into(), conversation.to_string()],
    );
    let direct = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peer("patient", "11", vec!["--code".into(), code.clone()]).await
    };
    let relayed = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peer(
            "patient",
            "12",
            ["--code", &code, "--turn", "udp", "--relay"]
                .map(String::from)
                .to_vec(),
        )
        .await
    };
    let (doctor, direct, relayed) = tokio::join!(doctor, direct, relayed);
    let (doctor, direct, relayed) = (
        last_json(&doctor.unwrap()),
        last_json(&direct.unwrap()),
        last_json(&relayed.unwrap()),
    );
    for report in [&doctor, &direct, &relayed] {
        assert_webrtc_rs_received(report, 2, true);
    }
    assert_eq!(direct["local_candidate"], "host", "{direct}");
    assert_eq!(relayed["local_candidate"], "relay", "{relayed}");
    drop(server);
    drop(cli);
    drop(gw);
    drop(srv);
}

/// Safe by default, seen from the network (the test's namespace reaches the server over a
/// veth, not loopback): development sign-in answers only the server's own machine, and one
/// client address holds at most `http.connections_per_address` connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_the_network_gets_no_dev_token_and_few_connections() {
    require_netns!();
    let lab = Lab::build(6, Clinic::Direct).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = lab.serve_signed(dir.path(), &["http.connections_per_address=4".into()], None);
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let base = format!("http://{}:{port}", lab.srv_doctor_side());
    let http = reqwest::Client::builder()
        .local_address(lab.doctor_ip().parse::<std::net::IpAddr>().ok())
        .build()
        .unwrap();
    let r = http
        .post(format!("{base}/api/dev/token"))
        .header("connection", "close")
        .json(&json!({"role": "medecin", "id": 79}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "dev_sign_in_local_only", "{v}");
    drop(http);
    // The sign-in connection closed (Connection: close) and its place given back.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Six connections from this address at once: four are served, two are closed unanswered
    // (which two depends on the order the server accepts them in).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr: std::net::SocketAddr = format!("{}:{port}", lab.srv_doctor_side()).parse().unwrap();
    let mut conns = Vec::new();
    for _ in 0..6 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(format!("{}:0", lab.doctor_ip()).parse().unwrap())
            .unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        conns.push(s);
    }
    let (mut served, mut closed) = (0, 0);
    for s in &mut conns {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 && buf.starts_with(b"HTTP/1.1 200") => served += 1,
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            other => panic!("neither served nor closed: {other:?}"),
        }
    }
    assert_eq!((served, closed), (4, 2), "http.connections_per_address = 4");
    drop(server);
}

/// One client address may hold `turn.max_allocations_per_address` TURN allocations (loopback,
/// this machine, is exempt: hence a real address here), whatever the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_allocations_are_capped_per_client_address() {
    require_netns!();
    let lab = Lab::build(7, Clinic::Direct).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = lab.serve(dir.path(), &["turn.max_allocations_per_address=2".into()]);
    let c = Consultation::create(&lab, &server, &[11]).await;
    let mut held = Vec::new();
    for (i, patient) in [11, 12, 13].into_iter().enumerate() {
        let creds = c
            .turn_url(patient, |u| u.starts_with("turn:") && u.ends_with("udp"))
            .await;
        let port: u16 = creds[0]
            .1
            .trim_end_matches("?transport=udp")
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let turn = format!("{}:{port}", lab.srv_doctor_side()).parse().unwrap();
        let bind = format!("{}:0", lab.doctor_ip()).parse().unwrap();
        let mut client =
            crate::turn_client::TurnClient::udp_from(bind, turn, &creds[1].1, &creds[2].1).await;
        let answer = client.allocate().await;
        if i < 2 {
            assert!(answer.is_success(), "allocation {i}: {:?}", answer.code());
        } else {
            assert_eq!(
                answer.code(),
                Some(486),
                "a third allocation from this address"
            );
        }
        held.push(client);
    }
    drop(server);
}

/// A patient on a poor link: the clinic's veth shaped both ways by the kernel (`tc tbf` at
/// 1.5 Mbit/s with a 100 ms queue; nftables drops 2 % of what the clinic sends and receives at
/// random; netem is not in every kernel). aiortc, on its defaults, receives the doctor's audio
/// and video, and the doctor gets the patient's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_over_a_shaped_lossy_link_keeps_its_media() {
    require_netns!();
    let lab = Lab::build(8, Clinic::Direct).unwrap();
    for (ns, dev) in [(&lab.cli, "e1"), (&lab.srv, "s1")] {
        crate::netns_support::run(ns.command("tc").args([
            "qdisc", "add", "dev", dev, "root", "tbf", "rate", "1500kbit", "burst", "16kbit",
            "latency", "100ms",
        ]))
        .unwrap();
    }
    lab.cli
        .nft(
            "table inet lossy {\n chain out {\n  type filter hook output priority 0;\n  \
             oifname \"e1\" numgen random mod 100 < 2 drop\n }\n chain in {\n  \
             type filter hook input priority 0;\n  iifname \"e1\" numgen random mod 100 < 2 drop\n }\n}\n",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = lab.serve(dir.path(), &[]);
    let c = Consultation::create(&lab, &server, &[11]).await;
    let doctor = c.doctor(&lab).await;
    let env = [("SECONDS", "10".to_string())];
    let (patient, at_doctor) = tokio::join!(
        c.aiortc_patient(&lab, 11, &env),
        doctor_receives(&doctor, 1)
    );
    assert_eq!(at_doctor, (1, 1), "{patient}");
    // The doctor's media is webrtc-rs's synthetic payload (it does not decode): aiortc's
    // own RTP receivers count what reached them.
    assert_aiortc_received(&patient);
    println!(
        "over the shaped link, aiortc received: {}",
        patient["packets"]
    );
    doctor.close().await;
}
