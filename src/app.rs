//! Builds the whole server from a [`Config`], binds every socket first (port 0 allowed), and
//! runs until shutdown.
//!
//! Shutdown order: stop accepting, disconnect Socket.IO clients, let in-flight requests finish
//! (up to `http.shutdown_grace`), close the database.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use axum::http::HeaderValue;
use socketioxide::SocketIo;
use tokio::task::JoinHandle;

use crate::audit::Audit;
use crate::auth::TokenVerifier;
use crate::clock::{SharedClock, SystemClock};
use crate::cluster::{Cluster, LocalNode};
use crate::config::Config;
use crate::http::conn_limit::{ConnLimits, Limited};
use crate::limits::{FailureWindows, LogBudget, Rate};
use crate::messaging::retention::MessageRetention;
use crate::messaging::{Messaging, Uploads};
use crate::metrics::Metrics;
use crate::net::TrustedProxies;
use crate::realtime;
use crate::recording::Recordings;
use crate::sessions::{CodeLimits, Sessions};
use crate::sfu::{MediaSettings, Sfu};
use crate::sio::io::ClusterAdapter;
use crate::sio::{Io, SocketLimits};
use crate::state::{AppInner, AppState};
use crate::store::Store;
use crate::tls::{self, TlsMaterial};
use crate::turn::core::Limits;
use crate::turn::policy::PeerPolicy;
use crate::turn::quota::Quotas;
use crate::turn::{TurnServer, TurnSettings};

/// Log lines of one kind that clients can cause (refused tokens, 4xx, events over a limit),
/// per minute; past it they are counted and the count is told in the next line.
const LOG_LINES_PER_MINUTE: u32 = 20;

/// A built server: sockets bound, database migrated, nothing served yet.
pub struct App {
    pub http_addr: SocketAddr,
    pub https_addr: Option<SocketAddr>,
    /// The certificate the HTTPS listener presents.
    pub tls_cert_path: Option<std::path::PathBuf>,
    pub public_base_url: url::Url,
    pub state: AppState,
    http_listener: std::net::TcpListener,
    https: Option<(std::net::TcpListener, TlsMaterial)>,
    /// The certificate of HTTPS and TURN over TLS, renewed while running when generated.
    tls: Option<TlsMaterial>,
    router: axum::Router,
    /// TCP connections on the HTTP and HTTPS listeners in all.
    max_connections: u32,
}

/// The Socket.IO layer: socketioxide's types differ with the adapter.
enum IoLayer {
    Local(socketioxide::layer::SocketIoLayer),
    Cluster(socketioxide::layer::SocketIoLayer<ClusterAdapter>),
}

impl IoLayer {
    fn apply(self, router: axum::Router) -> axum::Router {
        match self {
            IoLayer::Local(l) => router.layer(l),
            IoLayer::Cluster(l) => router.layer(l),
        }
    }
}

/// A server running in the background (tests, embedding).
pub struct RunningApp {
    pub http_addr: SocketAddr,
    pub https_addr: Option<SocketAddr>,
    pub tls_cert_path: Option<std::path::PathBuf>,
    pub public_base_url: url::Url,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningApp {
    /// Graceful shutdown; returns once everything stopped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.context("server task panicked")?
    }
}

