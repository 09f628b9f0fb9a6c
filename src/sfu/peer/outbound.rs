//! What leaves one PeerConnection for its client, shared by its own task and the tasks of the
//! publishers it receives from: the SRTP context of that direction, the media path, and one
//! [`Leg`] per subscribed source (this leg's SSRC, numbering, payload type, extension ids, what
//! was sent). A publisher forwards a packet straight into the subscriber's `Outbound`: rewrite,
//! encrypt, queue on the socket, in the publisher's task; the subscriber's task is not woken.
//!
//! Why: with a queue between the two tasks, every forwarded packet paid a channel send and
//! receive and a wake-up of the subscriber's task; measured in the README's media benchmark.
//!
//! Invariants:
//! - the lock is held for one packet or one RTCP message at a time, never across an `.await`,
//!   and a task holding it takes no other lock (so two peers' locks are never nested);
//! - nothing is sent before the SRTP keys exist ([`Outbound::connect`]) or after
//!   [`Outbound::close`]; a publisher that finds the `Outbound` closed drops its link;
//! - the socket's outbox is bounded and drops when full: forwarding never blocks on the client;
//! - every datagram of a leg that negotiated transport-cc carries the next transport-wide
//!   number of this connection, recorded in its [`SendLog`] with its size and departure, so the
//!   client's feedback feeds this connection's [`Estimator`] (a retransmission is the same
//!   datagram, number included, and is marked so).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::header::Extension;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::context::Context;

use super::retransmit::SentHistory;
use crate::codec::Codec;
use crate::sfu::congestion::estimator::{Bounds, Estimator, FeedbackOutcome};
use crate::sfu::congestion::pacer::Pacer;
use crate::sfu::congestion::send_log::SendLog;
use crate::sfu::feedback::reports::SendCounters;
use crate::sfu::forward::{GateDecision, Incoming, LegGate};
use crate::sfu::media_plane::{MediaPlane, Transport};
use crate::sfu::types::{FastMap, TrackId, internal_ext};

const ONE_BYTE_PROFILE: u16 = 0xBEDE;
const TWO_BYTE_PROFILE: u16 = 0x1000;

pub type SharedOutbound = Arc<parking_lot::Mutex<Outbound>>;

/// This leg's ids for the extensions we write.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LegExtensions {
    pub mid: Option<u8>,
    pub audio_level: Option<u8>,
    pub video_orientation: Option<u8>,
    pub transport_cc: Option<u8>,
}

/// Placeholder payload of the transport-wide sequence number, written in place once numbered.
static TWCC_PLACEHOLDER: [u8; 2] = [0, 0];

/// How one subscribed source leaves on this connection.
pub struct Leg {
    pub out_ssrc: u32,
    pub clock_rate: u32,
    /// Numbering, and the wait for a keyframe with its requests (keyframe until pass).
    gate: LegGate,
    /// This leg's payload type for each codec the client accepted on its m-line; empty until
    /// an offer/answer carrying the leg completed. A packet of a codec the client did not
    /// accept is not sent (the publisher is asked to change codec, see the room).
    pub payload_types: Vec<(Codec, u8)>,
    pub ext: LegExtensions,
    pub mid: Option<Bytes>,
    /// What went out, for statistics and Sender Reports.
    pub sent: SendCounters,
    /// Video: the datagrams recently sent, to answer NACKs.
    history: Option<SentHistory>,
}

impl Leg {
    pub fn new(out_ssrc: u32, clock_rate: u32, video: bool, initial_seq: u16) -> Self {
        Self {
            out_ssrc,
            clock_rate,
            gate: LegGate::new(clock_rate, video, initial_seq),
            payload_types: Vec::new(),
            ext: LegExtensions::default(),
            mid: None,
            sent: SendCounters::default(),
            history: video.then(SentHistory::default),
        }
    }

    /// The payload type this leg negotiated for `codec`.
    pub fn payload_type(&self, codec: Codec) -> Option<u8> {
        self.payload_types
            .iter()
            .find(|(c, _)| *c == codec)
            .map(|(_, pt)| *pt)
    }
}

