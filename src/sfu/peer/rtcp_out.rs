//! The RTCP a peer writes on its own (`crate::sfu::feedback` holds the logic): NACKs for the
//! holes in what the client publishes, transport-wide congestion feedback on its packets, a
//! Receiver Report on its streams and a Sender Report on each stream sent to it.
//!
//! Runs after every batch the task handles (a hole is due [`REORDER_WAIT`] after it opened)
//! and at the deadline [`Peer::feedback_deadline`] gives the task's timer. Nothing is written
//! before the DTLS handshake completed (there are no SRTP keys before).
//!
//! [`REORDER_WAIT`]: crate::sfu::feedback::nack::REORDER_WAIT

use std::time::{Duration, Instant, SystemTime};

use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};

use super::Peer;

/// Time between two reports (RR on what the client sends, SR on what it receives).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Time between two congestion feedback packets while packets arrive.
pub const TWCC_INTERVAL: Duration = Duration::from_millis(100);
/// Report blocks one Receiver Report holds (RFC 3550: a 5-bit count).
const MAX_REPORT_BLOCKS: usize = 31;

type RtcpPackets = Vec<Box<dyn rtc::rtcp::Packet>>;

impl Peer {
    /// Writes the feedback that is due at `now`.
    pub(super) fn send_feedback(&mut self, now: Instant) {
        if !self.connected {
            return;
        }
        let mut packets = RtcpPackets::new();
        if now >= self.next_report {
            self.next_report = now + REPORT_INTERVAL;
            self.reports(now, &mut packets);
        }
        self.nacks(now, &mut packets);
        self.remb(now, &mut packets);
        if !packets.is_empty() {
            self.write_rtcp(packets);
        }
        if now >= self.next_twcc {
            self.next_twcc = now + TWCC_INTERVAL;
            // One datagram each: a feedback packet can be several hundred bytes.
            for fb in self.twcc.feedback(self.rtcp_ssrc) {
                self.write_rtcp(vec![Box::new(fb)]);
            }
        }
    }

    /// When [`Self::send_feedback`] next has something to write.
    pub(super) fn feedback_deadline(&self) -> Option<Instant> {
        if !self.connected {
            return None;
        }
        let mut next = self.next_report;
        if let Some(t) = self.remb.next_due() {
            next = next.min(t);
        }
        if self.twcc.has_pending() {
            next = next.min(self.next_twcc);
        }
        for up in &self.ups {
            if let Some(due) = up.nack.as_ref().and_then(|n| n.next_due()) {
                next = next.min(due);
            }
        }
        Some(next)
    }

    fn nacks(&mut self, now: Instant, packets: &mut RtcpPackets) {
        for up in &mut self.ups {
            let (Some(tracker), Some(ssrc)) = (up.nack.as_mut(), up.ssrc) else {
                continue;
            };
            if tracker.missing() == 0 {
                continue;
            }
            self.lost_scratch.clear();
            tracker.due(now, &mut self.lost_scratch);
            if self.lost_scratch.is_empty() {
                continue;
            }
            self.ctx
                .metrics
                .media
                .nacks_sent
                .inc_by(self.lost_scratch.len() as u64);
            packets.push(Box::new(TransportLayerNack {
                sender_ssrc: self.rtcp_ssrc,
                media_ssrc: ssrc,
                nacks: nack_pairs_from_sequence_numbers(&self.lost_scratch),
            }));
        }
    }

    /// A REMB when the cap of our client's weakest subscribers is due
    /// ([`crate::sfu::congestion::cap::RembSchedule`]), naming its video streams.
    fn remb(&mut self, now: Instant, packets: &mut RtcpPackets) {
        let cap = self.publisher_cap(now);
        let Some(bitrate) = self.remb.due(cap, now) else {
            return;
        };
        let ssrcs: Vec<u32> = self
            .ups
            .iter()
            .filter(|u| u.info.kind == crate::sfu::types::MediaKind::Video)
            .filter_map(|u| u.ssrc)
            .collect();
        if ssrcs.is_empty() {
            return;
        }
        self.ctx.metrics.media.remb_sent.inc();
        packets.push(Box::new(ReceiverEstimatedMaximumBitrate {
            sender_ssrc: self.rtcp_ssrc,
            bitrate: bitrate as f32,
            ssrcs,
        }));
    }

    /// A Receiver Report on the client's streams (first: a compound starts with a report),
    /// then a Sender Report for each stream we send it.
    fn reports(&mut self, now: Instant, packets: &mut RtcpPackets) {
        let blocks: Vec<_> = self
            .ups
            .iter_mut()
            .filter(|u| u.stats.packets > 0)
            .filter_map(|u| Some(u.stats.report_block(u.ssrc?, u.last_sr, now)))
            .take(MAX_REPORT_BLOCKS)
            .collect();
        if !blocks.is_empty() {
            packets.push(Box::new(ReceiverReport {
                ssrc: self.rtcp_ssrc,
                reports: blocks,
                ..Default::default()
            }));
        }
        let reports = self.outbound.lock().sender_reports(now, SystemTime::now());
        for sr in reports {
            packets.push(Box::new(sr));
        }
    }

    /// Encrypts `packets` as one compound SRTCP datagram and sends it on the media path;
    /// false when it could not.
    pub(super) fn write_rtcp(&mut self, packets: RtcpPackets) -> bool {
        match rtc::rtcp::packet::marshal(&packets) {
            Ok(plain) => self.outbound.lock().send_rtcp(&plain),
            Err(e) => {
                tracing::debug!(peer = %self.ctx.id, error = %e, "RTCP not laid out");
                false
            }
        }
    }
}
