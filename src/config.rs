//! Typed configuration, layered defaults < TOML file < environment < command-line flags.
//!
//! Invariants:
//! - every layer is merged into one TOML table before a single deserialization, so an unknown
//!   key, a wrong type or a bad value is reported once, naming the setting (`http.addr`);
//! - environment variables are an explicit table ([`ENV_VARS`]): each one maps to one key;
//! - [`Config::validate`] runs before anything binds or touches the disk.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

/// Why a configuration could not be loaded. The message names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting `{key}` (from {origin}): {message}")]
    Value {
        key: String,
        origin: String,
        message: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the SQLite database, the development JWT secret and other state live.
    pub data_dir: PathBuf,
    /// Uploads (`uploads/`) and recordings (`recordings/`).
    pub media_dir: PathBuf,
    /// The built browser client (`npm run build` in `web/`), served at `/`.
    pub web_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: `relais.db` in `data_dir`.
    pub database_url: Option<String>,
    /// Base of every URL the server hands out (conference links). Default:
    /// `https://<first public ip>:<https port>`.
    pub public_base_url: Option<Url>,
    /// `redis://…`: this node is one of several sharing PostgreSQL and Redis (node directory,
    /// Socket.IO across nodes, session placement). Unset: one process, no Redis.
    pub redis_url: Option<String>,
    pub http: HttpConfig,
    pub https: HttpsConfig,
    pub auth: AuthConfig,
    pub messaging: MessagingConfig,
    pub media: MediaConfig,
    pub sessions: SessionConfig,
    pub turn: TurnConfig,
    pub recording: RecordingConfig,
    pub cluster: ClusterConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// Origins allowed by CORS. Empty: the server's own origins (public base URL, listeners).
    pub cors_origins: Vec<String>,
    /// Largest JSON body accepted, in bytes.
    pub json_body_limit: usize,
    /// How long in-flight requests may take to finish at shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Invalid tokens allowed per client address per minute; past it, invalid tokens from
    /// there get 429 (a valid token is always accepted, whoever failed before it).
    pub auth_failures_per_minute: u32,
    /// Proxies (addresses or blocks, `10.0.0.0/8`) whose `Forwarded`/`X-Forwarded-For` name
    /// the client. Empty: the TCP peer is the client, and those headers are ignored.
    pub trusted_proxies: Vec<String>,
    /// Time a connection has to send a request's headers, and to start its next request when
    /// kept alive: a connection silent for longer is closed.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Longest silence inside a request body (an upload) before the request fails.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; beyond: 431.
    pub max_header_bytes: usize,
    /// TCP connections one client address may hold open on the HTTP and HTTPS ports (trusted
    /// proxies excepted); more are closed at once.
    pub connections_per_address: u32,
    /// TCP connections on the HTTP and HTTPS ports in all. 0: derived from the open-file limit
    /// (three quarters of it, the rest kept for media, TURN, the database and files).
    pub max_connections: u32,
    /// Bearer token `/metrics` asks of clients that are not on this machine. Unset: only
    /// local clients (loopback) may read `/metrics`.
    pub metrics_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpsConfig {
    pub enabled: bool,
    pub addr: SocketAddr,
    /// PEM certificate chain and private key. Both or neither; neither: self-signed in `certs_dir`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub certs_dir: PathBuf,
    /// Extra DNS names and IPs the generated certificate must cover.
    pub hostnames: Vec<String>,
    /// One port for everything: the HTTPS listener also serves TURN (over TLS, ALPN
    /// `stun.turn`, or plain TCP) and ICE-TCP, told apart by their first bytes, and
    /// advertises `turns:` URLs and ICE-TCP candidates on its port. Unset: on when
    /// `https.addr`'s port is 443.
    pub multiplex: Option<bool>,
    /// On the shared port: time a connection has to say what it speaks (TLS handshake
    /// included) before it is closed.
    #[serde(with = "humantime_serde")]
    pub identify_timeout: Duration,
    /// On the shared port: connections from one address (a /64 in IPv6) that have not said
    /// yet what they speak; more are closed at once (trusted proxies are not counted).
    pub unidentified_per_address: u32,
}

impl HttpsConfig {
    /// Whether the HTTPS listener is the shared port (see [`HttpsConfig::multiplex`]).
    pub fn multiplexed(&self) -> bool {
        self.enabled && self.multiplex.unwrap_or(self.addr.port() == 443)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 shared secret. Unset (and no public key): development mode.
    pub jwt_secret: Option<String>,
    /// RS256 public key (PEM). Exclusive with `jwt_secret`.
    pub jwt_public_key_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew tolerated when checking a token's `exp` (expired up to this long ago is
    /// still accepted) and `nbf` (valid from up to this long ahead). Keep it short: it extends
    /// every token's life.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Development mode only (no `jwt_secret`, no public key): who may get a token from
    /// `POST /api/dev/token`. `local`: clients on this machine (loopback) only; `network`:
    /// anyone who reaches the server (a lab, never a clinic); `off`: nobody (use the `token`
    /// command).
    pub dev_sign_in: DevSignIn,
    /// People who may use the administration endpoints (`GET /api/messaging/nodes`), as
    /// `role:id` (`medecin:1`). Empty: nobody.
    pub admins: Vec<String>,
}

/// Who may sign in through the development token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DevSignIn {
    Local,
    Network,
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingConfig {
    /// Largest attachment accepted, in bytes.
    pub attachment_max_bytes: u64,
    /// Longest text message, in characters.
    pub max_message_chars: usize,
    /// Messages (and their attachments, file and row) are deleted this many days after they
    /// were sent; unset keeps them until deleted otherwise.
    pub retention_days: Option<u32>,
    /// How often the retention setting is applied.
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    pub udp_addr: SocketAddr,
    /// ICE-TCP listener (RFC 6544 passive); `443` lets clinics that allow only HTTPS out connect.
    pub tcp_addr: SocketAddr,
    pub ice_tcp: bool,
    /// Addresses advertised as host candidates. Empty: every non-loopback interface address.
    pub public_ips: Vec<IpAddr>,
    /// Threads of the media runtime (socket I/O, DTLS-SRTP, forwarding). One keeps every
    /// packet on one core with no cross-thread wake-up; more scale past one core's worth of
    /// calls. Default: one per four cores.
    pub workers: usize,
    /// Tracks one participant may publish (camera, microphone, screen, …); an offer with more
    /// is refused with `webrtc_error too_many_tracks`. Every other participant receives each of
    /// them, so this bounds the m-lines of everyone's PeerConnection too.
    pub max_tracks: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Lifetime of a conference join code.
    #[serde(with = "humantime_serde")]
    pub code_ttl: Duration,
    /// How long a participant whose signaling socket dropped keeps its place.
    #[serde(with = "humantime_serde")]
    pub reconnect_grace: Duration,
    /// Whether a new session has a waiting room (newcomers wait for the doctor's admission)
    /// when its creation does not say.
    pub waiting_room: bool,
    /// Longest validity a doctor may give a guest link.
    #[serde(with = "humantime_serde")]
    pub guest_link_max_ttl: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    pub enabled: bool,
    pub udp_addr: SocketAddr,
    pub tcp_addr: SocketAddr,
    pub tls_addr: SocketAddr,
    /// More TLS listeners, typically `0.0.0.0:443` for clinics that allow only HTTPS out
    /// (use a certificate clients trust: `https.cert_file`/`https.key_file`).
    pub extra_tls_addrs: Vec<SocketAddr>,
    /// The host put in `turns:` URLs, a name the certificate covers (for TURN/TLS on an
    /// address of its own). Unset: the public base URL's host.
    pub tls_host: Option<String>,
    /// The address put in `turn:` URLs and relayed addresses. Unset: first media address.
    pub public_ip: Option<IpAddr>,
    /// Long-term credential realm.
    pub realm: String,
    /// Shared secret of the REST credentials. Unset: generated once and kept in the database,
    /// shared by every node using it.
    pub secret: Option<String>,
    /// How long the credentials handed to clients stay valid.
    #[serde(with = "humantime_serde")]
    pub credential_ttl: Duration,
    /// Allocations one user may hold at once (486 beyond).
    pub max_allocations_per_user: u32,
    /// Allocations the server holds at once (508 beyond).
    pub max_allocations: u32,
    /// Allocations one client address (IPv6: one /64) may hold at once (486 beyond).
    pub max_allocations_per_address: u32,
    /// Of `max_allocations`, how many only participants of a live consultation on this node
    /// may take: a client that is in no call cannot use the last ones up.
    pub reserved_for_sessions: u32,
    /// Relayed bandwidth per allocation, both directions together, in kbit/s.
    pub max_kbps_per_allocation: u32,
    /// Peers allowed besides relais's own media addresses (other relais nodes). The server
    /// relays to nothing else: it is not an open relay.
    pub extra_peer_ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Recordings (files and rows) are deleted this many days after they started; 0 keeps
    /// them until deleted otherwise.
    pub retention_days: u32,
    /// How often the retention setting is applied.
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// RTP packets waiting for one participant's recorder before new ones are dropped.
    pub queue_packets: usize,
}

/// Several nodes (only read when `redis_url` is set).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name in the directory. Unset: the host name and a random suffix, new at
    /// each start (a restarted node is a new node).
    pub node_id: Option<String>,
    /// Prefix of every Redis key and channel relais uses: nodes sharing a prefix form one
    /// cluster.
    pub prefix: String,
    /// How often a node refreshes its directory entry (and looks at the others).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A node whose entry is older than this is dead: its sessions move to live nodes.
    #[serde(with = "humantime_serde")]
    pub node_ttl: Duration,
    /// How long a node waits for another to answer a signaling message it routed there.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

/// What one client may cost the others (see [`crate::limits`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Socket.IO connections one person may hold at once (tabs, devices).
    pub sockets_per_user: u32,
    /// Socket.IO connections from one client address at once (a clinic behind one NAT holds
    /// many: keep it well above its staff).
    pub sockets_per_address: u32,
    /// Client events per second one socket may send (every event, messaging and signaling),
    /// and how many it may send at once.
    pub socket_events_per_second: u32,
    pub socket_events_burst: u32,
    /// The same for all the sockets of one person together.
    pub user_events_per_second: u32,
    pub user_events_burst: u32,
    /// Messages one person may send per minute (REST and Socket.IO), and at once.
    pub messages_per_minute: u32,
    pub messages_burst: u32,
    /// Wrong join codes per person per minute; past it, 429 for that person only.
    pub code_failures_per_person: u32,
    /// Wrong join codes per client address (IPv6: per /64) per minute.
    pub code_failures_per_address: u32,
    /// Wrong join codes per minute on the whole server. Past it, only people with no wrong
    /// code of their own this minute have a code checked.
    pub code_failures_per_minute: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `relais=debug,tower_http=info`); `RUST_LOG` wins when set.
    pub filter: String,
}

