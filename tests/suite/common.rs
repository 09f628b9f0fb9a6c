//! Test harness: the real server on loopback, port 0, a fresh database per test.
//!
//! - `spawn_app(Backend::Sqlite)` runs the server in-process with a temporary data directory;
//! - `Backend::Postgres` creates a fresh database on the server named by
//!   `RELAIS_TEST_POSTGRES_URL` and drops it afterwards; tests skip (saying so) when unset;
//! - every log line the server writes goes to an in-memory buffer ([`captured_logs`]) so tests
//!   can check what never reaches the logs.

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use relais::app::{App, RunningApp};
use relais::clock::{ManualClock, SharedClock, SystemClock};
use relais::config::Config;
use relais::ids::{Identity, Role};
use relais_load::client::api::ApiClient;
use relais_load::client::socketio::{ConnectOptions, SioClient, SioError};
use serde_json::{Value, json};

pub const POSTGRES_ENV: &str = "RELAIS_TEST_POSTGRES_URL";
pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("RELAIS_TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (once per test binary): relais at debug, others at warn.
pub fn init_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = CaptureWriter(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                std::env::var("RELAIS_TEST_LOG_FILTER")
                    .unwrap_or_else(|_| "warn,relais=debug".into()),
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    });
}

/// Everything the servers of this test binary logged so far.
pub fn captured_logs() -> String {
    init_logs();
    String::from_utf8_lossy(&LOGS.get().unwrap().lock().unwrap()).into_owned()
}

pub fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_ENV).ok().filter(|s| !s.is_empty())
}

/// Runs `$body(backend)` as two tests: on SQLite, and on PostgreSQL when configured.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::common::postgres_url().is_none() {
                    eprintln!(
                        "skipped: {} is not set, so the PostgreSQL variant of {} did not run",
                        $crate::common::POSTGRES_ENV,
                        stringify!($name)
                    );
                    return;
                }
                super::$name($crate::common::Backend::Postgres).await;
            }
        }
    };
}

/// A fresh PostgreSQL database, dropped with this value.
pub struct PgDatabase {
    admin_url: String,
    name: String,
}

impl PgDatabase {
    /// Creates it on the server of `admin_url`; returns it and its URL.
    pub async fn create(admin_url: &str) -> (Self, String) {
        use sqlx::Executor;
        sqlx::any::install_default_drivers();
        let name = format!("relais_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url)
            .await
            .expect("connect to the test PostgreSQL server");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create test database");
        let mut url = url::Url::parse(admin_url).expect("postgres url");
        url.set_path(&format!("/{name}"));
        (
            Self {
                admin_url: admin_url.to_string(),
                name,
            },
            url.to_string(),
        )
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // Async work in Drop: a short-lived runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use sqlx::Executor;
                if let Ok(mut conn) =
                    <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await
                {
                    let _ = conn
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await;
                }
            });
        })
        .join();
    }
}

/// Options for [`spawn_app_with`].
pub struct Options {
    pub backend: Backend,
    pub clock: Option<Arc<ManualClock>>,
    pub configure: Box<dyn FnOnce(&mut Config) + Send>,
}

impl Options {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            clock: None,
            configure: Box::new(|_| {}),
        }
    }

    pub fn configure(mut self, f: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.configure = Box::new(f);
        self
    }
}

pub struct TestApp {
    running: Option<RunningApp>,
    pub config: Config,
    pub base: String,
    pub https_base: Option<String>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub clock: SharedClock,
    _pg: Option<PgDatabase>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(Options::new(backend)).await
}

/// A configuration on loopback with every port 0 and every path in `dir`.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config {
        data_dir: dir.join("data"),
        media_dir: dir.join("media"),
        ..Config::default()
    };
    config.https.certs_dir = dir.join("certs");
    config.http.addr = "127.0.0.1:0".parse().unwrap();
    config.https.addr = "127.0.0.1:0".parse().unwrap();
    config.media.udp_addr = "127.0.0.1:0".parse().unwrap();
    config.media.tcp_addr = "127.0.0.1:0".parse().unwrap();
    config.media.public_ips = vec!["127.0.0.1".parse().unwrap()];
    config.turn.udp_addr = "127.0.0.1:0".parse().unwrap();
    config.turn.tcp_addr = "127.0.0.1:0".parse().unwrap();
    config.turn.tls_addr = "127.0.0.1:0".parse().unwrap();
    config.auth.jwt_secret = Some(SECRET.into());
    config.http.shutdown_grace = Duration::from_secs(2);
    config
}

