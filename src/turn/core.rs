//! The TURN server's state and request handling, independent of the transport a message
//! came on (RFC 8656 with long-term credentials, RFC 8489).
//!
//! Invariants:
//! - every request but Binding is authenticated: no MESSAGE-INTEGRITY, a bad or expired
//!   username, or a wrong integrity → 401 with REALM and a fresh NONCE; a nonce that is not
//!   ours or too old → 438 with a fresh one;
//! - an allocation is changed only by requests from its own 5-tuple carrying the username
//!   that created it (441 otherwise);
//! - permissions and channels are installed only towards peers [`PeerPolicy`] allows (403);
//! - allocations never exceed the quotas ([`super::quota`]): in all and kept for people in a
//!   consultation (508), per user and per client address (486);
//! - malformed messages are dropped and counted, never answered (no reflection);
//! - [`Core::release`] is the one way an allocation goes away; it keeps counts and gauge right.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use rtc::crypto::RTCCryptoProvider;
use rtc::stun::attributes::{
    ATTR_EVEN_PORT, ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_REQUESTED_ADDRESS_FAMILY,
    ATTR_RESERVATION_TOKEN, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS, ATTR_XOR_RELAYED_ADDRESS,
};
use rtc::stun::error_code::{
    CODE_ADDR_FAMILY_NOT_SUPPORTED, CODE_ALLOC_MISMATCH, CODE_ALLOC_QUOTA_REACHED,
    CODE_BAD_REQUEST, CODE_FORBIDDEN, CODE_INSUFFICIENT_CAPACITY, CODE_PEER_ADDR_FAMILY_MISMATCH,
    CODE_STALE_NONCE, CODE_UNAUTHORIZED, CODE_UNSUPPORTED_TRANS_PROTO, CODE_WRONG_CREDENTIALS,
    ErrorCode, ErrorCodeAttribute,
};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter,
    METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH,
    METHOD_SEND, Message, MessageType, Method, Setter,
};
use rtc::stun::textattrs::TextAttribute;
use rtc::stun::xoraddr::XorMappedAddress;
use rtc::turn::proto::PROTO_UDP;
use rtc::turn::proto::channum::ChannelNumber;
use rtc::turn::proto::data::Data;
use rtc::turn::proto::lifetime::Lifetime;
use rtc::turn::proto::reqtrans::RequestedTransport;

use super::allocation::{Allocation, BindError, ClientSink, FiveTuple, Relayed};
use super::credentials::{CredentialError, Credentials};
use super::policy::PeerPolicy;
use super::quota::{Held, QuotaRefusal, Quotas};
use super::wire;
use crate::metrics::{Metrics, TurnRequestLabels};

pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// Quotas and the relayed bandwidth per allocation.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub quotas: Quotas,
    pub bytes_per_sec: u64,
}

/// Whether a TURN user (`{role}-{id}`) is in a live consultation on this node.
pub type InSession = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The relayed addresses handed out: one per family the server relays on.
#[derive(Debug, Clone, Copy)]
pub struct RelayIps {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

#[derive(Default)]
struct Registry {
    allocations: HashMap<FiveTuple, Arc<Allocation>>,
    held: Held,
}

pub struct Core {
    credentials: Credentials,
    crypto: Arc<dyn RTCCryptoProvider>,
    realm: String,
    relay_ips: RelayIps,
    policy: PeerPolicy,
    limits: Limits,
    in_session: InSession,
    registry: RwLock<Registry>,
    pub metrics: Arc<Metrics>,
}

/// A request that passed authentication.
struct Authenticated {
    username: String,
    user: String,
    key: Vec<u8>,
}

/// A refused request: its error code, and whether to answer with a challenge.
struct Refusal {
    code: ErrorCode,
    reason: &'static str,
}

fn refuse(code: ErrorCode, reason: &'static str) -> Refusal {
    Refusal { code, reason }
}

type Attrs = Vec<Box<dyn Setter>>;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn method_name(m: Method) -> &'static str {
    match m {
        METHOD_ALLOCATE => "allocate",
        METHOD_REFRESH => "refresh",
        METHOD_CREATE_PERMISSION => "create_permission",
        METHOD_CHANNEL_BIND => "channel_bind",
        METHOD_BINDING => "binding",
        _ => "other",
    }
}

