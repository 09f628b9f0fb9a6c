//! The media sockets: one UDP socket, and one TCP listener for ICE-TCP (RFC 6544 passive,
//! RFC 4571 framing), for every PeerConnection of every session; ICE-TCP connections that
//! reached the shared HTTPS port (`crate::mux`, above this layer) are adopted and served the
//! same way ([`MediaPlane::adopt_std_tcp`]), each remembering the port it came in on, which
//! names our candidate of its pairs.
//!
//! Invariants:
//! - a datagram (or TCP frame) from a known 5-tuple goes to that tuple's PeerConnection; from
//!   an unknown tuple, only a STUN message whose USERNAME names a registered local ufrag is
//!   delivered, and it teaches the table that tuple (at most [`MAX_TUPLES_PER_PEER`] per peer);
//!   everything else is counted as unrouted and dropped;
//! - delivery to a peer never blocks a socket: its inbox is bounded and a full inbox drops;
//!   so does a TCP connection whose writer cannot keep up;
//! - UDP datagrams are read and written in batches ([`udp_batch`]): peers' tasks put what
//!   they send in the outbox, and the sender task writes it once the tasks that were ready
//!   have run, so one system call (and one wake-up of each receiver) carries many packets;
//!   the outbox is bounded and a full outbox drops;
//! - a peer's routes disappear with it ([`MediaPlane::unregister`]); a TCP connection's with
//!   the connection;
//! - a TCP connection that does not start with a routable STUN message within
//!   [`TCP_HANDSHAKE_TIMEOUT`] is closed, and at most [`MAX_TCP_CONNECTIONS`] exist;
//! - the embedded TURN server's allocations reach this plane without a socket
//!   ([`MediaPlane::deliver_relayed`], [`MediaPlane::attach_relayed`]): their datagrams are
//!   routed and answered exactly as UDP datagrams from the relayed address would be, and a
//!   UDP send to an attached relayed address goes to its [`RelayedClient`] instead of the
//!   socket. An address is attached from its allocation's creation to its release, and the
//!   routes learnt for it go when it is detached.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use parking_lot::RwLock;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Notify, mpsc};

use super::PeerId;
use super::stun;
use super::types::FastMap;
use super::udp_batch::{self, RecvBatch, SendBatch};
use crate::metrics::{Metrics, ReasonLabels};

/// Tuples one peer may be reached from (ICE candidate pairs during checks).
const MAX_TUPLES_PER_PEER: usize = 8;
const MAX_DATAGRAM: usize = udp_batch::SLOT;
/// Datagrams waiting for the sender task before new ones are dropped (a few ms of the
/// heaviest load the benchmark puts on one socket).
const OUTBOX_LIMIT: usize = 8192;
/// How long the sender waits for room in a full socket buffer before dropping what it holds.
const SEND_STALL: Duration = Duration::from_millis(5);
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

/// One open ICE-TCP connection.
struct TcpConnection {
    writer: mpsc::Sender<Bytes>,
    /// The port it reached us on: which of our TCP candidates it is.
    local_port: u16,
}

/// A TURN allocation of this process, reached in-process at its relayed address.
pub trait RelayedClient: Send + Sync {
    /// A datagram the plane sends to the relayed address: relay it to the TURN client (or
    /// drop and count it, as the allocation decides). Must not block.
    fn send_from_media(&self, data: &[u8], at: Instant);
}

#[derive(Clone)]
struct Route {
    peer: PeerId,
    inbox: mpsc::Sender<Datagram>,
}

type Tuple = (Transport, SocketAddr);

#[derive(Default)]
struct Routes {
    by_tuple: FastMap<Tuple, Route>,
    by_ufrag: FastMap<String, Route>,
    tuples_of: FastMap<PeerId, Vec<Tuple>>,
}

pub struct MediaPlane {
    socket: Arc<UdpSocket>,
    routes: RwLock<Routes>,
    /// The open ICE-TCP connections, by remote address.
    tcp_writers: RwLock<HashMap<SocketAddr, TcpConnection>>,
    tcp_connections: AtomicUsize,
    /// UDP datagrams waiting for [`MediaPlane::run_sender`].
    outbox: parking_lot::Mutex<Vec<(Bytes, SocketAddr)>>,
    outbox_ready: Notify,
    /// TURN allocations reached in-process, by relayed address.
    relayed: RwLock<FastMap<SocketAddr, Arc<dyn RelayedClient>>>,
    /// `relayed.len()`, read without the lock on every UDP send.
    relayed_count: AtomicUsize,
    metrics: Arc<Metrics>,
    /// The media runtime, where every task that touches the sockets runs.
    runtime: tokio::runtime::Handle,
}