pub async fn spawn_app_with(opts: Options) -> TestApp {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    let pg = match opts.backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            let admin = postgres_url().expect("PostgreSQL URL");
            let (db, url) = PgDatabase::create(&admin).await;
            config.database_url = Some(url);
            Some(db)
        }
    };
    (opts.configure)(&mut config);
    let clock: SharedClock = match &opts.clock {
        Some(c) => c.clone(),
        None => Arc::new(SystemClock),
    };
    let mut app = TestApp {
        running: None,
        config,
        base: String::new(),
        https_base: None,
        dir,
        http: reqwest::Client::new(),
        clock,
        _pg: pg,
    };
    app.start().await;
    app
}

impl TestApp {
    /// (Re)starts the server on the same configuration and data.
    pub async fn start(&mut self) {
        assert!(self.running.is_none(), "already running");
        let built = App::build_with_clock(self.config.clone(), self.clock.clone())
            .await
            .expect("server builds");
        let running = built.spawn();
        self.base = format!("http://{}", running.http_addr);
        self.https_base = running.https_addr.map(|a| format!("https://{a}"));
        // Keep the same ports across restarts so URLs stay valid.
        self.config.http.addr = running.http_addr;
        if let Some(a) = running.https_addr {
            self.config.https.addr = a;
        }
        self.running = Some(running);
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean shutdown");
        }
    }

    pub fn running(&self) -> &RunningApp {
        self.running.as_ref().expect("server running")
    }

    pub fn state(&self) -> &relais::state::AppState {
        &self.running().state
    }

    pub fn token(&self, role: Role, id: i64) -> String {
        self.running()
            .state
            .verifier
            .mint(Identity::new(role, id), None, Duration::from_secs(3600))
            .unwrap()
    }

    pub fn doctor(&self, id: i64) -> ApiClient {
        ApiClient::new(
            self.http.clone(),
            &self.base,
            &self.token(Role::Medecin, id),
        )
    }

    pub fn patient(&self, id: i64) -> ApiClient {
        ApiClient::new(
            self.http.clone(),
            &self.base,
            &self.token(Role::Patient, id),
        )
    }

    pub async fn socket(&self, role: Role, id: i64) -> SioClient {
        self.try_socket(role, id).await.expect("socket connects")
    }

    pub async fn try_socket(&self, role: Role, id: i64) -> Result<SioClient, SioError> {
        let auth = json!({
            "token": self.token(role, id),
            "userType": role.as_str(),
            "userId": id,
            "role": role.as_str(),
        });
        SioClient::connect_with(
            &self.base,
            auth,
            ConnectOptions {
                timeout: Some(Duration::from_secs(5)),
                ..Default::default()
            },
        )
        .await
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one metric line (exact name with labels), or 0 when absent.
    pub async fn metric(&self, line_prefix: &str) -> f64 {
        metric_value(&self.metrics().await, line_prefix)
    }
}

pub fn metric_value(text: &str, name_with_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name_with_labels)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // A panicking test leaves its server to the runtime's teardown; nothing to do here
        // but make sure the PostgreSQL database outlives the server's pool.
        if let Some(r) = self.running.take() {
            drop(r);
        }
    }
}

/// `Some(ack.data)` when `success` is true, else panics with the error.
pub fn ack_ok(ack: &Value) -> &Value {
    assert_eq!(ack["success"], true, "ack failed: {ack}");
    &ack["data"]
}

pub fn ack_code(ack: &Value) -> &str {
    assert_eq!(ack["success"], false, "ack unexpectedly succeeded: {ack}");
    ack["error"]["code"].as_str().unwrap_or("")
}

pub const WAIT: Duration = Duration::from_secs(5);

