//! The media sockets: one UDP socket, and one TCP listener for ICE-TCP (RFC 6544 passive,
//! RFC 4571 framing), for every PeerConnection of every session.
//!
//! Invariants:
//! - a datagram (or TCP frame) from a known 5-tuple goes to that tuple's PeerConnection; from
//!   an unknown tuple, only a STUN message whose USERNAME names a registered local ufrag is
//!   delivered, and it teaches the table that tuple (at most [`MAX_TUPLES_PER_PEER`] per peer);
//!   everything else is counted as unrouted and dropped;
//! - delivery to a peer never blocks a socket: its inbox is bounded and a full inbox drops;
//!   so does a TCP connection whose writer cannot keep up;
//! - a peer's routes disappear with it ([`MediaPlane::unregister`]); a TCP connection's with
//!   the connection;
//! - a TCP connection that does not start with a routable STUN message within
//!   [`TCP_HANDSHAKE_TIMEOUT`] is closed, and at most [`MAX_TCP_CONNECTIONS`] exist.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use parking_lot::RwLock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::PeerId;
use super::stun;
use crate::metrics::{Metrics, ReasonLabels};

/// Tuples one peer may be reached from (ICE candidate pairs during checks).
const MAX_TUPLES_PER_PEER: usize = 8;
/// Receive buffer chunk: datagrams are split off it without copying.
const RECV_CHUNK: usize = 256 * 1024;
const MAX_DATAGRAM: usize = 2048;
pub const MAX_TCP_CONNECTIONS: usize = 4096;
pub const TCP_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames waiting to be written on one TCP connection.
const TCP_WRITE_QUEUE: usize = 512;

/// How a datagram reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// One datagram (or ICE-TCP frame) for a peer.
#[derive(Debug)]
pub struct Datagram {
    pub from: SocketAddr,
    pub transport: Transport,
    pub data: BytesMut,
    pub at: Instant,
}

#[derive(Clone)]
struct Route {
    peer: PeerId,
    inbox: mpsc::Sender<Datagram>,
}

type Tuple = (Transport, SocketAddr);

#[derive(Default)]
struct Routes {
    by_tuple: HashMap<Tuple, Route>,
    by_ufrag: HashMap<String, Route>,
    tuples_of: HashMap<PeerId, Vec<Tuple>>,
}

