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
//!   TURN server or the media plane, which see it from its first byte; so is a TLS
//!   ClientHello's ALPN offer;
//! - HTTP stays on the runtime that accepts (hyper's): TLS clients offering `h2`/`http/1.1`
//!   are handshaken there. Everything else moves to the media runtime before any byte is
//!   read: ICE-TCP, TURN over TCP, and TLS clients offering no HTTP protocol (TURN clients,
//!   browsers' TURN/TLS included, send no ALPN or `stun.turn`), which are handshaken there
//!   and, in the rare case they turn out to speak HTTP, handed back to the HTTP server;
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
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use self::detect::{First, Hello, Inner};
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

/// What identification found on the accepting (HTTP) runtime.
enum Found {
    Https(Box<HttpsStream>),
    Elsewhere(Elsewhere),
}

/// Connections for the media runtime.
enum Elsewhere {
    /// A TLS client that offers no HTTP protocol: handshaken on the media runtime.
    Tls(TcpStream),
    TurnTcp(TcpStream),
    IceTcp(TcpStream),
}

/// An identified HTTPS connection, as the HTTP server reads it.
pub type HttpsStream = Rewind<TlsStream<TcpStream>>;

/// What became of a connection handed to the media runtime.
enum Outcome {
    /// HTTPS after all (a client offering no ALPN): back to the HTTP server.
    Https(Box<HttpsStream>),
    /// Served there: TURN over TLS, or plain TCP, or ICE-TCP.
    Taken(&'static str),
    Closed(&'static str),
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

    /// Peeks at a new connection: HTTPS clients are handshaken here, the rest is sorted
    /// for the media runtime.
    async fn identify(&self, stream: TcpStream) -> Result<Found, Closed> {
        match peek_until(&stream, detect::DECISIVE, detect::classify).await? {
            Some(First::Tls) => {}
            Some(First::IceTcp) => return Ok(Found::Elsewhere(Elsewhere::IceTcp(stream))),
            Some(First::Turn) => return Ok(Found::Elsewhere(Elsewhere::TurnTcp(stream))),
            Some(First::NeedMore | First::Unknown) => return Err(Closed("unrecognised")),
            None => return Err(Closed("closed_early")),
        }
        match peek_until(&stream, MAX_HELLO, detect::client_hello).await? {
            Some(Hello::Http) => {}
            Some(Hello::Other) => return Ok(Found::Elsewhere(Elsewhere::Tls(stream))),
            Some(Hello::Invalid | Hello::NeedMore) => return Err(Closed("tls_failed")),
            None => return Err(Closed("closed_early")),
        }
        match handshake(&self.tls, stream).await? {
            Tls::Http(s) => Ok(Found::Https(s)),
            // It offered an HTTP protocol: the handshake agreed on one.
            Tls::Turn(_) => Err(Closed("unrecognised")),
        }
    }
}

/// The largest ClientHello waited for (one TLS record).
const MAX_HELLO: usize = 5 + 16 * 1024;

/// A TLS connection, handshaken and identified.
enum Tls {
    Http(Box<HttpsStream>),
    Turn(Box<HttpsStream>),
}

/// The TLS handshake, then ALPN or the first decrypted bytes say HTTP or TURN.
async fn handshake(tls: &TlsAcceptor, stream: TcpStream) -> Result<Tls, Closed> {
    let mut tls = tls.accept(stream).await.map_err(|_| Closed("tls_failed"))?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let mut first = BytesMut::new();
    loop {
        match detect::classify_tls(alpn.as_deref(), &first) {
            Inner::Http => return Ok(Tls::Http(Box::new(Rewind::new(first.freeze(), tls)))),
            Inner::Turn => return Ok(Tls::Turn(Box::new(Rewind::new(first.freeze(), tls)))),
            Inner::Unknown => return Err(Closed("unrecognised")),
            Inner::NeedMore => {
                if tls.read_buf(&mut first).await? == 0 {
                    return Err(Closed("closed_early"));
                }
            }
        }
    }
}

/// Peeks (up to `max` bytes, nothing read) until `decide` is sure; `None` when the client
/// closed first.
async fn peek_until<T: PartialEq + NeedMore>(
    stream: &TcpStream,
    max: usize,
    decide: impl Fn(&[u8]) -> T,
) -> io::Result<Option<T>> {
    let mut buf = vec![0u8; max];
    let mut seen = 0;
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        let found = decide(&buf[..n]);
        if !found.need_more() || n == max {
            return Ok(Some(found));
        }
        // Peeking returns at once while bytes wait unread: wait for more instead.
        if n == seen {
            tokio::time::sleep(PEEK_AGAIN).await;
        }
        seen = n;
    }
}

/// A decision that may want more bytes.
trait NeedMore {
    fn need_more(&self) -> bool;
}

impl NeedMore for First {
    fn need_more(&self) -> bool {
        *self == First::NeedMore
    }
}

impl NeedMore for Hello {
    fn need_more(&self) -> bool {
        *self == Hello::NeedMore
    }
}

/// On the media runtime: what the HTTP runtime did not keep. Runs until the connection is
/// identified (answering `reply`), then, when it is TURN, until it closes.
async fn on_media_runtime(
    found: Elsewhere,
    handlers: Arc<SharedInner>,
    peer: SocketAddr,
    local: SocketAddr,
    deadline: tokio::time::Instant,
    reply: oneshot::Sender<Outcome>,
) {
    let h = &handlers.handlers;
    // Registered with this runtime's I/O driver; media does not wait for Nagle's algorithm.
    let adopt = |s: TcpStream| {
        let _ = s.set_nodelay(true);
        s.into_std().and_then(TcpStream::from_std)
    };
    match found {
        Elsewhere::IceTcp(s) => {
            let taken = s.into_std().is_ok_and(|s| h.sfu.adopt_ice_tcp(s, peer));
            let _ = reply.send(if taken {
                Outcome::Taken("ice_tcp")
            } else {
                Outcome::Closed("refused")
            });
        }
        Elsewhere::TurnTcp(s) => {
            let (Some(turn), Ok(s)) = (h.turn.as_ref(), adopt(s)) else {
                let _ = reply.send(Outcome::Closed("refused"));
                return;
            };
            let _ = reply.send(Outcome::Taken("turn_tcp"));
            turn.serve_connection(s, false, peer, local).await;
        }
        Elsewhere::Tls(s) => {
            let Ok(s) = adopt(s) else {
                let _ = reply.send(Outcome::Closed("io_error"));
                return;
            };
            let tls = match tokio::time::timeout_at(deadline, handshake(&handlers.tls, s)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(Closed(why))) => {
                    let _ = reply.send(Outcome::Closed(why));
                    return;
                }
                Err(_) => {
                    let _ = reply.send(Outcome::Closed("timeout"));
                    return;
                }
            };
            match (tls, h.turn.as_ref()) {
                (Tls::Http(s), _) => {
                    // Served by the HTTP runtime; its I/O stays registered here, which works
                    // across runtimes (rare: HTTPS clients offer ALPN).
                    let _ = reply.send(Outcome::Https(s));
                }
                (Tls::Turn(s), Some(turn)) => {
                    let _ = reply.send(Outcome::Taken("turn_tls"));
                    turn.serve_connection(s, true, peer, local).await;
                }
                (Tls::Turn(_), None) => {
                    let _ = reply.send(Outcome::Closed("refused"));
                }
            }
        }
    }
}

