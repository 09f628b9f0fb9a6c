//! The server driven by hand: messages built with `rtc::stun`, a binder that hands out
//! ports without sockets, and a clock that moves only when a test moves it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rtc::stun::attributes::{ATTR_CHANNEL_NUMBER, ATTR_XORMAPPED_ADDRESS};
use rtc::stun::message::{CLASS_SUCCESS_RESPONSE, METHOD_DATA};
use rtc::turn::proto::data::Data;
use rtc::turn::proto::peeraddr::PeerAddress;
use rtc::turn::proto::{PROTO_TCP, PROTO_UDP};

use super::*;
use crate::metrics::ReasonLabels;
use crate::turn::allocation::{CHANNEL_LIFETIME, PERMISSION_LIFETIME, ToClient, Transport};
use crate::turn::credentials::NONCE_TTL_SECS;

const SECRET: &str = "s3cret";
const REALM: &str = "relais";
const SERVER: &str = "198.51.100.10:3478";
const PUBLIC_IP: &str = "198.51.100.10";
/// relais's own media address (allowed), and where the relay really sends for it.
const MEDIA: &str = "203.0.113.5:3479";
const MEDIA_LOCAL: &str = "127.0.0.1:3479";
/// An extra peer IP (`turn.extra_peer_ips`): any port.
const EXTRA: &str = "10.0.0.2:5000";
/// Not a relais address.
const OUTSIDE: &str = "192.0.2.1:5000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn quotas() -> Quotas {
    Quotas {
        max_allocations: 100,
        max_allocations_per_user: 10,
        max_allocations_per_address: 10,
        reserved_for_sessions: 0,
    }
}

/// Hands out ports 50000, 50001…, or fails when told to.
#[derive(Default)]
struct Ports {
    fail: bool,
    bound: Vec<(AllocationId, bool)>,
}

impl RelayBinder for Ports {
    fn bind(&mut self, id: AllocationId, v6: bool) -> std::io::Result<u16> {
        if self.fail {
            return Err(std::io::Error::other("no port left"));
        }
        self.bound.push((id, v6));
        Ok(50_000 + self.bound.len() as u16 - 1)
    }
}

struct Harness {
    server: Server,
    metrics: Arc<Metrics>,
    ports: Ports,
    now: Now,
    /// Users in a live consultation.
    in_session: Arc<Mutex<HashSet<String>>>,
    /// The relays handed out by `StartRelay`, as the shell keeps them.
    relays: HashMap<AllocationId, Relay>,
    /// Every command, in order.
    commands: Vec<Command>,
}

impl Harness {
    fn new() -> Self {
        Self::with(quotas(), 1_000_000)
    }

    fn with(quotas: Quotas, bytes_per_sec: u64) -> Self {
        let metrics = Arc::new(Metrics::new());
        let in_session = Arc::new(Mutex::new(HashSet::new()));
        let sessions = in_session.clone();
        let server = Server::new(
            Credentials::new(SECRET),
            REALM.into(),
            RelayIps {
                v4: Some(PUBLIC_IP.parse().unwrap()),
                v6: None,
            },
            PeerPolicy::new(
                vec![addr(MEDIA)],
                addr("0.0.0.0:3479"),
                vec![addr(EXTRA).ip()],
            ),
            Limits {
                quotas,
                bytes_per_sec,
            },
            Arc::new(move |user: &str| sessions.lock().unwrap().contains(user)),
            metrics.clone(),
        )
        .unwrap();
        Self {
            server,
            metrics,
            ports: Ports::default(),
            now: Now {
                instant: Instant::now(),
                unix_secs: 1_700_000_000,
            },
            in_session,
            relays: HashMap::new(),
            commands: Vec::new(),
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now.after(d);
    }

    fn client(&self, user: &str, from: &str) -> Client {
        self.client_until(user, from, self.now.unix_secs + 86_400)
    }

    fn client_until(&self, user: &str, from: &str, expiry: u64) -> Client {
        let (username, password) = Credentials::new(SECRET).issue(user, expiry);
        Client {
            tuple: FiveTuple {
                transport: Transport::Udp,
                client: addr(from),
                server: addr(SERVER),
            },
            username,
            password,
            nonce: None,
        }
    }

    /// Feeds `bytes` from `tuple` as the shell does; returns the answer, if any.
    fn feed(&mut self, tuple: FiveTuple, bytes: &[u8]) -> Option<Message> {
        let answer = match self.server.handle_client_input(bytes, tuple, self.now) {
            ClientInput::Request(request) => {
                self.server
                    .handle_request(request, tuple, &mut self.ports, self.now.instant)
            }
            ClientInput::Reply(answer) => Some(answer),
            ClientInput::ToPeer { .. } => panic!("a relayed datagram, not a request"),
            ClientInput::Dropped => None,
        };
        self.drain();
        answer.map(|bytes| decode(&bytes))
    }

    fn drain(&mut self) {
        while let Some(c) = self.server.next_command() {
            if let Command::StartRelay { id, relay, .. } = &c {
                self.relays.insert(*id, relay.clone());
            }
            self.commands.push(c);
        }
    }

    /// Data from a client: where the server says to send it, or `None` (dropped).
    fn relay_from(
        &self,
        tuple: FiveTuple,
        bytes: &[u8],
    ) -> Option<(AllocationId, SocketAddr, Vec<u8>)> {
        match self.server.handle_client_input(bytes, tuple, self.now) {
            ClientInput::ToPeer { id, to, payload } => Some((id, to, payload.into_owned())),
            ClientInput::Dropped => None,
            ClientInput::Reply(_) | ClientInput::Request(_) => panic!("data got an answer"),
        }
    }

    /// A request, answering a 401/438 challenge as a client does.
    fn request(&mut self, c: &mut Client, method: Method, attrs: impl Fn() -> Attrs) -> Message {
        let first = c.build(method, attrs(), true);
        let answer = self.feed(c.tuple, &first.raw).expect("an answer");
        if matches!(code(&answer), Some(401 | 438)) && c.nonce.is_none()
            || code(&answer) == Some(438)
        {
            c.nonce = text(&answer, ATTR_NONCE);
            let again = c.build(method, attrs(), true);
            return self.feed(c.tuple, &again.raw).expect("an answer");
        }
        answer
    }

    fn allocate(&mut self, c: &mut Client) -> Message {
        self.request(c, METHOD_ALLOCATE, || {
            vec![Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            })]
        })
    }

    fn create_permission(&mut self, c: &mut Client, peer: &str) -> Message {
        let peer = addr(peer);
        self.request(c, METHOD_CREATE_PERMISSION, move || {
            vec![Box::new(PeerAttr(peer))]
        })
    }

    fn channel_bind(&mut self, c: &mut Client, channel: u16, peer: &str) -> Message {
        let peer = addr(peer);
        self.request(c, METHOD_CHANNEL_BIND, move || {
            vec![Box::new(ChannelNumber(channel)), Box::new(PeerAttr(peer))]
        })
    }

    fn refresh(&mut self, c: &mut Client, lifetime: Duration) -> Message {
        self.request(c, METHOD_REFRESH, move || {
            vec![Box::new(Lifetime(lifetime))]
        })
    }

    /// The relay of the (only or last) allocation of `c`.
    fn relay_of(&self, c: &Client) -> Relay {
        self.commands
            .iter()
            .rev()
            .find_map(|cmd| match cmd {
                Command::StartRelay { id, client, .. } if *client == c.tuple => {
                    self.relays.get(id).cloned()
                }
                _ => None,
            })
            .expect("an allocation")
    }

    fn freed(&self) -> Vec<AllocationId> {
        self.commands
            .iter()
            .filter_map(|c| match c {
                Command::FreeRelay { id } => Some(*id),
                Command::StartRelay { .. } => None,
            })
            .collect()
    }

    fn started(&self) -> Vec<AllocationId> {
        self.commands
            .iter()
            .filter_map(|c| match c {
                Command::StartRelay { id, .. } => Some(*id),
                Command::FreeRelay { .. } => None,
            })
            .collect()
    }

    fn dropped(&self, reason: &'static str) -> u64 {
        self.metrics
            .turn
            .dropped
            .get_or_create(&ReasonLabels { reason })
            .get()
    }

    fn requests(&self, method: &'static str, outcome: &'static str) -> u64 {
        self.metrics
            .turn
            .requests
            .get_or_create(&TurnRequestLabels { method, outcome })
            .get()
    }

    fn gauge(&self) -> i64 {
        self.metrics.turn.allocations.get()
    }
}

