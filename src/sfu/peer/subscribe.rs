//! What a peer receives from others: one outgoing track per subscribed source (negotiated
//! here; its packets are rewritten and sent by the publishers' tasks, see [`super::outbound`]),
//! and the subscriber's RTCP (PLI/FIR become keyframe requests to the publisher; NACKs are
//! answered from the datagrams recently sent, see [`super::retransmit`]; receiver reports feed
//! the statistics).
//!
//! Where a track goes (an m-line's sending half), first found first taken:
//! 1. a sending half that carried a track before and whose stop the client has seen (an
//!    offer/answer completed since): same SSRC, numbering continued;
//! 2. an m-line that sends nothing yet: one the client offered to send and receive on (as a
//!    peer-to-peer call carries the other side's camera on the m-line that publishes yours, so a
//!    1:1 call needs one m-line per kind), or a slot of our first offer not yet sent;
//! 3. before anything was negotiated, nothing else: our first offer has at most one m-line per
//!    kind, because a client that gathers one transport per kind before BUNDLE is agreed (aiortc's
//!    default) loses every further m-line of a kind that arrives in that first offer; the rest
//!    follows in the next offer;
//! 4. a new `sendonly` m-line.
//!
//! Invariants:
//! - nothing is forwarded on an m-line the client did not accept: a leg gets payload types only
//!   from a completed negotiation in which the client receives on it ([`Peer::check_legs`]);
//! - a track the client refused on its own m-line moves to a new one; one refused on an m-line
//!   of its own, or whose codec the client does not take, is reported to the room;
//! - an m-line's MID, payload types and extension ids never change once negotiated (a stopped
//!   sending half keeps its SSRC for the next track).

use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverId, RTCRtpTransceiverInit,
};
use rtc::sdp::extmap::{AUDIO_LEVEL_URI, SDES_MID_URI, TRANSPORT_CC_URI, VIDEO_ORIENTATION_URI};

use super::Peer;
use super::outbound::{Leg, LegExtensions};
use super::stats::{RateMeter, TrackStatsView};
use crate::codec::{Codec, h264_match};
use crate::error::ErrorCode;
use crate::sfu::congestion::cap::video_share;
use crate::sfu::feedback::reports::{ntp, round_trip};
use crate::sfu::forward::Throttle;
use crate::sfu::sdp::sections::Sections;
use crate::sfu::types::{MediaKind, PeerCommand, PeerEvent, TrackId, TrackInfo};

/// A subscriber's keyframe requests for one track reach its publisher at most this often (the
/// publisher throttles what it sends its client further): a flood of PLI or FIR cannot fill the
/// publisher's command queue.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(100);
/// A video leg's share is told to its publisher again when it moved by more than this part…
const SHARE_CHANGE: f64 = 0.05;
/// …or this long after it was last told.
const SHARE_REFRESH: Duration = Duration::from_secs(2);

/// A subscriber's keyframe requests (PLI or FIR) for one track: every one counted, passed on
/// to the publisher at most once per [`KEYFRAME_REQUEST_INTERVAL`] (PLI and FIR alike).
#[derive(Debug, Default)]
pub(super) struct KeyframeRequests {
    /// Requests from the client.
    received: u64,
    throttle: Throttle,
}

impl KeyframeRequests {
    /// One request from the client at `now`: true when it goes on to the publisher.
    fn on_request(&mut self, now: Instant) -> bool {
        self.received += 1;
        self.throttle.allow(now, KEYFRAME_REQUEST_INTERVAL)
    }
}

