//! The TURN server as a pure state machine (RFC 8656 with long-term credentials, RFC 8489),
//! independent of the transport a message came on and of the sockets it leads to.
//!
//! The [`Server`] never reads a clock, binds, sends or spawns: every input carries the time it
//! happens at, and what must happen in the world comes back as values. The IO shell
//! ([`super::shell`]) feeds it and carries out what it returns:
//! - [`Server::handle_client_input`] (`&self`, per datagram): ChannelData and Send
//!   indications come back as [`ClientInput::ToPeer`] (the payload and where to send it);
//!   Binding, challenges (401, 438), CreatePermission and ChannelBind as a
//!   [`ClientInput::Reply`]; an authenticated Allocate or Refresh, which change the server's
//!   tables, as a [`ClientInput::Request`] for [`Server::handle_request`] (`&mut self`),
//!   which returns the answer. The split lets the shell relay, authenticate and answer under
//!   a shared lock, as it did before, and take the exclusive one only for those two;
//! - the relayed socket of an Allocate is bound through [`RelayBinder`] while the request is
//!   decided, since the answer carries the port the OS chose (or 508 when it cannot bind);
//! - the allocation's lifecycle comes out of [`Server::next_command`]: [`Command::StartRelay`]
//!   hands the shell the allocation's [`Relay`], which decides every datagram arriving on the
//!   relayed socket ([`Relay::handle_peer_traffic`]); [`Command::FreeRelay`] closes it;
//! - [`Server::poll_timeout`] is the next expiry, [`Server::handle_timeout`] acts on it.
//!
//! Invariants:
//! - every request but Binding is authenticated: no MESSAGE-INTEGRITY, a bad or expired
//!   username, or a wrong integrity → 401 with REALM and a fresh NONCE; a nonce that is not
//!   ours or too old → 438 with a fresh one;
//! - an allocation is changed only by requests from its own 5-tuple (437 from another one)
//!   carrying the username that created it (441 otherwise);
//! - permissions and channels are installed only towards peers [`PeerPolicy`] allows (403);
//! - allocations never exceed the quotas ([`super::quota`]): in all and kept for people in a
//!   consultation (508), per user and per client address (486);
//! - malformed messages are dropped and counted, never answered (no reflection);
//! - an allocation goes away only through `release` (Refresh with lifetime 0, expiry, the
//!   client's connection closing, shutdown), which gives its quota back, keeps the gauge
//!   right and queues exactly one [`Command::FreeRelay`] for the [`Command::StartRelay`]
//!   that created it.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::crypto::RTCCryptoProvider;
use rtc::stun::attributes::{
    ATTR_DATA, ATTR_EVEN_PORT, ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM,
    ATTR_REQUESTED_ADDRESS_FAMILY, ATTR_RESERVATION_TOKEN, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS,
    ATTR_XOR_RELAYED_ADDRESS,
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
    METHOD_SEND, Message, MessageType, Method, Setter, TransactionId,
};
use rtc::stun::textattrs::TextAttribute;
use rtc::stun::xoraddr::XorMappedAddress;
use rtc::turn::proto::PROTO_UDP;
use rtc::turn::proto::channum::ChannelNumber;
use rtc::turn::proto::lifetime::Lifetime;
use rtc::turn::proto::reqtrans::RequestedTransport;

use super::allocation::{AllocationId, BindError, FiveTuple, Relay};
use super::credentials::{CredentialError, Credentials};
use super::policy::PeerPolicy;
use super::quota::{Held, QuotaRefusal, Quotas};
use super::wire;
use crate::metrics::{Metrics, TurnRequestLabels};
use crate::sfu::types::FastMap;

#[cfg(test)]
mod tests;

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

/// When a request is handled: monotonic time for lifetimes and budgets, Unix seconds for
/// the expiry of credentials and nonces (they travel between nodes, so they are wall time).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    pub unix_secs: u64,
}

impl Now {
    /// `d` later on both clocks.
    pub fn after(self, d: Duration) -> Self {
        Self {
            instant: self.instant + d,
            unix_secs: self.unix_secs + d.as_secs(),
        }
    }
}