struct Client {
    tuple: FiveTuple,
    username: String,
    password: String,
    nonce: Option<String>,
}

impl Client {
    /// A request of `method` with `attrs`, authenticated when a nonce is known and
    /// `authenticate` is set.
    fn build(&self, method: Method, attrs: Attrs, authenticate: bool) -> Message {
        let mut m = Message::new();
        m.set_type(MessageType::new(method, CLASS_REQUEST));
        m.new_transaction_id().unwrap();
        self.finish(m, attrs, authenticate)
    }

    /// An authenticated request in transaction `transaction` (a retransmission).
    fn build_in(&self, method: Method, attrs: Attrs, transaction: TransactionId) -> Message {
        let mut m = Message::new();
        m.set_type(MessageType::new(method, CLASS_REQUEST));
        m.transaction_id = transaction;
        self.finish(m, attrs, true)
    }

    fn finish(&self, mut m: Message, attrs: Attrs, authenticate: bool) -> Message {
        m.write_header();
        for a in &attrs {
            a.add_to(&mut m).unwrap();
        }
        if authenticate && let Some(nonce) = &self.nonce {
            TextAttribute::new(ATTR_USERNAME, self.username.clone())
                .add_to(&mut m)
                .unwrap();
            TextAttribute::new(ATTR_REALM, REALM.into())
                .add_to(&mut m)
                .unwrap();
            TextAttribute::new(ATTR_NONCE, nonce.clone())
                .add_to(&mut m)
                .unwrap();
            let provider = rtc::crypto::default_provider().unwrap();
            MessageIntegrity::new_long_term_integrity_with_provider(
                self.username.clone(),
                REALM.into(),
                self.password.clone(),
                provider.crypto(),
            )
            .unwrap()
            .add_to(&mut m)
            .unwrap();
        }
        FINGERPRINT.add_to(&mut m).unwrap();
        m
    }

    fn send_indication(&self, peer: &str, data: &[u8]) -> Vec<u8> {
        let mut m = Message::new();
        m.set_type(MessageType::new(METHOD_SEND, CLASS_INDICATION));
        m.new_transaction_id().unwrap();
        m.write_header();
        PeerAttr(addr(peer)).add_to(&mut m).unwrap();
        Data(data.to_vec()).add_to(&mut m).unwrap();
        m.raw
    }
}

fn udp() -> Attrs {
    vec![Box::new(RequestedTransport {
        protocol: PROTO_UDP,
    })]
}

fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    wire::write_channel_data(channel, data, false, &mut out);
    out
}

/// XOR-PEER-ADDRESS.
struct PeerAttr(SocketAddr);

impl Setter for PeerAttr {
    fn add_to(&self, m: &mut Message) -> rtc::shared::error::Result<()> {
        mapped(self.0).add_to_as(m, ATTR_XOR_PEER_ADDRESS)
    }
}

fn decode(bytes: &[u8]) -> Message {
    let mut m = Message::new();
    m.unmarshal_binary(bytes).expect("a STUN message");
    m
}

fn code(m: &Message) -> Option<u16> {
    let mut e = ErrorCodeAttribute::default();
    e.get_from(m).ok().map(|()| e.code.0)
}

fn text(m: &Message, attr: rtc::stun::attributes::AttrType) -> Option<String> {
    TextAttribute::get_from_as(m, attr).ok().map(|t| t.text)
}

fn xor_addr(m: &Message, attr: rtc::stun::attributes::AttrType) -> Option<SocketAddr> {
    let mut a = XorMappedAddress::default();
    a.get_from_as(m, attr).ok()?;
    Some(SocketAddr::new(a.ip, a.port))
}