fn code_label(code: ErrorCode) -> &'static str {
    match code.0 {
        400 => "400",
        401 => "401",
        403 => "403",
        437 => "437",
        438 => "438",
        440 => "440",
        441 => "441",
        442 => "442",
        443 => "443",
        486 => "486",
        508 => "508",
        _ => "other",
    }
}

impl Core {
    pub fn new(
        credentials: Credentials,
        realm: String,
        relay_ips: RelayIps,
        policy: PeerPolicy,
        limits: Limits,
        in_session: InSession,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let crypto = rtc::crypto::default_provider()
            .map_err(|e| anyhow::anyhow!("TURN crypto provider: {e}"))?;
        Ok(Self {
            credentials,
            crypto,
            realm,
            relay_ips,
            policy,
            limits,
            in_session,
            registry: RwLock::new(Registry::default()),
            metrics,
        })
    }

    pub fn allocation_count(&self) -> usize {
        self.registry.read().allocations.len()
    }

    pub fn has_allocation(&self, tuple: &FiveTuple) -> bool {
        self.registry.read().allocations.contains_key(tuple)
    }

    fn lookup(&self, tuple: &FiveTuple) -> Option<Arc<Allocation>> {
        self.registry.read().allocations.get(tuple).cloned()
    }

    /// Removes the allocation of `tuple` (if it is `only`, when given) and stops its relay.
    pub fn release(&self, tuple: &FiveTuple, only: Option<&Arc<Allocation>>) {
        let removed = {
            let mut reg = self.registry.write();
            match reg.allocations.get(tuple) {
                Some(a) if only.is_none_or(|o| Arc::ptr_eq(a, o)) => {}
                _ => return,
            }
            let a = reg.allocations.remove(tuple).expect("present");
            reg.held.release(&a.user, a.tuple.client.ip());
            a
        };
        self.metrics.turn.allocations.dec();
        removed.close();
    }

    /// Every allocation (shutdown).
    pub fn release_all(&self) {
        let tuples: Vec<FiveTuple> = self.registry.read().allocations.keys().copied().collect();
        for t in tuples {
            self.release(&t, None);
        }
    }

    /// Handles one message from a client; returns the response to send back, if any.
    pub fn handle(
        self: &Arc<Self>,
        tuple: FiveTuple,
        sink: &ClientSink,
        data: &[u8],
    ) -> Option<Vec<u8>> {
        if wire::is_channel_data(data) {
            let Some((channel, payload)) = wire::parse_channel_data(data) else {
                self.metrics.turn.drop("malformed");
                return None;
            };
            match self.lookup(&tuple) {
                Some(a) => self.count(
                    a.send_on_channel(channel, payload, &self.policy),
                    payload.len(),
                ),
                None => self.metrics.turn.drop("no_allocation"),
            }
            return None;
        }
        let mut m = Message::new();
        if m.unmarshal_binary(data).is_err() {
            self.metrics.turn.drop("malformed");
            return None;
        }
        match m.typ.class {
            CLASS_INDICATION if m.typ.method == METHOD_SEND => {
                self.send_indication(&tuple, &m);
                None
            }
            CLASS_REQUEST if m.typ.method == METHOD_BINDING => {
                self.count_request(METHOD_BINDING, "ok");
                respond(
                    &m,
                    CLASS_SUCCESS_RESPONSE,
                    vec![Box::new(mapped(tuple.client))],
                    None,
                )
            }
            CLASS_REQUEST => Some(self.request(tuple, sink, &mut m)),
            _ => {
                self.metrics.turn.drop("unexpected");
                None
            }
        }
    }

