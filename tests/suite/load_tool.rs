//! `relais-load media` as an operator runs it: against a real server process (a short smoke
//! run whose JSON report must hold the key figures, the bare-relay baseline included), and
//! against servers that are down, refuse, or die mid-run: the tool must say what failed, exit
//! non-zero and never hang; and against a server killed mid-call and started again with the
//! same command: the peers rejoin by themselves and their media comes back.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{relais_command, relais_load_bin, serve, serve_with};

/// Runs the tool to completion, killed if it outlives `limit` (that is a failure: it hung).
fn run_tool(args: &[&str], secret: &str, limit: Duration) -> Output {
    let mut child = Command::new(relais_load_bin())
        .args(args)
        .env("RELAIS_JWT_SECRET", secret)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "relais-load still running after {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const SHORT: &[&str] = &[
    "--sessions",
    "2",
    "--warmup",
    "1s",
    "--duration",
    "2s",
    "--join-timeout",
    "5s",
    "--quiet",
];

#[test]
fn media_smoke_run_reports_the_key_figures() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let secret = std::fs::read_to_string(dir.path().join("data/jwt-secret.dev")).unwrap();
    let json = dir.path().join("report.json");
    let svg = dir.path().join("report.svg");
    let pid = server.child.id().to_string();
    let mut args = vec![
        "--url",
        &server.base,
        "--json",
        json.to_str().unwrap(),
        "media",
        "--server-pid",
        &pid,
        "--svg",
        svg.to_str().unwrap(),
        "--baseline",
    ];
    args.extend_from_slice(SHORT);
    let out = run_tool(&args, secret.trim(), Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let relais = &report["runs"][0];
    assert_eq!(relais["target"], "relais");
    assert_eq!(relais["peers"], 4);
    assert_eq!(relais["peers_connected"], 4, "{relais}");
    assert!(relais["received_pps"].as_f64().unwrap() > 100.0, "{relais}");
    assert!(
        relais["forwarded_pps"].as_f64().unwrap() > 100.0,
        "{relais}"
    );
    assert!(relais["loss_pct"].as_f64().unwrap() < 5.0, "{relais}");
    assert!(relais["latency_ms_p50"].as_f64().unwrap() > 0.0);
    assert!(
        relais["latency_ms_p99"].as_f64().unwrap() >= relais["latency_ms_p50"].as_f64().unwrap()
    );
    assert!(relais["join_ms_p50"].as_f64().unwrap() > 0.0);
    assert!(
        relais["server_cpu_us_per_forwarded_packet"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(relais["server_rss_kib_per_peer"].is_number());
    assert!(!relais["timeline"].as_array().unwrap().is_empty());
    assert_eq!(relais["corrupt"], 0);
    let bare = &report["runs"][1];
    assert_eq!(bare["target"], "bare-relay");
    assert!(bare["forwarded_pps"].as_f64().unwrap() > 100.0, "{bare}");
    // CPU time comes from /proc in 10 ms ticks: in a run this short the bare relay may not
    // have used one yet, and then there is no ratio to show (not a made-up one).
    match bare["server_cpu_us_per_forwarded_packet"].as_f64() {
        Some(cpu) if cpu > 0.0 => {
            assert!(
                report["relais_vs_bare_relay"].as_f64().unwrap() > 0.0,
                "{report}"
            )
        }
        _ => assert!(report["relais_vs_bare_relay"].is_null(), "{report}"),
    }
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("polyline"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("server CPU µs / fwd packet"), "{stdout}");
}

#[test]
fn media_against_a_server_that_is_down_fails_at_once() {
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut args = vec!["--url", url.as_str(), "media"];
    args.extend_from_slice(SHORT);
    let started = Instant::now();
    let out = run_tool(&args, "secret", Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(text(&out).contains("does not answer"), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn media_against_a_server_refusing_sessions_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    // Tokens signed with another secret: every REST call is refused.
    let mut args = vec!["--url", server.base.as_str(), "media"];
    args.extend_from_slice(SHORT);
    let out = run_tool(
        &args,
        "not-the-server-secret-0123456789abcdef",
        Duration::from_secs(40),
    );
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("2 x create conversation"), "{t}");
    assert!(t.contains("4 of 4 peers did not connect"), "{t}");
}

#[test]
fn media_against_a_server_dying_mid_run_exits_non_zero() {
    // The tool is built (on first use) before the server's clock starts: the server must die
    // while the tool runs, not while it compiles.
    relais_load_bin();
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), &[]);
    let secret = std::fs::read_to_string(dir.path().join("data/jwt-secret.dev")).unwrap();
    let base = server.base.clone();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        let _ = server.child.kill();
        let _ = server.child.wait();
    });
    let out = run_tool(
        &[
            "--url",
            &base,
            "media",
            "--sessions",
            "2",
            "--warmup",
            "1s",
            "--duration",
            "5s",
            "--join-timeout",
            "5s",
            "--quiet",
        ],
        secret.trim(),
        Duration::from_secs(60),
    );
    killer.join().unwrap();
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("stopped answering"), "{t}");
}