fn lifetime(m: &Message) -> Option<Duration> {
    let mut l = Lifetime::default();
    l.get_from(m).ok().map(|()| l.0)
}

fn is_success(m: &Message) -> bool {
    m.typ.class == CLASS_SUCCESS_RESPONSE
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// --- Authentication -------------------------------------------------------------------------

#[test]
fn binding_is_answered_without_credentials() {
    let mut h = Harness::new();
    let c = h.client("patient-1", "192.0.2.50:40000");
    let m = c.build(METHOD_BINDING, Vec::new(), false);
    let a = h.feed(c.tuple, &m.raw).expect("an answer");
    assert!(is_success(&a));
    assert_eq!(a.transaction_id, m.transaction_id);
    assert_eq!(xor_addr(&a, ATTR_XORMAPPED_ADDRESS), Some(c.tuple.client));
    assert_eq!(h.requests("binding", "ok"), 1);
}

#[test]
fn no_integrity_gets_401_with_realm_and_a_fresh_nonce() {
    let mut h = Harness::new();
    let c = h.client("patient-1", "192.0.2.50:40000");
    let m = c.build(
        METHOD_ALLOCATE,
        vec![Box::new(RequestedTransport {
            protocol: PROTO_UDP,
        })],
        false,
    );
    let a = h.feed(c.tuple, &m.raw).expect("an answer");
    assert_eq!(code(&a), Some(401));
    assert_eq!(text(&a, ATTR_REALM).as_deref(), Some(REALM));
    let nonce = text(&a, ATTR_NONCE).expect("a nonce");
    assert_eq!(
        Credentials::new(SECRET).check_nonce(&nonce, h.now.unix_secs),
        Ok(())
    );
    // Unauthenticated: no integrity on the answer.
    assert!(!a.contains(ATTR_MESSAGE_INTEGRITY));
    assert_eq!(h.requests("allocate", "401"), 1);
    assert!(h.started().is_empty());
}

#[test]
fn wrong_integrity_bad_username_or_realm_get_401() {
    let mut h = Harness::new();
    let nonce = Some(Credentials::new(SECRET).nonce(h.now.unix_secs));
    let transport = || -> Attrs {
        vec![Box::new(RequestedTransport {
            protocol: PROTO_UDP,
        })]
    };

    // Wrong password.
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    c.password = "not-the-password".into();
    c.nonce = nonce.clone();
    let a = h
        .feed(c.tuple, &c.build(METHOD_ALLOCATE, transport(), true).raw)
        .unwrap();
    assert_eq!(code(&a), Some(401));
    assert!(text(&a, ATTR_NONCE).is_some());
    assert_eq!(h.dropped("integrity"), 1);

    // A username that is not `expiry:user`.
    let mut c = h.client("patient-1", "192.0.2.50:40001");
    c.username = "patient-1".into();
    c.password = Credentials::new(SECRET).password("patient-1");
    c.nonce = nonce.clone();
    let a = h
        .feed(c.tuple, &c.build(METHOD_ALLOCATE, transport(), true).raw)
        .unwrap();
    assert_eq!(code(&a), Some(401));
    assert_eq!(h.dropped("credentials_malformed"), 1);

    // An expired username with its right password.
    let mut c = h.client_until("patient-1", "192.0.2.50:40002", h.now.unix_secs - 10);
    c.nonce = nonce.clone();
    let a = h
        .feed(c.tuple, &c.build(METHOD_ALLOCATE, transport(), true).raw)
        .unwrap();
    assert_eq!(code(&a), Some(401));
    assert!(text(&a, ATTR_NONCE).is_some());
    assert_eq!(h.dropped("credentials_expired"), 1);

    // Credentials signed with another secret.
    let mut c = h.client("patient-1", "192.0.2.50:40003");
    c.password = Credentials::new("other").password(&c.username);
    c.nonce = nonce.clone();
    let a = h
        .feed(c.tuple, &c.build(METHOD_ALLOCATE, transport(), true).raw)
        .unwrap();
    assert_eq!(code(&a), Some(401));
    assert_eq!(h.dropped("integrity"), 2);

    assert_eq!(h.requests("allocate", "401"), 4);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(
        h.ports.bound.is_empty(),
        "nothing bound for a refused request"
    );
}

#[test]
fn missing_username_realm_or_nonce_is_400_without_a_challenge() {
    let mut h = Harness::new();
    let c = h.client("patient-1", "192.0.2.50:40000");
    let mut m = Message::new();
    m.set_type(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST));
    m.new_transaction_id().unwrap();
    m.write_header();
    TextAttribute::new(ATTR_USERNAME, c.username.clone())
        .add_to(&mut m)
        .unwrap();
    let provider = rtc::crypto::default_provider().unwrap();
    MessageIntegrity::new_long_term_integrity_with_provider(
        c.username.clone(),
        REALM.into(),
        c.password.clone(),
        provider.crypto(),
    )
    .unwrap()
    .add_to(&mut m)
    .unwrap();
    let a = h.feed(c.tuple, &m.raw).unwrap();
    assert_eq!(code(&a), Some(400));
    assert!(text(&a, ATTR_NONCE).is_none());
}

#[test]
fn credentials_expire_by_the_clock() {
    let mut h = Harness::new();
    let mut c = h.client_until("patient-1", "192.0.2.50:40000", h.now.unix_secs + 100);
    assert!(is_success(&h.allocate(&mut c)));
    h.advance(secs(99));
    assert!(is_success(&h.refresh(&mut c, secs(600))));
    h.advance(secs(1));
    let a = h.refresh(&mut c, secs(600));
    assert_eq!(code(&a), Some(401));
    assert_eq!(h.dropped("credentials_expired"), 1);
}

// --- Nonces ---------------------------------------------------------------------------------