impl<S: Send + 'static> Accept<TcpStream, S> for Shared {
    type Stream = HttpsStream;
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
            let deadline = tokio::time::Instant::now() + inner.identify_timeout;
            let outcome = match tokio::time::timeout_at(deadline, inner.identify(stream)).await {
                Ok(Ok(Found::Https(s))) => Outcome::Https(s),
                Ok(Ok(Found::Elsewhere(found))) => {
                    // Everything but HTTPS is served on the media runtime.
                    let (tx, rx) = oneshot::channel();
                    let task = on_media_runtime(found, inner.clone(), peer, local, deadline, tx);
                    inner.handlers.sfu.media_plane().spawn(task);
                    rx.await.unwrap_or(Outcome::Closed("refused"))
                }
                Ok(Err(Closed(why))) => Outcome::Closed(why),
                Err(_) => Outcome::Closed("timeout"),
            };
            inner.metrics.shared_port_pending.dec();
            drop(place);
            match outcome {
                Outcome::Https(s) => {
                    inner.count("https");
                    Ok((*s, service))
                }
                // Served elsewhere, or closed: the HTTP server has nothing to serve.
                Outcome::Taken(kind) | Outcome::Closed(kind) => {
                    inner.count(kind);
                    Err(io::Error::other(kind))
                }
            }
        })
    }
}