impl MediaPlane {
    /// `socket` must be registered with `runtime` (see `super::media_runtime`).
    pub fn new(
        socket: UdpSocket,
        metrics: Arc<Metrics>,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        Arc::new(Self {
            socket: Arc::new(socket),
            routes: RwLock::new(Routes::default()),
            tcp_writers: RwLock::new(HashMap::new()),
            tcp_connections: AtomicUsize::new(0),
            outbox: parking_lot::Mutex::new(Vec::new()),
            outbox_ready: Notify::new(),
            relayed: RwLock::new(FastMap::default()),
            relayed_count: AtomicUsize::new(0),
            metrics,
            runtime,
        })
    }

    /// Runs `task` on the media runtime.
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(task);
    }

    /// The media runtime (sockets its tasks use must be created under its `enter`).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// From now on, UDP sends to `relayed` go to `client` (a TURN allocation of this process).
    pub fn attach_relayed(&self, relayed: SocketAddr, client: Arc<dyn RelayedClient>) {
        let mut links = self.relayed.write();
        links.insert(relayed, client);
        self.relayed_count.store(links.len(), Ordering::Relaxed);
    }

    /// TURN allocations attached ([`attach_relayed`](Self::attach_relayed)).
    pub fn relayed_count(&self) -> usize {
        self.relayed_count.load(Ordering::Relaxed)
    }

    /// The allocation of `relayed` is gone: so are its link and the routes learnt for it.
    pub fn detach_relayed(&self, relayed: SocketAddr) {
        {
            let mut links = self.relayed.write();
            links.remove(&relayed);
            self.relayed_count.store(links.len(), Ordering::Relaxed);
        }
        self.forget_tuple((Transport::Udp, relayed));
    }

    /// A datagram a TURN client relayed to this plane from its allocation's `relayed`
    /// address, handled as if it had arrived on the UDP socket from there.
    pub fn deliver_relayed(&self, data: BytesMut, relayed: SocketAddr, at: Instant) {
        self.deliver(data, relayed, Transport::Udp, at);
    }

    /// The TURN allocation at `to`, when it is one of this process's.
    fn relayed_client(&self, to: SocketAddr) -> Option<Arc<dyn RelayedClient>> {
        if self.relayed_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.relayed.read().get(&to).cloned()
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
        self.drop_many(reason, 1);
    }

    fn drop_many(&self, reason: &'static str, count: usize) {
        self.metrics
            .media
            .rtp_packets_dropped
            .get_or_create(&ReasonLabels { reason })
            .inc_by(count as u64);
    }

    /// Sends one datagram or frame; a full outbox, socket buffer or TCP queue drops it (media
    /// is loss-tolerant, and the caller's task must never stall).
    pub fn send(&self, data: Bytes, to: SocketAddr, transport: Transport) {
        match transport {
            Transport::Udp => {
                if let Some(client) = self.relayed_client(to) {
                    client.send_from_media(&data, Instant::now());
                    return;
                }
                let mut outbox = self.outbox.lock();
                if outbox.len() >= OUTBOX_LIMIT {
                    drop(outbox);
                    self.drop_reason("outbox_full");
                    return;
                }
                outbox.push((data, to));
                if outbox.len() == 1 {
                    self.outbox_ready.notify_one();
                }
            }
            Transport::Tcp => {
                let Some(writer) = self.tcp_writers.read().get(&to).map(|c| c.writer.clone())
                else {
                    return;
                };
                let mut frame = BytesMut::with_capacity(2 + data.len());
                let Ok(len) = u16::try_from(data.len()) else {
                    return;
                };
                frame.put_u16(len);
                frame.put_slice(&data);
                if writer.try_send(frame.freeze()).is_err() {
                    self.drop_reason("tcp_queue_full");
                }
            }
        }
    }

    /// The route of a tuple not seen before, learnt from a STUN USERNAME naming a peer's ufrag.
    fn learn_route(&self, data: &[u8], tuple: Tuple) -> Option<Route> {
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

    fn deliver(&self, data: BytesMut, from: SocketAddr, transport: Transport, at: Instant) -> bool {
        let tuple = (transport, from);
        let dg = Datagram {
            from,
            transport,
            data,
            at,
        };
        // A known tuple (nearly every datagram): handed over under the read lock, no clone.
        let sent = {
            let routes = self.routes.read();
            match routes.by_tuple.get(&tuple) {
                Some(route) => Ok(route.inbox.try_send(dg)),
                None => Err(dg),
            }
        };
        let sent = match sent {
            Ok(sent) => sent,
            Err(dg) => {
                let Some(route) = self.learn_route(&dg.data, tuple) else {
                    self.metrics.media.udp_datagrams_unrouted.inc();
                    return false;
                };
                route.inbox.try_send(dg)
            }
        };
        match sent {
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
        let mut batch = RecvBatch::new();
        loop {
            // Awaited before every batch, ready or not: it is what makes this loop yield to
            // the runtime (tokio's cooperative budget) while the socket never runs dry.
            if let Err(e) = self.socket.readable().await {
                tracing::error!(error = %e, "media socket failed");
                return;
            }
            match self
                .socket
                .try_io(Interest::READABLE, || batch.recv(&*self.socket))
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                // ICMP errors from a vanished client surface here on Linux; keep going.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "media socket failed");
                    return;
                }
            }
            // One read: the datagrams of a batch arrived together.
            let at = Instant::now();
            for r in batch.iter() {
                if r.truncated {
                    self.drop_reason("oversized_datagram");
                    continue;
                }
                self.deliver(BytesMut::from(r.data), r.from, Transport::Udp, at);
            }
        }
    }

    /// Writes the outbox to the UDP socket, a batch per system call, until the process ends.
    pub async fn run_sender(self: Arc<Self>) {
        let mut sending = Vec::new();
        let mut batch = SendBatch::default();
        loop {
            self.outbox_ready.notified().await;
            // The tasks that are ready now run first and add their packets: one flush for all.
            tokio::task::yield_now().await;
            std::mem::swap(&mut *self.outbox.lock(), &mut sending);
            self.send_all(&mut batch, &sending).await;
            sending.clear();
            if sending.capacity() > OUTBOX_LIMIT / 8 {
                sending = Vec::new();
            }
        }
    }

    async fn send_all(&self, batch: &mut SendBatch, out: &[(Bytes, SocketAddr)]) {
        let mut sent = 0;
        while sent < out.len() {
            let rest = &out[sent..];
            match self
                .socket
                .try_io(Interest::WRITABLE, || batch.send(&*self.socket, rest))
            {
                Ok(n) => sent += n.max(1),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let room = tokio::time::timeout(SEND_STALL, self.socket.writable()).await;
                    if !matches!(room, Ok(Ok(()))) {
                        self.drop_many("socket_full", rest.len());
                        return;
                    }
                }
                // One destination refused (unreachable, forbidden): skip it, send the rest.
                Err(e) => {
                    tracing::debug!(error = %e, "media send failed");
                    sent += 1;
                }
            }
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
            self.adopt_tcp(stream, from);
        }
    }

    /// Serves an ICE-TCP connection accepted elsewhere (the shared HTTPS port, which peeked at
    /// its first bytes without reading them): it moves to the media runtime. False when over
    /// [`MAX_TCP_CONNECTIONS`] (the connection is then closed).
    pub fn adopt_std_tcp(self: &Arc<Self>, stream: std::net::TcpStream, from: SocketAddr) -> bool {
        if !self.take_tcp_place() {
            return false;
        }
        let plane = self.clone();
        self.spawn(async move {
            // Registered with the media runtime's I/O driver, since this runs there.
            match TcpStream::from_std(stream) {
                Ok(stream) => plane.serve_tcp_then_forget(stream, from).await,
                Err(e) => {
                    tracing::debug!(error = %e, "ice-tcp connection not adopted");
                    plane.tcp_connections.fetch_sub(1, Ordering::Relaxed);
                }
            }
        });
        true
    }

    fn adopt_tcp(self: &Arc<Self>, stream: TcpStream, from: SocketAddr) {
        if !self.take_tcp_place() {
            return;
        }
        let plane = self.clone();
        self.spawn(async move { plane.serve_tcp_then_forget(stream, from).await });
    }

    fn take_tcp_place(&self) -> bool {
        if self.tcp_connections.fetch_add(1, Ordering::Relaxed) >= MAX_TCP_CONNECTIONS {
            self.tcp_connections.fetch_sub(1, Ordering::Relaxed);
            self.drop_reason("tcp_connection_limit");
            return false;
        }
        true
    }

    /// Serves one connection, then forgets its routes and gives its place back.
    async fn serve_tcp_then_forget(&self, stream: TcpStream, from: SocketAddr) {
        let _ = stream.set_nodelay(true);
        self.serve_tcp(stream, from).await;
        self.tcp_writers.write().remove(&from);
        self.forget_tuple((Transport::Tcp, from));
        self.tcp_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// The local port of the open ICE-TCP connection from `from` (the listener it came in on).
    pub fn tcp_local_port(&self, from: SocketAddr) -> Option<u16> {
        self.tcp_writers.read().get(&from).map(|c| c.local_port)
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
        let local_port = stream.local_addr().map_or(0, |a| a.port());
        let (mut reader, mut writer) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(TCP_WRITE_QUEUE);
        self.tcp_writers.write().insert(
            from,
            TcpConnection {
                writer: tx,
                local_port,
            },
        );
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
                    routed |= self.deliver(frame, from, Transport::Tcp, Instant::now());
                }
            }
            if !routed && buf.len() > MAX_DATAGRAM {
                break;
            }
        }
        write_task.abort();
    }
}
