//! Prometheus metrics (`/metrics`), every name prefixed `relais_`.
//!
//! Counters and gauges are atomics: incrementing one on a hot path costs an atomic add, no lock
//! and no allocation (label sets are resolved once and the handle kept where it is used).
//! Values that live elsewhere (database pools) are sampled at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// One of the methods the API serves, or `other` (clients choose the method string: an
    /// open set would grow `/metrics` without bound).
    pub method: &'static str,
    pub route: String,
    pub status: u16,
}

/// A request method as a label: the known ones, else `other`.
pub fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// Which limit: `socketio_event`, `socket_connection`, `http_connection`, `message`,
    /// `join_code`.
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: &'static str,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    pub socketio_connections: Gauge,
    pub messages_stored: Counter,
    pub auth_failures: Family<TransportLabels, Counter>,
    pub limited: Family<LimitLabels, Counter>,
    pub db_pool_connections: Family<PoolLabels, Gauge>,
    /// Connections to the shared HTTPS port by what they turned out to be (`https`,
    /// `turn_tls`, `turn_tcp`, `ice_tcp`) or why they were closed (`unrecognised`, `timeout`,
    /// `pending_cap`, `tls_failed`, `closed_early`, `refused`, `io_error`).
    pub shared_port: Family<KindLabels, Counter>,
    /// Connections to the shared HTTPS port not identified yet.
    pub shared_port_pending: Gauge,
    pub media: MediaMetrics,
    pub turn: TurnMetrics,
    pub recording: RecordingMetrics,
    /// Audit records written, and appends that failed (the act was logged and, for reads,
    /// refused).
    pub audit_records: Counter,
    pub audit_write_failures: Counter,
    /// Messages and attachments deleted by `messaging.retention_days`.
    pub messages_expired: Counter,
    pub attachments_expired: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TurnRequestLabels {
    pub method: &'static str,
    /// `ok` or the STUN error code.
    pub outcome: &'static str,
}

/// Embedded TURN server metrics.
#[derive(Default)]
pub struct TurnMetrics {
    pub allocations: Gauge,
    pub connections: Family<TransportLabels, Gauge>,
    pub requests: Family<TurnRequestLabels, Counter>,
    pub packets_to_peer: Counter,
    pub packets_to_client: Counter,
    /// Of those, between a client and relais's own media plane without a socket.
    pub packets_in_process: Counter,
    pub bytes_relayed: Counter,
    pub dropped: Family<ReasonLabels, Counter>,
}

