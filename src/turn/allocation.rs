//! One allocation (RFC 8656 §5): a relayed UDP socket for one client 5-tuple, with its
//! permissions, channel bindings and bandwidth budget.
//!
//! Invariants:
//! - a datagram crosses the relay (either way) only for a peer IP with an unexpired
//!   permission, and only within the allocation's token bucket; everything else is dropped
//!   and counted;
//! - the client is written to without blocking: a full TCP/TLS queue or a full UDP socket
//!   buffer drops the datagram, as any UDP hop would;
//! - the relay task ends when the allocation expires or is closed, and with it the socket.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rtc::stun::message::{CLASS_INDICATION, METHOD_DATA, Message, MessageType, TransactionId};
use rtc::turn::proto::data::Data;
use rtc::turn::proto::peeraddr::PeerAddress;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};

use super::policy::PeerPolicy;
use super::wire;
use crate::metrics::Metrics;

pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Permissions and channels one allocation may hold (a call needs one or two).
pub const MAX_PERMISSIONS: usize = 32;
pub const MAX_CHANNELS: usize = 32;
/// Largest datagram relayed; larger ones are truncated by the kernel and dropped.
const MAX_DATAGRAM: usize = 4096;

/// The transport between client and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// What identifies an allocation (RFC 8656 §2): the client's transport address and ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// How to reach a client.
#[derive(Clone)]
pub enum ClientSink {
    Udp {
        socket: Arc<UdpSocket>,
        to: SocketAddr,
    },
    /// The writer queue of a TCP or TLS connection.
    Stream(mpsc::Sender<Bytes>),
}

impl ClientSink {
    /// Streams carry padded ChannelData (RFC 8656 §12.5).
    pub fn is_stream(&self) -> bool {
        matches!(self, ClientSink::Stream(_))
    }

    /// Sends without waiting; `false` when the message was dropped.
    pub fn send(&self, data: Vec<u8>) -> bool {
        match self {
            ClientSink::Udp { socket, to } => socket.try_send_to(&data, *to).is_ok(),
            ClientSink::Stream(tx) => tx.try_send(Bytes::from(data)).is_ok(),
        }
    }
}

/// Bytes per second with a one-second burst.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(bytes_per_sec: u64, now: Instant) -> Self {
        Self {
            rate: bytes_per_sec as f64,
            tokens: bytes_per_sec as f64,
            last: now,
        }
    }

    fn take(&mut self, n: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

/// Why a permission or channel could not be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindError {
    /// The channel is bound to another peer, or the peer to another channel.
    Conflict,
    /// Too many permissions or channels on this allocation.
    Full,
}

/// What became of a datagram offered to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    Sent,
    Dropped(&'static str),
}

struct State {
    expires: Instant,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    channel_of: HashMap<SocketAddr, u16>,
    /// The address the relay really sends to, and the peer address the client named for it
    /// (they differ for relais's own media address, see [`PeerPolicy`]).
    routes: Vec<(SocketAddr, SocketAddr)>,
    bucket: TokenBucket,
}

impl State {
    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|&until| until > now)
    }

    fn prune(&mut self, now: Instant) {
        self.permissions.retain(|_, until| *until > now);
        let expired: Vec<u16> = self
            .channels
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(ch, _)| *ch)
            .collect();
        for ch in expired {
            if let Some((peer, _)) = self.channels.remove(&ch) {
                self.channel_of.remove(&peer);
            }
        }
    }
}

pub struct Allocation {
    pub tuple: FiveTuple,
    /// The full REST username (`expiry:user`) that created it; later requests must match.
    pub username: String,
    /// The user part, for quotas.
    pub user: String,
    /// The relayed transport address given to the client.
    pub relayed: SocketAddr,
    /// The Allocate request that created it, to answer a retransmission identically.
    pub allocate_transaction: TransactionId,
    socket: UdpSocket,
    sink: ClientSink,
    state: Mutex<State>,
    closed: Notify,
}