/// `media.workers` by default: one per four cores, at least one.
fn default_media_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 4).max(1))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("valid literal address")
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            media_dir: PathBuf::from("media"),
            web_dir: PathBuf::from("web/dist"),
            database_url: None,
            public_base_url: None,
            redis_url: None,
            http: HttpConfig::default(),
            https: HttpsConfig::default(),
            auth: AuthConfig::default(),
            messaging: MessagingConfig::default(),
            media: MediaConfig::default(),
            sessions: SessionConfig::default(),
            turn: TurnConfig::default(),
            recording: RecordingConfig::default(),
            cluster: ClusterConfig::default(),
            limits: LimitsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: addr("0.0.0.0:3000"),
            cors_origins: Vec::new(),
            json_body_limit: 256 * 1024,
            shutdown_grace: Duration::from_secs(10),
            auth_failures_per_minute: 30,
            trusted_proxies: Vec::new(),
            header_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            connections_per_address: 256,
            max_connections: 0,
            metrics_token: None,
        }
    }
}

impl Default for HttpsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: addr("0.0.0.0:3443"),
            cert_file: None,
            key_file: None,
            certs_dir: PathBuf::from("certs"),
            hostnames: Vec::new(),
            multiplex: None,
            identify_timeout: Duration::from_secs(5),
            unidentified_per_address: 16,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_public_key_file: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            dev_sign_in: DevSignIn::Local,
            admins: Vec::new(),
        }
    }
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            attachment_max_bytes: 20 * 1024 * 1024,
            max_message_chars: 10_000,
            retention_days: None,
            retention_interval: Duration::from_secs(3600),
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            udp_addr: addr("0.0.0.0:3479"),
            tcp_addr: addr("0.0.0.0:3479"),
            ice_tcp: true,
            public_ips: Vec::new(),
            workers: default_media_workers(),
            max_tracks: 8,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            code_ttl: Duration::from_secs(2 * 3600),
            reconnect_grace: Duration::from_secs(10),
            waiting_room: true,
            guest_link_max_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            udp_addr: addr("0.0.0.0:3478"),
            tcp_addr: addr("0.0.0.0:3478"),
            tls_addr: addr("0.0.0.0:5349"),
            extra_tls_addrs: Vec::new(),
            tls_host: None,
            public_ip: None,
            realm: "relais".into(),
            secret: None,
            credential_ttl: Duration::from_secs(12 * 3600),
            max_allocations_per_user: 20,
            max_allocations: 2000,
            max_allocations_per_address: 100,
            reserved_for_sessions: 200,
            max_kbps_per_allocation: 10_000,
            extra_peer_ips: Vec::new(),
        }
    }
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            retention_days: 0,
            retention_interval: Duration::from_secs(3600),
            queue_packets: 4096,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            prefix: "relais".into(),
            heartbeat_interval: Duration::from_secs(2),
            node_ttl: Duration::from_secs(6),
            request_timeout: Duration::from_secs(15),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            sockets_per_user: 20,
            sockets_per_address: 500,
            socket_events_per_second: 30,
            socket_events_burst: 120,
            user_events_per_second: 60,
            user_events_burst: 240,
            messages_per_minute: 120,
            messages_burst: 20,
            code_failures_per_person: 10,
            code_failures_per_address: 20,
            code_failures_per_minute: 300,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            // The WebRTC stack warns about expected races (a STUN check before the answer is
            // applied, a DTLS config without a server name); keep its errors only.
            filter: "info,rtc=error,rtc_dtls=error,rtc_ice=error,rtc_srtp=error".into(),
        }
    }
}