/// An outgoing track as the subscriber's task keeps it (its forwarding state is in the
/// [`super::outbound::Outbound`]).
pub(super) struct DownTrack {
    pub(super) info: TrackInfo,
    sender: RTCRtpSenderId,
    pub(super) out_ssrc: u32,
    codec: Codec,
    /// The m-line was made for this track (not one the client publishes on, nor a slot).
    dedicated: bool,
    /// The publisher's codec this client was found not to accept (reported once).
    codec_reported: Option<Codec>,
    rate: RateMeter,
    /// Packets the client reported lost (NACKed), and those sent again.
    nacks: u64,
    retransmitted: u64,
    /// The client's PLI and FIR for this track, and what of them reached the publisher.
    keyframe_requests: KeyframeRequests,
    remote_lost: u64,
    remote_fraction_lost: f64,
    remote_jitter: u32,
    /// Video: this leg's share of the connection's estimate as last told to the publisher
    /// (`None`: not limited), and when.
    told_share: Option<(Option<f64>, Instant)>,
}

/// The sending half of an m-line that carried a track and carries none now. Its SSRC and
/// numbering ([`Leg`]) go to the next track it carries, so the client sees one stream.
pub(super) struct IdleSender {
    sender: RTCRtpSenderId,
    kind: MediaKind,
    ssrc: u32,
    leg: Leg,
    /// An offer/answer completed since it stopped: the client saw it stop.
    reusable: bool,
    /// The client refused to receive on this m-line: never used again.
    refused: bool,
}

fn rtc_kind(kind: MediaKind) -> RtpCodecKind {
    match kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    }
}

/// The track as the client sees it: its stream is the publisher's (`medecin-79`, or
/// `medecin-79.2` for a second stream such as a shared screen), so a client groups a
/// participant's audio and video, tells participants apart, and shows a screen on its own.
fn client_track(info: &TrackInfo, ssrc: u32) -> MediaStreamTrack {
    let stream = info.stream.clone();
    MediaStreamTrack::new(
        stream.clone(),
        format!("{stream}-{}-{}", info.kind.as_str(), info.id),
        format!("{} {}", info.owner.role, info.kind.as_str()),
        rtc_kind(info.kind),
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            // No codec: the m-line keeps every codec negotiated on it (the client may publish
            // on it with one, and the publisher may change codec later).
            ..Default::default()
        }],
    )
}