#[test]
fn a_foreign_nonce_gets_438_with_a_fresh_one() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    c.nonce = Some("1-forged".into());
    let m = c.build(
        METHOD_ALLOCATE,
        vec![Box::new(RequestedTransport {
            protocol: PROTO_UDP,
        })],
        true,
    );
    let a = h.feed(c.tuple, &m.raw).unwrap();
    assert_eq!(code(&a), Some(438));
    assert_eq!(text(&a, ATTR_REALM).as_deref(), Some(REALM));
    let fresh = text(&a, ATTR_NONCE).expect("a fresh nonce");
    assert_ne!(fresh, "1-forged");
    // A nonce signed with another secret is as foreign.
    c.nonce = Some(Credentials::new("other").nonce(h.now.unix_secs));
    let a = h.allocate(&mut c);
    assert!(is_success(&a), "the retry with the fresh nonce works");
    assert_eq!(h.requests("allocate", "438"), 2);
}

#[test]
fn nonces_go_stale_by_the_clock() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    assert!(is_success(&h.allocate(&mut c)));
    let first = c.nonce.clone().unwrap();
    h.advance(secs(NONCE_TTL_SECS));
    // Still good at the limit…
    let m = c.build(METHOD_REFRESH, vec![Box::new(Lifetime(secs(600)))], true);
    assert!(is_success(&h.feed(c.tuple, &m.raw).unwrap()));
    h.advance(secs(1));
    // …stale a second later: 438 with a fresh nonce, which works.
    let m = c.build(METHOD_REFRESH, vec![Box::new(Lifetime(secs(600)))], true);
    let a = h.feed(c.tuple, &m.raw).unwrap();
    assert_eq!(code(&a), Some(438));
    let fresh = text(&a, ATTR_NONCE).unwrap();
    assert_ne!(fresh, first);
    c.nonce = Some(fresh);
    let m = c.build(METHOD_REFRESH, vec![Box::new(Lifetime(secs(600)))], true);
    assert!(is_success(&h.feed(c.tuple, &m.raw).unwrap()));
}

// --- Allocate -------------------------------------------------------------------------------

#[test]
fn allocate_binds_a_relay_and_starts_it() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    let a = h.allocate(&mut c);
    assert!(is_success(&a), "{:?}", code(&a));
    assert!(a.contains(ATTR_MESSAGE_INTEGRITY));
    assert_eq!(
        xor_addr(&a, ATTR_XOR_RELAYED_ADDRESS),
        Some(addr("198.51.100.10:50000"))
    );
    assert_eq!(lifetime(&a), Some(DEFAULT_LIFETIME));
    assert_eq!(xor_addr(&a, ATTR_XORMAPPED_ADDRESS), Some(c.tuple.client));
    assert_eq!(h.ports.bound, vec![(AllocationId(1), false)]);
    assert_eq!(h.started(), vec![AllocationId(1)]);
    assert!(h.server.has_allocation(&c.tuple));
    assert_eq!(h.gauge(), 1);
    assert_eq!(h.requests("allocate", "ok"), 1);
    assert_eq!(
        h.server.poll_timeout(),
        Some(h.now.instant + DEFAULT_LIFETIME)
    );

    // A retransmission (the same transaction) gets the same answer and binds nothing.
    let again = c.build_in(METHOD_ALLOCATE, udp(), a.transaction_id);
    let answer = h.feed(c.tuple, &again.raw).unwrap();
    assert!(is_success(&answer), "{:?}", code(&answer));
    assert_eq!(
        xor_addr(&answer, ATTR_XOR_RELAYED_ADDRESS),
        Some(addr("198.51.100.10:50000"))
    );
    assert_eq!(h.ports.bound.len(), 1);
    assert_eq!(h.started().len(), 1);

    // Another Allocate on the same 5-tuple: 437.
    assert_eq!(code(&h.allocate(&mut c)), Some(437));
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn start_relay_names_the_relayed_address_and_where_own_media_is_reached() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    let a = h.allocate(&mut c);
    let (relayed, own_media) = h
        .commands
        .iter()
        .find_map(|cmd| match cmd {
            Command::StartRelay {
                relayed, own_media, ..
            } => Some((*relayed, *own_media)),
            Command::FreeRelay { .. } => None,
        })
        .expect("a relay started");
    assert_eq!(Some(relayed), xor_addr(&a, ATTR_XOR_RELAYED_ADDRESS));
    assert_eq!(own_media, addr(MEDIA_LOCAL));
    // What the client sends to relais's media is routed there (the shell's short-circuit),
    // what it sends to an extra peer is not.
    assert!(is_success(&h.create_permission(&mut c, MEDIA)));
    assert!(is_success(&h.create_permission(&mut c, EXTRA)));
    let (_, to, _) = h
        .relay_from(c.tuple, &c.send_indication(MEDIA, b"x"))
        .unwrap();
    assert_eq!(to, own_media);
    let (_, to, _) = h
        .relay_from(c.tuple, &c.send_indication(EXTRA, b"x"))
        .unwrap();
    assert_ne!(to, own_media);
}

#[test]
fn lifetimes_are_clamped() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    let a = h.request(&mut c, METHOD_ALLOCATE, || {
        vec![
            Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            }),
            Box::new(Lifetime(secs(10))),
        ]
    });
    assert_eq!(lifetime(&a), Some(DEFAULT_LIFETIME));
    assert_eq!(lifetime(&h.refresh(&mut c, secs(7200))), Some(MAX_LIFETIME));
    assert_eq!(h.server.poll_timeout(), Some(h.now.instant + MAX_LIFETIME));
}

#[test]
fn allocate_refusals() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    // A TCP relay is not offered: 442.
    let a = h.request(&mut c, METHOD_ALLOCATE, || {
        vec![Box::new(RequestedTransport {
            protocol: PROTO_TCP,
        })]
    });
    assert_eq!(code(&a), Some(442));
    // No REQUESTED-TRANSPORT: 400.
    assert_eq!(
        code(&h.request(&mut c, METHOD_ALLOCATE, Vec::new)),
        Some(400)
    );
    // Port reservations are not offered: 508.
    let even_port = || -> Attrs {
        vec![
            Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            }),
            Box::new(Raw(rtc::stun::attributes::ATTR_EVEN_PORT, vec![0x80])),
        ]
    };
    assert_eq!(
        code(&h.request(&mut c, METHOD_ALLOCATE, even_port)),
        Some(508)
    );
    // IPv6 relays are not offered here: 440.
    let v6 = || -> Attrs {
        vec![
            Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            }),
            Box::new(Raw(ATTR_REQUESTED_ADDRESS_FAMILY, vec![0x02, 0, 0, 0])),
        ]
    };
    assert_eq!(code(&h.request(&mut c, METHOD_ALLOCATE, v6)), Some(440));
    assert!(h.ports.bound.is_empty());
    assert_eq!(h.gauge(), 0);
}