fn bind_tcp(addr: SocketAddr, key: &str) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("{key}: cannot listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// `http.max_connections`, or three quarters of the open-file limit (raised first) when 0:
/// the rest is kept for media, TURN, the database and files.
fn max_connections(config: &Config) -> u32 {
    let limit = match crate::net::fd_limit::raise() {
        Ok(l) => {
            if l.now > l.before {
                tracing::info!(before = l.before, now = l.now, "open-file limit raised");
            }
            l.now
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            1024
        }
    };
    if config.http.max_connections > 0 {
        return config.http.max_connections;
    }
    u32::try_from(limit / 4 * 3).unwrap_or(u32::MAX).max(64)
}

fn default_base_url(config: &Config, http: SocketAddr, https: Option<SocketAddr>) -> url::Url {
    let ip = config
        .media
        .public_ips
        .first()
        .copied()
        .or_else(|| crate::net::interface_ips().first().copied())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let host = match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let text = match https {
        Some(a) => format!("https://{host}:{}", a.port()),
        None => format!("http://{host}:{}", http.port()),
    };
    url::Url::parse(&text).expect("a literal URL parses")
}

fn origin_of(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

fn default_cors_origins(
    base: &url::Url,
    http: SocketAddr,
    https: Option<SocketAddr>,
) -> Vec<String> {
    let mut out = vec![origin_of(base)];
    for host in ["localhost", "127.0.0.1"] {
        out.push(format!("http://{host}:{}", http.port()));
        if let Some(a) = https {
            out.push(format!("https://{host}:{}", a.port()));
        }
    }
    out
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(config: Config, clock: SharedClock) -> anyhow::Result<Self> {
        config.validate()?;
        // Patient data: nothing this process creates is readable by other local users.
        crate::private_files::restrict();
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("data_dir: cannot create {}", config.data_dir.display()))?;

        let verifier = TokenVerifier::from_config(&config.auth, &config.data_dir)?;

        let store = Store::connect(&config.database_url())
            .await
            .context("database_url: cannot connect")?;
        store.migrate().await.context("database migration")?;
        // Guests' tokens are signed by relais itself, with a key every node shares.
        let guest_key = store
            .server_secret("guest_token_key", crate::sessions::codes::new_key)
            .await
            .context("guest token key")?;
        let verifier = verifier.with_guest_key(
            &hex::decode(guest_key.trim()).context("server secret guest_token_key is not hex")?,
        );
        tracing::info!(backend = store.backend().as_str(), "database ready");

        let http_listener = bind_tcp(config.http.addr, "http.addr")?;
        let http_addr = http_listener.local_addr()?;
        let https_listener = if config.https.enabled {
            Some(bind_tcp(config.https.addr, "https.addr")?)
        } else {
            None
        };
        let https_addr = match &https_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let public_base_url = config
            .public_base_url
            .clone()
            .unwrap_or_else(|| default_base_url(&config, http_addr, https_addr));
        let tls_material = if config.https.enabled || config.turn.enabled {
            Some(tls::load(&config, &public_base_url)?)
        } else {
            None
        };
        let https = match (https_listener, &tls_material) {
            (Some(listener), Some(material)) => Some((listener, material.clone())),
            _ => None,
        };
        let tls_cert_path = https.as_ref().map(|(_, m)| m.cert_path.clone());
        let cors_origins: Vec<HeaderValue> = if config.http.cors_origins.is_empty() {
            default_cors_origins(&public_base_url, http_addr, https_addr)
        } else {
            config.http.cors_origins.clone()
        }
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();

        // Several nodes: Redis first (the Socket.IO adapter needs it).
        let cluster = match &config.redis_url {
            Some(_) => Some(Cluster::connect(&config).await?),
            None => None,
        };
        let builder = SocketIo::builder().max_payload(config.http.json_body_limit as u64);
        let (io_layer, io) = match &cluster {
            None => {
                let (layer, io) = builder.build_layer();
                (IoLayer::Local(layer), Io::Local(io))
            }
            Some(c) => {
                let adapter = socketioxide_redis::RedisAdapterCtr::new_with_driver(
                    c.driver().clone(),
                    socketioxide_redis::RedisAdapterConfig::new().with_prefix(c.adapter_prefix()),
                );
                let (layer, io) = builder
                    .with_adapter::<ClusterAdapter>(adapter)
                    .build_layer();
                (
                    IoLayer::Cluster(layer),
                    Io::Cluster {
                        io,
                        bus: c.bus().clone(),
                    },
                )
            }
        };

        let metrics = Arc::new(Metrics::new());
        let uploads = Uploads::new(config.uploads_dir(), config.messaging.attachment_max_bytes)
            .with_context(|| {
                format!(
                    "media_dir: cannot create {}",
                    config.uploads_dir().display()
                )
            })?;
        let audit = Audit::new(store.clone(), clock.clone(), &metrics);
        let message_retention = MessageRetention::new(
            store.clone(),
            clock.clone(),
            uploads.clone(),
            audit.clone(),
            metrics.clone(),
            config.messaging.retention_days,
            config.messaging.retention_interval,
        );
        let messaging = Messaging::new(
            store.clone(),
            clock.clone(),
            Arc::new(io.clone()),
            metrics.clone(),
            uploads,
            config.messaging.max_message_chars,
            Rate::new(
                f64::from(config.limits.messages_per_minute) / 60.0,
                f64::from(config.limits.messages_burst),
            ),
        );
        let sessions = Sessions::new(
            store.clone(),
            clock.clone(),
            messaging.clone(),
            audit.clone(),
            config.sessions.code_ttl,
            CodeLimits {
                per_person: config.limits.code_failures_per_person,
                per_address: config.limits.code_failures_per_address,
                global: config.limits.code_failures_per_minute,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("sessions: {e}"))?;
        let recordings = Recordings::new(
            store.clone(),
            clock.clone(),
            sessions.clone(),
            config.recordings_dir(),
            metrics.clone(),
            config.recording.clone(),
        );
        // Rows a killed process left open are closed from their files before anything records.
        // Several nodes: other nodes may be recording right now; the cluster repairs only
        // what no live node writes, once it knows who is alive (Cluster::start).
        if cluster.is_none() {
            recordings
                .repair()
                .await
                .context("recordings: cannot repair those left open")?;
        }
        let sfu = Sfu::start(
            MediaSettings {
                udp_addr: config.media.udp_addr,
                tcp_addr: config.media.ice_tcp.then_some(config.media.tcp_addr),
                shared_tcp_addr: https_addr.filter(|_| config.https.multiplexed()),
                public_ips: config.media.public_ips.clone(),
                reconnect_grace: config.sessions.reconnect_grace,
                workers: config.media.workers,
                max_tracks: config.media.max_tracks,
            },
            metrics.clone(),
            Arc::new(io.clone()),
            sessions.clone(),
            recordings.clone(),
        )?;
        let turn = if config.turn.enabled {
            Some(Arc::new(
                start_turn(
                    &config,
                    &store,
                    &sfu,
                    &public_base_url,
                    https_addr.filter(|_| config.https.multiplexed()),
                    tls_material.as_ref(),
                    metrics.clone(),
                )
                .await?,
            ))
        } else {
            None
        };
        let config = Arc::new(config);
        let state = AppState::new(AppInner {
            auth_limiter: FailureWindows::per_minute(
                config.http.auth_failures_per_minute,
                clock.clone(),
            ),
            trusted_proxies: TrustedProxies::parse(&config.http.trusted_proxies)
                .map_err(|e| anyhow::anyhow!("http.trusted_proxies: {e}"))?,
            socket_limits: SocketLimits::new(&config.limits, clock.clone()),
            log_budget: LogBudget::new(LOG_LINES_PER_MINUTE, 60_000, clock.clone()),
            config: config.clone(),
            store,
            verifier,
            clock,
            metrics,
            messaging,
            message_retention,
            audit,
            sessions,
            sfu: sfu.clone(),
            recordings,
            turn,
            io: io.clone(),
            public_base_url: public_base_url.clone(),
            router: crate::cluster::Router::new(sfu.clone(), cluster.clone()),
            cluster,
        });
        match &io {
            Io::Local(sio) => realtime::register(sio, state.clone()),
            Io::Cluster { io: sio, .. } => {
                // With the Redis adapter the namespace subscribes to its channels first.
                tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    realtime::register(sio, state.clone()),
                )
                .await
                .context("redis_url: the Socket.IO adapter did not start in 10 s")?
                .map_err(|e| anyhow::anyhow!("redis_url: the Socket.IO adapter: {e}"))?;
            }
        }

        let router = crate::http::guard::hardening(
            io_layer
                .apply(crate::http::router(state.clone()))
                .layer(crate::http::cors(cors_origins)),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::http::guard::client_addr,
        ));
        let max_connections = max_connections(&state.config);
        for dir in [
            &state.config.data_dir,
            &state.config.media_dir,
            &state.config.https.certs_dir,
        ] {
            match crate::private_files::close_dir(dir) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    dir = %dir.display(),
                    entries = n,
                    "closed to other users (0700 directories, 0600 files)"
                ),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot close to other users")
                }
            }
        }

        Ok(Self {
            http_addr,
            https_addr,
            tls_cert_path,
            public_base_url,
            state,
            http_listener,
            https,
            tls: tls_material,
            max_connections,
            router,
        })
    }

    /// What this node says about itself in the cluster directory.
    fn local_node(&self) -> LocalNode {
        let sfu = &self.state.sfu;
        LocalNode {
            public_base_url: self.public_base_url.clone(),
            http_addr: self.http_addr,
            https_addr: self.https_addr,
            media: crate::cluster::directory::MediaAddrs {
                udp: sfu
                    .host_candidates()
                    .iter()
                    .map(|a| a.to_string())
                    .collect(),
                tcp: sfu.media_tcp_addr().iter().map(|a| a.to_string()).collect(),
                turn_udp: self.state.turn.as_ref().map(|t| t.udp_addr().to_string()),
            },
        }
    }

    /// Serves until `shutdown` resolves, then stops gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        if let Some(cluster) = &self.state.cluster {
            cluster
                .start(self.state.cluster_deps(), self.local_node())
                .await?;
        }
        let handle = axum_server::Handle::new();
        let http_config = &self.state.config.http;
        let limits = Arc::new(ConnLimits::new(
            http_config.connections_per_address,
            self.max_connections,
            http_config.header_timeout,
            self.state.trusted_proxies.clone(),
            self.state.metrics.clone(),
            self.state.clock.clone(),
        ));
        let configure = |builder: &mut hyper_util::server::conn::auto::Builder<_>| {
            // A connection that sends no request head within the timeout, or stays idle that
            // long between requests, is closed; heads larger than the cap get 431.
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(http_config.header_timeout)
                .max_buf_size(http_config.max_header_bytes);
            builder
                .http2()
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(http_config.header_timeout)
                .keep_alive_timeout(http_config.header_timeout)
                .max_header_list_size(http_config.max_header_bytes as u32);
        };
        let router = self.router.clone();
        let mut http_server = axum_server::from_tcp(self.http_listener)
            .map(|a| Limited::new(a, limits.clone()))
            .handle(handle.clone());
        configure(http_server.http_builder());
        let http = tokio::spawn(
            http_server.serve(
                router
                    .clone()
                    .into_make_service_with_connect_info::<SocketAddr>(),
            ),
        );
        let https = self.https.map(|(listener, material)| {
            let service = crate::http::guard::strict_transport(router)
                .into_make_service_with_connect_info::<SocketAddr>();
            let config = &self.state.config.https;
            if config.multiplexed() {
                let shared = crate::mux::Shared::new(
                    &material.server_config,
                    crate::mux::Handlers {
                        sfu: self.state.sfu.clone(),
                        turn: self.state.turn.clone(),
                    },
                    config.identify_timeout,
                    config.unidentified_per_address,
                    self.state.trusted_proxies.clone(),
                    self.state.metrics.clone(),
                );
                let mut server = axum_server::from_tcp(listener)
                    .acceptor(Limited::new(shared, limits.clone()))
                    .handle(handle.clone());
                configure(server.http_builder());
                return tokio::spawn(server.serve(service));
            }
            let tls = axum_server::tls_rustls::RustlsConfig::from_config(material.server_config);
            let mut server = axum_server::from_tcp_rustls(listener, tls)
                .map(|a| Limited::new(a, limits.clone()))
                .handle(handle.clone());
            configure(server.http_builder());
            tokio::spawn(server.serve(service))
        });
        tracing::info!(
            http = %self.http_addr,
            https = ?self.https_addr,
            https_shared_with_turn_and_ice_tcp = self.https_addr.is_some()
                && self.state.config.https.multiplexed(),
            media_udp = %self.state.sfu.media_addr(),
            media_tcp = ?self.state.sfu.media_tcp_addr(),
            turn_udp = ?self.state.turn.as_ref().map(|t| t.udp_addr()),
            turn_tcp = ?self.state.turn.as_ref().map(|t| t.tcp_addr()),
            turn_tls = ?self.state.turn.as_ref().map(|t| t.tls_addrs().to_vec()),
            public_base_url = %self.public_base_url,
            "relais listening"
        );
        let config = &self.state.config;
        if let Some(https) = self.https_addr
            && https.port() == 443
            && config.https.multiplexed()
            && config.media.ice_tcp
        {
            let private: Vec<String> = self
                .state
                .sfu
                .host_candidates()
                .iter()
                .filter(|a| crate::net::private_for_browsers(a.ip()))
                .map(|a| a.ip().to_string())
                .collect();
            if !private.is_empty() {
                tracing::warn!(
                    addresses = %private.join(", "),
                    "ICE-TCP on the shared port 443 is advertised at private addresses, which \
                     Chromium-based browsers ignore on port 443: they will use TURN over TLS on \
                     443 instead; set media.public_ips to the address clinics reach"
                );
            }
        }
        for line in self.state.config.exposure(self.http_addr, self.https_addr) {
            if self.state.config.development_mode() {
                tracing::warn!("{line}");
            } else {
                tracing::info!("{line}");
            }
        }

        let retention = self.state.recordings.spawn_retention();
        let message_retention = self.state.message_retention.spawn();
        let renewal = self.tls.as_ref().and_then(TlsMaterial::spawn_renewal);
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        if let Some(cluster) = &self.state.cluster {
            // No new sessions placed here from now on; ours move to the other nodes, and
            // their rooms here close without telling anyone the session ended.
            cluster.directory().deregister().await;
            for session in crate::cluster::failover::drain(cluster.deps(), cluster).await {
                self.state
                    .sfu
                    .close_room(session, crate::sfu::room::MOVED)
                    .await;
            }
        }
        let grace = self.state.config.http.shutdown_grace;
        handle.graceful_shutdown(Some(grace));
        self.state.sfu.shutdown().await;
        for task in [retention, message_retention, renewal]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        // Every recording's file finished and its row closed before the database goes.
        if !self.state.recordings.wait_idle(grace).await {
            tracing::warn!("recordings still closing at shutdown; the next start repairs them");
        }
        if let Some(turn) = &self.state.turn {
            turn.shutdown();
        }
        self.state.io.close().await;
        if let Some(cluster) = &self.state.cluster {
            cluster.stop().await;
        }
        http.await.context("http server task")??;
        if let Some(https) = https {
            https.await.context("https server task")??;
        }
        self.state.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }

    /// Runs in a background task until [`RunningApp::stop`].
    pub fn spawn(self) -> RunningApp {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let http_addr = self.http_addr;
        let https_addr = self.https_addr;
        let tls_cert_path = self.tls_cert_path.clone();
        let public_base_url = self.public_base_url.clone();
        let state = self.state.clone();
        let task = tokio::spawn(self.run(async move {
            let _ = rx.await;
        }));
        RunningApp {
            http_addr,
            https_addr,
            tls_cert_path,
            public_base_url,
            state,
            stop: Some(tx),
            task,
        }
    }
}