/// Binds an allocation's relayed UDP socket: the IO shell's part of an Allocate.
pub trait RelayBinder {
    /// Binds a socket for allocation `id` on an ephemeral port of the wildcard address of
    /// the family (`v6`) and returns the port; the shell keeps the socket for the
    /// [`Command::StartRelay`] of `id` that follows.
    fn bind(&mut self, id: AllocationId, v6: bool) -> std::io::Result<u16>;
}

/// What the shell must do for the server, in order.
#[derive(Clone)]
pub enum Command {
    /// An allocation was created: relay what arrives on the socket bound for `id` to
    /// `client`, as `relay` decides, and send through it what [`ClientInput::ToPeer`] names.
    /// A [`ClientInput::ToPeer`] to `own_media` is for relais's own media socket, which the
    /// shell may reach in-process, as if from `relayed` (see [`super::local`]).
    StartRelay {
        id: AllocationId,
        client: FiveTuple,
        relay: Relay,
        /// The relayed transport address given to the client.
        relayed: SocketAddr,
        /// Where [`PeerPolicy::route`] sends what this allocation relays to relais's media.
        own_media: SocketAddr,
    },
    /// The allocation `id` is gone: close its relayed socket.
    FreeRelay { id: AllocationId },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::StartRelay {
                id,
                client,
                relayed,
                own_media,
                ..
            } => f
                .debug_struct("StartRelay")
                .field("id", id)
                .field("client", client)
                .field("relayed", relayed)
                .field("own_media", own_media)
                .finish_non_exhaustive(),
            Command::FreeRelay { id } => f.debug_struct("FreeRelay").field("id", id).finish(),
        }
    }
}

/// An authenticated Allocate or Refresh, for [`Server::handle_request`].
pub struct Request {
    m: Message,
    auth: Authenticated,
}

/// What to do with a message from a client.
pub enum ClientInput<'a> {
    /// Send `payload` to `to` from the relayed socket of allocation `id`, and count it
    /// (`turn_packets_to_peer`, or dropped as `send_failed`).
    ToPeer {
        id: AllocationId,
        to: SocketAddr,
        payload: Cow<'a, [u8]>,
    },
    /// Send this answer back on the 5-tuple the message came on.
    Reply(Vec<u8>),
    /// Hand it to [`Server::handle_request`]: it changes the server's tables.
    Request(Request),
    /// Nothing: the message was dropped and counted.
    Dropped,
}

/// An allocation as the server knows it; its relay state is shared with the shell.
struct Allocation {
    id: AllocationId,
    /// The full REST username (`expiry:user`) that created it; later requests must match.
    username: String,
    /// The user part, for quotas.
    user: String,
    /// The relayed transport address given to the client.
    relayed: SocketAddr,
    /// The Allocate request that created it, to answer a retransmission identically.
    allocate_transaction: TransactionId,
    expires: Instant,
    relay: Relay,
}

pub struct Server {
    credentials: Credentials,
    crypto: Arc<dyn RTCCryptoProvider>,
    realm: String,
    relay_ips: RelayIps,
    policy: PeerPolicy,
    limits: Limits,
    in_session: InSession,
    /// Looked up on every datagram from a client.
    allocations: FastMap<FiveTuple, Allocation>,
    held: Held,
    next_id: u64,
    commands: VecDeque<Command>,
    metrics: Arc<Metrics>,
}

/// A request that passed authentication.
struct Authenticated {
    username: String,
    user: String,
    key: Vec<u8>,
}

/// A refused request: its error code and reason phrase.
struct Refusal {
    code: ErrorCode,
    reason: &'static str,
}

fn refuse(code: ErrorCode, reason: &'static str) -> Refusal {
    Refusal { code, reason }
}

type Attrs = Vec<Box<dyn Setter>>;

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

