//! One allocation's relay (RFC 8656 §5): its permissions, channel bindings and bandwidth
//! budget, and the per-datagram decisions taken from them. Pure: no socket, no clock; every
//! decision takes the time it happens at.
//!
//! A [`Relay`] is shared by the [`Server`](super::core::Server), which installs permissions
//! and channels, and the IO shell's task for the allocation's relayed socket, which asks it
//! about every datagram without going through the server (the per-packet fast path).
//!
//! Invariants:
//! - a datagram crosses the relay (either way) only for a peer IP with an unexpired
//!   permission, and only within the allocation's token bucket; everything else is refused
//!   with the reason it is counted under;
//! - a channel is bound to one peer and a peer to one channel until the binding expires;
//! - at most [`MAX_PERMISSIONS`] permissions and [`MAX_CHANNELS`] channels are held.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rtc::stun::message::{CLASS_INDICATION, METHOD_DATA, Message, MessageType, TransactionId};
use rtc::turn::proto::data::Data;
use rtc::turn::proto::peeraddr::PeerAddress;

use super::policy::PeerPolicy;
use super::wire;
use crate::sfu::types::FastMap;

pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Permissions and channels one allocation may hold (a call needs one or two).
pub const MAX_PERMISSIONS: usize = 32;
pub const MAX_CHANNELS: usize = 32;

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

/// Names one allocation for its whole life, and its relayed socket in the IO shell; never
/// reused (a new allocation on the same 5-tuple gets a new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocationId(pub u64);

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

/// Why a datagram is not relayed: the `reason` label of `turn_dropped`.
pub type DropReason = &'static str;

/// How a datagram from a peer reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToClient {
    /// The peer as the client knows it.
    pub peer: SocketAddr,
    /// ChannelData on this channel; a Data indication when `None`.
    pub channel: Option<u16>,
}

impl ToClient {
    /// The message carrying `data` to the client; streams (TCP, TLS) get padded ChannelData
    /// (RFC 8656 §12.5). `None` when it cannot be encoded.
    pub fn encode(&self, data: &[u8], stream: bool) -> Option<Vec<u8>> {
        match self.channel {
            Some(ch) => {
                let mut out = Vec::with_capacity(data.len() + 8);
                wire::write_channel_data(ch, data, stream, &mut out);
                Some(out)
            }
            None => data_indication(self.peer, data),
        }
    }
}

/// Looked up on every relayed datagram, both ways: foldhash maps (a few entries each).
struct State {
    permissions: FastMap<IpAddr, Instant>,
    channels: FastMap<u16, (SocketAddr, Instant)>,
    channel_of: FastMap<SocketAddr, u16>,
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

    /// Client → `peer`: where the datagram goes, once permission and budget allow it.
    fn route_to_peer(
        &mut self,
        peer: SocketAddr,
        len: usize,
        policy: &PeerPolicy,
        now: Instant,
    ) -> Result<SocketAddr, DropReason> {
        let Some(to) = policy.route(peer) else {
            return Err("peer_not_allowed");
        };
        if !self.permitted(peer.ip(), now) {
            return Err("no_permission");
        }
        if !self.bucket.take(len, now) {
            return Err("bandwidth");
        }
        if to != peer && !self.routes.contains(&(to, peer)) {
            self.routes.retain(|(local, _)| *local != to);
            self.routes.push((to, peer));
        }
        Ok(to)
    }
}

/// The relay state of one allocation, shared between the server and the shell's relay task.
#[derive(Clone)]
pub struct Relay(Arc<Mutex<State>>);

impl Relay {
    pub fn new(bytes_per_sec: u64, now: Instant) -> Self {
        Self(Arc::new(Mutex::new(State {
            permissions: FastMap::default(),
            channels: FastMap::default(),
            channel_of: FastMap::default(),
            routes: Vec::new(),
            bucket: TokenBucket::new(bytes_per_sec, now),
        })))
    }

    /// Forgets what expired by `now` (the allocation was refreshed).
    pub fn prune(&self, now: Instant) {
        self.0.lock().prune(now);
    }

    /// Installs or refreshes a permission for `ip`.
    pub fn permit(&self, ip: IpAddr, now: Instant) -> Result<(), BindError> {
        let mut st = self.0.lock();
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
    pub fn bind_channel(
        &self,
        channel: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<(), BindError> {
        let mut st = self.0.lock();
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

    /// Client → peer, from a Send indication of `len` bytes for `peer`: the address to send
    /// the data to.
    pub fn send_to_peer(
        &self,
        peer: SocketAddr,
        len: usize,
        policy: &PeerPolicy,
        now: Instant,
    ) -> Result<SocketAddr, DropReason> {
        self.0.lock().route_to_peer(peer, len, policy, now)
    }

    /// Client → peer, from a ChannelData message of `len` bytes on `channel`.
    pub fn channel_to_peer(
        &self,
        channel: u16,
        len: usize,
        policy: &PeerPolicy,
        now: Instant,
    ) -> Result<SocketAddr, DropReason> {
        let mut st = self.0.lock();
        let peer = match st.channels.get(&channel) {
            Some((peer, until)) if *until > now => *peer,
            _ => return Err("no_channel"),
        };
        st.route_to_peer(peer, len, policy, now)
    }

    /// Peer → client: `len` bytes arrived on the relayed socket from `from`.
    pub fn handle_peer_traffic(
        &self,
        from: SocketAddr,
        len: usize,
        now: Instant,
    ) -> Result<ToClient, DropReason> {
        let mut st = self.0.lock();
        let peer = st
            .routes
            .iter()
            .find(|(local, _)| *local == from)
            .map_or(from, |(_, peer)| *peer);
        if !st.permitted(peer.ip(), now) {
            return Err("no_permission");
        }
        if !st.bucket.take(len, now) {
            return Err("bandwidth");
        }
        let channel = st
            .channel_of
            .get(&peer)
            .copied()
            .filter(|ch| st.channels.get(ch).is_some_and(|(_, until)| *until > now));
        Ok(ToClient { peer, channel })
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

    #[test]
    fn channels_conflict_and_fill_up() {
        let now = Instant::now();
        let a = Relay::new(1_000_000, now);
        let p1: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let p2: SocketAddr = "10.0.0.2:1000".parse().unwrap();
        assert_eq!(a.bind_channel(0x4000, p1, now), Ok(()));
        assert_eq!(a.bind_channel(0x4000, p1, now), Ok(()), "refresh");
        assert_eq!(a.bind_channel(0x4000, p2, now), Err(BindError::Conflict));
        assert_eq!(a.bind_channel(0x4001, p1, now), Err(BindError::Conflict));
        for i in 1..MAX_CHANNELS as u16 {
            let peer = SocketAddr::new(p1.ip(), 2000 + i);
            assert_eq!(a.bind_channel(0x4000 + i, peer, now), Ok(()));
        }
        let extra = SocketAddr::new(p1.ip(), 9999);
        assert_eq!(a.bind_channel(0x4FFF, extra, now), Err(BindError::Full));
    }
}
