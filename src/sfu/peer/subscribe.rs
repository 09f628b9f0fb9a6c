//! What a peer receives from others: one outgoing track per subscribed source (negotiated
//! here; its packets are rewritten and sent by the publishers' tasks, see [`super::outbound`]),
//! and the subscriber's RTCP (PLI/FIR become keyframe requests to the publisher; NACKs are
//! answered from the datagrams recently sent, see [`super::retransmit`]; receiver reports feed
//! the statistics).

use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sdp::extmap::{AUDIO_LEVEL_URI, SDES_MID_URI, VIDEO_ORIENTATION_URI};

use super::Peer;
use super::outbound::{Leg, LegExtensions};
use super::stats::{RateMeter, TrackStatsView};
use crate::sfu::codec::Codec;
use crate::sfu::types::{MediaKind, PeerCommand, TrackId, TrackInfo};

/// A subscriber's keyframe requests for one track reach its publisher at most this often (the
/// publisher throttles what it sends its client further): a flood of PLI or FIR cannot fill the
/// publisher's command queue.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(100);

/// An outgoing track as the subscriber's task keeps it (its forwarding state is in the
/// [`super::outbound::Outbound`]).
pub(super) struct DownTrack {
    pub(super) info: TrackInfo,
    sender: RTCRtpSenderId,
    pub(super) out_ssrc: u32,
    codec: Codec,
    rate: RateMeter,
    /// Packets the client reported lost (NACKed), and those sent again.
    nacks: u64,
    retransmitted: u64,
    plis: u64,
    keyframe_requested: Option<Instant>,
    remote_lost: u64,
    remote_fraction_lost: f64,
    remote_jitter: u32,
}

impl Peer {
    pub(super) fn subscribe(&mut self, info: TrackInfo) {
        if self.downs.contains_key(&info.id) || info.owner == self.ctx.owner {
            return;
        }
        let mut rng = rand::rng();
        let out_ssrc = loop {
            let s: u32 = rng.random();
            if s != 0 && !self.down_by_ssrc.contains_key(&s) {
                break s;
            }
        };
        let kind = match info.kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let stream = format!("{}-{}", info.owner.role, info.owner.id);
        let track = MediaStreamTrack::new(
            stream.clone(),
            format!("{stream}-{}-{}", info.kind.as_str(), info.id),
            format!("{} {}", info.owner.role, info.kind.as_str()),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(out_ssrc),
                    ..Default::default()
                },
                codec: info.codec.clone(),
                ..Default::default()
            }],
        );
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![stream],
            send_encodings: vec![],
        };
        let transceiver = match self.pc.add_transceiver_from_track(track, Some(init)) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(peer = self.ctx.id, track = info.id, error = %e, "cannot send this track");
                return;
            }
        };
        let codec = Codec::from_mime(&info.codec.mime_type);
        self.outbound.lock().add_leg(
            info.id,
            Leg::new(
                out_ssrc,
                info.codec.clock_rate,
                codec.is_video(),
                rng.random(),
            ),
        );
        let down = DownTrack {
            sender: RTCRtpSenderId::from(transceiver),
            out_ssrc,
            codec,
            rate: RateMeter::default(),
            nacks: 0,
            retransmitted: 0,
            plis: 0,
            keyframe_requested: None,
            remote_lost: 0,
            remote_fraction_lost: 0.0,
            remote_jitter: 0,
            info,
        };
        self.down_by_ssrc.insert(out_ssrc, down.info.id);
        self.downs.insert(down.info.id, down);
        self.negotiation_needed = true;
    }

    pub(super) fn unsubscribe(&mut self, track: TrackId) {
        let Some(down) = self.downs.remove(&track) else {
            return;
        };
        self.down_by_ssrc.remove(&down.out_ssrc);
        self.outbound.lock().remove_leg(track);
        if let Err(e) = self.pc.remove_track(down.sender) {
            tracing::debug!(peer = self.ctx.id, error = %e, "remove_track failed");
        }
        self.negotiation_needed = true;
    }

    /// Reads, for each outgoing track, what this leg negotiated: payload type, extension ids,
    /// mid.
    pub(super) fn refresh_subscriptions(&mut self) {
        let ids: Vec<TrackId> = self.downs.keys().copied().collect();
        for id in ids {
            let sender = self.downs[&id].sender;
            let Some(mut s) = self.pc.rtp_sender(sender) else {
                continue;
            };
            let params = s.get_parameters().rtp_parameters.clone();
            let mime = self.downs[&id].info.codec.mime_type.to_ascii_lowercase();
            let payload_type = params
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.to_ascii_lowercase() == mime)
                .map(|c| c.payload_type);
            let mut ext = LegExtensions::default();
            for e in &params.header_extensions {
                let id = u8::try_from(e.id).ok();
                match e.uri.as_str() {
                    SDES_MID_URI => ext.mid = id,
                    AUDIO_LEVEL_URI => ext.audio_level = id,
                    VIDEO_ORIENTATION_URI => ext.video_orientation = id,
                    _ => {}
                }
            }
            let mid = self
                .pc
                .rtp_transceiver(sender.into())
                .and_then(|t| t.mid().clone())
                .map(Bytes::from);
            if let Some(leg) = self.outbound.lock().leg_mut(id) {
                leg.payload_type = payload_type;
                leg.ext = ext;
                leg.mid = mid;
            }
        }
    }

    /// Feedback from the client about what we send it (and reports on what it sends us).
    pub(super) fn on_rtcp(&mut self, packets: &[Box<dyn rtc::rtcp::Packet>], now: Instant) {
        let mut keyframe_for = Vec::new();
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
            }
        }
        for ssrc in keyframe_for {
            let Some(down) = self.down_for_ssrc(ssrc) else {
                continue;
            };
            down.plis += 1;
            if down
                .keyframe_requested
                .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
            {
                continue;
            }
            down.keyframe_requested = Some(now);
            let _ = down.info.publisher.try_send(PeerCommand::RequestKeyframe {
                track: down.info.id,
            });
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
        for r in reports {
            if let Some(down) = self.down_for_ssrc(r.ssrc) {
                down.remote_lost = u64::from(r.total_lost);
                down.remote_fraction_lost = f64::from(r.fraction_lost) / 256.0;
                down.remote_jitter = r.jitter;
            }
        }
    }

    pub(super) fn stats(&mut self, now: Instant) -> Vec<TrackStatsView> {
        let mut out = self.up_stats(now);
        let outbound = self.outbound.lock();
        for d in self.downs.values_mut() {
            let sent = outbound.leg(d.info.id).map(|l| l.sent).unwrap_or_default();
            out.push(TrackStatsView {
                track_id: d.info.id,
                direction: "outbound",
                kind: d.info.kind.as_str(),
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
                plis: d.plis,
                source: Some(d.info.owner.into()),
            });
        }
        out
    }
}