/// A consultation created by `doctor` with `patients` in its conversation:
/// (session id, conversation id, join code).
pub async fn create_session(
    app: &TestApp,
    doctor: i64,
    patients: &[i64],
    session_type: &str,
) -> (i64, i64, String) {
    let api = app.doctor(doctor);
    let participants: Vec<(&str, i64)> = patients.iter().map(|p| ("patient", *p)).collect();
    let kind = if patients.len() == 1 {
        "private"
    } else {
        "group"
    };
    let conv = api.create_conversation(kind, &participants).await.unwrap();
    let (status, v) = api
        .call(
            reqwest::Method::POST,
            "/api/messaging/webrtc/sessions?generate_conference_link=true",
            Some(
                &json!({"conversation_id": conv, "session_type": session_type, "sdp_offer": null, "waiting_room": false,
                         "initiator": {"userType": "medecin", "userId": doctor}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::CREATED, "{v}");
    let id = v["data"]["session"]["id"].as_i64().unwrap();
    let code = v["data"]["conferenceLink"]["joinCode"]
        .as_str()
        .unwrap()
        .to_string();
    (id, conv, code)
}

/// A synthetic participant configured for this server.
pub fn peer_config(
    app: &TestApp,
    role: Role,
    id: i64,
    session: i64,
    entry: relais_load::client::peer::Entry,
) -> relais_load::client::peer::PeerConfig {
    let mut cfg = relais_load::client::peer::PeerConfig::new(
        &app.base,
        &app.token(role, id),
        Identity::new(role, id),
        session,
        entry,
    );
    cfg.keyframe_interval = Duration::from_millis(500);
    cfg.video_bitrate_bps = 300_000;
    cfg
}

/// Polls `f` every 50 ms until it is true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `relais serve` child process.
pub struct ServerProcess {
    pub child: std::process::Child,
    /// `http://127.0.0.1:port`
    pub base: String,
    pub media_udp: std::net::SocketAddr,
    /// The base of the links it hands out (`https://127.0.0.1:port` by default).
    pub public_base_url: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `relais-load` binary (package `relais-load` of the workspace), built on first use with
/// the profile of this test binary: Cargo gives integration tests the path of their own
/// package's binaries only, so the load tool is built here, never run stale.
pub fn relais_load_bin() -> &'static std::path::Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/suite-<hash>
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap();
        let mut build = std::process::Command::new(env!("CARGO"));
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "relais-load",
                "--bin",
                "relais-load",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // What Cargo set for this test process only: build scripts that read it (ring reads
        // CARGO_MANIFEST_DIR) would see a change and rebuild half the tree, twice.
        for (k, _) in std::env::vars() {
            if k.starts_with("CARGO_PKG_")
                || matches!(
                    k.as_str(),
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "OUT_DIR"
                )
            {
                build.env_remove(k);
            }
        }
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => {}
            Some("release") => {
                build.arg("--release");
            }
            Some(other) => {
                build.args(["--profile", other]);
            }
            None => panic!("no profile directory above {}", exe.display()),
        }
        let status = build.status().unwrap();
        assert!(status.success(), "cargo build -p relais-load failed");
        profile_dir.join("relais-load")
    })
}

/// The `relais` binary with a clean environment.
pub fn relais_command() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_relais"));
    c.env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL");
    for (k, _) in std::env::vars() {
        if k.starts_with("RELAIS_") {
            c.env_remove(k);
        }
    }
    c
}

/// Starts `relais serve` in `dir` on loopback (ports 0) and waits for it to listen.
pub fn serve(dir: &std::path::Path, extra_args: &[&str]) -> ServerProcess {
    let mut args = vec![
        "--set",
        "http.addr=127.0.0.1:0",
        "--set",
        "https.addr=127.0.0.1:0",
        "--set",
        "media.udp_addr=127.0.0.1:0",
        "--set",
        "media.tcp_addr=127.0.0.1:0",
        "--set",
        "media.public_ips=127.0.0.1",
        "--set",
        "turn.enabled=false",
    ];
    args.extend_from_slice(extra_args);
    serve_with(relais_command(), dir, &args)
}

/// Runs `cmd` (a `relais` invocation, possibly wrapped) with `serve` and `args`, JSON logs, in
/// `dir`, and waits for it to listen.
pub fn serve_with(
    mut cmd: std::process::Command,
    dir: &std::path::Path,
    args: &[&str],
) -> ServerProcess {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::Instant;
    cmd.current_dir(dir)
        .args(args)
        .env("RELAIS_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        seen.push(line.clone());
        if line.contains("relais listening") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let base = format!("http://{}", v["http"].as_str().unwrap());
            let base_for_log = base.clone();
            let media_udp = v["media_udp"].as_str().unwrap().parse().unwrap();
            let public_base_url = v["public_base_url"]
                .as_str()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string();
            // Keep draining so the child never blocks on a full pipe (echoed with
            // RELAIS_TEST_LOG, to follow what a child process does).
            let echo = std::env::var_os("RELAIS_TEST_LOG").is_some();
            std::thread::spawn(move || {
                while let Ok(line) = rx.recv() {
                    if echo {
                        eprintln!("[{base_for_log}] {line}");
                    }
                }
            });
            return ServerProcess {
                child,
                base,
                media_udp,
                public_base_url,
            };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("server did not start: {}", seen.join("\n"));
}

/// The session's participants as `GET …/stats` shows them to its doctor.
pub async fn session_stats(app: &TestApp, doctor: i64, session: i64) -> Vec<serde_json::Value> {
    let (status, v) = app
        .doctor(doctor)
        .call(
            reqwest::Method::GET,
            &format!("/api/messaging/webrtc/sessions/{session}/stats"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{v}");
    v["data"]["participants"].as_array().unwrap().clone()
}

/// How the server reaches each participant's media (`udp`/`tcp`), from the session's stats.
pub async fn server_transports(app: &TestApp, doctor: i64, session: i64) -> Vec<String> {
    session_stats(app, doctor, session)
        .await
        .iter()
        .map(|p| p["transport"].as_str().unwrap_or("none").to_string())
        .collect()
}
