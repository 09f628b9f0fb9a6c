//! The embedded TURN server (RFC 8656): UDP and TCP on one port, TLS on others, for clinics
//! whose firewalls drop UDP or allow only outbound TCP 443.
//!
//! A pure core decides; an IO shell binds, sends and keeps time:
//! - [`core`]: the sans-IO [`Server`](core::Server): authentication,
//!   Allocate/Refresh/CreatePermission/ChannelBind, expiry; it takes inputs with the time they
//!   happen at and returns what to send and which relayed sockets to open or close;
//! - [`allocation`]: one allocation's permissions, channels and bandwidth budget, and the
//!   per-datagram relay decisions (pure);
//! - [`credentials`]: time-limited REST credentials (`expiry:user`, HMAC-SHA1) and nonces;
//! - [`quota`]: allocations per user, per client address, in all, and kept for consultations;
//! - [`policy`]: the peers the relay may reach (relais's own media addresses only, by default);
//! - [`local`]: the short-circuit to relais's own media plane (no socket, no runtime hop);
//! - [`wire`]: ChannelData framing and XOR addresses;
//! - [`shell`]: the IO around the core: relayed sockets and their tasks, the timer, the clock;
//! - [`listeners`]: the UDP socket and the TCP/TLS listeners feeding the shell.
//!
//! Clients get their credentials with the session they create or join
//! ([`TurnServer::ice_servers`]), in the browser's `RTCIceServer` shape.

pub mod allocation;
pub mod core;
pub mod credentials;
pub mod listeners;
pub mod local;
pub mod policy;
pub mod quota;
pub mod shell;
pub mod wire;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::task::JoinHandle;
use utoipa::ToSchema;

use self::allocation::{FiveTuple, Transport};
use self::core::{InSession, Limits, RelayIps, Server};
use self::credentials::Credentials;
use self::policy::PeerPolicy;
use self::shell::Shell;
use crate::metrics::Metrics;
use crate::sfu::media_plane::MediaPlane;

/// Everything the TURN server needs to start.
pub struct TurnSettings {
    pub udp_addr: SocketAddr,
    pub tcp_addr: SocketAddr,
    pub tls_addrs: Vec<SocketAddr>,
    /// The certificate for the TLS listeners (the HTTPS one); `None`: no TLS listener.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub secret: String,
    pub realm: String,
    /// Host put in `turn:` URLs and in relayed addresses.
    pub public_ip: IpAddr,
    /// Host put in `turns:` URLs (the name the certificate covers).
    pub tls_host: String,
    /// The shared HTTPS port, when it also serves TURN (its connections come through
    /// [`TurnServer::serve_connection`]): advertised as a `turns:` URL too.
    pub shared_tls_port: Option<u16>,
    pub credential_ttl: Duration,
    pub limits: Limits,
    pub policy: PeerPolicy,
    /// Whether a user is in a live consultation here (the capacity kept for them).
    pub in_session: InSession,
    /// relais's media plane: reached in-process, and its runtime runs the TURN server.
    pub media: Arc<MediaPlane>,
}

/// One `RTCIceServer` entry, as browsers take it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// The answer of `GET /api/messaging/webrtc/ice-servers`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IceServers {
    pub ice_servers: Vec<IceServer>,
    /// Seconds the credentials stay valid.
    pub ttl: u64,
    /// Unix time at which they expire.
    pub expires_at: u64,
}