/// Any attribute, as bytes.
struct Raw(rtc::stun::attributes::AttrType, Vec<u8>);

impl Setter for Raw {
    fn add_to(&self, m: &mut Message) -> rtc::shared::error::Result<()> {
        m.add(self.0, &self.1);
        Ok(())
    }
}

#[test]
fn a_relay_that_cannot_be_bound_is_508_and_gives_its_place_back() {
    let mut h = Harness::with(
        Quotas {
            max_allocations_per_user: 1,
            ..quotas()
        },
        1_000_000,
    );
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    h.ports.fail = true;
    assert_eq!(code(&h.allocate(&mut c)), Some(508));
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.started().is_empty());
    h.ports.fail = false;
    assert!(
        is_success(&h.allocate(&mut c)),
        "the user's one place is free"
    );
}

// --- Quotas ---------------------------------------------------------------------------------

#[test]
fn quota_in_all_is_508() {
    let mut h = Harness::with(
        Quotas {
            max_allocations: 2,
            ..quotas()
        },
        1_000_000,
    );
    for i in 0..2 {
        let mut c = h.client(&format!("patient-{i}"), &format!("192.0.2.{}:1000", 10 + i));
        assert!(is_success(&h.allocate(&mut c)));
    }
    let mut c = h.client("patient-9", "192.0.2.30:1000");
    assert_eq!(code(&h.allocate(&mut c)), Some(508));
    assert_eq!(h.requests("allocate", "508"), 1);
}

#[test]
fn quota_per_user_is_486() {
    let mut h = Harness::with(
        Quotas {
            max_allocations_per_user: 2,
            ..quotas()
        },
        1_000_000,
    );
    let mut first = h.client("patient-1", "192.0.2.10:1000");
    assert!(is_success(&h.allocate(&mut first)));
    let mut second = h.client("patient-1", "192.0.2.11:1000");
    assert!(is_success(&h.allocate(&mut second)));
    let mut third = h.client("patient-1", "192.0.2.12:1000");
    assert_eq!(code(&h.allocate(&mut third)), Some(486));
    // Another user is not affected.
    let mut other = h.client("patient-2", "192.0.2.12:1000");
    assert!(is_success(&h.allocate(&mut other)));
    // Releasing one gives the place back.
    assert!(is_success(&h.refresh(&mut first, Duration::ZERO)));
    let mut third = h.client("patient-1", "192.0.2.12:1001");
    assert!(is_success(&h.allocate(&mut third)));
    assert_eq!(h.requests("allocate", "486"), 1);
}

#[test]
fn quota_per_client_address_is_486_whoever_asks() {
    let mut h = Harness::with(
        Quotas {
            max_allocations_per_address: 2,
            ..quotas()
        },
        1_000_000,
    );
    for i in 0..2 {
        let mut c = h.client(&format!("patient-{i}"), &format!("192.0.2.10:{}", 1000 + i));
        assert!(is_success(&h.allocate(&mut c)));
    }
    let mut c = h.client("doctor-7", "192.0.2.10:2000");
    assert_eq!(code(&h.allocate(&mut c)), Some(486));
    // Loopback (this machine) counts in the total only.
    for i in 0..3 {
        let mut c = h.client(&format!("local-{i}"), &format!("127.0.0.1:{}", 3000 + i));
        assert!(is_success(&h.allocate(&mut c)));
    }
}

#[test]
fn the_last_places_are_kept_for_people_in_a_consultation_508() {
    let mut h = Harness::with(
        Quotas {
            max_allocations: 3,
            reserved_for_sessions: 2,
            ..quotas()
        },
        1_000_000,
    );
    let mut idle = h.client("patient-1", "192.0.2.10:1000");
    assert!(is_success(&h.allocate(&mut idle)));
    let mut idle2 = h.client("patient-2", "192.0.2.11:1000");
    assert_eq!(code(&h.allocate(&mut idle2)), Some(508));
    h.in_session.lock().unwrap().insert("patient-2".into());
    assert!(is_success(&h.allocate(&mut idle2)));
    h.in_session.lock().unwrap().insert("doctor-3".into());
    let mut doctor = h.client("doctor-3", "192.0.2.12:1000");
    assert!(is_success(&h.allocate(&mut doctor)));
    let mut late = h.client("doctor-3", "192.0.2.13:1000");
    assert_eq!(code(&h.allocate(&mut late)), Some(508), "full");
}

// --- Permissions ----------------------------------------------------------------------------

#[test]
fn permissions_only_towards_what_the_policy_allows() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    assert!(is_success(&h.allocate(&mut c)));
    assert!(is_success(&h.create_permission(&mut c, MEDIA)));
    assert!(is_success(&h.create_permission(&mut c, EXTRA)));
    assert_eq!(code(&h.create_permission(&mut c, OUTSIDE)), Some(403));
    assert_eq!(h.dropped("peer_forbidden"), 1);
    // An IPv6 peer on an IPv4 relay: 443.
    assert_eq!(
        code(&h.create_permission(&mut c, "[2001:db8::1]:5000")),
        Some(443)
    );
    // No peer at all: 400.
    assert_eq!(
        code(&h.request(&mut c, METHOD_CREATE_PERMISSION, Vec::new)),
        Some(400)
    );
    // Several peers, one forbidden: all refused.
    let a = h.request(&mut c, METHOD_CREATE_PERMISSION, || {
        vec![
            Box::new(PeerAttr(addr(MEDIA))),
            Box::new(PeerAttr(addr(OUTSIDE))),
        ]
    });
    assert_eq!(code(&a), Some(403));
    assert_eq!(h.requests("create_permission", "403"), 2);
}