impl TurnMetrics {
    pub fn drop(&self, reason: &'static str) {
        self.dropped.get_or_create(&ReasonLabels { reason }).inc();
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "turn_allocations",
            "TURN allocations currently held",
            self.allocations.clone(),
        );
        r.register(
            "turn_connections",
            "TURN TCP and TLS connections currently open",
            self.connections.clone(),
        );
        r.register(
            "turn_requests",
            "TURN requests by method and outcome",
            self.requests.clone(),
        );
        r.register(
            "turn_packets_to_peer",
            "Datagrams relayed from TURN clients to peers",
            self.packets_to_peer.clone(),
        );
        r.register(
            "turn_packets_to_client",
            "Datagrams relayed from peers to TURN clients",
            self.packets_to_client.clone(),
        );
        r.register(
            "turn_packets_in_process",
            "Of the relayed datagrams (both directions), those between a TURN client and relais's own media plane, handed over in-process",
            self.packets_in_process.clone(),
        );
        r.register(
            "turn_bytes_relayed",
            "Payload bytes relayed, both directions",
            self.bytes_relayed.clone(),
        );
        r.register(
            "turn_dropped",
            "TURN messages dropped, by reason",
            self.dropped.clone(),
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

/// Consultation recording metrics (see [`crate::recording`]).
#[derive(Default)]
pub struct RecordingMetrics {
    /// Participants being recorded now.
    pub active: Gauge,
    /// RTP packets handed to recorders.
    pub packets: Counter,
    /// Media dropped before a recorder saw it, by reason (`queue_full`).
    pub dropped: Family<ReasonLabels, Counter>,
    pub bytes_written: Counter,
    pub keyframe_requests: Counter,
    /// Packets a recorder's jitter buffer gave up waiting for (counted when it closes).
    pub packets_lost: Counter,
    /// Frames left out of files: incomplete, or waiting for a keyframe (when it closes).
    pub frames_dropped: Counter,
    /// Recordings closed, by final status (`finished`, `failed`, `interrupted`).
    pub closed: Family<StatusLabels, Counter>,
    /// Recordings deleted by the retention task.
    pub expired: Counter,
}

impl RecordingMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "recordings_active",
            "Participants being recorded",
            self.active.clone(),
        );
        r.register(
            "recording_packets",
            "RTP packets handed to recorders",
            self.packets.clone(),
        );
        r.register(
            "recording_packets_dropped",
            "Media dropped before a recorder saw it, by reason",
            self.dropped.clone(),
        );
        r.register(
            "recording_bytes_written",
            "Bytes written to recording files",
            self.bytes_written.clone(),
        );
        r.register(
            "recording_keyframe_requests",
            "Keyframes recorders asked publishers for",
            self.keyframe_requests.clone(),
        );
        r.register(
            "recording_packets_lost",
            "Packets recorders gave up waiting for",
            self.packets_lost.clone(),
        );
        r.register(
            "recording_frames_dropped",
            "Frames left out of recordings (incomplete, or before a keyframe)",
            self.frames_dropped.clone(),
        );
        r.register(
            "recordings_closed",
            "Recordings closed, by final status",
            self.closed.clone(),
        );
        r.register(
            "recordings_expired",
            "Recordings deleted by the retention setting",
            self.expired.clone(),
        );
    }
}

