//! TCP connections to the HTTP and HTTPS listeners: a cap per client address and one in all,
//! checked as a connection is accepted, before any TLS handshake or byte is read.
//!
//! Invariants:
//! - a connection holds its place ([`Counted`]) for as long as its stream lives (HTTP, then
//!   a WebSocket it upgraded to), and gives it back when the stream is dropped;
//! - a connection over a cap is closed at once, costing one accept and one close;
//! - a connection that sends no byte within the first-byte timeout (`http.header_timeout`) is
//!   closed: hyper's own header timeout starts only once it has read the first bytes (its
//!   HTTP/1-or-2 detection waits for them without a limit);
//! - trusted proxies (`http.trusted_proxies`) and loopback peers (this machine: a local
//!   reverse proxy, the operator) count in the total only: they carry many clients, whose own
//!   limits apply to the requests inside.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::clock::SharedClock;
use crate::limits::{AddrKey, Counted, Counts, Full, LogBudget};
use crate::metrics::Metrics;
use crate::net::TrustedProxies;

/// The places, shared by both listeners.
pub struct ConnLimits {
    counts: Counts<AddrKey>,
    first_byte: std::time::Duration,
    trusted: TrustedProxies,
    metrics: Arc<Metrics>,
    log: LogBudget,
}

impl ConnLimits {
    pub fn new(
        per_address: u32,
        total: u32,
        first_byte: std::time::Duration,
        trusted: TrustedProxies,
        metrics: Arc<Metrics>,
        clock: SharedClock,
    ) -> Self {
        Self {
            counts: Counts::new(per_address, total),
            first_byte,
            trusted,
            metrics,
            log: LogBudget::new(10, 60_000, clock),
        }
    }

    /// A place for a connection from `peer`.
    pub fn admit(&self, peer: std::net::IpAddr) -> Result<Counted<AddrKey>, Full> {
        let key = AddrKey::of(peer);
        let r = if self.trusted.trusts(peer) || key.is_loopback() {
            self.counts.try_acquire_within(key, u32::MAX)
        } else {
            self.counts.try_acquire(key)
        };
        if let Err(full) = r {
            self.metrics.count_limited("http_connection");
            if let Some(suppressed) = self.log.admit("http_connection_cap") {
                let which = match full {
                    Full::Key => "this address holds http.connections_per_address connections",
                    Full::Total => "the server holds http.max_connections connections",
                };
                tracing::warn!(client = %key, suppressed, "connection closed: {which}");
            }
        }
        r
    }

    pub fn open(&self) -> u32 {
        self.counts.total()
    }

    pub fn open_from(&self, peer: std::net::IpAddr) -> u32 {
        self.counts.count(&AddrKey::of(peer))
    }
}

/// An acceptor that takes a place before handing the connection to `inner` (plain or TLS).
#[derive(Clone)]
pub struct Limited<A> {
    inner: A,
    limits: Arc<ConnLimits>,
}

impl<A> Limited<A> {
    pub fn new(inner: A, limits: Arc<ConnLimits>) -> Self {
        Self { inner, limits }
    }
}

impl<A, S> Accept<TcpStream, S> for Limited<A>
where
    A: Accept<TcpStream, S> + Clone + Send + 'static,
    A::Future: Send + 'static,
    A::Stream: Unpin,
    S: Send + 'static,
{
    type Stream = Held<A::Stream>;
    type Service = A::Service;
    type Future =
        Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send + 'static>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let place = stream
            .peer_addr()
            .map_err(io::Error::other)
            .and_then(|peer| {
                self.limits
                    .admit(peer.ip())
                    .map_err(|_| io::Error::other("connection cap"))
            });
        let inner = self.inner.clone();
        let first_byte = self.limits.first_byte;
        Box::pin(async move {
            // Over a cap: `stream` is dropped here, which closes it.
            let place = place?;
            let (stream, service) = inner.accept(stream, service).await?;
            Ok((
                Held {
                    stream,
                    _place: place,
                    first_byte: Some(Box::pin(tokio::time::sleep(first_byte))),
                },
                service,
            ))
        })
    }
}

/// A stream that holds its connection's place, and must bring a first byte in time.
pub struct Held<T> {
    stream: T,
    _place: Counted<AddrKey>,
    /// Until the first byte is read.
    first_byte: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Held<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if self.first_byte.is_some() {
            match &r {
                Poll::Ready(Ok(())) if buf.filled().len() > before => self.first_byte = None,
                Poll::Pending => {
                    if let Some(deadline) = self.first_byte.as_mut()
                        && deadline.as_mut().poll(cx).is_ready()
                    {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no request within http.header_timeout",
                        )));
                    }
                }
                _ => {}
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Held<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn limits(trusted: &[&str]) -> ConnLimits {
        ConnLimits::new(
            2,
            5,
            std::time::Duration::from_secs(10),
            TrustedProxies::parse(trusted).unwrap(),
            Arc::new(Metrics::new()),
            ManualClock::new(0),
        )
    }

    #[test]
    fn per_address_and_total_with_proxies_in_the_total_only() {
        let l = limits(&["10.0.0.1"]);
        let a = "192.0.2.1".parse().unwrap();
        let p1 = l.admit(a).unwrap();
        let _p2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).unwrap_err(), Full::Key);
        // The same /64 is the same client.
        let v6a = "2001:db8::1".parse().unwrap();
        let v6b = "2001:db8::2".parse().unwrap();
        let _v1 = l.admit(v6a).unwrap();
        let _v2 = l.admit(v6b).unwrap();
        assert_eq!(l.admit(v6a).unwrap_err(), Full::Key);
        let proxy = "10.0.0.1".parse().unwrap();
        let _x = l.admit(proxy).unwrap();
        assert_eq!(l.admit(proxy).unwrap_err(), Full::Total);
        drop(p1);
        let _y = l.admit(proxy).unwrap();
        assert_eq!(l.open(), 5);
        assert_eq!(l.open_from(a), 1);
    }
}