/// How a raw string from the environment or a flag becomes a TOML value.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    List,
    Bool,
    Int,
}

/// Environment variables and the key each one sets.
const ENV_VARS: &[(&str, &str, Kind)] = &[
    ("RELAIS_DATA_DIR", "data_dir", Kind::Str),
    ("RELAIS_MEDIA_DIR", "media_dir", Kind::Str),
    ("RELAIS_WEB_DIR", "web_dir", Kind::Str),
    ("DATABASE_URL", "database_url", Kind::Str),
    ("RELAIS_PUBLIC_BASE_URL", "public_base_url", Kind::Str),
    ("RELAIS_HTTP_ADDR", "http.addr", Kind::Str),
    ("RELAIS_CORS_ORIGINS", "http.cors_origins", Kind::List),
    ("RELAIS_JSON_BODY_LIMIT", "http.json_body_limit", Kind::Int),
    ("RELAIS_SHUTDOWN_GRACE", "http.shutdown_grace", Kind::Str),
    (
        "RELAIS_AUTH_FAILURES_PER_MINUTE",
        "http.auth_failures_per_minute",
        Kind::Int,
    ),
    ("RELAIS_TRUSTED_PROXIES", "http.trusted_proxies", Kind::List),
    ("RELAIS_METRICS_TOKEN", "http.metrics_token", Kind::Str),
    ("RELAIS_HTTPS_ENABLED", "https.enabled", Kind::Bool),
    ("RELAIS_HTTPS_ADDR", "https.addr", Kind::Str),
    ("RELAIS_TLS_CERT_FILE", "https.cert_file", Kind::Str),
    ("RELAIS_TLS_KEY_FILE", "https.key_file", Kind::Str),
    ("RELAIS_CERTS_DIR", "https.certs_dir", Kind::Str),
    ("RELAIS_TLS_HOSTNAMES", "https.hostnames", Kind::List),
    ("RELAIS_HTTPS_MULTIPLEX", "https.multiplex", Kind::Bool),
    (
        "RELAIS_HTTPS_IDENTIFY_TIMEOUT",
        "https.identify_timeout",
        Kind::Str,
    ),
    (
        "RELAIS_HTTPS_UNIDENTIFIED_PER_ADDRESS",
        "https.unidentified_per_address",
        Kind::Int,
    ),
    ("RELAIS_JWT_SECRET", "auth.jwt_secret", Kind::Str),
    (
        "RELAIS_JWT_PUBLIC_KEY_FILE",
        "auth.jwt_public_key_file",
        Kind::Str,
    ),
    ("RELAIS_JWT_ISSUER", "auth.issuer", Kind::Str),
    ("RELAIS_DEV_SIGN_IN", "auth.dev_sign_in", Kind::Str),
    ("RELAIS_JWT_AUDIENCE", "auth.audience", Kind::Str),
    (
        "RELAIS_ATTACHMENT_MAX_BYTES",
        "messaging.attachment_max_bytes",
        Kind::Int,
    ),
    (
        "RELAIS_MESSAGING_RETENTION_DAYS",
        "messaging.retention_days",
        Kind::Int,
    ),
    (
        "RELAIS_MESSAGING_RETENTION_INTERVAL",
        "messaging.retention_interval",
        Kind::Str,
    ),
    ("RELAIS_MEDIA_UDP_ADDR", "media.udp_addr", Kind::Str),
    ("RELAIS_MEDIA_TCP_ADDR", "media.tcp_addr", Kind::Str),
    ("RELAIS_ICE_TCP", "media.ice_tcp", Kind::Bool),
    ("RELAIS_MEDIA_PUBLIC_IPS", "media.public_ips", Kind::List),
    ("RELAIS_MEDIA_WORKERS", "media.workers", Kind::Int),
    ("RELAIS_MEDIA_MAX_TRACKS", "media.max_tracks", Kind::Int),
    ("RELAIS_CODE_TTL", "sessions.code_ttl", Kind::Str),
    (
        "RELAIS_RECONNECT_GRACE",
        "sessions.reconnect_grace",
        Kind::Str,
    ),
    ("RELAIS_WAITING_ROOM", "sessions.waiting_room", Kind::Bool),
    (
        "RELAIS_GUEST_LINK_MAX_TTL",
        "sessions.guest_link_max_ttl",
        Kind::Str,
    ),
    ("RELAIS_TURN_ENABLED", "turn.enabled", Kind::Bool),
    ("RELAIS_TURN_UDP_ADDR", "turn.udp_addr", Kind::Str),
    ("RELAIS_TURN_TCP_ADDR", "turn.tcp_addr", Kind::Str),
    ("RELAIS_TURN_TLS_ADDR", "turn.tls_addr", Kind::Str),
    ("RELAIS_TURN_PUBLIC_IP", "turn.public_ip", Kind::Str),
    ("RELAIS_TURN_TLS_HOST", "turn.tls_host", Kind::Str),
    (
        "RELAIS_TURN_EXTRA_TLS_ADDRS",
        "turn.extra_tls_addrs",
        Kind::List,
    ),
    ("RELAIS_TURN_REALM", "turn.realm", Kind::Str),
    ("RELAIS_TURN_SECRET", "turn.secret", Kind::Str),
    (
        "RELAIS_TURN_CREDENTIAL_TTL",
        "turn.credential_ttl",
        Kind::Str,
    ),
    (
        "RELAIS_TURN_MAX_ALLOCATIONS_PER_USER",
        "turn.max_allocations_per_user",
        Kind::Int,
    ),
    (
        "RELAIS_TURN_MAX_ALLOCATIONS",
        "turn.max_allocations",
        Kind::Int,
    ),
    (
        "RELAIS_TURN_MAX_KBPS_PER_ALLOCATION",
        "turn.max_kbps_per_allocation",
        Kind::Int,
    ),
    (
        "RELAIS_TURN_EXTRA_PEER_IPS",
        "turn.extra_peer_ips",
        Kind::List,
    ),
    (
        "RELAIS_RECORDING_RETENTION_DAYS",
        "recording.retention_days",
        Kind::Int,
    ),
    (
        "RELAIS_RECORDING_RETENTION_INTERVAL",
        "recording.retention_interval",
        Kind::Str,
    ),
    (
        "RELAIS_RECORDING_QUEUE_PACKETS",
        "recording.queue_packets",
        Kind::Int,
    ),
    ("REDIS_URL", "redis_url", Kind::Str),
    ("RELAIS_NODE_ID", "cluster.node_id", Kind::Str),
    ("RELAIS_CLUSTER_PREFIX", "cluster.prefix", Kind::Str),
    (
        "RELAIS_HEARTBEAT_INTERVAL",
        "cluster.heartbeat_interval",
        Kind::Str,
    ),
    ("RELAIS_NODE_TTL", "cluster.node_ttl", Kind::Str),
    (
        "RELAIS_CLUSTER_REQUEST_TIMEOUT",
        "cluster.request_timeout",
        Kind::Str,
    ),
    ("RELAIS_ADMINS", "auth.admins", Kind::List),
    ("RELAIS_LOG_FORMAT", "log.format", Kind::Str),
    ("RELAIS_LOG", "log.filter", Kind::Str),
];