pub struct TurnServer {
    shell: Arc<Shell>,
    credentials: Credentials,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    tls_addrs: Vec<SocketAddr>,
    public_ip: IpAddr,
    tls_host: String,
    shared_tls_port: Option<u16>,
    /// Connections the shared HTTPS port handed over that are still open.
    shared_open: AtomicUsize,
    credential_ttl: Duration,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A non-blocking TCP listener on `addr`, for tokio to take over.
fn std_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

impl TurnServer {
    /// Binds every listener and starts serving.
    pub fn start(settings: TurnSettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let relay_ips = match settings.public_ip {
            IpAddr::V4(v4) => RelayIps {
                v4: Some(v4),
                v6: None,
            },
            IpAddr::V6(v6) => RelayIps {
                v4: None,
                v6: Some(v6),
            },
        };
        let credentials = Credentials::new(settings.secret.clone());
        let server = Server::new(
            credentials.clone(),
            settings.realm.clone(),
            relay_ips,
            settings.policy.clone(),
            settings.limits,
            settings.in_session.clone(),
            metrics.clone(),
        )?;
        let shell = Shell::new(server, metrics, settings.media);
        // Every socket of the TURN server belongs to the media runtime, which runs its tasks:
        // a relayed packet is read, relayed and handed to the media plane on one thread.
        let runtime = shell.runtime().clone();
        let udp = std::net::UdpSocket::bind(settings.udp_addr)
            .with_context(|| format!("turn.udp_addr: cannot bind {}", settings.udp_addr))?;
        udp.set_nonblocking(true)?;
        crate::udp_buffers::enlarge(&udp, "turn");
        let udp_addr = udp.local_addr()?;
        let tcp = std_listener(settings.tcp_addr)
            .with_context(|| format!("turn.tcp_addr: cannot listen on {}", settings.tcp_addr))?;
        let tcp_addr = tcp.local_addr()?;
        let mut tls_listeners = Vec::new();
        if settings.tls.is_some() {
            for addr in &settings.tls_addrs {
                let l = std_listener(*addr)
                    .with_context(|| format!("turn.tls_addr: cannot listen on {addr}"))?;
                tls_listeners.push(l);
            }
        }
        let tls_addrs = tls_listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<Vec<_>, _>>()?;
        let (udp, tcp, tls_listeners) = {
            let _media = runtime.enter();
            (
                tokio::net::UdpSocket::from_std(udp)?,
                tokio::net::TcpListener::from_std(tcp)?,
                tls_listeners
                    .into_iter()
                    .map(tokio::net::TcpListener::from_std)
                    .collect::<Result<Vec<_>, _>>()?,
            )
        };

        let mut tasks = vec![
            runtime.spawn(shell.clone().run_timer()),
            runtime.spawn(listeners::run_udp(shell.clone(), Arc::new(udp))),
            runtime.spawn(listeners::run_tcp(shell.clone(), tcp, None)),
        ];
        if let Some(tls) = settings.tls {
            // TURN clients may offer ALPN "stun.turn"; the HTTPS list would refuse them.
            let mut tls = (*tls).clone();
            tls.alpn_protocols.clear();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
            for l in tls_listeners {
                tasks.push(runtime.spawn(listeners::run_tcp(
                    shell.clone(),
                    l,
                    Some(acceptor.clone()),
                )));
            }
        }
        Ok(Self {
            shell,
            credentials,
            udp_addr,
            tcp_addr,
            tls_addrs,
            public_ip: settings.public_ip,
            tls_host: settings.tls_host,
            shared_tls_port: settings.shared_tls_port,
            shared_open: AtomicUsize::new(0),
            credential_ttl: settings.credential_ttl,
            tasks: Mutex::new(tasks),
        })
    }

    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    pub fn allocation_count(&self) -> usize {
        self.shell.allocation_count()
    }

    /// Credentials for `user` valid for `turn.credential_ttl`, with every URL they work on.
    pub fn ice_servers(&self, user: &str) -> IceServers {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ttl = self.credential_ttl.as_secs();
        let (username, credential) = self.credentials.issue(user, now + ttl);
        let host = url_host(self.public_ip);
        let mut urls = vec![
            format!("turn:{host}:{}?transport=udp", self.udp_addr.port()),
            format!("turn:{host}:{}?transport=tcp", self.tcp_addr.port()),
        ];
        let tls_ports = self.tls_addrs.iter().map(|a| a.port());
        for port in self.shared_tls_port.into_iter().chain(tls_ports) {
            let url = format!("turns:{}:{port}?transport=tcp", self.tls_host);
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        IceServers {
            ice_servers: vec![IceServer {
                urls,
                username,
                credential,
            }],
            ttl,
            expires_at: now + ttl,
        }
    }

    /// Serves a connection the shared HTTPS port accepted and identified as TURN (over TLS,
    /// or plain TCP) until it closes, in the caller's task (the shared port runs it on the
    /// media runtime, like this server's own listeners). False, at once, at the cap of
    /// [`listeners::MAX_CONNECTIONS`] (the caller then drops the connection).
    pub async fn serve_connection<S>(
        &self,
        stream: S,
        tls: bool,
        client: SocketAddr,
        server: SocketAddr,
    ) -> bool
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        if self.shared_open.fetch_add(1, Ordering::Relaxed) >= listeners::MAX_CONNECTIONS {
            self.shared_open.fetch_sub(1, Ordering::Relaxed);
            self.shell.metrics.turn.drop("too_many_connections");
            return false;
        }
        /// Gives the place back however the connection ends (its task may be dropped).
        struct Place<'a>(&'a AtomicUsize);
        impl Drop for Place<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _place = Place(&self.shared_open);
        let tuple = FiveTuple {
            transport: if tls { Transport::Tls } else { Transport::Tcp },
            client,
            server,
        };
        listeners::serve_stream(&self.shell, stream, tuple).await;
        true
    }

    /// Stops listening and releases every allocation.
    pub fn shutdown(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        self.shell.release_all();
    }
}