/// Starts the embedded TURN server next to the media plane it relays to.
async fn start_turn(
    config: &Config,
    store: &Store,
    sfu: &Sfu,
    public_base_url: &url::Url,
    shared: Option<SocketAddr>,
    tls: Option<&TlsMaterial>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<TurnServer> {
    let secret = match &config.turn.secret {
        Some(s) => s.clone(),
        None => store
            .server_secret("turn_secret", || hex::encode(rand::random::<[u8; 32]>()))
            .await
            .context("turn.secret: cannot read or create the shared secret")?,
    };
    let public_ip = config
        .turn
        .public_ip
        .or_else(|| sfu.host_candidates().first().map(|a| a.ip()))
        .context("turn.public_ip: no address to advertise")?;
    let mut tls_addrs = vec![config.turn.tls_addr];
    tls_addrs.extend(config.turn.extra_tls_addrs.iter().copied());
    TurnServer::start(
        TurnSettings {
            udp_addr: config.turn.udp_addr,
            tcp_addr: config.turn.tcp_addr,
            tls_addrs,
            tls: tls.map(|m| m.server_config.clone()),
            secret,
            realm: config.turn.realm.clone(),
            public_ip,
            tls_host: match &config.turn.tls_host {
                Some(host) => match host.parse::<IpAddr>() {
                    Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
                    _ => host.clone(),
                },
                None => public_base_url
                    .host_str()
                    .unwrap_or("localhost")
                    .to_string(),
            },
            shared_tls_port: shared.filter(|_| tls.is_some()).map(|a| a.port()),
            credential_ttl: config.turn.credential_ttl,
            limits: Limits {
                quotas: Quotas {
                    max_allocations: config.turn.max_allocations,
                    max_allocations_per_user: config.turn.max_allocations_per_user,
                    max_allocations_per_address: config.turn.max_allocations_per_address,
                    reserved_for_sessions: config.turn.reserved_for_sessions,
                },
                bytes_per_sec: u64::from(config.turn.max_kbps_per_allocation) * 1000 / 8,
            },
            in_session: {
                let sfu = sfu.clone();
                Arc::new(move |user: &str| {
                    crate::ids::Identity::parse_key(user).is_some_and(|who| sfu.in_a_session(who))
                })
            },
            policy: PeerPolicy::new(
                sfu.host_candidates().to_vec(),
                sfu.media_addr(),
                config.turn.extra_peer_ips.clone(),
            ),
            media: sfu.media_plane().clone(),
        },
        metrics,
    )
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
