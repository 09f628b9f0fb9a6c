//! One TCP port for everything (`https.multiplex`): the HTTPS listener also serves TURN (over
//! TLS, or plain TCP) and ICE-TCP, for clinics whose firewalls let out only TCP 443 to one
//! address.
//!
//! - [`detect`]: what a connection speaks, from its first bytes and its TLS ALPN (pure);
//! - [`Shared`]: the acceptor under the HTTPS server: it identifies each connection, returns
//!   HTTPS ones to the HTTP server (hyper: REST, Socket.IO, the web client) and hands the
//!   others to the TURN server or the media plane;
//! - [`rewind::Rewind`]: gives back the decrypted bytes identification read.
//!
//! Invariants:
//! - plaintext is identified by peeking: nothing is read from a connection handed to the
//!   TURN server or the media plane, which see it from its first byte;
//! - a connection must say what it speaks within `https.identify_timeout` (TLS handshake
//!   included), or it is closed; so is one that speaks nothing served here (plain HTTP goes to
//!   `http.addr`, not here);
//! - at most `https.unidentified_per_address` connections of one address (a /64 in IPv6) wait
//!   to be identified at once; more are closed at once, so a slowloris on the shared port
//!   costs its sender, not the others (trusted proxies are not counted); the HTTP listener's
//!   own caps (`http.connections_per_address`, `http.max_connections`) apply before this;
//! - identified HTTPS connections keep the HTTP server's timeouts and graceful shutdown; TURN
//!   and ICE-TCP connections, their servers' limits and timeouts.

pub mod detect;
pub mod rewind;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum_server::accept::Accept;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use self::detect::{First, Inner};
use self::rewind::Rewind;
use crate::limits::{AddrKey, Counted, Counts};
use crate::metrics::{KindLabels, Metrics};
use crate::net::TrustedProxies;
use crate::sfu::Sfu;
use crate::turn::TurnServer;

/// How long to wait before peeking again at a connection that sent too few bytes to tell.
const PEEK_AGAIN: Duration = Duration::from_millis(10);

/// What the shared port hands connections to besides the HTTP server.
pub struct Handlers {
    /// ICE-TCP; it is refused when the SFU has ICE-TCP off.
    pub sfu: Sfu,
    /// TURN; `None`: TURN is off and TURN clients are closed.
    pub turn: Option<Arc<TurnServer>>,
}

/// The acceptor of the shared port (see the module's invariants).
#[derive(Clone)]
pub struct Shared {
    inner: Arc<SharedInner>,
}

struct SharedInner {
    tls: TlsAcceptor,
    handlers: Handlers,
    pending: Counts<AddrKey>,
    identify_timeout: Duration,
    trusted: TrustedProxies,
    metrics: Arc<Metrics>,
}

/// What identification found.
enum Found {
    Https(Rewind<TlsStream<TcpStream>>),
    TurnTls(Rewind<TlsStream<TcpStream>>),
    TurnTcp(TcpStream),
    IceTcp(TcpStream),
}

