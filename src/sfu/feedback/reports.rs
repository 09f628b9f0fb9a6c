//! RTCP sender and receiver reports (RFC 3550 §6.4): the clocks and counters they carry.
//!
//! A Sender Report maps an outgoing stream's RTP clock to wall-clock time; the subscriber's
//! browser lines audio and video up with it. relais numbers every outgoing stream itself, so
//! the mapping is: the wall-clock time now, and the RTP time the last packet sent had, moved
//! on by the time since it left.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtc::rtcp::sender_report::SenderReport;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// The 64-bit NTP timestamp of a wall-clock time.
pub fn ntp(time: SystemTime) -> u64 {
    let since_unix = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_unix.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The middle 32 bits of an NTP timestamp, as the LSR field of a report block carries it.
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// The round trip a report block states about one of our Sender Reports (RFC 3550 §6.4.1):
/// its arrival (`now_ntp`, the wall clock now) less the report's time (LSR) and the time the
/// client held it (DLSR). `None` when the block names no report of ours (LSR 0) or the figures
/// do not add up (a clock step, a forged block), and above ten seconds.
pub fn round_trip(now_ntp: u64, lsr: u32, dlsr: u32) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let rtt = ntp_middle(now_ntp).wrapping_sub(lsr).wrapping_sub(dlsr);
    // 1/65536 s units; the difference wraps when the figures are not consistent.
    let rtt = Duration::from_micros((u64::from(rtt) * 1_000_000) >> 16);
    (rtt <= Duration::from_secs(10)).then_some(rtt)
}

/// The last Sender Report received on a stream, to fill LSR and DLSR of our report on it.
#[derive(Debug, Clone, Copy)]
pub struct LastSenderReport {
    pub ntp_middle: u32,
    pub at: Instant,
}

impl LastSenderReport {
    /// DLSR: the time since the report arrived, in 1/65536 s.
    pub fn delay_since(&self, now: Instant) -> u32 {
        let d = now.saturating_duration_since(self.at);
        ((d.as_micros() << 16) / 1_000_000).min(u128::from(u32::MAX)) as u32
    }
}

/// What an outgoing stream has sent, for its Sender Report.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendCounters {
    pub packets: u64,
    /// Payload octets (RFC 3550: headers and padding do not count).
    pub octets: u64,
    /// RTP timestamp and time of the last packet sent.
    pub last: Option<(u32, Instant)>,
}

impl SendCounters {
    pub fn sent(&mut self, ts: u32, payload: usize, at: Instant) {
        self.packets += 1;
        self.octets += payload as u64;
        self.last = Some((ts, at));
    }

    /// The Sender Report of stream `ssrc` at `now` (wall clock `wall`), once something was sent.
    pub fn report(
        &self,
        ssrc: u32,
        clock_rate: u32,
        now: Instant,
        wall: SystemTime,
    ) -> Option<SenderReport> {
        let (ts, at) = self.last?;
        Some(SenderReport {
            ssrc,
            ntp_time: ntp(wall),
            rtp_time: ts.wrapping_add(rtp_ticks(now.saturating_duration_since(at), clock_rate)),
            packet_count: self.packets as u32,
            octet_count: self.octets as u32,
            ..Default::default()
        })
    }
}

/// `d` in units of a `clock_rate` Hz clock (modulo 2^32, as RTP timestamps run).
fn rtp_ticks(d: Duration, clock_rate: u32) -> u32 {
    (d.as_micros() * u128::from(clock_rate) / 1_000_000) as u32
}

#[cfg(test)]
mod round_trip_tests {
    use super::*;

    #[test]
    fn the_round_trip_is_what_the_client_did_not_hold() {
        let sent = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let lsr = ntp_middle(ntp(sent));
        // Back 250 ms later, having been held 100 ms: 150 ms of round trip.
        let now = ntp(sent + Duration::from_millis(250));
        let dlsr = (100u32 << 16) / 1000;
        let rtt = round_trip(now, lsr, dlsr).unwrap();
        assert!(
            rtt.abs_diff(Duration::from_millis(150)) < Duration::from_millis(1),
            "{rtt:?}"
        );
        assert_eq!(round_trip(now, 0, dlsr), None);
        // Held longer than it was gone: inconsistent.
        assert_eq!(round_trip(now, lsr, (400u32 << 16) / 1000), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_of_known_times() {
        assert_eq!(ntp(UNIX_EPOCH) >> 32, NTP_UNIX_OFFSET);
        let half = UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(ntp(half), ((NTP_UNIX_OFFSET + 1) << 32) | (1 << 31));
        assert_eq!(ntp_middle(0x0123_4567_89ab_cdef), 0x4567_89ab);
    }

    #[test]
    fn delay_since_report_in_sixty_fourths_of_a_millisecond() {
        let t0 = Instant::now();
        let sr = LastSenderReport {
            ntp_middle: 1,
            at: t0,
        };
        assert_eq!(sr.delay_since(t0 + Duration::from_millis(500)), 32768);
        assert_eq!(sr.delay_since(t0), 0);
    }

    #[test]
    fn sender_report_moves_the_rtp_clock_on_from_the_last_packet() {
        let t0 = Instant::now();
        let mut c = SendCounters::default();
        let wall = SystemTime::now();
        assert!(c.report(5, 90_000, t0, wall).is_none(), "nothing sent yet");
        c.sent(u32::MAX - 10, 1000, t0);
        c.sent(u32::MAX - 10, 200, t0);
        let sr = c
            .report(5, 90_000, t0 + Duration::from_millis(100), wall)
            .unwrap();
        assert_eq!(sr.ssrc, 5);
        assert_eq!(sr.rtp_time, 8989, "wraps");
        assert_eq!((sr.packet_count, sr.octet_count), (2, 1200));
        assert_eq!(sr.ntp_time, ntp(wall));
    }
}
