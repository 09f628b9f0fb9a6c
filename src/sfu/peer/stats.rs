//! Per-track counters: RFC 3550 loss and interarrival jitter for what a publisher sends us,
//! counts for what we send subscribers, and the bitrate between two reads.

use std::time::Instant;

use rtc::rtcp::reception_report::ReceptionReport;
use serde::Serialize;

use crate::sfu::feedback::reports::LastSenderReport;

/// Receive-side statistics of one incoming stream (RFC 3550 appendix A.3 and A.8).
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    pub packets: u64,
    pub bytes: u64,
    base_seq: Option<u32>,
    /// Extended highest sequence number (cycles in the upper 16 bits).
    max_ext_seq: u32,
    /// Interarrival jitter in timestamp units, ×16 as RFC 3550 keeps it.
    jitter_q4: u64,
    last_transit: Option<i64>,
    epoch: Option<Instant>,
    /// Expected and received packets at the last report block (RFC 3550 A.3).
    prior_expected: u64,
    prior_received: u64,
}

impl ReceiveStats {
    pub fn record(&mut self, seq: u16, ts: u32, bytes: usize, at: Instant, clock_rate: u32) {
        self.packets += 1;
        self.bytes += bytes as u64;
        match self.base_seq {
            None => {
                self.base_seq = Some(u32::from(seq));
                self.max_ext_seq = u32::from(seq);
            }
            Some(_) => {
                let max16 = self.max_ext_seq as u16;
                let delta = seq.wrapping_sub(max16);
                if delta != 0 && delta < 0x8000 {
                    let mut cycles = self.max_ext_seq & 0xFFFF_0000;
                    if seq < max16 {
                        cycles = cycles.wrapping_add(0x1_0000);
                    }
                    self.max_ext_seq = cycles | u32::from(seq);
                }
            }
        }
        // Jitter: arrival time in RTP units minus the packet's timestamp.
        let epoch = *self.epoch.get_or_insert(at);
        let arrival = at.saturating_duration_since(epoch).as_micros() as i64
            * i64::from(clock_rate)
            / 1_000_000;
        let transit = arrival - i64::from(ts);
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs();
            // J += (|D| - J) / 16, kept ×16 (RFC 3550 A.8).
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Packets expected from the sequence numbers seen.
    pub fn expected(&self) -> u64 {
        match self.base_seq {
            Some(base) => u64::from(self.max_ext_seq.wrapping_sub(base)) + 1,
            None => 0,
        }
    }

    /// Packets lost (never negative: duplicates do not count as negative loss).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.packets)
    }

    /// The report block on this stream (RFC 3550 §6.4.1); the next one's loss fraction counts
    /// from here.
    pub fn report_block(
        &mut self,
        ssrc: u32,
        last_sr: Option<LastSenderReport>,
        now: Instant,
    ) -> ReceptionReport {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.prior_expected);
        let received_interval = self.packets.saturating_sub(self.prior_received);
        self.prior_expected = expected;
        self.prior_received = self.packets;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        ReceptionReport {
            ssrc,
            fraction_lost,
            // A signed 24-bit field: loss beyond it is stated as its largest value.
            total_lost: self.lost().min(0x7f_ffff) as u32,
            last_sequence_number: self.max_ext_seq,
            jitter: (self.jitter_q4 >> 4) as u32,
            last_sender_report: last_sr.map_or(0, |sr| sr.ntp_middle),
            delay: last_sr.map_or(0, |sr| sr.delay_since(now)),
        }
    }

    pub fn jitter_ms(&self, clock_rate: u32) -> f64 {
        (self.jitter_q4 as f64 / 16.0) * 1000.0 / f64::from(clock_rate.max(1))
    }
}

/// Bitrate between successive reads.
#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    last: Option<(Instant, u64)>,
    bps: f64,
}