/// One override from outside the file: `key = raw value`, with where it came from.
#[derive(Debug, Clone)]
pub struct Override {
    pub key: String,
    pub value: String,
    pub origin: String,
}

impl Override {
    /// A `--set key=value` flag.
    pub fn parse_flag(s: &str) -> Result<Self, ConfigError> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| ConfigError::Invalid(format!("--set expects key=value, got `{s}`")))?;
        Ok(Self {
            key: key.trim().to_string(),
            value: value.trim().to_string(),
            origin: "--set".into(),
        })
    }
}

impl Config {
    /// Builds the configuration from every layer. `env` is injected so tests can drive it.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &[Override],
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        for (var, key, kind) in ENV_VARS {
            if let Some(raw) = env(var).filter(|v| !v.is_empty()) {
                set_key(&mut table, key, to_value(&raw, *kind), var)?;
            }
        }
        for flag in flags {
            let kind = kind_of(&flag.key).ok_or_else(|| ConfigError::Value {
                key: flag.key.clone(),
                origin: flag.origin.clone(),
                message: "unknown setting".into(),
            })?;
            set_key(
                &mut table,
                &flag.key,
                to_value(&flag.value, kind),
                &flag.origin,
            )?;
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                let message = e.into_inner().to_string();
                ConfigError::Value {
                    origin: origin_of(&key, file, flags, &env),
                    key,
                    message,
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    /// The process environment, flags and optional file.
    pub fn from_process(file: Option<&Path>, flags: &[Override]) -> Result<Self, ConfigError> {
        Self::load(file, |k| std::env::var(k).ok(), flags)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Value {
            key: key.into(),
            origin: "configuration".into(),
            message,
        };
        if let Some(url) = &self.public_base_url
            && !matches!(url.scheme(), "http" | "https")
        {
            return Err(bad("public_base_url", "must be an http(s) URL".into()));
        }
        if let Some(db) = &self.database_url
            && !(db.starts_with("sqlite:")
                || db.starts_with("postgres://")
                || db.starts_with("postgresql://"))
        {
            return Err(bad(
                "database_url",
                "must start with sqlite:, postgres:// or postgresql://".into(),
            ));
        }
        if self.https.cert_file.is_some() != self.https.key_file.is_some() {
            return Err(bad(
                "https.cert_file",
                "https.cert_file and https.key_file go together".into(),
            ));
        }
        if self.auth.jwt_secret.is_some() && self.auth.jwt_public_key_file.is_some() {
            return Err(bad(
                "auth.jwt_secret",
                "set either auth.jwt_secret (HS256) or auth.jwt_public_key_file (RS256), not both"
                    .into(),
            ));
        }
        if let Some(secret) = &self.auth.jwt_secret
            && secret.len() < 32
        {
            return Err(bad(
                "auth.jwt_secret",
                "must be at least 32 bytes long".into(),
            ));
        }
        for origin in &self.http.cors_origins {
            let ok = Url::parse(origin)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.path() == "/")
                .unwrap_or(false);
            if !ok || http::HeaderValue::from_str(origin).is_err() {
                return Err(bad(
                    "http.cors_origins",
                    format!("`{origin}` is not an origin like https://clinic.example:443"),
                ));
            }
        }
        if !(1..=256).contains(&self.media.workers) {
            return Err(bad("media.workers", "must be between 1 and 256".into()));
        }
        if !(1..=32).contains(&self.media.max_tracks) {
            return Err(bad("media.max_tracks", "must be between 1 and 32".into()));
        }
        if self.http.json_body_limit < 1024 {
            return Err(bad("http.json_body_limit", "must be at least 1024".into()));
        }
        if self.messaging.attachment_max_bytes == 0 {
            return Err(bad(
                "messaging.attachment_max_bytes",
                "must be positive".into(),
            ));
        }
        if self.messaging.retention_days == Some(0) {
            return Err(bad(
                "messaging.retention_days",
                "must be at least 1 (leave it unset to keep messages)".into(),
            ));
        }
        if self.messaging.retention_interval < Duration::from_secs(1) {
            return Err(bad(
                "messaging.retention_interval",
                "must be at least 1s".into(),
            ));
        }
        if self.sessions.code_ttl < Duration::from_secs(60) {
            return Err(bad("sessions.code_ttl", "must be at least 1m".into()));
        }
        if self.sessions.guest_link_max_ttl < Duration::from_secs(60) {
            return Err(bad(
                "sessions.guest_link_max_ttl",
                "must be at least 1m".into(),
            ));
        }
        if let Some(secret) = &self.turn.secret
            && secret.len() < 16
        {
            return Err(bad("turn.secret", "must be at least 16 bytes long".into()));
        }
        if self.turn.realm.is_empty() || self.turn.realm.len() > 127 {
            return Err(bad("turn.realm", "must be 1 to 127 characters".into()));
        }
        if self.turn.credential_ttl < Duration::from_secs(60) {
            return Err(bad("turn.credential_ttl", "must be at least 1m".into()));
        }
        if self.recording.retention_interval < Duration::from_secs(1) {
            return Err(bad(
                "recording.retention_interval",
                "must be at least 1s".into(),
            ));
        }
        if !(64..=1 << 20).contains(&self.recording.queue_packets) {
            return Err(bad(
                "recording.queue_packets",
                "must be between 64 and 1048576".into(),
            ));
        }
        if self.turn.max_kbps_per_allocation < 64 {
            return Err(bad(
                "turn.max_kbps_per_allocation",
                "must be at least 64".into(),
            ));
        }
        if let Err(e) = crate::net::TrustedProxies::parse(&self.http.trusted_proxies) {
            return Err(bad("http.trusted_proxies", e));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60))
            .contains(&self.https.identify_timeout)
        {
            return Err(bad(
                "https.identify_timeout",
                "must be between 1s and 60s".into(),
            ));
        }
        if self.https.unidentified_per_address == 0 {
            return Err(bad(
                "https.unidentified_per_address",
                "must be at least 1".into(),
            ));
        }
        if let Some(host) = &self.turn.tls_host
            && host.parse::<IpAddr>().is_err()
            && (host.contains([':', '/', '?', '#', '@', ' ']) || url::Host::parse(host).is_err())
        {
            return Err(bad(
                "turn.tls_host",
                format!("`{host}` is not a host name or address (no scheme, no port)"),
            ));
        }
        if self.http.header_timeout < Duration::from_secs(1) {
            return Err(bad("http.header_timeout", "must be at least 1s".into()));
        }
        if self.http.body_timeout < Duration::from_secs(1) {
            return Err(bad("http.body_timeout", "must be at least 1s".into()));
        }
        if !(8192..=1 << 20).contains(&self.http.max_header_bytes) {
            return Err(bad(
                "http.max_header_bytes",
                "must be between 8192 and 1048576".into(),
            ));
        }
        if self.http.connections_per_address == 0 {
            return Err(bad(
                "http.connections_per_address",
                "must be at least 1".into(),
            ));
        }
        if let Some(token) = &self.http.metrics_token
            && token.len() < 16
        {
            return Err(bad(
                "http.metrics_token",
                "must be at least 16 characters long".into(),
            ));
        }
        if self.turn.reserved_for_sessions >= self.turn.max_allocations {
            return Err(bad(
                "turn.reserved_for_sessions",
                "must be smaller than turn.max_allocations".into(),
            ));
        }
        if self.turn.max_allocations_per_address == 0 {
            return Err(bad(
                "turn.max_allocations_per_address",
                "must be at least 1".into(),
            ));
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.sockets_per_user", l.sockets_per_user),
            ("limits.sockets_per_address", l.sockets_per_address),
            (
                "limits.socket_events_per_second",
                l.socket_events_per_second,
            ),
            ("limits.socket_events_burst", l.socket_events_burst),
            ("limits.user_events_per_second", l.user_events_per_second),
            ("limits.user_events_burst", l.user_events_burst),
            ("limits.messages_per_minute", l.messages_per_minute),
            ("limits.messages_burst", l.messages_burst),
            (
                "limits.code_failures_per_person",
                l.code_failures_per_person,
            ),
            (
                "limits.code_failures_per_address",
                l.code_failures_per_address,
            ),
            (
                "limits.code_failures_per_minute",
                l.code_failures_per_minute,
            ),
        ] {
            if value == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        for admin in &self.auth.admins {
            if parse_identity(admin).is_none() {
                return Err(bad(
                    "auth.admins",
                    format!("`{admin}` is not a person like medecin:1 or patient:42"),
                ));
            }
        }
        self.validate_cluster()
    }

    /// Development mode: tokens are signed with a secret generated for the data directory.
    pub fn development_mode(&self) -> bool {
        self.auth.jwt_secret.is_none() && self.auth.jwt_public_key_file.is_none()
    }

    /// Who can reach what, in plain words, for the start-up log (`http`/`https`: where the
    /// listeners are bound).
    pub fn exposure(&self, http: SocketAddr, https: Option<SocketAddr>) -> Vec<String> {
        let mut listeners = format!("http://{http}");
        if let Some(h) = https {
            listeners.push_str(&format!(" and https://{h}"));
        }
        let everyone = if http.ip().is_loopback() && https.is_none_or(|h| h.ip().is_loopback()) {
            "clients on this machine"
        } else {
            "anyone who reaches"
        };
        let mut lines = Vec::new();
        if self.development_mode() {
            let sign_in = match self.auth.dev_sign_in {
                DevSignIn::Local => "only clients on this machine (127.0.0.1, ::1) can get a \
                     sign-in token (POST /api/dev/token, auth.dev_sign_in = \"local\"); others \
                     see the sign-in page but cannot sign in"
                    .to_string(),
                DevSignIn::Network => format!(
                    "{everyone} {listeners} can get a token for ANY doctor or patient \
                     (auth.dev_sign_in = \"network\"): a lab set-up, never a clinic"
                ),
                DevSignIn::Off => "nobody can get a token from the server \
                     (auth.dev_sign_in = \"off\"); mint them with `relais token`"
                    .to_string(),
            };
            lines.push(format!(
                "development mode (no auth.jwt_secret): tokens are signed with a secret of the \
                 data directory; {sign_in}. Set auth.jwt_secret before real patients use it"
            ));
        } else {
            lines.push(format!(
                "{everyone} {listeners} reaches the web client and the API; every API call \
                 needs a token signed by auth.{}",
                if self.auth.jwt_secret.is_some() {
                    "jwt_secret"
                } else {
                    "jwt_public_key_file"
                }
            ));
        }
        lines.push(match &self.http.metrics_token {
            Some(_) => {
                "/metrics: clients on this machine, and others with http.metrics_token".to_string()
            }
            None => "/metrics: clients on this machine only (set http.metrics_token for a \
                 remote scraper)"
                .to_string(),
        });
        if self.http.trusted_proxies.is_empty() {
            lines.push(
                "client addresses are the TCP peers (no http.trusted_proxies: Forwarded and \
                 X-Forwarded-For are ignored)"
                    .to_string(),
            );
        } else {
            lines.push(format!(
                "client addresses come from Forwarded/X-Forwarded-For when the peer is one of \
                 http.trusted_proxies ({})",
                self.http.trusted_proxies.join(", ")
            ));
        }
        lines
    }

    /// Several nodes: Redis for the directory and events, PostgreSQL for shared state.
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| ConfigError::Value {
            key: key.into(),
            origin: "configuration".into(),
            message: message.into(),
        };
        let Some(redis) = &self.redis_url else {
            return Ok(());
        };
        if !redis.starts_with("redis://") {
            return Err(bad(
                "redis_url",
                "must be a redis://[user:password@]host:port[/db] URL",
            ));
        }
        if !self.database_url().starts_with("postgres") {
            return Err(bad(
                "database_url",
                "several nodes share one PostgreSQL database: with redis_url set, \
                 database_url must be postgres://…",
            ));
        }
        let token_ok = |s: &str, extra: &[char]| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c) || extra.contains(&c))
        };
        if let Some(id) = &self.cluster.node_id
            && !token_ok(id, &[])
        {
            return Err(bad(
                "cluster.node_id",
                "must be 1 to 64 letters, digits, `-`, `_` or `.`",
            ));
        }
        if !token_ok(&self.cluster.prefix, &[':']) {
            return Err(bad(
                "cluster.prefix",
                "must be 1 to 64 letters, digits, `-`, `_`, `.` or `:`",
            ));
        }
        let c = &self.cluster;
        if c.heartbeat_interval < Duration::from_millis(100)
            || c.heartbeat_interval > Duration::from_secs(30)
        {
            return Err(bad(
                "cluster.heartbeat_interval",
                "must be between 100ms and 30s",
            ));
        }
        if c.node_ttl < c.heartbeat_interval * 2 || c.node_ttl > Duration::from_secs(300) {
            return Err(bad(
                "cluster.node_ttl",
                "must be at least twice cluster.heartbeat_interval and at most 5m",
            ));
        }
        if c.request_timeout < Duration::from_secs(1)
            || c.request_timeout > Duration::from_secs(120)
        {
            return Err(bad("cluster.request_timeout", "must be between 1s and 2m"));
        }
        Ok(())
    }

    /// True when `who` is listed in `auth.admins`.
    pub fn is_admin(&self, who: crate::ids::Identity) -> bool {
        self.auth
            .admins
            .iter()
            .any(|a| parse_identity(a) == Some(who))
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("relais.db").display()
            ),
        }
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.media_dir.join("uploads")
    }

    pub fn recordings_dir(&self) -> PathBuf {
        self.media_dir.join("recordings")
    }
}

