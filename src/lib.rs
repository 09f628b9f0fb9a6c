//! relais: one process serving telemedicine consultations — doctor–patient messaging (REST and
//! Socket.IO) and, in later modules, video consultations through a WebRTC SFU.
//!
//! Module map (one concern each):
//! - [`config`]: typed configuration, layered defaults < file < environment < flags;
//! - [`app`]: builds everything from a `Config`, binds, runs until shutdown;
//! - [`auth`]: JWT verification into an [`ids::Identity`], development secrets;
//! - [`store`]: the database (SQLite or PostgreSQL through sqlx `Any`);
//! - [`audit`]: the hash-chained audit trail of security-relevant acts, and its verification;
//! - [`error`]: the errors every layer returns, with one enum of error codes;
//! - [`messaging`]: the messaging service both transports call, and its wire views;
//! - [`http`]: the REST router, errors and extractors;
//! - [`wire`]: Socket.IO event names and payloads, spelled once; [`ports`]: the one port the
//!   core emits through;
//! - [`realtime`]: the Socket.IO handlers (handshake, messaging and signaling events);
//!   [`sio`]: the glue under them (emitting to rooms and sockets here and on other nodes,
//!   socket limits);
//! - [`sessions`], [`sfu`], [`recording`], [`turn`]: consultations, the media plane, recording,
//!   the embedded TURN server; [`codec`]: what the SFU and the recorder know of payloads;
//! - [`cluster`]: several nodes on PostgreSQL and Redis (directory, placement, node loss, the
//!   typed bus between nodes, and [`cluster::Router`], which runs each [`sfu::SfuRequest`] on
//!   this node or on the session's owner); off without `redis_url` (the router then runs
//!   everything here);
//! - [`mux`]: the shared HTTPS port (`https.multiplex`), where TURN and ICE-TCP arrive too,
//!   told apart by their first bytes;
//! - [`limits`]: what one client may cost the others (failure windows, token buckets,
//!   connection counts, log budgets); [`net`]: the client address behind trusted proxies;
//! - [`metrics`], [`telemetry`], [`tls`], [`clock`], [`ids`]: shared plumbing.
//!
//! The test client and the load tool (`relais-load`) are a second crate of the workspace
//! (`relais-load/`), which uses this one's wire, ids, tokens and codecs; the server depends on
//! none of their crates.
//!
//! The core reaches clients through a port, not a transport: messaging and the SFU emit
//! [`wire::Outgoing`] events (one enum tying each event name to its payload) to sockets and
//! [`ids::RoomKey`]s through [`ports::ClientNotify`], which [`sio::Io`] implements on one node
//! and across nodes.
//!
//! Layering ([`LAYERS`], checked by `tests/suite/layers.rs`): a module uses only modules listed
//! before it. Plumbing first (ids, time, codecs, network, limits, metrics, configuration), then
//! infrastructure (auth, store, errors, the wire format, the port to clients), the domain and
//! media (messaging, sessions, recording, sfu, turn), the adapters (cluster, Socket.IO, REST)
//! and the composition (app). No import goes upwards.
//!
//! Requests to the SFU are values: Socket.IO and REST handlers build an
//! [`sfu::SfuRequest`] and hand it to [`cluster::Router`]; the node that owns the session runs
//! it ([`sfu::Sfu::handle`]) and answers an [`sfu::SfuReply`] or a
//! [`error::DomainError`], whose code is an [`error::ErrorCode`], on every node alike.
//!
//! Invariants that hold across modules:
//! - identity is the pair (role, id); every REST call and socket event checks the caller may
//!   touch the object before reading or writing it;
//! - no message content and no token is ever logged; request logs carry route templates only;
//! - errors cross layers as typed values (`StoreError` → `DomainError` → HTTP/ack), mapped once.

pub mod app;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod error;
pub mod http;
pub mod ids;
pub mod limits;
pub mod messaging;
pub mod metrics;
pub mod mux;
pub mod net;
pub mod ports;
pub mod private_files;
pub mod realtime;
pub mod recording;
pub mod sessions;
pub mod sfu;
pub mod sio;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod turn;
pub mod udp_buffers;
pub mod wire;

/// The crate's top-level modules, lowest first: a module may use only the modules before it
/// (`crate::…` paths; `tests/suite/layers.rs` reads `src/` and fails on any other import).
pub const LAYERS: &[&str] = &[
    // plumbing
    "ids",
    "clock",
    "codec",
    "net",
    "udp_buffers",
    "private_files",
    "limits",
    "metrics",
    "config",
    "telemetry",
    "tls",
    // infrastructure
    "auth",
    "store",
    "error",
    "wire",
    "ports",
    "audit",
    // domain and media
    "messaging",
    "sessions",
    "recording",
    "sfu",
    "turn",
    // adapters
    "cluster",
    "sio",
    "state",
    "realtime",
    "http",
    "mux",
    // composition
    "app",
];