#[test]
fn data_crosses_only_with_a_permission() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    assert!(is_success(&h.allocate(&mut c)));
    let relay = h.relay_of(&c);

    // No permission yet: dropped either way.
    assert_eq!(
        h.relay_from(c.tuple, &c.send_indication(MEDIA, b"hello")),
        None
    );
    assert_eq!(h.dropped("no_permission"), 1);
    assert_eq!(
        relay.handle_peer_traffic(addr(MEDIA_LOCAL), 5, h.now.instant),
        Err("no_permission")
    );

    assert!(is_success(&h.create_permission(&mut c, MEDIA)));
    // Client → relais's media: sent to the media socket's local address.
    let (id, to, payload) = h
        .relay_from(c.tuple, &c.send_indication(MEDIA, b"hello"))
        .expect("relayed");
    assert_eq!(
        (id, to, payload.as_slice()),
        (AllocationId(1), addr(MEDIA_LOCAL), &b"hello"[..])
    );
    // Another port on the same IP is not a relais address.
    assert_eq!(
        h.relay_from(c.tuple, &c.send_indication("203.0.113.5:22", b"x")),
        None
    );
    assert_eq!(h.dropped("peer_not_allowed"), 1);

    // Peer → client: a Data indication naming the peer as the client knows it.
    let to = relay
        .handle_peer_traffic(addr(MEDIA_LOCAL), 5, h.now.instant)
        .expect("allowed");
    assert_eq!(
        to,
        ToClient {
            peer: addr(MEDIA),
            channel: None
        }
    );
    let m = decode(&to.encode(b"world", false).unwrap());
    assert_eq!((m.typ.method, m.typ.class), (METHOD_DATA, CLASS_INDICATION));
    let mut peer = PeerAddress::default();
    peer.get_from(&m).unwrap();
    assert_eq!(SocketAddr::new(peer.ip, peer.port), addr(MEDIA));
    let mut data = Data::default();
    data.get_from(&m).unwrap();
    assert_eq!(data.0, b"world");
    // A stranger is not relayed.
    assert_eq!(
        relay.handle_peer_traffic(addr(OUTSIDE), 5, h.now.instant),
        Err("no_permission")
    );
}

#[test]
fn permissions_expire_after_300_seconds() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    assert!(is_success(&h.allocate(&mut c)));
    let relay = h.relay_of(&c);
    assert!(is_success(&h.create_permission(&mut c, EXTRA)));
    h.advance(PERMISSION_LIFETIME - secs(1));
    assert!(
        h.relay_from(c.tuple, &c.send_indication(EXTRA, b"a"))
            .is_some()
    );
    assert!(
        relay
            .handle_peer_traffic(addr(EXTRA), 1, h.now.instant)
            .is_ok()
    );
    h.advance(secs(1));
    assert_eq!(h.relay_from(c.tuple, &c.send_indication(EXTRA, b"a")), None);
    assert_eq!(
        relay.handle_peer_traffic(addr(EXTRA), 1, h.now.instant),
        Err("no_permission")
    );
    // Refreshing it opens the way again for another 300 s.
    assert!(is_success(&h.create_permission(&mut c, EXTRA)));
    h.advance(PERMISSION_LIFETIME - secs(1));
    assert!(
        h.relay_from(c.tuple, &c.send_indication(EXTRA, b"a"))
            .is_some()
    );
}

#[test]
fn the_relayed_bandwidth_is_capped() {
    let mut h = Harness::with(quotas(), 1000);
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    assert!(is_success(&h.allocate(&mut c)));
    assert!(is_success(&h.create_permission(&mut c, EXTRA)));
    let big = vec![0u8; 800];
    assert!(
        h.relay_from(c.tuple, &c.send_indication(EXTRA, &big))
            .is_some()
    );
    assert_eq!(h.relay_from(c.tuple, &c.send_indication(EXTRA, &big)), None);
    assert_eq!(h.dropped("bandwidth"), 1);
    h.advance(secs(1));
    assert!(
        h.relay_from(c.tuple, &c.send_indication(EXTRA, &big))
            .is_some()
    );
}

// --- Channels -------------------------------------------------------------------------------

#[test]
fn a_channel_carries_data_both_ways() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    assert!(is_success(&h.allocate(&mut c)));
    let relay = h.relay_of(&c);
    // Data on a channel not bound: dropped.
    assert_eq!(h.relay_from(c.tuple, &channel_data(0x4000, b"early")), None);
    assert_eq!(h.dropped("no_channel"), 1);

    assert!(is_success(&h.channel_bind(&mut c, 0x4000, MEDIA)));
    let (_, to, payload) = h
        .relay_from(c.tuple, &channel_data(0x4000, b"ping"))
        .expect("relayed");
    assert_eq!((to, payload.as_slice()), (addr(MEDIA_LOCAL), &b"ping"[..]));
    // Binding installed the permission: Send indications pass too.
    assert!(
        h.relay_from(c.tuple, &c.send_indication(MEDIA, b"x"))
            .is_some()
    );

    let to = relay
        .handle_peer_traffic(addr(MEDIA_LOCAL), 4, h.now.instant)
        .unwrap();
    assert_eq!(to.channel, Some(0x4000));
    assert_eq!(
        to.encode(b"pong", false).unwrap(),
        channel_data(0x4000, b"pong")
    );
    // Streams get padding to four bytes.
    let padded = to.encode(b"pong!", true).unwrap();
    assert_eq!(padded.len(), 12);
    assert_eq!(
        wire::parse_channel_data(&padded),
        Some((0x4000, &b"pong!"[..]))
    );
}