/// What became of one packet handed to [`Outbound::forward`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Sent, with this many payload octets.
    Sent(usize),
    /// Not sent (counted under this reason).
    Dropped(&'static str),
    /// Not sent: the leg waits for a keyframe and asks for one now (throttled).
    WantsKeyframe,
    /// The connection is gone: the publisher should forget this subscriber.
    Closed,
}

pub struct Outbound {
    plane: Arc<MediaPlane>,
    srtp: Option<Context>,
    dest: Option<(SocketAddr, Transport)>,
    closed: bool,
    /// Reused to lay out each packet before it is encrypted.
    scratch: Vec<u8>,
    legs: FastMap<TrackId, Leg>,
    /// Transport-wide numbering of what leaves, and the bandwidth estimate it feeds.
    send_log: SendLog,
    estimator: Estimator,
    /// Video waiting to leave at the link's pace (datagram, transport-wide number).
    pacer: Pacer<(Bytes, Option<u16>)>,
    /// Wakes the connection's task when the pacer's queue gets its first datagram.
    pacer_wake: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("legs", &self.legs.len())
            .field("connected", &self.srtp.is_some())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    pub fn shared(plane: Arc<MediaPlane>) -> SharedOutbound {
        Arc::new(parking_lot::Mutex::new(Self {
            plane,
            srtp: None,
            dest: None,
            closed: false,
            scratch: Vec::new(),
            legs: FastMap::default(),
            send_log: SendLog::default(),
            estimator: Estimator::new(Bounds::default()),
            pacer: Pacer::default(),
            pacer_wake: Arc::new(tokio::sync::Notify::new()),
        }))
    }

    /// The SRTP keys of this direction exist: media may leave.
    pub fn connect(&mut self, srtp: Context) {
        self.srtp = Some(srtp);
    }

    /// Where media goes (ICE's selected path).
    pub fn set_path(&mut self, dest: (SocketAddr, Transport)) {
        self.dest = Some(dest);
    }

    /// The connection ended: nothing more leaves, publishers let go.
    pub fn close(&mut self) {
        self.closed = true;
        self.srtp = None;
        self.legs.clear();
    }

    pub fn add_leg(&mut self, track: TrackId, leg: Leg) {
        self.legs.insert(track, leg);
    }

    pub fn remove_leg(&mut self, track: TrackId) -> Option<Leg> {
        self.legs.remove(&track)
    }

    pub fn leg_mut(&mut self, track: TrackId) -> Option<&mut Leg> {
        self.legs.get_mut(&track)
    }

    pub fn leg(&self, track: TrackId) -> Option<&Leg> {
        self.legs.get(&track)
    }