impl RateMeter {
    /// Bits per second since the previous call (kept when called again within 200 ms).
    pub fn update(&mut self, now: Instant, bytes: u64) -> f64 {
        match self.last {
            Some((at, b)) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                if dt >= 0.2 {
                    self.bps = (bytes.saturating_sub(b) * 8) as f64 / dt;
                    self.last = Some((now, bytes));
                }
            }
            None => self.last = Some((now, bytes)),
        }
        self.bps
    }
}

/// One track as `GET …/stats` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TrackStatsView {
    pub track_id: u64,
    /// `inbound` (published by this participant) or `outbound` (sent to this participant).
    #[schema(value_type = String)]
    pub direction: std::borrow::Cow<'static, str>,
    #[schema(value_type = String)]
    pub kind: std::borrow::Cow<'static, str>,
    pub codec: String,
    pub packets: u64,
    pub bytes: u64,
    pub bitrate_bps: u64,
    pub packets_lost: u64,
    pub fraction_lost: f64,
    pub jitter_ms: f64,
    /// Packets NACKed by the client (outbound tracks).
    pub nacks: u64,
    /// Outbound tracks: packets sent again for those NACKs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retransmitted: Option<u64>,
    pub plis: u64,
    /// For outbound tracks: the participant whose track it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::wire::UserRef>,
    /// Outbound video: what this participant's link can take of this track (its share of the
    /// connection's bandwidth estimate), once the estimate limits anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bps: Option<u64>,
    /// Outbound: the participant's round trip, from its reports on what relais sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_trip_ms: Option<f64>,
    /// Inbound video: the lowest of its subscribers' shares, which relais asks the client
    /// (REMB) to stay under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber_cap_bps: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn loss_counts_gaps_and_wraps() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::default();
        for seq in [65_533u16, 65_534, 65_535, 0, 1, 3, 4] {
            s.record(seq, 0, 100, t0, 90_000);
        }
        assert_eq!(s.expected(), 8);
        assert_eq!(s.lost(), 1);
        // A late arrival fills the gap.
        s.record(2, 0, 100, t0, 90_000);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.bytes, 800);
    }

    #[test]
    fn report_blocks_count_loss_per_interval() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::default();
        for seq in [10u16, 11, 13, 14] {
            s.record(seq, 0, 100, t0, 90_000);
        }
        let sr = LastSenderReport {
            ntp_middle: 0xabcd,
            at: t0,
        };
        let first = s.report_block(7, Some(sr), t0 + Duration::from_secs(1));
        assert_eq!(first.ssrc, 7);
        assert_eq!(first.fraction_lost, 51, "1 of 5 is 51/256");
        assert_eq!((first.total_lost, first.last_sequence_number), (1, 14));
        assert_eq!((first.last_sender_report, first.delay), (0xabcd, 65536));
        // Nothing lost since: the fraction is of this interval only; the total stays.
        for seq in 15u16..20 {
            s.record(seq, 0, 100, t0, 90_000);
        }
        let second = s.report_block(7, None, t0);
        assert_eq!((second.fraction_lost, second.total_lost), (0, 1));
        assert_eq!((second.last_sender_report, second.delay), (0, 0));
    }

    #[test]
    fn jitter_is_zero_for_a_steady_stream_and_grows_with_variation() {
        let t0 = Instant::now();
        let mut steady = ReceiveStats::default();
        let mut shaky = ReceiveStats::default();
        for i in 0..100u32 {
            let at = t0 + Duration::from_millis(20 * u64::from(i));
            steady.record(i as u16, 960 * i, 50, at, 48_000);
            let wobble = if i % 2 == 0 { 0 } else { 10 };
            shaky.record(
                i as u16,
                960 * i,
                50,
                at + Duration::from_millis(wobble),
                48_000,
            );
        }
        assert!(
            steady.jitter_ms(48_000) < 0.1,
            "{}",
            steady.jitter_ms(48_000)
        );
        assert!(shaky.jitter_ms(48_000) > 5.0, "{}", shaky.jitter_ms(48_000));
    }
}