#[test]
fn a_bound_channel_cannot_be_rebound_elsewhere() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    assert!(is_success(&h.allocate(&mut c)));
    assert!(is_success(&h.channel_bind(&mut c, 0x4000, MEDIA)));
    // Refreshing the same binding is fine.
    assert!(is_success(&h.channel_bind(&mut c, 0x4000, MEDIA)));
    // The channel to another peer, or the peer on another channel: 400.
    assert_eq!(code(&h.channel_bind(&mut c, 0x4000, EXTRA)), Some(400));
    assert_eq!(code(&h.channel_bind(&mut c, 0x4001, MEDIA)), Some(400));
    // Outside the channel range: 400.
    assert_eq!(code(&h.channel_bind(&mut c, 0x3000, EXTRA)), Some(400));
    assert_eq!(code(&h.channel_bind(&mut c, 0x5000, EXTRA)), Some(400));
    // Not an allowed peer, or relais's IP on another port: 403.
    assert_eq!(code(&h.channel_bind(&mut c, 0x4002, OUTSIDE)), Some(403));
    assert_eq!(
        code(&h.channel_bind(&mut c, 0x4002, "203.0.113.5:22")),
        Some(403)
    );
    assert_eq!(h.dropped("peer_forbidden"), 2);
    // Another free channel to another allowed peer: fine.
    assert!(is_success(&h.channel_bind(&mut c, 0x4001, EXTRA)));
}

#[test]
fn channels_expire_after_600_seconds() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    assert!(is_success(&h.allocate(&mut c)));
    let relay = h.relay_of(&c);
    assert!(is_success(&h.channel_bind(&mut c, 0x4000, EXTRA)));
    // The client keeps the permission (300 s) and the allocation alive, not the channel.
    for _ in 0..2 {
        h.advance(secs(290));
        assert!(is_success(&h.create_permission(&mut c, EXTRA)));
    }
    h.advance(CHANNEL_LIFETIME - secs(581));
    assert!(h.relay_from(c.tuple, &channel_data(0x4000, b"a")).is_some());
    assert_eq!(
        relay
            .handle_peer_traffic(addr(EXTRA), 1, h.now.instant)
            .unwrap()
            .channel,
        Some(0x4000)
    );
    h.advance(secs(1));
    assert_eq!(h.relay_from(c.tuple, &channel_data(0x4000, b"a")), None);
    assert_eq!(h.dropped("no_channel"), 1);
    // The peer is still permitted: it reaches the client in Data indications.
    assert_eq!(
        relay
            .handle_peer_traffic(addr(EXTRA), 1, h.now.instant)
            .unwrap()
            .channel,
        None
    );
    // The expired channel may be bound to someone else.
    assert!(is_success(&h.channel_bind(&mut c, 0x4000, MEDIA)));
}

// --- Refresh and expiry ---------------------------------------------------------------------

#[test]
fn refresh_with_lifetime_zero_deletes_and_frees_the_relay() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    assert!(is_success(&h.allocate(&mut c)));
    let a = h.refresh(&mut c, Duration::ZERO);
    assert!(is_success(&a));
    assert_eq!(lifetime(&a), Some(Duration::ZERO));
    assert_eq!(h.freed(), vec![AllocationId(1)]);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.gauge(), 0);
    assert_eq!(h.server.poll_timeout(), None);
    // Gone: 437, and data from the client has nowhere to go.
    assert_eq!(code(&h.refresh(&mut c, secs(600))), Some(437));
    assert_eq!(h.relay_from(c.tuple, &channel_data(0x4000, b"a")), None);
    assert_eq!(h.dropped("no_allocation"), 1);
    assert_eq!(h.freed().len(), 1, "freed once");
}

#[test]
fn allocations_expire_by_the_clock_and_free_their_relay() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    let t0 = h.now.instant;
    assert!(is_success(&h.allocate(&mut c)));
    let mut d = h.client("patient-2", "192.0.2.51:40000");
    h.advance(secs(100));
    assert!(is_success(&h.allocate(&mut d)));
    assert_eq!(h.server.poll_timeout(), Some(t0 + secs(600)));

    // A refresh moves the expiry.
    h.advance(secs(400));
    assert!(is_success(&h.refresh(&mut c, secs(600))));
    assert_eq!(
        h.server.poll_timeout(),
        Some(t0 + secs(700)),
        "d's, now first"
    );

    h.server.handle_timeout(t0 + secs(699));
    h.drain();
    assert!(h.freed().is_empty());
    h.server.handle_timeout(t0 + secs(700));
    h.drain();
    assert_eq!(h.freed(), vec![AllocationId(2)]);
    assert!(!h.server.has_allocation(&d.tuple));
    assert_eq!(h.server.poll_timeout(), Some(t0 + secs(1100)));
    h.server.handle_timeout(t0 + secs(5000));
    h.drain();
    assert_eq!(h.freed(), vec![AllocationId(2), AllocationId(1)]);
    assert_eq!(h.server.poll_timeout(), None);
    assert_eq!(h.gauge(), 0);
    // Their quota came back: the user holds nothing.
    h.advance(secs(4000));
    let mut again = h.client("patient-1", "192.0.2.50:40000");
    assert!(is_success(&h.allocate(&mut again)));
}

#[test]
fn a_closed_connection_and_shutdown_free_their_relays() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    c.tuple.transport = Transport::Tcp;
    assert!(is_success(&h.allocate(&mut c)));
    let mut d = h.client("patient-2", "192.0.2.51:40000");
    assert!(is_success(&h.allocate(&mut d)));
    let mut e = h.client("patient-3", "192.0.2.52:40000");
    assert!(is_success(&h.allocate(&mut e)));
    h.server.handle_client_closed(&c.tuple);
    h.drain();
    assert_eq!(h.freed(), vec![AllocationId(1)]);
    h.server.handle_client_closed(&c.tuple);
    h.drain();
    assert_eq!(h.freed().len(), 1, "nothing left to free");
    h.server.release_all();
    h.drain();
    assert_eq!(
        h.freed(),
        vec![AllocationId(1), AllocationId(2), AllocationId(3)]
    );
    assert_eq!(h.gauge(), 0);
}

// --- Ownership ------------------------------------------------------------------------------