    fn count(&self, r: Relayed, len: usize) {
        match r {
            Relayed::Sent => {
                self.metrics.turn.packets_to_peer.inc();
                self.metrics.turn.bytes_relayed.inc_by(len as u64);
            }
            Relayed::Dropped(reason) => self.metrics.turn.drop(reason),
        }
    }

    fn count_request(&self, method: Method, outcome: &'static str) {
        self.metrics
            .turn
            .requests
            .get_or_create(&TurnRequestLabels {
                method: method_name(method),
                outcome,
            })
            .inc();
    }

    fn send_indication(&self, tuple: &FiveTuple, m: &Message) {
        let Some(a) = self.lookup(tuple) else {
            self.metrics.turn.drop("no_allocation");
            return;
        };
        let peer = m
            .get(ATTR_XOR_PEER_ADDRESS)
            .ok()
            .and_then(|v| wire::xor_address(&v, m));
        let mut data = Data::default();
        match (peer, data.get_from(m)) {
            (Some(peer), Ok(())) => {
                self.count(a.send_to_peer(peer, &data.0, &self.policy), data.0.len())
            }
            _ => self.metrics.turn.drop("malformed"),
        }
    }

    fn request(self: &Arc<Self>, tuple: FiveTuple, sink: &ClientSink, m: &mut Message) -> Vec<u8> {
        let method = m.typ.method;
        let auth = match self.authenticate(m) {
            Ok(auth) => auth,
            Err(refusal) => {
                self.count_request(method, code_label(refusal.code));
                return self.challenge(m, refusal);
            }
        };
        let outcome = match method {
            METHOD_ALLOCATE => self.allocate(tuple, sink, m, &auth),
            METHOD_REFRESH => self.refresh(&tuple, m, &auth),
            METHOD_CREATE_PERMISSION => self.create_permission(&tuple, m, &auth),
            METHOD_CHANNEL_BIND => self.channel_bind(&tuple, m, &auth),
            _ => Err(refuse(CODE_BAD_REQUEST, "Unsupported method")),
        };
        let integrity = MessageIntegrity::new_raw_integrity_with_provider(
            auth.key.clone(),
            self.crypto.crypto(),
        );
        match outcome {
            Ok(attrs) => {
                self.count_request(method, "ok");
                respond(m, CLASS_SUCCESS_RESPONSE, attrs, Some(&integrity))
            }
            Err(refusal) => {
                self.count_request(method, code_label(refusal.code));
                respond(
                    m,
                    CLASS_ERROR_RESPONSE,
                    vec![Box::new(error_attr(&refusal))],
                    Some(&integrity),
                )
            }
        }
        .unwrap_or_default()
    }

    /// An error answer carrying REALM and a fresh NONCE (401, 438) or just the code (400).
    fn challenge(&self, m: &Message, refusal: Refusal) -> Vec<u8> {
        let mut attrs: Attrs = vec![Box::new(error_attr(&refusal))];
        if refusal.code == CODE_UNAUTHORIZED || refusal.code == CODE_STALE_NONCE {
            attrs.push(Box::new(TextAttribute::new(ATTR_REALM, self.realm.clone())));
            attrs.push(Box::new(TextAttribute::new(
                ATTR_NONCE,
                self.credentials.nonce(unix_now()),
            )));
        }
        respond(m, CLASS_ERROR_RESPONSE, attrs, None).unwrap_or_default()
    }