impl Server {
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
            allocations: FastMap::default(),
            held: Held::default(),
            next_id: 1,
            commands: VecDeque::new(),
            metrics,
        })
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    pub fn has_allocation(&self, tuple: &FiveTuple) -> bool {
        self.allocations.contains_key(tuple)
    }

    /// The next thing the shell must do.
    pub fn next_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) has something to do: the earliest
    /// allocation expiry. Permissions and channels need no timer: they are checked against
    /// the time of each datagram, and pruned when the allocation changes.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.allocations.values().map(|a| a.expires).min()
    }

    /// Releases every allocation that expired by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut expired: Vec<(AllocationId, FiveTuple)> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(t, a)| (a.id, *t))
            .collect();
        expired.sort_unstable_by_key(|(id, _)| *id);
        for (_, tuple) in expired {
            self.release(&tuple);
        }
    }

    /// The client's connection closed (TCP, TLS): its allocation goes (RFC 8656 §5).
    pub fn handle_client_closed(&mut self, tuple: &FiveTuple) {
        self.release(tuple);
    }

    /// Every allocation (shutdown).
    pub fn release_all(&mut self) {
        let mut all: Vec<(AllocationId, FiveTuple)> =
            self.allocations.iter().map(|(t, a)| (a.id, *t)).collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        for (_, tuple) in all {
            self.release(&tuple);
        }
    }

    /// Removes the allocation of `tuple` and queues the closing of its relay.
    fn release(&mut self, tuple: &FiveTuple) {
        let Some(a) = self.allocations.remove(tuple) else {
            return;
        };
        self.held.release(&a.user, tuple.client.ip());
        self.metrics.turn.allocations.dec();
        self.commands.push_back(Command::FreeRelay { id: a.id });
    }

    /// One message from a client, decided without changing the server's tables: relayed
    /// data, Binding, garbage, authentication, CreatePermission and ChannelBind (they change
    /// only the allocation's [`Relay`]). Allocate and Refresh, once authenticated, come back
    /// as [`ClientInput::Request`].
    pub fn handle_client_input<'a>(
        &self,
        data: &'a [u8],
        tuple: FiveTuple,
        now: Now,
    ) -> ClientInput<'a> {
        if wire::is_channel_data(data) {
            let Some((channel, payload)) = wire::parse_channel_data(data) else {
                return self.dropped("malformed");
            };
            let Some(a) = self.allocations.get(&tuple) else {
                return self.dropped("no_allocation");
            };
            return match a
                .relay
                .channel_to_peer(channel, payload.len(), &self.policy, now.instant)
            {
                Ok(to) => ClientInput::ToPeer {
                    id: a.id,
                    to,
                    payload: Cow::Borrowed(payload),
                },
                Err(reason) => self.dropped(reason),
            };
        }
        let mut m = Message::new();
        if m.unmarshal_binary(data).is_err() {
            return self.dropped("malformed");
        }
        match m.typ.class {
            CLASS_INDICATION if m.typ.method == METHOD_SEND => {
                self.send_indication(&tuple, m, now.instant)
            }
            CLASS_REQUEST if m.typ.method == METHOD_BINDING => {
                self.count_request(METHOD_BINDING, "ok");
                reply(respond(
                    &m,
                    CLASS_SUCCESS_RESPONSE,
                    vec![Box::new(mapped(tuple.client))],
                    None,
                ))
            }
            CLASS_REQUEST => self.request(tuple, m, now),
            _ => self.dropped("unexpected"),
        }
    }

    fn dropped(&self, reason: &'static str) -> ClientInput<'static> {
        self.metrics.turn.drop(reason);
        ClientInput::Dropped
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

    fn send_indication(
        &self,
        tuple: &FiveTuple,
        mut m: Message,
        now: Instant,
    ) -> ClientInput<'static> {
        let Some(a) = self.allocations.get(tuple) else {
            return self.dropped("no_allocation");
        };
        let attrs = &m.attributes.0;
        let peer = attrs
            .iter()
            .find(|attr| attr.typ == ATTR_XOR_PEER_ADDRESS)
            .and_then(|attr| wire::xor_address(&attr.value, &m));
        let data = attrs.iter().position(|attr| attr.typ == ATTR_DATA);
        let (Some(peer), Some(data)) = (peer, data) else {
            return self.dropped("malformed");
        };
        // The payload leaves the message without a copy.
        let payload = std::mem::take(&mut m.attributes.0[data].value);
        match a.relay.send_to_peer(peer, payload.len(), &self.policy, now) {
            Ok(to) => ClientInput::ToPeer {
                id: a.id,
                to,
                payload: Cow::Owned(payload),
            },
            Err(reason) => self.dropped(reason),
        }
    }

    /// Authenticates a request; answers what only reads the server's tables.
    fn request(&self, tuple: FiveTuple, mut m: Message, now: Now) -> ClientInput<'static> {
        let method = m.typ.method;
        let auth = match self.authenticate(&mut m, now.unix_secs) {
            Ok(auth) => auth,
            Err(refusal) => {
                self.count_request(method, code_label(refusal.code));
                return reply(self.challenge(&m, refusal, now.unix_secs));
            }
        };
        let outcome = match method {
            METHOD_ALLOCATE | METHOD_REFRESH => {
                return ClientInput::Request(Request { m, auth });
            }
            METHOD_CREATE_PERMISSION => self.create_permission(&tuple, &m, &auth, now.instant),
            METHOD_CHANNEL_BIND => self.channel_bind(&tuple, &m, &auth, now.instant),
            _ => Err(refuse(CODE_BAD_REQUEST, "Unsupported method")),
        };
        reply(self.answer(&m, &auth, outcome))
    }

    /// An authenticated Allocate or Refresh from
    /// [`handle_client_input`](Self::handle_client_input): decided and answered. `binder`
    /// binds the relayed socket of an Allocate.
    pub fn handle_request(
        &mut self,
        request: Request,
        tuple: FiveTuple,
        binder: &mut dyn RelayBinder,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let Request { m, auth } = request;
        let outcome = match m.typ.method {
            METHOD_ALLOCATE => self.allocate(tuple, &m, &auth, binder, now),
            METHOD_REFRESH => self.refresh(&tuple, &m, &auth, now),
            _ => Err(refuse(CODE_BAD_REQUEST, "Unsupported method")),
        };
        self.answer(&m, &auth, outcome)
    }

    /// The answer to an authenticated request, with MESSAGE-INTEGRITY; counted.
    fn answer(
        &self,
        m: &Message,
        auth: &Authenticated,
        outcome: Result<Attrs, Refusal>,
    ) -> Option<Vec<u8>> {
        let method = m.typ.method;
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
    }

    /// An error answer carrying REALM and a fresh NONCE (401, 438) or just the code (400).
    fn challenge(&self, m: &Message, refusal: Refusal, unix_secs: u64) -> Option<Vec<u8>> {
        let mut attrs: Attrs = vec![Box::new(error_attr(&refusal))];
        if refusal.code == CODE_UNAUTHORIZED || refusal.code == CODE_STALE_NONCE {
            attrs.push(Box::new(TextAttribute::new(ATTR_REALM, self.realm.clone())));
            attrs.push(Box::new(TextAttribute::new(
                ATTR_NONCE,
                self.credentials.nonce(unix_secs),
            )));
        }
        respond(m, CLASS_ERROR_RESPONSE, attrs, None)
    }

    fn authenticate(&self, m: &mut Message, now: u64) -> Result<Authenticated, Refusal> {
        if !m.contains(ATTR_MESSAGE_INTEGRITY) {
            return Err(refuse(CODE_UNAUTHORIZED, "Unauthorized"));
        }
        let text = |attr| TextAttribute::get_from_as(m, attr).map(|t| t.text);
        let (Ok(username), Ok(realm), Ok(nonce)) =
            (text(ATTR_USERNAME), text(ATTR_REALM), text(ATTR_NONCE))
        else {
            return Err(refuse(CODE_BAD_REQUEST, "Missing USERNAME, REALM or NONCE"));
        };
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
    fn owned(&self, tuple: &FiveTuple, auth: &Authenticated) -> Result<&Allocation, Refusal> {
        let a = self
            .allocations
            .get(tuple)
            .ok_or_else(|| refuse(CODE_ALLOC_MISMATCH, "Allocation Mismatch"))?;
        if a.username != auth.username {
            return Err(refuse(CODE_WRONG_CREDENTIALS, "Wrong Credentials"));
        }
        Ok(a)
    }

    fn allocate(
        &mut self,
        tuple: FiveTuple,
        m: &Message,
        auth: &Authenticated,
        binder: &mut dyn RelayBinder,
        now: Instant,
    ) -> Result<Attrs, Refusal> {
        if let Some(existing) = self.allocations.get(&tuple) {
            // A retransmission gets the same answer; anything else on a taken 5-tuple is 437.
            if existing.allocate_transaction == m.transaction_id
                && existing.username == auth.username
            {
                return Ok(allocated(existing.relayed, DEFAULT_LIFETIME, tuple.client));
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
        let id = AllocationId(self.next_id);
        self.next_id += 1;
        let port = match binder.bind(id, family_v6) {
            Ok(port) => port,
            Err(e) => {
                tracing::warn!(error = %e, "TURN: cannot bind a relayed socket");
                self.held.release(&auth.user, tuple.client.ip());
                return Err(refuse(CODE_INSUFFICIENT_CAPACITY, "Insufficient Capacity"));
            }
        };
        let relayed = SocketAddr::new(relay_ip, port);
        let relay = Relay::new(self.limits.bytes_per_sec, now);
        self.allocations.insert(
            tuple,
            Allocation {
                id,
                username: auth.username.clone(),
                user: auth.user.clone(),
                relayed,
                allocate_transaction: m.transaction_id,
                expires: now + lifetime,
                relay: relay.clone(),
            },
        );
        self.metrics.turn.allocations.inc();
        self.commands.push_back(Command::StartRelay {
            id,
            client: tuple,
            relay,
            relayed,
            own_media: self.policy.media_local(relay_ip),
        });
        tracing::debug!(
            transport = tuple.transport.as_str(),
            "TURN allocation created"
        );
        Ok(allocated(relayed, lifetime, tuple.client))
    }

    /// Counts an allocation for `user` from `client` against the quotas before it exists.
    fn reserve(&mut self, user: &str, client: IpAddr) -> Result<(), Refusal> {
        let in_session = (self.in_session)(user);
        self.held
            .reserve(&self.limits.quotas, user, client, in_session)
            .map_err(|q| match q {
                QuotaRefusal::Full | QuotaRefusal::KeptForSessions => {
                    refuse(CODE_INSUFFICIENT_CAPACITY, "Insufficient Capacity")
                }
                QuotaRefusal::User | QuotaRefusal::Address => {
                    refuse(CODE_ALLOC_QUOTA_REACHED, "Allocation Quota Reached")
                }
            })
    }

    fn refresh(
        &mut self,
        tuple: &FiveTuple,
        m: &Message,
        auth: &Authenticated,
        now: Instant,
    ) -> Result<Attrs, Refusal> {
        self.owned(tuple, auth)?;
        let mut requested = Lifetime::default();
        let lifetime = match requested.get_from(m) {
            Ok(()) if requested.0.is_zero() => Duration::ZERO,
            _ => requested_lifetime(m),
        };
        if lifetime.is_zero() {
            self.release(tuple);
        } else if let Some(a) = self.allocations.get_mut(tuple) {
            a.expires = now + lifetime;
            a.relay.prune(now);
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
        now: Instant,
    ) -> Result<Attrs, Refusal> {
        let a = self.owned(tuple, auth)?;
        for peer in self.peers(m, a.relayed)? {
            a.relay
                .permit(peer.ip(), now)
                .map_err(|_| refuse(CODE_INSUFFICIENT_CAPACITY, "Too many permissions"))?;
        }
        Ok(Vec::new())
    }

    fn channel_bind(
        &self,
        tuple: &FiveTuple,
        m: &Message,
        auth: &Authenticated,
        now: Instant,
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
        a.relay
            .bind_channel(channel.0, peer, now)
            .map_err(|e| match e {
                BindError::Conflict => refuse(CODE_BAD_REQUEST, "Channel or peer already bound"),
                BindError::Full => refuse(CODE_INSUFFICIENT_CAPACITY, "Too many channels"),
            })?;
        Ok(Vec::new())
    }
}

fn reply(answer: Option<Vec<u8>>) -> ClientInput<'static> {
    match answer {
        Some(answer) => ClientInput::Reply(answer),
        None => ClientInput::Dropped,
    }
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

fn allocated(relayed: SocketAddr, lifetime: Duration, client: SocketAddr) -> Attrs {
    vec![
        Box::new(RelayedAddr(relayed)),
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