impl Peer {
    pub(super) fn subscribe(&mut self, info: TrackInfo) {
        if self.downs.contains_key(&info.id)
            || (info.owner == self.ctx.owner && !self.ctx.echo)
            || self.deferred.iter().any(|d| d.id == info.id)
        {
            return;
        }
        // 1. A sending half the client saw stop.
        let candidates: Vec<usize> = (0..self.idle.len())
            .filter(|&i| {
                let s = &self.idle[i];
                s.reusable && !s.refused && s.kind == info.kind
            })
            .collect();
        let reuse = candidates
            .into_iter()
            .find(|&i| self.mline_lists(self.idle[i].sender.into(), &info.codec));
        if let Some(i) = reuse {
            let idle = self.idle.remove(i);
            if let Some(mut t) = self.pc.rtp_transceiver(idle.sender.into()) {
                let d = t.direction();
                t.set_direction(RTCRtpTransceiverDirection::from_send_recv(
                    true,
                    d.has_recv(),
                ));
            }
            let replaced = self
                .pc
                .rtp_sender(idle.sender)
                .map(|mut s| s.replace_track(client_track(&info, idle.ssrc)));
            if matches!(replaced, Some(Ok(()))) {
                self.add_down(info, idle.sender, idle.ssrc, idle.leg, false);
                return;
            }
            tracing::debug!(
                peer = %self.ctx.id,
                "an idle sending half could not be reused"
            );
        }
        // 2. An m-line that sends nothing yet.
        let fresh_leg = |info: &TrackInfo, ssrc: u32| {
            Leg::new(
                ssrc,
                info.codec.clock_rate,
                info.kind == MediaKind::Video,
                rand::random(),
            )
        };
        if self.free_mline(&info).is_some() {
            let ssrc = self.new_ssrc();
            match self.pc.add_track(client_track(&info, ssrc)) {
                Ok(sender) => {
                    let leg = fresh_leg(&info, ssrc);
                    self.add_down(info, sender, ssrc, leg, false);
                    return;
                }
                Err(e) => {
                    tracing::debug!(peer = %self.ctx.id, error = %e, "no free m-line after all")
                }
            }
        }
        // 3. Our first offer carries one m-line per kind at most.
        if !self.remote_set {
            self.deferred.push(info);
            return;
        }
        // 4. A new m-line.
        let ssrc = self.new_ssrc();
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![info.stream.clone()],
            send_encodings: vec![],
        };
        match self
            .pc
            .add_transceiver_from_track(client_track(&info, ssrc), Some(init))
        {
            Ok(t) => {
                let leg = fresh_leg(&info, ssrc);
                self.add_down(info, RTCRtpSenderId::from(t), ssrc, leg, true);
            }
            Err(e) => {
                tracing::warn!(peer = %self.ctx.id, track = %info.id, error = %e, "cannot send this track");
            }
        }
    }

    fn new_ssrc(&self) -> u32 {
        let mut rng = rand::rng();
        loop {
            let s: u32 = rng.random();
            if s != 0
                && !self.down_by_ssrc.contains_key(&s)
                && !self.idle.iter().any(|i| i.ssrc == s)
            {
                break s;
            }
        }
    }

    fn add_down(
        &mut self,
        info: TrackInfo,
        sender: RTCRtpSenderId,
        out_ssrc: u32,
        leg: Leg,
        dedicated: bool,
    ) {
        self.outbound.lock().add_leg(info.id, leg);
        let down = DownTrack {
            sender,
            out_ssrc,
            codec: Codec::from_mime(&info.codec.mime_type),
            dedicated,
            codec_reported: None,
            rate: RateMeter::default(),
            nacks: 0,
            retransmitted: 0,
            keyframe_requests: KeyframeRequests::default(),
            remote_lost: 0,
            remote_fraction_lost: 0.0,
            remote_jitter: 0,
            told_share: None,
            info,
        };
        self.down_by_ssrc.insert(out_ssrc, down.info.id);
        self.downs.insert(down.info.id, down);
        self.negotiation_needed = true;
    }

    /// The m-line `add_track` would take for `info` (the first of its kind with no sending
    /// half), when it suits: not rejected, not one the client said it only sends on, and listing
    /// the track's codec once negotiated.
    fn free_mline(&mut self, info: &TrackInfo) -> Option<RTCRtpTransceiverId> {
        let ids: Vec<RTCRtpTransceiverId> = self.pc.get_transceivers().collect();
        for tid in ids {
            let Some(t) = self.pc.rtp_transceiver(tid) else {
                continue;
            };
            if t.sender().is_some() {
                continue;
            }
            let mid = t.mid().clone();
            if self.mline_kind(tid, mid.as_deref()) != Some(info.kind) {
                continue;
            }
            // The first one of the kind is the one `add_track` takes: suitable or not, no other.
            // Once negotiated, it suits only if the client offered it receiving: a client that
            // answered one of our receive-only slots may have no receiver behind it (webrtc-rs
            // makes none for a transceiver it created `sendonly`), and one that offered it
            // `sendonly` said it does not want to receive there.
            let Some(mid) = mid else {
                return Some(tid);
            };
            let offered_receiving = self
                .client_offered
                .iter()
                .any(|(m, receives)| *m == mid && *receives);
            let rejected = self
                .remote_sections
                .by_mid(&mid)
                .is_some_and(|s| s.rejected());
            return (offered_receiving && !rejected && self.mline_lists(tid, &info.codec))
                .then_some(tid);
        }
        None
    }

    /// The kind of an m-line: from the stack while it sends or receives, else from the client's
    /// description.
    fn mline_kind(&mut self, tid: RTCRtpTransceiverId, mid: Option<&str>) -> Option<MediaKind> {
        if let Some((_, kind)) = self.slots.iter().find(|(id, _)| *id == tid) {
            return Some(*kind);
        }
        let from_stack = |k: RtpCodecKind| match k {
            RtpCodecKind::Audio => Some(MediaKind::Audio),
            RtpCodecKind::Video => Some(MediaKind::Video),
            _ => None,
        };
        if let Some(r) = self.pc.rtp_receiver(tid.into()) {
            return from_stack(r.track().kind());
        }
        if let Some(s) = self.pc.rtp_sender(tid.into()) {
            return from_stack(s.track().kind());
        }
        match self.remote_sections.by_mid(mid?)?.kind.as_str() {
            "audio" => Some(MediaKind::Audio),
            "video" => Some(MediaKind::Video),
            _ => None,
        }
    }

    /// Whether an m-line can carry `codec`: not negotiated yet (our offer will list every codec
    /// of its kind), or the client's last description lists it.
    fn mline_lists(&mut self, tid: RTCRtpTransceiverId, codec: &RTCRtpCodec) -> bool {
        let Some(t) = self.pc.rtp_transceiver(tid) else {
            return false;
        };
        match t
            .mid()
            .as_deref()
            .and_then(|m| self.remote_sections.by_mid(m))
        {
            None => true,
            Some(s) => s.lists(&codec.mime_type),
        }
    }

    pub(super) fn unsubscribe(&mut self, track: TrackId) {
        self.deferred.retain(|d| d.id != track);
        let Some(down) = self.downs.remove(&track) else {
            return;
        };
        self.retire(down, false);
    }

    /// Stops the sending half of `down`'s m-line; it stays with its SSRC for a later track.
    fn retire(&mut self, down: DownTrack, refused: bool) {
        self.down_by_ssrc.remove(&down.out_ssrc);
        let leg = self.outbound.lock().remove_leg(down.info.id);
        // The stopped half keeps its SSRC but not the track's name: the same track on another
        // m-line (moved there) would otherwise appear twice, and browsers refuse an offer with
        // a duplicate `a=msid`.
        if let Some(mut sender) = self.pc.rtp_sender(down.sender) {
            let idle = MediaStreamTrack::new(
                "-".into(),
                format!("idle-{}", down.out_ssrc),
                "idle".into(),
                rtc_kind(down.info.kind),
                Vec::new(),
            );
            let _ = sender.replace_track(idle);
        }
        if let Some(mut t) = self.pc.rtp_transceiver(down.sender.into()) {
            let d = t.direction();
            t.set_direction(RTCRtpTransceiverDirection::from_send_recv(
                false,
                d.has_recv(),
            ));
        }
        if let Some(leg) = leg {
            self.idle.push(IdleSender {
                sender: down.sender,
                kind: down.info.kind,
                ssrc: down.out_ssrc,
                leg,
                reusable: false,
                refused,
            });
        }
        self.negotiation_needed = true;
    }

    /// After each completed offer/answer: each outgoing track's leg learns what the client
    /// accepted (payload types per codec, extension ids, mid), tracks refused on a client's own
    /// m-line move to an m-line of their own, and what cannot be sent is reported to the room.
    /// `remote` is the client's description just applied.
    pub(super) fn check_legs(&mut self, remote: &Sections) {
        for idle in &mut self.idle {
            idle.reusable = true;
        }
        let ids: Vec<TrackId> = self.downs.keys().copied().collect();
        let mut moves = Vec::new();
        for id in ids {
            let sender = self.downs[&id].sender;
            let Some(mid) = self
                .pc
                .rtp_transceiver(sender.into())
                .and_then(|t| t.mid().clone())
            else {
                continue; // not offered yet
            };
            let Some(section) = remote.by_mid(&mid) else {
                continue;
            };
            if section.rejected() || !section.direction().receives() {
                if self.downs[&id].dedicated {
                    let down = self.downs.remove(&id).expect("listed");
                    let message = format!(
                        "you did not accept the m-line (mid {mid}) that carries the {} of {} {}:                          answer it recvonly to receive it",
                        down.info.kind.as_str(),
                        down.info.owner.role,
                        down.info.owner.id
                    );
                    self.report_refused(&down.info, ErrorCode::TrackRefused, message);
                    self.retire(down, true);
                } else {
                    moves.push(id);
                }
                continue;
            }
            self.learn_leg(id, section, remote);
        }
        for id in moves {
            // The client publishes here but does not receive: the track gets its own m-line.
            if let Some(down) = self.downs.remove(&id) {
                let info = down.info.clone();
                self.retire(down, true);
                self.subscribe(info);
            }
        }
    }

    /// What the client accepted on `id`'s m-line.
    fn learn_leg(
        &mut self,
        id: TrackId,
        section: &crate::sfu::sdp::sections::Section,
        remote: &Sections,
    ) {
        let down = &self.downs[&id];
        let sender = down.sender;
        let wanted = down.info.codec.clone();
        let Some(mut s) = self.pc.rtp_sender(sender) else {
            return;
        };
        let params = s.get_parameters().rtp_parameters.clone();
        let mut payload_types: Vec<(Codec, u8)> = Vec::new();
        // For each codec, the payload type the client listed (for H264 the variant closest to
        // the publisher's: same packetization mode, then same profile).
        for c in &params.codecs {
            let codec = Codec::from_mime(&c.rtp_codec.mime_type);
            if codec == Codec::Other || !section.lists(&c.rtp_codec.mime_type) {
                continue;
            }
            match payload_types.iter_mut().find(|(k, _)| *k == codec) {
                None => payload_types.push((codec, c.payload_type)),
                Some(entry) if codec == Codec::H264 => {
                    let current = params
                        .codecs
                        .iter()
                        .find(|p| p.payload_type == entry.1)
                        .map(|p| h264_match(&p.rtp_codec.sdp_fmtp_line, &wanted.sdp_fmtp_line))
                        .unwrap_or(0);
                    if h264_match(&c.rtp_codec.sdp_fmtp_line, &wanted.sdp_fmtp_line) > current {
                        entry.1 = c.payload_type;
                    }
                }
                Some(_) => {}
            }
        }
        let mut ext = LegExtensions::default();
        for e in &params.header_extensions {
            let id = u8::try_from(e.id).ok();
            match e.uri.as_str() {
                SDES_MID_URI => ext.mid = id,
                AUDIO_LEVEL_URI => ext.audio_level = id,
                TRANSPORT_CC_URI => ext.transport_cc = id,
                VIDEO_ORIENTATION_URI => ext.video_orientation = id,
                _ => {}
            }
        }
        let mid = self
            .pc
            .rtp_transceiver(sender.into())
            .and_then(|t| t.mid().clone())
            .map(Bytes::from);
        let codec = self.downs[&id].codec;
        let unsupported = !payload_types.iter().any(|(c, _)| *c == codec);
        if let Some(leg) = self.outbound.lock().leg_mut(id) {
            leg.payload_types = payload_types;
            leg.ext = ext;
            leg.mid = mid;
        }
        if unsupported && self.downs[&id].codec_reported != Some(codec) {
            let down = self.downs.get_mut(&id).expect("listed");
            down.codec_reported = Some(codec);
            let info = down.info.clone();
            let _ = self.ctx.events.send(PeerEvent::CodecUnsupported {
                peer: self.ctx.id,
                track: info.id,
                codec,
                accepted: accepted_codecs(remote, info.kind),
            });
        }
    }

    fn report_refused(&self, info: &TrackInfo, code: ErrorCode, message: String) {
        let _ = self.ctx.events.send(PeerEvent::Refused {
            peer: self.ctx.id,
            track: info.id,
            code,
            message,
        });
    }

    /// Feedback from the client about what we send it (and reports on what it sends us).
    pub(super) fn on_rtcp(&mut self, packets: &[Box<dyn rtc::rtcp::Packet>], now: Instant) {
        let mut keyframe_for = Vec::new();
        let mut estimate_changed = false;
        for p in packets {
            let any = p.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                keyframe_for.push(pli.media_ssrc);
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                keyframe_for.extend(fir.fir.iter().map(|e| e.ssrc));
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                self.answer_nack(nack, now);
            } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                self.apply_reports(&rr.reports);
            } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
                self.record_sender_report(sr, now);
                self.apply_reports(&sr.reports);
            } else if let Some(fb) = any.downcast_ref::<TransportLayerCc>() {
                let mut outbound = self.outbound.lock();
                let before = outbound.estimator().decreases;
                let outcome = outbound.on_transport_feedback(fb, now);
                let decreases = outbound.estimator().decreases - before;
                drop(outbound);
                let media = &self.ctx.metrics.media;
                media.twcc_feedback_received.inc();
                if outcome.reported == 0 {
                    media.twcc_feedback_ignored.inc();
                }
                media.bwe_decreases.inc_by(decreases);
                estimate_changed = true;
            } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                let mut outbound = self.outbound.lock();
                outbound
                    .estimator_mut()
                    .on_remb(f64::from(remb.bitrate), now);
                outbound.pace(now);
                estimate_changed = true;
            }
        }
        if estimate_changed {
            self.share_estimate(now);
        }
        for ssrc in keyframe_for {
            let Some(down) = self.down_for_ssrc(ssrc) else {
                continue;
            };
            if !down.keyframe_requests.on_request(now) {
                continue;
            }
            let _ = down.info.publisher.try_send(PeerCommand::RequestKeyframe {
                track: down.info.id,
            });
        }
    }

    /// Tells the publisher of each video leg what this client can take of it: its share of the
    /// connection's estimate (`None` while the estimate limits nothing), when the share moved by
    /// more than [`SHARE_CHANGE`] or [`SHARE_REFRESH`] passed (the publisher forgets a share
    /// that is not renewed, see [`crate::sfu::congestion::cap`]).
    fn share_estimate(&mut self, now: Instant) {
        let share = {
            let outbound = self.outbound.lock();
            let (audio, video) = outbound.leg_counts();
            let estimator = outbound.estimator();
            let estimate = estimator.estimate(now);
            estimator
                .limited(now)
                .then(|| video_share(estimate, audio, video))
                .flatten()
        };
        if let Some(weak) = self.link_quality.update(share) {
            let _ = self.ctx.events.send(PeerEvent::LinkQuality {
                peer: self.ctx.id,
                weak,
                available_bps: share.map(|s| s as u64),
            });
        }
        let me = self.ctx.id;
        for down in self.downs.values_mut() {
            if down.info.kind != MediaKind::Video {
                continue;
            }
            let due = match down.told_share {
                None => share.is_some(),
                Some((told, at)) => match (told, share) {
                    (None, None) => false,
                    (Some(a), Some(b)) => {
                        (b - a).abs() > SHARE_CHANGE * a
                            || now.saturating_duration_since(at) >= SHARE_REFRESH
                    }
                    _ => true,
                },
            };
            if !due {
                continue;
            }
            let sent = down.info.publisher.try_send(PeerCommand::SubscriberRate {
                track: down.info.id,
                peer: me,
                bps: share,
            });
            if sent.is_ok() {
                down.told_share = Some((share, now));
            }
        }
    }

    /// Sends again, on the media path, what the client reports lost and is still kept.
    fn answer_nack(&mut self, nack: &TransportLayerNack, now: Instant) {
        self.ctx.metrics.media.nacks_received.inc();
        let Some(id) = self.down_by_ssrc.get(&nack.media_ssrc).copied() else {
            return;
        };
        let asked: u64 = nack
            .nacks
            .iter()
            .map(|p| p.into_iter().count() as u64)
            .sum();
        let seqs = nack.nacks.iter().flat_map(|pair| pair.into_iter());
        let resent = self.outbound.lock().resend(id, seqs, now);
        if let Some(down) = self.downs.get_mut(&id) {
            down.nacks += asked;
            down.retransmitted += resent;
        }
        self.ctx
            .metrics
            .media
            .rtp_packets_retransmitted
            .inc_by(resent);
    }

    fn down_for_ssrc(&mut self, ssrc: u32) -> Option<&mut DownTrack> {
        let id = *self.down_by_ssrc.get(&ssrc)?;
        self.downs.get_mut(&id)
    }

    fn apply_reports(&mut self, reports: &[rtc::rtcp::reception_report::ReceptionReport]) {
        let now_ntp = ntp(std::time::SystemTime::now());
        let mut rtt = None;
        for r in reports {
            if let Some(down) = self.down_for_ssrc(r.ssrc) {
                down.remote_lost = u64::from(r.total_lost);
                down.remote_fraction_lost = f64::from(r.fraction_lost) / 256.0;
                down.remote_jitter = r.jitter;
                rtt = round_trip(now_ntp, r.last_sender_report, r.delay).or(rtt);
            }
        }
        if let Some(rtt) = rtt {
            self.round_trip = Some(rtt);
            self.outbound.lock().set_round_trip(rtt);
        }
    }

    pub(super) fn stats(&mut self, now: Instant) -> Vec<TrackStatsView> {
        let mut out = self.up_stats(now);
        let outbound = self.outbound.lock();
        for d in self.downs.values_mut() {
            let sent = outbound.leg(d.info.id).map(|l| l.sent).unwrap_or_default();
            out.push(TrackStatsView {
                track_id: d.info.id.0,
                direction: "outbound".into(),
                kind: d.info.kind.as_str().into(),
                codec: d.codec.name().into(),
                packets: sent.packets,
                bytes: sent.octets,
                bitrate_bps: d.rate.update(now, sent.octets) as u64,
                packets_lost: d.remote_lost,
                fraction_lost: d.remote_fraction_lost,
                jitter_ms: f64::from(d.remote_jitter) * 1000.0
                    / f64::from(d.info.codec.clock_rate.max(1)),
                nacks: d.nacks,
                retransmitted: Some(d.retransmitted),
                plis: d.keyframe_requests.received,
                source: Some(d.info.owner.into()),
                available_bps: d.told_share.and_then(|(s, _)| s).map(|b| b as u64),
                round_trip_ms: self.round_trip.map(|r| r.as_secs_f64() * 1000.0),
                subscriber_cap_bps: None,
            });
        }
        out
    }
}

