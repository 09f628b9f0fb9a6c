//! The browser client end to end, in a real browser: Debian's chromium (fake camera and
//! microphone) driven by playwright-core (`tests/e2e/consultation.mjs`), against the `relais`
//! binary serving `web/dist`.
//!
//! Both the server and chromium run inside a network namespace of this test whose only
//! interface is `lo`, so chromium gathers loopback candidates only and no traffic leaves the
//! machine. The server advertises 127.0.0.1 on a fixed media port (nothing else listens in a
//! fresh namespace), which the script compares with the selected candidate pair.
//!
//! Needs root (network namespaces): otherwise the test says `skipped: …` and passes. As root it
//! runs for real, and a missing prerequisite (chromium, the built client, node packages) fails
//! it with the command that provides it (`scripts/prepare/20-web.sh`).
//!
//! Everything is bounded in time; the namespace is deleted and every process started in it is
//! stopped, by PID, whatever happens.
#![allow(clippy::unwrap_used)] // tests and benchmarks: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const HTTP_ADDR: &str = "127.0.0.1:3000";
const HTTPS_ADDR: &str = "127.0.0.1:3443";
const MEDIA_PORT: u16 = 3479;
const SERVER_START: Duration = Duration::from_secs(30);
const SCRIPT_LIMIT: Duration = Duration::from_secs(240);
const CHROMIUM: &str = "/usr/bin/chromium";