/// `medecin:1` → the doctor number 1.
fn parse_identity(s: &str) -> Option<crate::ids::Identity> {
    let (role, id) = s.trim().split_once(':')?;
    let id: i64 = id.trim().parse().ok().filter(|i| *i > 0)?;
    Some(crate::ids::Identity::new(role.trim().parse().ok()?, id))
}

/// Names the layer a key most likely came from, for error messages.
fn origin_of(
    key: &str,
    file: Option<&Path>,
    flags: &[Override],
    env: &impl Fn(&str) -> Option<String>,
) -> String {
    if flags.iter().any(|f| f.key == key) {
        return "--set".into();
    }
    if let Some((var, _, _)) = ENV_VARS.iter().find(|(_, k, _)| *k == key)
        && env(var).is_some()
    {
        return (*var).into();
    }
    match file {
        Some(path) => path.display().to_string(),
        None => "defaults".into(),
    }
}

fn kind_of(key: &str) -> Option<Kind> {
    if let Some((_, _, kind)) = ENV_VARS.iter().find(|(_, k, _)| *k == key) {
        return Some(*kind);
    }
    // Keys without an environment variable: find the type from the defaults.
    let defaults = toml::Value::try_from(Config::default()).ok()?;
    let mut node = &defaults;
    for part in key.split('.') {
        node = node.get(part)?;
    }
    Some(match node {
        toml::Value::Boolean(_) => Kind::Bool,
        toml::Value::Integer(_) => Kind::Int,
        toml::Value::Array(_) => Kind::List,
        _ => Kind::Str,
    })
}