    /// Rewrites `packet` of `track` (coded with `codec`) for this leg (SSRC, numbering, payload
    /// type, extension ids), encrypts and queues it.
    pub fn forward(
        &mut self,
        track: TrackId,
        mut packet: rtc::rtp::Packet,
        codec: Codec,
        keyframe: bool,
        now: Instant,
    ) -> Forward {
        if self.closed {
            return Forward::Closed;
        }
        let Some(leg) = self.legs.get_mut(&track) else {
            return Forward::Dropped("not_subscribed");
        };
        let (Some(srtp), Some((to, transport))) = (self.srtp.as_mut(), self.dest) else {
            return Forward::Dropped("leg_not_ready");
        };
        let Some(pt) = leg.payload_type(codec) else {
            return Forward::Dropped(if leg.payload_types.is_empty() {
                "leg_not_ready"
            } else {
                "codec_not_accepted"
            });
        };
        let h = &mut packet.header;
        let decision = leg.gate.decide(&Incoming {
            ssrc: h.ssrc,
            seq: h.sequence_number,
            ts: h.timestamp,
            keyframe,
            at: now,
        });
        let (seq, ts) = match decision {
            GateDecision::Forward { seq, ts } => (seq, ts),
            GateDecision::DropAndAskKeyframe => return Forward::WantsKeyframe,
            GateDecision::Drop(reason) => return Forward::Dropped(reason.label()),
        };
        h.ssrc = leg.out_ssrc;
        h.sequence_number = seq;
        h.timestamp = ts;
        h.payload_type = pt;
        rewrite_extensions(h, &leg.ext, leg.mid.as_ref());
        let size = packet.marshal_size();
        if self.scratch.len() < size {
            self.scratch.resize(size, 0);
        }
        let twcc = leg
            .ext
            .transport_cc
            .map(|_| self.send_log.next(now, size + SRTP_AUTH_TAG));
        let datagram = packet.marshal_to(&mut self.scratch[..size]).and_then(|n| {
            if let Some(number) = twcc {
                // The number's place: the first extension element, after the fixed header,
                // the CSRCs and the extension header, and the element's own header.
                let h = &packet.header;
                let element_header = if h.extension_profile == ONE_BYTE_PROFILE {
                    1
                } else {
                    2
                };
                let at = 12 + 4 * h.csrc.len() + 4 + element_header;
                if let Some(place) = self.scratch.get_mut(at..at + 2) {
                    place.copy_from_slice(&number.to_be_bytes());
                }
            }
            srtp.encrypt_rtp_with_header(&self.scratch[..n], &packet.header)
        });
        let datagram = match datagram {
            Ok(d) => d.freeze(),
            Err(e) => {
                tracing::debug!(error = %e, "forward refused");
                return Forward::Dropped("write_failed");
            }
        };
        let payload_len = packet.payload.len();
        leg.sent.sent(ts, payload_len, now);
        let Some(history) = leg.history.as_mut() else {
            // Audio leaves at once, paced or not.
            self.plane.send(datagram, to, transport);
            return Forward::Sent(payload_len);
        };
        history.record(seq, twcc, now, datagram.clone());
        let len = datagram.len();
        let was_idle = self.pacer.queued() == 0;
        if let Some((datagram, _)) = self.pacer.offer((datagram, twcc), len, now) {
            self.plane.send(datagram, to, transport);
        } else if was_idle {
            self.pacer_wake.notify_one();
        }
        Forward::Sent(payload_len)
    }

    /// Sends again what the client reports lost on `track` and is still kept; how many.
    pub fn resend(&mut self, track: TrackId, seqs: impl Iterator<Item = u16>, now: Instant) -> u64 {
        let (Some(leg), Some((to, transport))) = (self.legs.get_mut(&track), self.dest) else {
            return 0;
        };
        let Some(history) = leg.history.as_mut() else {
            return 0;
        };
        let mut resent = 0;
        for seq in seqs {
            if let Some((datagram, twcc)) = history.resend(seq, now) {
                if let Some(number) = twcc {
                    self.send_log.mark_resent(number);
                }
                self.plane.send(datagram, to, transport);
                resent += 1;
            }
        }
        resent
    }

    /// The client's transport-cc feedback on what this connection sent.
    pub fn on_transport_feedback(
        &mut self,
        feedback: &rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc,
        now: Instant,
    ) -> FeedbackOutcome {
        let outcome = self.estimator.on_twcc(&self.send_log, feedback, now);
        self.pace(now);
        outcome
    }

    /// The pacer follows the estimate (none while it limits nothing).
    pub fn pace(&mut self, now: Instant) {
        let estimator = &self.estimator;
        self.pacer
            .set_estimate(estimator.limited(now).then(|| estimator.estimate(now)));
    }

    /// What wakes the connection's task for the pacer.
    pub fn pacer_wake(&self) -> Arc<tokio::sync::Notify> {
        self.pacer_wake.clone()
    }