/// Media plane metrics (SFU).
#[derive(Default)]
pub struct MediaMetrics {
    pub peer_connections: Gauge,
    pub tracks: Gauge,
    pub sessions_active: Gauge,
    pub rtp_packets_forwarded: Counter,
    pub rtp_bytes_forwarded: Counter,
    pub rtp_packets_received: Counter,
    pub rtp_packets_dropped: Family<ReasonLabels, Counter>,
    pub udp_datagrams_unrouted: Counter,
    pub nacks_received: Counter,
    pub nacks_sent: Counter,
    /// Congestion control ([`crate::sfu::congestion`]).
    pub twcc_feedback_received: Counter,
    pub twcc_feedback_ignored: Counter,
    pub bwe_decreases: Counter,
    pub remb_sent: Counter,
    pub pacer_dropped: Counter,
    pub rtp_packets_retransmitted: Counter,
    pub plis_sent: Counter,
    pub ice_failures: Counter,
    pub renegotiations: Counter,
    pub signaling_errors: Family<KindLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("relais");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ])
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template",
            http_duration.clone(),
        );
        let socketio_connections = Gauge::default();
        registry.register(
            "socketio_connections",
            "Socket.IO sockets currently connected",
            socketio_connections.clone(),
        );
        let messages_stored = Counter::default();
        registry.register(
            "messages_stored",
            "Messages stored",
            messages_stored.clone(),
        );
        let auth_failures = Family::<TransportLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Refused authentications by transport",
            auth_failures.clone(),
        );
        let limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limited",
            "Connections, events and attempts refused by a per-client limit, by limit",
            limited.clone(),
        );
        let db_pool_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database pool connections by pool and state (idle, in_use)",
            db_pool_connections.clone(),
        );
        let shared_port = Family::<KindLabels, Counter>::default();
        registry.register(
            "shared_port_connections",
            "Connections to the shared HTTPS port, by protocol found or reason closed",
            shared_port.clone(),
        );
        let shared_port_pending = Gauge::default();
        registry.register(
            "shared_port_pending",
            "Connections to the shared HTTPS port not identified yet",
            shared_port_pending.clone(),
        );
        let media = MediaMetrics::default();
        media.register(&mut registry);
        let turn = TurnMetrics::default();
        turn.register(&mut registry);
        let recording = RecordingMetrics::default();
        recording.register(&mut registry);
        let audit_records = Counter::default();
        registry.register(
            "audit_records",
            "Audit trail records written",
            audit_records.clone(),
        );
        let audit_write_failures = Counter::default();
        registry.register(
            "audit_write_failures",
            "Audit trail records that could not be written",
            audit_write_failures.clone(),
        );
        let messages_expired = Counter::default();
        registry.register(
            "messages_expired",
            "Messages deleted by messaging.retention_days",
            messages_expired.clone(),
        );
        let attachments_expired = Counter::default();
        registry.register(
            "attachments_expired",
            "Attachments (files and rows) deleted by messaging.retention_days",
            attachments_expired.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            socketio_connections,
            messages_stored,
            auth_failures,
            limited,
            db_pool_connections,
            shared_port,
            shared_port_pending,
            media,
            turn,
            recording,
            audit_records,
            audit_write_failures,
            messages_expired,
            attachments_expired,
        }
    }

    /// One refusal by the limit `limit`.
    pub fn count_limited(&self, limit: &'static str) {
        self.limited.get_or_create(&LimitLabels { limit }).inc();
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl MediaMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "peer_connections",
            "WebRTC PeerConnections terminated by the server",
            self.peer_connections.clone(),
        );
        r.register(
            "tracks",
            "Media tracks published to the server",
            self.tracks.clone(),
        );
        r.register(
            "webrtc_sessions_active",
            "Consultations with at least one participant connected",
            self.sessions_active.clone(),
        );
        r.register(
            "rtp_packets_forwarded",
            "RTP packets sent to subscribers",
            self.rtp_packets_forwarded.clone(),
        );
        r.register(
            "rtp_bytes_forwarded",
            "RTP payload bytes sent to subscribers",
            self.rtp_bytes_forwarded.clone(),
        );
        r.register(
            "rtp_packets_received",
            "RTP packets received from publishers",
            self.rtp_packets_received.clone(),
        );
        r.register(
            "rtp_packets_dropped",
            "RTP packets not forwarded, by reason",
            self.rtp_packets_dropped.clone(),
        );
        r.register(
            "udp_datagrams_unrouted",
            "Datagrams on the media port that matched no PeerConnection",
            self.udp_datagrams_unrouted.clone(),
        );
        r.register(
            "nacks_received",
            "NACK feedback packets received",
            self.nacks_received.clone(),
        );
        r.register(
            "nacks_sent",
            "Packets asked for again from publishers (generic NACK)",
            self.nacks_sent.clone(),
        );
        r.register(
            "twcc_feedback_received",
            "Transport-cc feedback packets received from subscribers",
            self.twcc_feedback_received.clone(),
        );
        r.register(
            "twcc_feedback_ignored",
            "Transport-cc feedback packets that named nothing relais sent (or already reported)",
            self.twcc_feedback_ignored.clone(),
        );
        r.register(
            "bwe_decreases",
            "Times a subscriber connection's bandwidth estimate fell (delay, queue or loss)",
            self.bwe_decreases.clone(),
        );
        r.register(
            "pacer_dropped",
            "Video datagrams a subscriber's pacer dropped (its queue held 400 ms already)",
            self.pacer_dropped.clone(),
        );
        r.register(
            "remb_sent",
            "REMB messages sent to publishers (their subscribers' cap)",
            self.remb_sent.clone(),
        );
        r.register(
            "rtp_packets_retransmitted",
            "RTP packets sent again to subscribers that NACKed them",
            self.rtp_packets_retransmitted.clone(),
        );
        r.register(
            "plis_sent",
            "Picture loss indications sent to publishers",
            self.plis_sent.clone(),
        );
        r.register(
            "ice_failures",
            "PeerConnections whose ICE failed",
            self.ice_failures.clone(),
        );
        r.register(
            "renegotiations",
            "Server-initiated offers",
            self.renegotiations.clone(),
        );
        r.register(
            "signaling_errors",
            "webrtc_error events sent, by code",
            self.signaling_errors.clone(),
        );
    }
}