fn to_value(raw: &str, kind: Kind) -> Result<toml::Value, String> {
    match kind {
        Kind::Str => Ok(toml::Value::String(raw.to_string())),
        Kind::List => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        )),
        Kind::Bool => match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "0" | "false" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("`{raw}` is not a boolean (true/false)")),
        },
        Kind::Int => raw
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("`{raw}` is not an integer")),
    }
}

fn set_key(
    table: &mut toml::Table,
    key: &str,
    value: Result<toml::Value, String>,
    origin: &str,
) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError::Value {
        key: key.to_string(),
        origin: origin.to_string(),
        message,
    };
    let value = value.map_err(err)?;
    let mut parts: Vec<&str> = key.split('.').collect();
    let leaf = parts.pop().expect("split yields at least one part");
    let mut node = table;
    for part in parts {
        let entry = node
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry
            .as_table_mut()
            .ok_or_else(|| err(format!("`{part}` is not a section")))?;
    }
    node.insert(leaf.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(
        file: Option<&str>,
        env: &[(&str, &str)],
        flags: &[&str],
    ) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relais.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let flags: Vec<Override> = flags
            .iter()
            .map(|f| Override::parse_flag(f).unwrap())
            .collect();
        Config::load(
            file.map(|_| path.as_path()),
            |k| env.get(k).cloned(),
            &flags,
        )
    }

    #[test]
    fn defaults_are_valid() {
        let c = load(None, &[], &[]).unwrap();
        assert_eq!(c.http.addr.port(), 3000);
        assert_eq!(c.https.addr.port(), 3443);
        assert_eq!(c.media.udp_addr.port(), 3479);
        assert!(c.database_url().starts_with("sqlite://"));
    }

    #[test]
    fn layers_apply_in_order() {
        let file = "[http]\naddr = \"127.0.0.1:1111\"\n[https]\naddr = \"127.0.0.1:2222\"\n";
        let c = load(
            Some(file),
            &[("RELAIS_HTTP_ADDR", "127.0.0.1:3333")],
            &["https.addr=127.0.0.1:4444"],
        )
        .unwrap();
        assert_eq!(c.http.addr.port(), 3333, "env beats file");
        assert_eq!(c.https.addr.port(), 4444, "flag beats file");
        let c = load(
            None,
            &[("RELAIS_HTTP_ADDR", "127.0.0.1:3333")],
            &["http.addr=127.0.0.1:5555"],
        )
        .unwrap();
        assert_eq!(c.http.addr.port(), 5555, "flag beats env");
    }

    #[test]
    fn lists_and_durations_from_env() {
        let c = load(
            None,
            &[
                ("RELAIS_MEDIA_PUBLIC_IPS", "127.0.0.1, 10.0.0.2"),
                ("RELAIS_CODE_TTL", "30m"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.media.public_ips.len(), 2);
        assert_eq!(c.sessions.code_ttl, Duration::from_secs(1800));
    }

    #[test]
    fn recording_settings_from_env_and_flags() {
        let c = load(None, &[], &[]).unwrap();
        assert_eq!(c.recording.retention_days, 0);
        let c = load(
            None,
            &[
                ("RELAIS_RECORDING_RETENTION_DAYS", "30"),
                ("RELAIS_RECORDING_RETENTION_INTERVAL", "10m"),
            ],
            &["recording.queue_packets=1024"],
        )
        .unwrap();
        assert_eq!(c.recording.retention_days, 30);
        assert_eq!(c.recording.retention_interval, Duration::from_secs(600));
        assert_eq!(c.recording.queue_packets, 1024);
        let err = load(None, &[("RELAIS_RECORDING_RETENTION_DAYS", "-1")], &[]).unwrap_err();
        assert!(
            err.to_string().contains("recording.retention_days"),
            "{err}"
        );
        let err = load(None, &[], &["recording.queue_packets=3"]).unwrap_err();
        assert!(err.to_string().contains("recording.queue_packets"), "{err}");
    }

    #[test]
    fn messaging_retention_settings() {
        let c = load(None, &[], &[]).unwrap();
        assert_eq!(c.messaging.retention_days, None, "off by default");
        let c = load(
            None,
            &[
                ("RELAIS_MESSAGING_RETENTION_DAYS", "365"),
                ("RELAIS_MESSAGING_RETENTION_INTERVAL", "15m"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.messaging.retention_days, Some(365));
        assert_eq!(c.messaging.retention_interval, Duration::from_secs(900));
        let c = load(
            Some("[messaging]\nretention_days = 30\n"),
            &[],
            &["messaging.retention_interval=1h"],
        )
        .unwrap();
        assert_eq!(c.messaging.retention_days, Some(30));
        assert_eq!(c.messaging.retention_interval, Duration::from_secs(3600));
        for (env, flags, key) in [
            (
                vec![("RELAIS_MESSAGING_RETENTION_DAYS", "0")],
                vec![],
                "messaging.retention_days",
            ),
            (
                vec![("RELAIS_MESSAGING_RETENTION_DAYS", "-3")],
                vec![],
                "messaging.retention_days",
            ),
            (
                vec![],
                vec!["messaging.retention_interval=0s"],
                "messaging.retention_interval",
            ),
            (
                vec![],
                vec!["messaging.retention_interval=soon"],
                "messaging.retention_interval",
            ),
        ] {
            let err = load(None, &env, &flags).unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn the_https_port_is_shared_on_443_unless_told_otherwise() {
        let c = load(None, &[], &[]).unwrap();
        assert!(!c.https.multiplexed(), "3443 by default: not shared");
        let c = load(None, &[("RELAIS_HTTPS_ADDR", "0.0.0.0:443")], &[]).unwrap();
        assert!(c.https.multiplexed());
        let c = load(
            None,
            &[("RELAIS_HTTPS_ADDR", "0.0.0.0:443")],
            &["https.multiplex=false"],
        )
        .unwrap();
        assert!(!c.https.multiplexed());
        let c = load(None, &[("RELAIS_HTTPS_MULTIPLEX", "true")], &[]).unwrap();
        assert!(c.https.multiplexed());
        let c = load(
            None,
            &[("RELAIS_HTTPS_ADDR", "0.0.0.0:443")],
            &["https.enabled=false"],
        )
        .unwrap();
        assert!(!c.https.multiplexed(), "nothing to share without HTTPS");
        let c = load(
            None,
            &[("RELAIS_HTTPS_IDENTIFY_TIMEOUT", "3s")],
            &["https.unidentified_per_address=4"],
        )
        .unwrap();
        assert_eq!(c.https.identify_timeout, Duration::from_secs(3));
        assert_eq!(c.https.unidentified_per_address, 4);
        for bad in [
            "https.identify_timeout=0s",
            "https.unidentified_per_address=0",
        ] {
            let err = load(None, &[], &[bad]).unwrap_err();
            assert!(
                err.to_string().contains(bad.split('=').next().unwrap()),
                "{err}"
            );
        }
    }

    #[test]
    fn the_turns_host_is_a_bare_host() {
        for good in ["turn.clinic.example", "192.0.2.7", "2001:db8::7"] {
            let c = load(None, &[("RELAIS_TURN_TLS_HOST", good)], &[]).unwrap();
            assert_eq!(c.turn.tls_host.as_deref(), Some(good));
        }
        for bad in ["turns://x", "x:443", "a b", "x/y"] {
            let err = load(None, &[("RELAIS_TURN_TLS_HOST", bad)], &[]).unwrap_err();
            assert!(err.to_string().contains("turn.tls_host"), "{bad}: {err}");
        }
    }

    #[test]
    fn cluster_settings() {
        let c = load(None, &[], &[]).unwrap();
        assert!(c.redis_url.is_none(), "one process unless redis_url is set");
        let pg = ("DATABASE_URL", "postgres://postgres@127.0.0.1/relais");
        let c = load(
            Some("[cluster]\nprefix = \"clinic:a\"\nnode_ttl = \"9s\"\n"),
            &[
                ("REDIS_URL", "redis://127.0.0.1:6379"),
                pg,
                ("RELAIS_NODE_ID", "node-a"),
                ("RELAIS_HEARTBEAT_INTERVAL", "1s"),
                ("RELAIS_ADMINS", "medecin:1, patient:2"),
            ],
            &["cluster.request_timeout=3s"],
        )
        .unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
        assert_eq!(c.cluster.node_id.as_deref(), Some("node-a"));
        assert_eq!(c.cluster.prefix, "clinic:a");
        assert_eq!(c.cluster.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(c.cluster.node_ttl, Duration::from_secs(9));
        assert_eq!(c.cluster.request_timeout, Duration::from_secs(3));
        assert!(c.is_admin(crate::ids::Identity::new(crate::ids::Role::Patient, 2)));
        assert!(!c.is_admin(crate::ids::Identity::new(crate::ids::Role::Medecin, 2)));

        let redis = ("REDIS_URL", "redis://127.0.0.1:6379");
        let err = load(None, &[redis], &[]).unwrap_err();
        assert!(err.to_string().contains("database_url"), "{err}");
        let err = load(None, &[("REDIS_URL", "http://x"), pg], &[]).unwrap_err();
        assert!(err.to_string().contains("redis_url"), "{err}");
        let err = load(None, &[redis, pg, ("RELAIS_NODE_ID", "a b")], &[]).unwrap_err();
        assert!(err.to_string().contains("cluster.node_id"), "{err}");
        let err = load(None, &[redis, pg, ("RELAIS_NODE_TTL", "1s")], &[]).unwrap_err();
        assert!(err.to_string().contains("cluster.node_ttl"), "{err}");
        let err = load(None, &[redis, pg], &["cluster.nope=1"]).unwrap_err();
        assert!(err.to_string().contains("cluster.nope"), "{err}");
        let err = load(None, &[("RELAIS_ADMINS", "root")], &[]).unwrap_err();
        assert!(err.to_string().contains("auth.admins"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = load(Some("[http]\nadr = \"x\"\n"), &[], &[]).unwrap_err();
        assert!(err.to_string().contains("adr"), "{err}");
        let err = load(None, &[], &["http.nope=1"]).unwrap_err();
        assert!(err.to_string().contains("http.nope"), "{err}");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = load(None, &[("RELAIS_HTTP_ADDR", "not-an-addr")], &[]).unwrap_err();
        assert!(err.to_string().contains("addr"), "{err}");
        let err = load(None, &[("RELAIS_HTTPS_ENABLED", "maybe")], &[]).unwrap_err();
        assert!(err.to_string().contains("https.enabled"), "{err}");
        let err = load(None, &[("RELAIS_JWT_SECRET", "short")], &[]).unwrap_err();
        assert!(err.to_string().contains("auth.jwt_secret"), "{err}");
        let err = load(None, &[("RELAIS_CORS_ORIGINS", "*")], &[]).unwrap_err();
        assert!(err.to_string().contains("http.cors_origins"), "{err}");
        let err = load(None, &[("DATABASE_URL", "mysql://x")], &[]).unwrap_err();
        assert!(err.to_string().contains("database_url"), "{err}");
    }
}