    /// Sends the video the pacer lets go at `now`; when it next will, and how many datagrams
    /// it dropped so far (its queue full).
    pub fn release_paced(
        &mut self,
        now: Instant,
        scratch: &mut Vec<(Bytes, Option<u16>)>,
    ) -> (Option<Instant>, u64) {
        scratch.clear();
        self.pacer.release(now, scratch);
        if let Some((to, transport)) = self.dest {
            for (datagram, twcc) in scratch.drain(..) {
                if let Some(number) = twcc {
                    self.send_log.set_departure(number, now);
                }
                self.plane.send(datagram, to, transport);
            }
        }
        scratch.clear();
        (self.pacer.next_release(now), self.pacer.dropped)
    }

    /// When the pacer next lets video go.
    pub fn next_paced(&self, now: Instant) -> Option<Instant> {
        self.pacer.next_release(now)
    }

    pub fn estimator(&self) -> &Estimator {
        &self.estimator
    }

    pub fn estimator_mut(&mut self) -> &mut Estimator {
        &mut self.estimator
    }

    /// The client's round trip, from its reports on our Sender Reports: the estimator's pace,
    /// and how long video is kept for NACKs.
    pub fn set_round_trip(&mut self, rtt: std::time::Duration) {
        self.estimator.set_rtt(rtt);
        for leg in self.legs.values_mut() {
            if let Some(history) = leg.history.as_mut() {
                history.set_round_trip(rtt);
            }
        }
    }

    /// How many legs of each kind this connection carries: (audio, video).
    pub fn leg_counts(&self) -> (usize, usize) {
        let video = self.legs.values().filter(|l| l.history.is_some()).count();
        (self.legs.len() - video, video)
    }

    /// A Sender Report for each leg that sent something.
    pub fn sender_reports(&self, now: Instant, wall: SystemTime) -> Vec<SenderReport> {
        self.legs
            .values()
            .filter_map(|l| l.sent.report(l.out_ssrc, l.clock_rate, now, wall))
            .collect()
    }

    /// Encrypts RTCP and sends it on the media path; false when it could not.
    pub fn send_rtcp(&mut self, plain: &[u8]) -> bool {
        let (Some(srtp), Some((to, transport))) = (self.srtp.as_mut(), self.dest) else {
            return false;
        };
        match srtp.encrypt_rtcp(plain) {
            Ok(d) => {
                self.plane.send(d.freeze(), to, transport);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "RTCP not sent");
                false
            }
        }
    }

    /// Sends a datagram protected elsewhere (DTLS) on the media path.
    pub fn send_raw(&self, datagram: Bytes, fallback: Option<(SocketAddr, Transport)>) {
        if let Some((to, transport)) = self.dest.or(fallback) {
            self.plane.send(datagram, to, transport);
        }
    }
}

/// About what SRTP adds to a packet (its authentication tag), counted in the size the send log
/// records.
const SRTP_AUTH_TAG: usize = 10;

/// Rewrites the forwarded extensions (internal ids) to this leg's ids and adds this leg's mid,
/// and the transport-wide number's place first (its value is written once numbered).
fn rewrite_extensions(h: &mut rtc::rtp::header::Header, leg: &LegExtensions, mid: Option<&Bytes>) {
    h.extensions.retain_mut(|e| {
        let id = match e.id {
            internal_ext::AUDIO_LEVEL => leg.audio_level,
            internal_ext::VIDEO_ORIENTATION => leg.video_orientation,
            _ => None,
        };
        match id {
            Some(id) => {
                e.id = id;
                true
            }
            None => false,
        }
    });
    if let Some(id) = leg.transport_cc {
        h.extensions.insert(
            0,
            Extension {
                id,
                payload: Bytes::from_static(&TWCC_PLACEHOLDER),
            },
        );
    }
    if let (Some(id), Some(mid)) = (leg.mid, mid) {
        h.extensions.push(Extension {
            id,
            payload: mid.clone(),
        });
    }
    h.extension = !h.extensions.is_empty();
    h.extensions_padding = 0;
    let one_byte = h
        .extensions
        .iter()
        .all(|e| (1..=14).contains(&e.id) && (1..=16).contains(&e.payload.len()));
    h.extension_profile = if one_byte {
        ONE_BYTE_PROFILE
    } else {
        TWO_BYTE_PROFILE
    };
}