/// A loopback port free now (bound, then released), for a server that must get the same one
/// again when it restarts.
fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

#[test]
fn media_peers_rejoin_after_the_server_is_killed_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    // Fixed ports and the same data directory: the restart is the very same command, as
    // systemd would run it again.
    let settings = [
        format!("http.addr=127.0.0.1:{}", free_port(false)),
        format!("https.addr=127.0.0.1:{}", free_port(false)),
        format!("media.udp_addr=127.0.0.1:{}", free_port(true)),
        format!("media.tcp_addr=127.0.0.1:{}", free_port(false)),
        "media.public_ips=127.0.0.1".to_string(),
        "turn.enabled=false".to_string(),
    ];
    let args: Vec<String> = settings
        .iter()
        .flat_map(|s| ["--set".to_string(), s.clone()])
        .collect();
    let start = {
        let dir = dir.path().to_path_buf();
        move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            serve_with(relais_command(), &dir, &args)
        }
    };
    let server = start();
    let base = server.base.clone();
    let secret = std::fs::read_to_string(dir.path().join("data/jwt-secret.dev")).unwrap();
    let json = dir.path().join("report.json");
    // Kill -9 once the peers are connected, then the same command again.
    let restarter = std::thread::spawn(move || {
        let mut server = server;
        std::thread::sleep(Duration::from_secs(8));
        server.child.kill().unwrap(); // SIGKILL, to the pid we started
        server.child.wait().unwrap();
        let killed = Instant::now();
        let again = start();
        (killed.elapsed(), again)
    });
    let out = run_tool(
        &[
            "--url",
            &base,
            "--json",
            json.to_str().unwrap(),
            "media",
            "--sessions",
            "2",
            "--participants",
            "2",
            "--warmup",
            "2s",
            "--duration",
            "22s",
            "--join-timeout",
            "10s",
            "--rejoin-within",
            "30s",
            "--quiet",
        ],
        secret.trim(),
        Duration::from_secs(120),
    );
    let (restart_took, _server) = restarter.join().unwrap();
    let t = text(&out);
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let relais = &report["runs"][0];
    let rejoin = &relais["rejoin"];
    assert_eq!(rejoin["participants_rejoined"], 4, "{rejoin}\n{t}");
    assert_eq!(rejoin["unrecovered"], 0, "{rejoin}\n{t}");
    assert_eq!(relais["peers_connected"], 4, "{t}");
    // Media really came back: the last seconds of the window (well after the restart) carry
    // every participant's media again.
    let timeline = relais["timeline"].as_array().unwrap();
    let tail: Vec<f64> = timeline[timeline.len().saturating_sub(3)..]
        .iter()
        .map(|p| p["received_pps"].as_f64().unwrap())
        .collect();
    assert!(
        tail.len() == 3 && tail.iter().all(|pps| *pps > 100.0),
        "{tail:?}\n{t}"
    );
    assert_eq!(relais["corrupt"], 0);
    println!("{}", String::from_utf8_lossy(&out.stdout));
    println!(
        "server restarted in {restart_took:?}; time to media back: median {} ms, max {} ms \
         ({} rejoins, {} attempts)",
        rejoin["media_back_ms_p50"],
        rejoin["media_back_ms_max"],
        rejoin["rejoins"],
        rejoin["attempts"]
    );
}