#[test]
fn another_5_tuple_gets_437_another_username_441() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    assert!(is_success(&h.allocate(&mut c)));

    // The same credentials from another 5-tuple have no allocation there.
    let mut elsewhere = h.client("patient-1", "192.0.2.50:40001");
    elsewhere.username = c.username.clone();
    elsewhere.password = c.password.clone();
    assert_eq!(code(&h.refresh(&mut elsewhere, secs(600))), Some(437));
    assert_eq!(code(&h.create_permission(&mut elsewhere, MEDIA)), Some(437));

    // Another (valid) user on this 5-tuple: 441, whatever the request.
    let other = h.client("patient-2", "192.0.2.99:1");
    let mut intruder = Client {
        tuple: c.tuple,
        username: other.username,
        password: other.password,
        nonce: c.nonce.clone(),
    };
    assert_eq!(code(&h.refresh(&mut intruder, secs(600))), Some(441));
    assert_eq!(code(&h.refresh(&mut intruder, Duration::ZERO)), Some(441));
    assert_eq!(code(&h.create_permission(&mut intruder, MEDIA)), Some(441));
    assert_eq!(
        code(&h.channel_bind(&mut intruder, 0x4000, MEDIA)),
        Some(441)
    );
    assert_eq!(h.requests("refresh", "441"), 2);
    // The allocation did not move.
    assert!(h.server.has_allocation(&c.tuple));
    assert!(h.freed().is_empty());
    assert_eq!(
        h.relay_of(&c)
            .handle_peer_traffic(addr(MEDIA_LOCAL), 1, h.now.instant),
        Err("no_permission")
    );
}

// --- Garbage --------------------------------------------------------------------------------

#[test]
fn malformed_input_is_dropped_and_counted_never_answered() {
    let mut h = Harness::new();
    let c = h.client("patient-1", "192.0.2.50:40000");
    let header_only = [0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
    let mut too_long = c.build(METHOD_BINDING, Vec::new(), false).raw;
    too_long[3] = 0xff;
    let cut_channel_data = [0x40, 0x00, 0x00, 0x10, 1, 2];
    for bytes in [
        &header_only[..],
        b"GET / HTTP/1.1\r\n\r\n",
        &too_long,
        &cut_channel_data,
        &[],
    ] {
        assert!(h.feed(c.tuple, bytes).is_none(), "{bytes:?} got an answer");
    }
    assert_eq!(h.dropped("malformed"), 5);

    // A response or an unknown indication from a client: dropped as unexpected.
    let mut response = Message::new();
    response.set_type(MessageType::new(METHOD_BINDING, CLASS_SUCCESS_RESPONSE));
    response.new_transaction_id().unwrap();
    response.write_header();
    assert!(h.feed(c.tuple, &response.raw).is_none());
    let mut indication = Message::new();
    indication.set_type(MessageType::new(METHOD_DATA, CLASS_INDICATION));
    indication.new_transaction_id().unwrap();
    indication.write_header();
    assert!(h.feed(c.tuple, &indication.raw).is_none());
    assert_eq!(h.dropped("unexpected"), 2);

    // Data with no allocation to carry it.
    assert!(h.feed(c.tuple, &channel_data(0x4000, b"x")).is_none());
    assert!(h.feed(c.tuple, &c.send_indication(MEDIA, b"x")).is_none());
    assert_eq!(h.dropped("no_allocation"), 2);

    // A Send indication without DATA, on a real allocation.
    let mut c = c;
    assert!(is_success(&h.allocate(&mut c)));
    let mut m = Message::new();
    m.set_type(MessageType::new(METHOD_SEND, CLASS_INDICATION));
    m.new_transaction_id().unwrap();
    m.write_header();
    PeerAttr(addr(MEDIA)).add_to(&mut m).unwrap();
    assert_eq!(h.relay_from(c.tuple, &m.raw), None);
    assert_eq!(h.dropped("malformed"), 6);
    // An unknown request method is authenticated, then refused: 400.
    let a = h.request(&mut c, rtc::stun::message::METHOD_CONNECT, Vec::new);
    assert_eq!(code(&a), Some(400));
    assert_eq!(h.requests("other", "400"), 1);
}

#[test]
fn channel_bind_without_a_channel_number_is_400() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    assert!(is_success(&h.allocate(&mut c)));
    let a = h.request(&mut c, METHOD_CHANNEL_BIND, || {
        vec![Box::new(PeerAttr(addr(MEDIA)))]
    });
    assert_eq!(code(&a), Some(400));
    assert!(!a.contains(ATTR_CHANNEL_NUMBER));
}

// --- What needs the exclusive path ----------------------------------------------------------

#[test]
fn only_authenticated_allocate_and_refresh_need_handle_request() {
    let mut h = Harness::new();
    let mut c = h.client("patient-1", "192.0.2.50:40000");
    assert!(is_success(&h.allocate(&mut c)));
    let kind = |h: &Harness, m: Message| match h.server.handle_client_input(&m.raw, c.tuple, h.now)
    {
        ClientInput::Request(_) => "request",
        ClientInput::Reply(_) => "reply",
        ClientInput::ToPeer { .. } => "to_peer",
        ClientInput::Dropped => "dropped",
    };
    // Challenges, CreatePermission and ChannelBind are answered on the shared path.
    assert_eq!(kind(&h, c.build(METHOD_ALLOCATE, udp(), false)), "reply");
    let peer = || -> Attrs { vec![Box::new(PeerAttr(addr(MEDIA)))] };
    assert_eq!(
        kind(&h, c.build(METHOD_CREATE_PERMISSION, peer(), true)),
        "reply"
    );
    let bind = c.build(
        METHOD_CHANNEL_BIND,
        vec![
            Box::new(ChannelNumber(0x4000)),
            Box::new(PeerAttr(addr(MEDIA))),
        ],
        true,
    );
    assert_eq!(kind(&h, bind), "reply");
    assert!(h.relay_from(c.tuple, &channel_data(0x4000, b"x")).is_some());
    // Allocate and Refresh change the server's tables.
    assert_eq!(kind(&h, c.build(METHOD_ALLOCATE, udp(), true)), "request");
    let refresh = c.build(METHOD_REFRESH, vec![Box::new(Lifetime(secs(600)))], true);
    assert_eq!(kind(&h, refresh), "request");
}
