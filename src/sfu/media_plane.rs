//! The media socket: one UDP socket for every PeerConnection of every session.
//!
//! Invariants:
//! - a datagram from a known 5-tuple goes to that tuple's PeerConnection; from an unknown
//!   tuple, only a STUN message whose USERNAME names a registered local ufrag is delivered,
//!   and it teaches the table that tuple (at most [`MAX_TUPLES_PER_PEER`] per peer);
//!   everything else is counted as unrouted and dropped;
//! - delivery to a peer never blocks the socket: its inbox is bounded and a full inbox drops;
//! - a peer's routes disappear with it ([`MediaPlane::unregister`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use parking_lot::RwLock;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::PeerId;
use super::stun;
use crate::metrics::{Metrics, ReasonLabels};

/// Tuples one peer may be reached from (ICE candidate pairs during checks).
const MAX_TUPLES_PER_PEER: usize = 8;
/// Receive buffer chunk: datagrams are split off it without copying.
const RECV_CHUNK: usize = 256 * 1024;
const MAX_DATAGRAM: usize = 2048;

/// One datagram for a peer.
#[derive(Debug)]
pub struct Datagram {
    pub from: SocketAddr,
    pub data: BytesMut,
    pub at: Instant,
}

#[derive(Clone)]
struct Route {
    peer: PeerId,
    inbox: mpsc::Sender<Datagram>,
}

#[derive(Default)]
struct Routes {
    by_tuple: HashMap<SocketAddr, Route>,
    by_ufrag: HashMap<String, Route>,
    tuples_of: HashMap<PeerId, Vec<SocketAddr>>,
}

pub struct MediaPlane {
    socket: Arc<UdpSocket>,
    routes: RwLock<Routes>,
    metrics: Arc<Metrics>,
}

impl MediaPlane {
    pub fn new(socket: UdpSocket, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            socket: Arc::new(socket),
            routes: RwLock::new(Routes::default()),
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

    /// Sends one datagram; a full socket buffer drops it (media is loss-tolerant, the socket
    /// must never stall a peer's task).
    pub fn send(&self, data: &[u8], to: SocketAddr) {
        match self.socket.try_send_to(data, to) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.metrics
                    .media
                    .rtp_packets_dropped
                    .get_or_create(&ReasonLabels {
                        reason: "socket_full",
                    })
                    .inc();
            }
            Err(e) => tracing::debug!(error = %e, "media send failed"),
        }
    }

    fn route(&self, data: &[u8], from: SocketAddr) -> Option<Route> {
        if let Some(r) = self.routes.read().by_tuple.get(&from) {
            return Some(r.clone());
        }
        let ufrag = stun::local_ufrag(data)?;
        let mut routes = self.routes.write();
        let route = routes.by_ufrag.get(ufrag)?.clone();
        let tuples = routes.tuples_of.entry(route.peer).or_default();
        if tuples.len() >= MAX_TUPLES_PER_PEER {
            return Some(route);
        }
        tuples.push(from);
        routes.by_tuple.insert(from, route.clone());
        Some(route)
    }

    /// Reads the socket until it fails (the process is shutting down).
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
            match self.route(&data, from) {
                Some(route) => {
                    let dg = Datagram {
                        from,
                        data,
                        at: Instant::now(),
                    };
                    match route.inbox.try_send(dg) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            self.metrics
                                .media
                                .rtp_packets_dropped
                                .get_or_create(&ReasonLabels {
                                    reason: "peer_inbox_full",
                                })
                                .inc();
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            self.metrics.media.udp_datagrams_unrouted.inc();
                        }
                    }
                }
                None => {
                    self.metrics.media.udp_datagrams_unrouted.inc();
                }
            }
        }
    }
}