/// Why a connection was not served.
struct Closed(&'static str);

impl From<io::Error> for Closed {
    fn from(_: io::Error) -> Self {
        Closed("io_error")
    }
}

impl Shared {
    /// `tls` is the HTTPS server's configuration; the shared port offers TURN's ALPN
    /// protocol besides HTTP's, with the same certificates (and their renewals).
    pub fn new(
        tls: &rustls::ServerConfig,
        handlers: Handlers,
        identify_timeout: Duration,
        unidentified_per_address: u32,
        trusted: TrustedProxies,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut tls = tls.clone();
        tls.alpn_protocols = detect::alpn_protocols();
        Self {
            inner: Arc::new(SharedInner {
                tls: TlsAcceptor::from(Arc::new(tls)),
                handlers,
                pending: Counts::new(unidentified_per_address, u32::MAX),
                identify_timeout,
                trusted,
                metrics,
            }),
        }
    }

    /// Connections waiting to be identified, from `peer`'s address.
    pub fn pending_from(&self, peer: std::net::IpAddr) -> u32 {
        self.inner.pending.count(&AddrKey::of(peer))
    }
}

impl SharedInner {
    fn count(&self, kind: &'static str) {
        self.metrics
            .shared_port
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    fn place(&self, peer: std::net::IpAddr) -> Option<Counted<AddrKey>> {
        let key = AddrKey::of(peer);
        let r = if self.trusted.trusts(peer) {
            self.pending.try_acquire_within(key, u32::MAX)
        } else {
            self.pending.try_acquire(key)
        };
        r.ok()
    }

    async fn identify(&self, stream: TcpStream) -> Result<Found, Closed> {
        match peek_first(&stream).await? {
            Some(First::Tls) => {}
            Some(First::IceTcp) => return Ok(Found::IceTcp(stream)),
            Some(First::Turn) => return Ok(Found::TurnTcp(stream)),
            Some(First::NeedMore | First::Unknown) => return Err(Closed("unrecognised")),
            None => return Err(Closed("closed_early")),
        }
        let mut tls = self
            .tls
            .accept(stream)
            .await
            .map_err(|_| Closed("tls_failed"))?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let mut first = BytesMut::new();
        loop {
            match detect::classify_tls(alpn.as_deref(), &first) {
                Inner::Http => return Ok(Found::Https(Rewind::new(first.freeze(), tls))),
                Inner::Turn => return Ok(Found::TurnTls(Rewind::new(first.freeze(), tls))),
                Inner::Unknown => return Err(Closed("unrecognised")),
                Inner::NeedMore => {
                    if tls.read_buf(&mut first).await? == 0 {
                        return Err(Closed("closed_early"));
                    }
                }
            }
        }
    }

    /// Hands a connection that is not HTTPS to its server; what it was, or `refused` when it
    /// was closed instead (its server is off or full).
    fn hand_over(&self, found: Found, peer: SocketAddr, local: SocketAddr) -> &'static str {
        let turn = self.handlers.turn.as_deref();
        let (kind, taken) = match found {
            Found::Https(_) => unreachable!("HTTPS is served by the HTTP server"),
            Found::TurnTls(s) => (
                "turn_tls",
                turn.is_some_and(|t| t.serve_connection(s, true, peer, local)),
            ),
            Found::TurnTcp(s) => (
                "turn_tcp",
                turn.is_some_and(|t| t.serve_connection(s, false, peer, local)),
            ),
            Found::IceTcp(s) => (
                "ice_tcp",
                s.into_std()
                    .is_ok_and(|s| self.handlers.sfu.adopt_ice_tcp(s, peer)),
            ),
        };
        if taken { kind } else { "refused" }
    }
}

/// Peeks until the first bytes tell what the connection speaks (bytes are left unread);
/// `None` when the client closed before that.
async fn peek_first(stream: &TcpStream) -> io::Result<Option<First>> {
    let mut buf = [0u8; detect::DECISIVE];
    let mut seen = 0;
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        match detect::classify(&buf[..n]) {
            First::NeedMore => {
                // Peeking returns at once while bytes wait unread: wait for more instead.
                if n == seen {
                    tokio::time::sleep(PEEK_AGAIN).await;
                }
                seen = n;
            }
            found => return Ok(Some(found)),
        }
    }
}

impl<S: Send + 'static> Accept<TcpStream, S> for Shared {
    type Stream = Rewind<TlsStream<TcpStream>>;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, S)>> + Send + 'static>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let peer = stream.peer_addr()?;
            let local = stream.local_addr()?;
            let Some(place) = inner.place(peer.ip()) else {
                inner.count("pending_cap");
                inner.metrics.count_limited("shared_port_unidentified");
                return Err(io::Error::other("unidentified connections cap"));
            };
            inner.metrics.shared_port_pending.inc();
            let found = tokio::time::timeout(inner.identify_timeout, inner.identify(stream)).await;
            inner.metrics.shared_port_pending.dec();
            drop(place);
            let found = match found {
                Ok(Ok(found)) => found,
                Ok(Err(Closed(why))) => {
                    inner.count(why);
                    return Err(io::Error::other(why));
                }
                Err(_) => {
                    inner.count("timeout");
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "not identified"));
                }
            };
            if let Found::Https(stream) = found {
                inner.count("https");
                return Ok((stream, service));
            }
            let kind = inner.hand_over(found, peer, local);
            inner.count(kind);
            // Handed over (or closed): the HTTP server has nothing to serve.
            Err(io::Error::other(kind))
        })
    }
}