    fn authenticate(&self, m: &mut Message) -> Result<Authenticated, Refusal> {
        if !m.contains(ATTR_MESSAGE_INTEGRITY) {
            return Err(refuse(CODE_UNAUTHORIZED, "Unauthorized"));
        }
        let text = |attr| TextAttribute::get_from_as(m, attr).map(|t| t.text);
        let (Ok(username), Ok(realm), Ok(nonce)) =
            (text(ATTR_USERNAME), text(ATTR_REALM), text(ATTR_NONCE))
        else {
            return Err(refuse(CODE_BAD_REQUEST, "Missing USERNAME, REALM or NONCE"));
        };
        let now = unix_now();
        if self.credentials.check_nonce(&nonce, now).is_err() {
            return Err(refuse(CODE_STALE_NONCE, "Stale Nonce"));
        }
        if realm != self.realm {
            return Err(refuse(CODE_UNAUTHORIZED, "Unauthorized"));
        }
        let user = match self.credentials.check_username(&username, now) {
            Ok(user) => user.to_string(),
            Err(CredentialError::Expired) => {
                self.metrics.turn.drop("credentials_expired");
                return Err(refuse(CODE_UNAUTHORIZED, "Credentials expired"));
            }
            Err(CredentialError::Malformed) => {
                self.metrics.turn.drop("credentials_malformed");
                return Err(refuse(CODE_UNAUTHORIZED, "Unauthorized"));
            }
        };
        let password = self.credentials.password(&username);
        let key = MessageIntegrity::long_term_integrity_key(
            username.clone(),
            realm,
            password,
            self.crypto.crypto(),
        )
        .map_err(|_| refuse(CODE_UNAUTHORIZED, "Unauthorized"))?;
        if MessageIntegrity::check(m, &key, self.crypto.crypto()).is_err() {
            self.metrics.turn.drop("integrity");
            return Err(refuse(CODE_UNAUTHORIZED, "Unauthorized"));
        }
        Ok(Authenticated {
            username,
            user,
            key,
        })
    }

    /// The allocation of `tuple`, if `auth` may touch it.
    fn owned(&self, tuple: &FiveTuple, auth: &Authenticated) -> Result<Arc<Allocation>, Refusal> {
        let a = self
            .lookup(tuple)
            .ok_or_else(|| refuse(CODE_ALLOC_MISMATCH, "Allocation Mismatch"))?;
        if a.username != auth.username {
            return Err(refuse(CODE_WRONG_CREDENTIALS, "Wrong Credentials"));
        }
        Ok(a)
    }