pub struct MediaPlane {
    socket: Arc<UdpSocket>,
    routes: RwLock<Routes>,
    /// Writers of the open ICE-TCP connections, by remote address.
    tcp_writers: RwLock<HashMap<SocketAddr, mpsc::Sender<Bytes>>>,
    tcp_connections: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl MediaPlane {
    pub fn new(socket: UdpSocket, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            socket: Arc::new(socket),
            routes: RwLock::new(Routes::default()),
            tcp_writers: RwLock::new(HashMap::new()),
            tcp_connections: AtomicUsize::new(0),
            metrics,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Makes a peer reachable by its local ICE ufrag (replacing an older ufrag of it).
    pub fn register(&self, peer: PeerId, ufrag: &str, inbox: mpsc::Sender<Datagram>) {
        let mut routes = self.routes.write();
        routes.by_ufrag.retain(|_, r| r.peer != peer);
        routes
            .by_ufrag
            .insert(ufrag.to_string(), Route { peer, inbox });
    }

    pub fn unregister(&self, peer: PeerId) {
        let mut routes = self.routes.write();
        routes.by_ufrag.retain(|_, r| r.peer != peer);
        if let Some(tuples) = routes.tuples_of.remove(&peer) {
            for t in tuples {
                if routes.by_tuple.get(&t).is_some_and(|r| r.peer == peer) {
                    routes.by_tuple.remove(&t);
                }
            }
        }
    }

    fn drop_reason(&self, reason: &'static str) {
        self.metrics
            .media
            .rtp_packets_dropped
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Sends one datagram or frame; a full socket buffer or TCP queue drops it (media is
    /// loss-tolerant, and the caller's task must never stall).
    pub fn send(&self, data: &[u8], to: SocketAddr, transport: Transport) {
        match transport {
            Transport::Udp => match self.socket.try_send_to(data, to) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.drop_reason("socket_full");
                }
                Err(e) => tracing::debug!(error = %e, "media send failed"),
            },
            Transport::Tcp => {
                let Some(writer) = self.tcp_writers.read().get(&to).cloned() else {
                    return;
                };
                let mut frame = BytesMut::with_capacity(2 + data.len());
                let Ok(len) = u16::try_from(data.len()) else {
                    return;
                };
                frame.put_u16(len);
                frame.put_slice(data);
                if writer.try_send(frame.freeze()).is_err() {
                    self.drop_reason("tcp_queue_full");
                }
            }
        }
    }

    fn route(&self, data: &[u8], tuple: Tuple) -> Option<Route> {
        if let Some(r) = self.routes.read().by_tuple.get(&tuple) {
            return Some(r.clone());
        }
        let ufrag = stun::local_ufrag(data)?;
        let mut routes = self.routes.write();
        let route = routes.by_ufrag.get(ufrag)?.clone();
        let tuples = routes.tuples_of.entry(route.peer).or_default();
        if tuples.len() >= MAX_TUPLES_PER_PEER {
            return Some(route);
        }
        tuples.push(tuple);
        routes.by_tuple.insert(tuple, route.clone());
        Some(route)
    }

    fn deliver(&self, data: BytesMut, from: SocketAddr, transport: Transport) -> bool {
        let Some(route) = self.route(&data, (transport, from)) else {
            self.metrics.media.udp_datagrams_unrouted.inc();
            return false;
        };
        let dg = Datagram {
            from,
            transport,
            data,
            at: Instant::now(),
        };
        match route.inbox.try_send(dg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.drop_reason("peer_inbox_full");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.metrics.media.udp_datagrams_unrouted.inc();
                false
            }
        }
    }

    /// Reads the UDP socket until it fails (the process is shutting down).
    pub async fn run(self: Arc<Self>) {
        let mut buf = BytesMut::with_capacity(RECV_CHUNK);
        loop {
            if buf.capacity() - buf.len() < MAX_DATAGRAM {
                buf = BytesMut::with_capacity(RECV_CHUNK);
            }
            let from = match self.socket.recv_buf_from(&mut buf).await {
                Ok((_, from)) => from,
                Err(e) => {
                    // ICMP errors from a vanished client surface here on Linux; keep going.
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ) {
                        buf.clear();
                        continue;
                    }
                    tracing::error!(error = %e, "media socket failed");
                    return;
                }
            };
            let data = buf.split();
            self.deliver(data, from, Transport::Udp);
        }
    }

    /// Accepts ICE-TCP connections until the listener fails.
    pub async fn run_tcp(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, from) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "ice-tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if self.tcp_connections.load(Ordering::Relaxed) >= MAX_TCP_CONNECTIONS {
                self.drop_reason("tcp_connection_limit");
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.tcp_connections.fetch_add(1, Ordering::Relaxed);
            let plane = self.clone();
            tokio::spawn(async move {
                plane.serve_tcp(stream, from).await;
                plane.tcp_writers.write().remove(&from);
                plane.forget_tuple((Transport::Tcp, from));
                plane.tcp_connections.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }

    fn forget_tuple(&self, tuple: Tuple) {
        let mut routes = self.routes.write();
        if let Some(route) = routes.by_tuple.remove(&tuple)
            && let Some(list) = routes.tuples_of.get_mut(&route.peer)
        {
            list.retain(|t| *t != tuple);
        }
    }

    /// One ICE-TCP connection: RFC 4571 frames in both directions.
    async fn serve_tcp(&self, stream: TcpStream, from: SocketAddr) {
        let (mut reader, mut writer) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(TCP_WRITE_QUEUE);
        self.tcp_writers.write().insert(from, tx);
        let write_task = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if writer.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let mut buf = BytesMut::with_capacity(8192);
        let mut routed = false;
        let deadline = tokio::time::Instant::now() + TCP_HANDSHAKE_TIMEOUT;
        loop {
            let read = if routed {
                reader.read_buf(&mut buf).await
            } else {
                match tokio::time::timeout_at(deadline, reader.read_buf(&mut buf)).await {
                    Ok(r) => r,
                    Err(_) => break,
                }
            };
            match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            while buf.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                if buf.len() < 2 + len {
                    buf.reserve(2 + len - buf.len());
                    break;
                }
                buf.advance(2);
                let frame = buf.split_to(len);
                if len > 0 {
                    routed |= self.deliver(frame, from, Transport::Tcp);
                }
            }
            if !routed && buf.len() > MAX_DATAGRAM {
                break;
            }
        }
        write_task.abort();
    }
}