/// The codecs of `kind` a client accepts, from its description (the room picks a codec every
/// subscriber of a track can decode).
fn accepted_codecs(remote: &Sections, kind: MediaKind) -> Vec<Codec> {
    let mut out = Vec::new();
    for s in &remote.media {
        if s.kind != kind.as_str() || s.rejected() {
            continue;
        }
        for f in &s.formats {
            let c = Codec::from_mime(&f.mime);
            if c != Codec::Other && !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{KEYFRAME_REQUEST_INTERVAL, KeyframeRequests};

    #[test]
    fn a_pli_flood_reaches_the_publisher_once_per_interval() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::default();
        // 50 requests in 49 ms (a client asking every millisecond): one goes on.
        let passed = (0..50)
            .filter(|i| k.on_request(t0 + Duration::from_millis(*i)))
            .count();
        assert_eq!(passed, 1);
        assert!(!k.on_request(t0 + KEYFRAME_REQUEST_INTERVAL - Duration::from_millis(1)));
        assert!(k.on_request(t0 + KEYFRAME_REQUEST_INTERVAL));
        // Every request is counted, passed on or not (the track's `plis` statistic).
        assert_eq!(k.received, 52);
    }

    #[test]
    fn requests_spaced_wider_than_the_interval_all_go_on() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::default();
        for i in 0..10u32 {
            assert!(k.on_request(t0 + KEYFRAME_REQUEST_INTERVAL * i));
        }
        assert_eq!(k.received, 10);
    }
}