    fn allocate(
        self: &Arc<Self>,
        tuple: FiveTuple,
        sink: &ClientSink,
        m: &Message,
        auth: &Authenticated,
    ) -> Result<Attrs, Refusal> {
        if let Some(existing) = self.lookup(&tuple) {
            // A retransmission gets the same answer; anything else on a taken 5-tuple is 437.
            if existing.allocate_transaction == m.transaction_id
                && existing.username == auth.username
            {
                return Ok(allocated(&existing, DEFAULT_LIFETIME, tuple.client));
            }
            return Err(refuse(CODE_ALLOC_MISMATCH, "Allocation Mismatch"));
        }
        let mut transport = RequestedTransport::default();
        if transport.get_from(m).is_err() {
            return Err(refuse(CODE_BAD_REQUEST, "Missing REQUESTED-TRANSPORT"));
        }
        if transport.protocol != PROTO_UDP {
            return Err(refuse(
                CODE_UNSUPPORTED_TRANS_PROTO,
                "Unsupported Transport Protocol",
            ));
        }
        if m.contains(ATTR_RESERVATION_TOKEN) || m.contains(ATTR_EVEN_PORT) {
            return Err(refuse(
                CODE_INSUFFICIENT_CAPACITY,
                "Port reservation not offered",
            ));
        }
        let family_v6 = match m.get(ATTR_REQUESTED_ADDRESS_FAMILY) {
            Ok(v) if v.first() == Some(&0x02) => true,
            Ok(v) if v.first() == Some(&0x01) => false,
            Ok(_) => return Err(refuse(CODE_ADDR_FAMILY_NOT_SUPPORTED, "Bad address family")),
            Err(_) => false,
        };
        let relay_ip: IpAddr = match (family_v6, self.relay_ips) {
            (false, RelayIps { v4: Some(ip), .. }) => ip.into(),
            (true, RelayIps { v6: Some(ip), .. }) => ip.into(),
            _ => {
                return Err(refuse(
                    CODE_ADDR_FAMILY_NOT_SUPPORTED,
                    "Address Family not Supported",
                ));
            }
        };
        let lifetime = requested_lifetime(m);

        self.reserve(&auth.user, tuple.client.ip())?;
        let bind: SocketAddr = if family_v6 {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = match bind_relay(bind) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "TURN: cannot bind a relayed socket");
                self.unreserve(&auth.user, tuple.client.ip());
                return Err(refuse(CODE_INSUFFICIENT_CAPACITY, "Insufficient Capacity"));
            }
        };
        let port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
        let allocation = Arc::new(Allocation::new(
            tuple,
            auth.username.clone(),
            auth.user.clone(),
            m.transaction_id,
            socket,
            SocketAddr::new(relay_ip, port),
            sink.clone(),
            lifetime,
            self.limits.bytes_per_sec,
        ));
        self.registry
            .write()
            .allocations
            .insert(tuple, allocation.clone());
        self.metrics.turn.allocations.inc();
        let core = self.clone();
        let relay = allocation.clone();
        tokio::spawn(async move {
            relay.clone().run_relay(core.metrics.clone()).await;
            core.release(&relay.tuple, Some(&relay));
        });
        tracing::debug!(
            transport = tuple.transport.as_str(),
            "TURN allocation created"
        );
        Ok(allocated(&allocation, lifetime, tuple.client))
    }

    /// Counts an allocation for `user` from `client` against the quotas before it exists.
    fn reserve(&self, user: &str, client: IpAddr) -> Result<(), Refusal> {
        let in_session = (self.in_session)(user);
        let r = self
            .registry
            .write()
            .held
            .reserve(&self.limits.quotas, user, client, in_session);
        r.map_err(|q| match q {
            QuotaRefusal::Full | QuotaRefusal::KeptForSessions => {
                refuse(CODE_INSUFFICIENT_CAPACITY, "Insufficient Capacity")
            }
            QuotaRefusal::User | QuotaRefusal::Address => {
                refuse(CODE_ALLOC_QUOTA_REACHED, "Allocation Quota Reached")
            }
        })
    }

    fn unreserve(&self, user: &str, client: IpAddr) {
        self.registry.write().held.release(user, client);
    }

    fn refresh(
        &self,
        tuple: &FiveTuple,
        m: &Message,
        auth: &Authenticated,
    ) -> Result<Attrs, Refusal> {
        let a = self.owned(tuple, auth)?;
        let mut requested = Lifetime::default();
        let lifetime = match requested.get_from(m) {
            Ok(()) if requested.0.is_zero() => Duration::ZERO,
            _ => requested_lifetime(m),
        };
        if lifetime.is_zero() {
            self.release(tuple, Some(&a));
        } else {
            a.refresh(lifetime);
        }
        Ok(vec![Box::new(Lifetime(lifetime))])
    }

    /// The XOR-PEER-ADDRESS attributes of `m`, each checked against the policy.
    fn peers(&self, m: &Message, relayed: SocketAddr) -> Result<Vec<SocketAddr>, Refusal> {
        let mut peers = Vec::new();
        for attr in m
            .attributes
            .0
            .iter()
            .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
        {
            let peer = wire::xor_address(&attr.value, m)
                .ok_or_else(|| refuse(CODE_BAD_REQUEST, "Bad XOR-PEER-ADDRESS"))?;
            if peer.is_ipv4() != relayed.is_ipv4() {
                return Err(refuse(
                    CODE_PEER_ADDR_FAMILY_MISMATCH,
                    "Peer Address Family Mismatch",
                ));
            }
            if !self.policy.ip_allowed(peer.ip()) {
                self.metrics.turn.drop("peer_forbidden");
                return Err(refuse(
                    CODE_FORBIDDEN,
                    "Forbidden: not a relais media address",
                ));
            }
            peers.push(peer);
        }
        if peers.is_empty() {
            return Err(refuse(CODE_BAD_REQUEST, "Missing XOR-PEER-ADDRESS"));
        }
        Ok(peers)
    }

    fn create_permission(
        &self,
        tuple: &FiveTuple,
        m: &Message,
        auth: &Authenticated,
    ) -> Result<Attrs, Refusal> {
        let a = self.owned(tuple, auth)?;
        for peer in self.peers(m, a.relayed)? {
            a.permit(peer.ip())
                .map_err(|_| refuse(CODE_INSUFFICIENT_CAPACITY, "Too many permissions"))?;
        }
        Ok(Vec::new())
    }

    fn channel_bind(
        &self,
        tuple: &FiveTuple,
        m: &Message,
        auth: &Authenticated,
    ) -> Result<Attrs, Refusal> {
        let a = self.owned(tuple, auth)?;
        let mut channel = ChannelNumber::default();
        if channel.get_from(m).is_err()
            || !(wire::MIN_CHANNEL..=wire::MAX_CHANNEL).contains(&channel.0)
        {
            return Err(refuse(CODE_BAD_REQUEST, "Bad CHANNEL-NUMBER"));
        }
        let peer = match self.peers(m, a.relayed)?.as_slice() {
            [peer] => *peer,
            _ => return Err(refuse(CODE_BAD_REQUEST, "One XOR-PEER-ADDRESS expected")),
        };
        if self.policy.route(peer).is_none() {
            self.metrics.turn.drop("peer_forbidden");
            return Err(refuse(
                CODE_FORBIDDEN,
                "Forbidden: not a relais media address",
            ));
        }
        a.bind_channel(channel.0, peer).map_err(|e| match e {
            BindError::Conflict => refuse(CODE_BAD_REQUEST, "Channel or peer already bound"),
            BindError::Full => refuse(CODE_INSUFFICIENT_CAPACITY, "Too many channels"),
        })?;
        Ok(Vec::new())
    }
}