#[path = "support/netns.rs"]
mod netns_support;
use netns_support::Netns;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Stops a child we started: SIGTERM, a bounded wait, then SIGKILL.
fn stop(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The server, stopped on drop; its log lines are collected for the failure message.
struct Server {
    child: Child,
    log: mpsc::Receiver<String>,
    lines: Vec<String>,
}

impl Server {
    fn drain(&mut self) {
        while let Ok(l) = self.log.try_recv() {
            self.lines.push(l);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(10));
    }
}

/// The settings of the loopback consultation test: everything on 127.0.0.1, fixed ports.
fn loopback_settings() -> Vec<String> {
    vec![
        format!("http.addr={HTTP_ADDR}"),
        format!("https.addr={HTTPS_ADDR}"),
        format!("media.udp_addr=127.0.0.1:{MEDIA_PORT}"),
        "media.public_ips=127.0.0.1".into(),
    ]
}

/// relais in `ns`, with its files in `dir`, serving `web_dir`, with `settings` (`key=value`).
fn start_server(
    ns: &Netns,
    dir: &Path,
    web_dir: &Path,
    settings: &[String],
) -> Result<Server, String> {
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_relais"));
    cmd.env_remove("RUST_LOG").env_remove("DATABASE_URL");
    for (k, _) in std::env::vars() {
        if k.starts_with("RELAIS_") {
            cmd.env_remove(k);
        }
    }
    // No JWT secret: development mode, so the sign-in page can mint tokens.
    cmd.current_dir(dir)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--set")
        .arg(format!("media_dir={}", dir.join("media").display()))
        .arg("--set")
        .arg(format!("https.certs_dir={}", dir.join("certs").display()))
        .arg("--set")
        .arg(format!("web_dir={}", web_dir.display()))
        .args(settings.iter().flat_map(|kv| ["--set", kv.as_str()]))
        .env("RELAIS_LOG_FORMAT", "json")
        .env("RELAIS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start relais: {e}"))?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut server = Server {
        child,
        log: rx,
        lines: Vec::new(),
    };
    let deadline = Instant::now() + SERVER_START;
    while Instant::now() < deadline {
        match server.log.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let ready = line.contains("relais listening");
                server.lines.push(line);
                if ready {
                    return Ok(server);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = server.child.try_wait() {
                    server.drain();
                    return Err(format!(
                        "relais exited ({status}):\n{}",
                        server.lines.join("\n")
                    ));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    server.drain();
    Err(format!(
        "relais did not start within {SERVER_START:?}:\n{}",
        server.lines.join("\n")
    ))
}

/// Runs the playwright `script` (in tests/e2e) inside the namespace with `env`; returns its JSON
/// result and its stderr. When the script asks (it writes `$RESTART_DIR/kill` mid-call),
/// `restart` kills relais with SIGKILL and starts it again with the same command; then the
/// script finds `$RESTART_DIR/restarted`.
fn run_script(
    ns: &Netns,
    script: &str,
    env: &[(&str, String)],
    scratch: &Path,
    restart: &mut dyn FnMut() -> Result<(), String>,
) -> Result<(Value, String), String> {
    let control = scratch.join("restart");
    std::fs::create_dir_all(&control).map_err(|e| e.to_string())?;
    let mut restarted = false;
    let e2e = root().join("tests/e2e");
    let out_path = scratch.join("e2e.stdout");
    let err_path = scratch.join("e2e.stderr");
    let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let err = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
    let mut child = ns
        .command("node")
        .arg(script)
        .current_dir(&e2e)
        .env("CHROMIUM", CHROMIUM)
        .env("E2E_TIMEOUT_MS", "180000")
        .env("RESTART_DIR", &control)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run node: {e}"))?;
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            stop(&mut child, Duration::from_secs(5));
            break None;
        }
        if !restarted && control.join("kill").exists() {
            restarted = true;
            if let Err(e) = restart() {
                stop(&mut child, Duration::from_secs(5));
                return Err(format!("relais did not start again after SIGKILL: {e}"));
            }
            std::fs::write(control.join("restarted"), b"").map_err(|e| e.to_string())?;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let Some(status) = status else {
        return Err(format!(
            "the browser script did not finish within {SCRIPT_LIMIT:?}\n{stderr}"
        ));
    };
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'));
    let result: Value = match last.map(serde_json::from_str) {
        Some(Ok(v)) => v,
        _ => {
            return Err(format!(
                "the browser script ({status}) printed no JSON result\nstdout:\n{stdout}\nstderr:\n{stderr}"
            ));
        }
    };
    Ok((result, stderr))
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64().unwrap_or(f64::NAN)
}

/// One browser test at a time: each drives two or three chromium processes and a server, and
/// the machines that run the suite may have two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The built client's directory, when the browser tests can run: `None` (after saying why) when
/// not root. As root a missing piece is a failure, with how to get it.
fn prerequisites() -> Option<PathBuf> {
    if !netns_support::is_root() {
        println!(
            "skipped: the browser end-to-end test needs root to create a network namespace \
             (run `scripts/test.sh` as root, as CI does)"
        );
        return None;
    }
    let web_dir = root().join("web/dist");
    assert!(
        web_dir.join("index.html").exists(),
        "the browser client is not built ({}): run scripts/prepare/20-web.sh",
        web_dir.display()
    );
    assert!(
        root()
            .join("tests/e2e/node_modules/playwright-core")
            .exists(),
        "playwright-core is not installed in tests/e2e: run scripts/prepare/20-web.sh"
    );
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/prepare/20-web.sh (installs Debian's chromium)"
    );
    Some(web_dir)
}

#[test]
fn consultation_in_chromium_through_the_sfu() {
    let Some(web_dir) = prerequisites() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());

    let scratch = tempfile::tempdir().expect("temp dir");
    let artifacts = root().join("tests/artifacts/browser");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");

    let ns = Netns::create(format!("relais-e2e-{}", std::process::id()))
        .unwrap_or_else(|e| panic!("cannot create the network namespace: {e}"));
    let mut server = start_server(&ns, scratch.path(), &web_dir, &loopback_settings())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut first_log = Vec::new();
    let env = [
        ("HTTP_BASE", format!("http://{HTTP_ADDR}")),
        ("HTTPS_BASE", format!("https://{HTTPS_ADDR}")),
        ("MEDIA_PORT", MEDIA_PORT.to_string()),
        ("ARTIFACTS", artifacts.display().to_string()),
        // The namespace is ours: the script may cut the media path to prove reconnection.
        ("CUT_MEDIA", "1".to_string()),
    ];
    let outcome = run_script(&ns, "consultation.mjs", &env, scratch.path(), &mut || {
        // kill -9, then the very same command, as systemd's Restart= would.
        let _ = server.child.kill();
        let _ = server.child.wait();
        server.drain();
        first_log = std::mem::take(&mut server.lines);
        server = start_server(&ns, scratch.path(), &web_dir, &loopback_settings())?;
        Ok(())
    });
    server.drain();
    first_log.extend(std::mem::take(&mut server.lines));
    let _ = std::fs::write(artifacts.join("server.log"), first_log.join("\n"));
    drop(server);
    drop(ns);

    let (r, stderr) = outcome.unwrap_or_else(|e| panic!("{e}"));
    let pretty = serde_json::to_string_pretty(&r).unwrap_or_default();
    println!("browser result:\n{pretty}");
    assert_eq!(
        r["ok"],
        true,
        "the browser script failed at step {}: {}\n{stderr}\n(screenshots, browser console and server log in {})",
        r["step"],
        r["error"],
        artifacts.display()
    );

    // The link is the server's HTTPS one; the patient opened it, the doctor used HTTP.
    assert!(
        r["conferenceLink"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("https://{HTTPS_ADDR}/conference/")),
        "{pretty}"
    );
    assert_eq!(r["doctorWaitingRoom"], true, "{pretty}");
    assert_eq!(r["linkSentInChat"], true, "{pretty}");
    assert!(
        r["invalidCodeMessage"]
            .as_str()
            .unwrap_or("")
            .contains("n'est pas valide"),
        "a wrong code is explained: {pretty}"
    );

    for side in ["doctor", "patient"] {
        let video = &r[format!("{side}Video")];
        assert!(num(video, &["width"]) > 0.0, "{side}: videoWidth: {pretty}");
        assert!(
            num(video, &["currentTimeDelta"]) > 0.5,
            "{side}: remote video time advances: {pretty}"
        );
        let stats = &r[format!("{side}Stats")];
        assert!(
            num(stats, &["inboundBytesDelta"]) > 10_000.0,
            "{side}: inbound-rtp bytes grow: {pretty}"
        );
        assert!(
            num(stats, &["inboundVideoDelta"]) > 0.0,
            "{side}: inbound video bytes grow: {pretty}"
        );
        // Chrome starts its estimate at 300 kbit/s and probes upwards; the estimate moves only
        // when the server's transport-wide congestion feedback reports the probes arriving.
        assert!(
            num(stats, &["availableOutgoingBitrate"]) > 600_000.0,
            "{side}: the browser raised its bandwidth estimate on the server's feedback: {pretty}"
        );
        assert_eq!(
            num(stats, &["selectedRemote", "port"]),
            f64::from(MEDIA_PORT),
            "{side}: the selected pair's remote end is the server's media socket: {pretty}"
        );
        assert_eq!(
            stats["selectedRemote"]["protocol"], "udp",
            "{side}: media over UDP: {pretty}"
        );
        let ports = stats["remoteSdpCandidatePorts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            !ports.is_empty()
                && ports
                    .iter()
                    .all(|p| p.as_u64() == Some(u64::from(MEDIA_PORT))),
            "{side}: the server's SDP advertises its media port only: {pretty}"
        );
    }
    // Each browser receives the other's stream, named after who sent it.
    assert_eq!(r["patientVideo"]["stream"], "medecin-79", "{pretty}");
    assert_eq!(r["doctorVideo"]["stream"], "patient-11", "{pretty}");
    assert!(
        num(&r, &["metrics", "rtpPacketsForwarded"]) > 100.0,
        "{pretty}"
    );

    // Screen sharing (Chromium's fake display capture): the patient sees the doctor's screen
    // as a stream of its own beside the camera, playing; stopping removes it from the page.
    let share = &r["screenShare"];
    assert!(
        num(share, &["width"]) >= 640.0,
        "the screen's picture: {pretty}"
    );
    assert!(
        num(share, &["currentTimeDelta"]) > 0.5,
        "the screen plays: {pretty}"
    );
    assert!(
        share["label"]
            .as_str()
            .unwrap_or("")
            .contains("Écran partagé"),
        "{pretty}"
    );
    assert!(
        num(share, &["cameraDuring", "width"]) > 0.0,
        "the camera stays: {pretty}"
    );
    assert_eq!(share["removed"], true, "{pretty}");
    assert_eq!(share["doctorButtonAfter"], "Partager l'écran", "{pretty}");

    // Media cut (UDP blackholed in the namespace): both sides say so, rebuild their
    // PeerConnection, and the videos play again.
    let rc = &r["reconnect"];
    assert_eq!(rc["sawReconnecting"], true, "{pretty}");
    for side in ["doctor", "patient"] {
        assert!(
            num(rc, &["peerConnections", &format!("{side}After")])
                > num(rc, &["peerConnections", &format!("{side}Before")]),
            "{side}: a new PeerConnection after the cut: {pretty}"
        );
        assert!(
            num(rc, &[&format!("{side}Video"), "currentTimeDelta"]) > 0.5,
            "{side}: video plays again after the cut: {pretty}"
        );
    }
    assert!(
        num(rc, &["patientStats", "inboundBytesDelta"]) > 10_000.0,
        "{pretty}"
    );

    // relais killed with SIGKILL mid-call and started again by the same command: both pages
    // come back by themselves, on new PeerConnections that decode video; the message sent
    // just before the kill is stored; the chat works again.
    let rs = &r["restart"];
    for side in ["doctor", "patient"] {
        assert!(
            num(rs, &["videoBackMs", side]) > 0.0,
            "{side}: video decoded again after the restart: {pretty}"
        );
        assert!(
            num(rs, &["peerConnections", &format!("{side}After")])
                > num(rs, &["peerConnections", &format!("{side}Before")]),
            "{side}: a new PeerConnection after the restart: {pretty}"
        );
        assert!(
            num(rs, &[&format!("{side}Video"), "currentTimeDelta"]) > 0.5,
            "{side}: video plays after the restart: {pretty}"
        );
        assert!(
            num(rs, &[&format!("{side}Stats"), "inboundVideoDelta"]) > 0.0,
            "{side}: video bytes arrive after the restart: {pretty}"
        );
    }
    assert_eq!(rs["stored"]["status"], 200, "{pretty}");
    assert_eq!(
        rs["stored"]["lastWords"], true,
        "the message acknowledged before the kill is stored: {pretty}"
    );
    assert_eq!(rs["chatAfter"], true, "{pretty}");
    println!(
        "restart: relais listening again {} ms after the kill; video back at the doctor {} ms, \
         at the patient {} ms after the kill",
        num(rs, &["serverListeningAfterMs"]),
        num(rs, &["videoBackMs", "doctor"]),
        num(rs, &["videoBackMs", "patient"])
    );

    assert_eq!(r["typingSeen"], true, "{pretty}");
    assert_eq!(r["chatMessageSeen"], true, "{pretty}");
    assert_eq!(r["chatSender"], "patient", "{pretty}");
    assert!(r["endedForPatient"].as_str().is_some(), "{pretty}");
    for shot in ["doctor.png", "patient.png"] {
        let len = std::fs::metadata(artifacts.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 1_000, "screenshot {shot} saved ({len} bytes)");
    }
}