impl Allocation {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tuple: FiveTuple,
        username: String,
        user: String,
        allocate_transaction: TransactionId,
        socket: UdpSocket,
        relayed: SocketAddr,
        sink: ClientSink,
        lifetime: Duration,
        bytes_per_sec: u64,
    ) -> Self {
        let now = Instant::now();
        Self {
            tuple,
            username,
            user,
            relayed,
            allocate_transaction,
            socket,
            sink,
            state: Mutex::new(State {
                expires: now + lifetime,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                channel_of: HashMap::new(),
                routes: Vec::new(),
                bucket: TokenBucket::new(bytes_per_sec, now),
            }),
            closed: Notify::new(),
        }
    }

    /// Sets the time left; zero ends the allocation at the relay task's next wake-up.
    pub fn refresh(&self, lifetime: Duration) {
        let now = Instant::now();
        let mut st = self.state.lock();
        st.expires = now + lifetime;
        st.prune(now);
        drop(st);
        if lifetime.is_zero() {
            self.close();
        }
    }

    pub fn close(&self) {
        self.closed.notify_one();
    }

    /// Installs or refreshes a permission for `ip`.
    pub fn permit(&self, ip: IpAddr) -> Result<(), BindError> {
        let now = Instant::now();
        let mut st = self.state.lock();
        if !st.permissions.contains_key(&ip) {
            st.prune(now);
            if st.permissions.len() >= MAX_PERMISSIONS {
                return Err(BindError::Full);
            }
        }
        st.permissions.insert(ip, now + PERMISSION_LIFETIME);
        Ok(())
    }

    /// Binds (or refreshes) `channel` to `peer`, which also installs a permission.
    pub fn bind_channel(&self, channel: u16, peer: SocketAddr) -> Result<(), BindError> {
        let now = Instant::now();
        let mut st = self.state.lock();
        st.prune(now);
        match (st.channels.get(&channel), st.channel_of.get(&peer)) {
            (Some((bound, _)), _) if *bound != peer => return Err(BindError::Conflict),
            (_, Some(ch)) if *ch != channel => return Err(BindError::Conflict),
            (None, _) if st.channels.len() >= MAX_CHANNELS => return Err(BindError::Full),
            _ => {}
        }
        if !st.permissions.contains_key(&peer.ip()) && st.permissions.len() >= MAX_PERMISSIONS {
            return Err(BindError::Full);
        }
        st.channels.insert(channel, (peer, now + CHANNEL_LIFETIME));
        st.channel_of.insert(peer, channel);
        st.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME);
        Ok(())
    }

    /// Client → peer, from a Send indication.
    pub fn send_to_peer(&self, peer: SocketAddr, data: &[u8], policy: &PeerPolicy) -> Relayed {
        let now = Instant::now();
        let Some(to) = policy.route(peer) else {
            return Relayed::Dropped("peer_not_allowed");
        };
        {
            let mut st = self.state.lock();
            if !st.permitted(peer.ip(), now) {
                return Relayed::Dropped("no_permission");
            }
            if !st.bucket.take(data.len(), now) {
                return Relayed::Dropped("bandwidth");
            }
            if to != peer && !st.routes.contains(&(to, peer)) {
                st.routes.retain(|(local, _)| *local != to);
                st.routes.push((to, peer));
            }
        }
        match self.socket.try_send_to(data, to) {
            Ok(_) => Relayed::Sent,
            Err(_) => Relayed::Dropped("send_failed"),
        }
    }

    /// Client → peer, from a ChannelData message.
    pub fn send_on_channel(&self, channel: u16, data: &[u8], policy: &PeerPolicy) -> Relayed {
        let peer = {
            let st = self.state.lock();
            match st.channels.get(&channel) {
                Some((peer, until)) if *until > Instant::now() => *peer,
                _ => return Relayed::Dropped("no_channel"),
            }
        };
        self.send_to_peer(peer, data, policy)
    }

    /// Peer → client: a datagram that arrived on the relayed socket from `from`.
    fn to_client(&self, data: &[u8], from: SocketAddr) -> Relayed {
        let now = Instant::now();
        let (peer, channel) = {
            let mut st = self.state.lock();
            let peer = st
                .routes
                .iter()
                .find(|(local, _)| *local == from)
                .map_or(from, |(_, peer)| *peer);
            if !st.permitted(peer.ip(), now) {
                return Relayed::Dropped("no_permission");
            }
            if !st.bucket.take(data.len(), now) {
                return Relayed::Dropped("bandwidth");
            }
            let channel = st
                .channel_of
                .get(&peer)
                .copied()
                .filter(|ch| st.channels.get(ch).is_some_and(|(_, until)| *until > now));
            (peer, channel)
        };
        let message = match channel {
            Some(ch) => {
                let mut out = Vec::with_capacity(data.len() + 8);
                wire::write_channel_data(ch, data, self.sink.is_stream(), &mut out);
                out
            }
            None => match data_indication(peer, data) {
                Some(m) => m,
                None => return Relayed::Dropped("encode"),
            },
        };
        if self.sink.send(message) {
            Relayed::Sent
        } else {
            Relayed::Dropped("client_queue_full")
        }
    }

    /// Relays peer → client until the allocation expires or is closed.
    pub async fn run_relay(self: Arc<Self>, metrics: Arc<Metrics>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let turn = &metrics.turn;
        loop {
            let deadline = self.state.lock().expires;
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => match self.to_client(&buf[..n], from) {
                        Relayed::Sent => {
                            turn.packets_to_client.inc();
                            turn.bytes_relayed.inc_by(n as u64);
                        }
                        Relayed::Dropped(reason) => turn.drop(reason),
                    },
                    // ICMP errors surface here on some systems; the socket stays usable.
                    Err(_) => turn.drop("recv_error"),
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if self.state.lock().expires <= Instant::now() {
                        break;
                    }
                }
                _ = self.closed.notified() => break,
            }
        }
    }
}