fn bind_relay(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket)
}

/// LIFETIME asked for, within bounds (RFC 8656 §7.2: at least the default).
fn requested_lifetime(m: &Message) -> Duration {
    let mut l = Lifetime::default();
    match l.get_from(m) {
        Ok(()) => l.0.clamp(DEFAULT_LIFETIME, MAX_LIFETIME),
        Err(_) => DEFAULT_LIFETIME,
    }
}

fn mapped(addr: SocketAddr) -> XorMappedAddress {
    XorMappedAddress {
        ip: addr.ip(),
        port: addr.port(),
    }
}

struct RelayedAddr(SocketAddr);

impl Setter for RelayedAddr {
    fn add_to(&self, m: &mut Message) -> rtc::shared::error::Result<()> {
        mapped(self.0).add_to_as(m, ATTR_XOR_RELAYED_ADDRESS)
    }
}

fn allocated(a: &Allocation, lifetime: Duration, client: SocketAddr) -> Attrs {
    vec![
        Box::new(RelayedAddr(a.relayed)),
        Box::new(Lifetime(lifetime)),
        Box::new(mapped(client)),
    ]
}

fn error_attr(r: &Refusal) -> ErrorCodeAttribute {
    ErrorCodeAttribute {
        code: r.code,
        reason: r.reason.as_bytes().to_vec(),
    }
}

/// A response to `request` of `class`, with `attrs`, MESSAGE-INTEGRITY when a key is given,
/// and FINGERPRINT.
fn respond(
    request: &Message,
    class: rtc::stun::message::MessageClass,
    attrs: Attrs,
    integrity: Option<&MessageIntegrity<'_>>,
) -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.set_type(MessageType::new(request.typ.method, class));
    m.transaction_id = request.transaction_id;
    m.write_header();
    for a in &attrs {
        a.add_to(&mut m).ok()?;
    }
    if let Some(i) = integrity {
        i.add_to(&mut m).ok()?;
    }
    FINGERPRINT.add_to(&mut m).ok()?;
    Some(m.raw)
}