/// A Data indication carrying `data` from `peer` (RFC 8656 §11.4).
fn data_indication(peer: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.build(&[
        Box::new(MessageType::new(METHOD_DATA, CLASS_INDICATION)),
        Box::new(TransactionId::new()),
        Box::new(PeerAddress {
            ip: peer.ip(),
            port: peer.port(),
        }),
        Box::new(Data(data.to_vec())),
    ])
    .ok()?;
    Some(m.raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, t0);
        assert!(b.take(1000, t0));
        assert!(!b.take(1, t0));
        assert!(b.take(500, t0 + Duration::from_millis(500)));
        assert!(!b.take(100, t0 + Duration::from_millis(500)));
        // Never more than one second's worth.
        assert!(!b.take(1001, t0 + Duration::from_secs(60)));
    }

    #[tokio::test]
    async fn channels_conflict_and_fill_up() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relayed = socket.local_addr().unwrap();
        let (tx, _rx) = mpsc::channel(4);
        let tuple = FiveTuple {
            transport: Transport::Tcp,
            client: "127.0.0.1:1".parse().unwrap(),
            server: "127.0.0.1:2".parse().unwrap(),
        };
        let a = Allocation::new(
            tuple,
            "9:u".into(),
            "u".into(),
            TransactionId::new(),
            socket,
            relayed,
            ClientSink::Stream(tx),
            Duration::from_secs(60),
            1_000_000,
        );
        let p1: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let p2: SocketAddr = "10.0.0.2:1000".parse().unwrap();
        assert_eq!(a.bind_channel(0x4000, p1), Ok(()));
        assert_eq!(a.bind_channel(0x4000, p1), Ok(()), "refresh");
        assert_eq!(a.bind_channel(0x4000, p2), Err(BindError::Conflict));
        assert_eq!(a.bind_channel(0x4001, p1), Err(BindError::Conflict));
        for i in 1..MAX_CHANNELS as u16 {
            let peer = SocketAddr::new(p1.ip(), 2000 + i);
            assert_eq!(a.bind_channel(0x4000 + i, peer), Ok(()));
        }
        let extra = SocketAddr::new(p1.ip(), 9999);
        assert_eq!(a.bind_channel(0x4FFF, extra), Err(BindError::Full));
    }
}
