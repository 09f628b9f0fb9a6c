//! One timeline for every track of a recording: RTP timestamps to microseconds on the
//! recorder's local timeline (arrival instants relative to the first packet it saw).
//!
//! Each source (SSRC) of a track has a [`SourceClock`]: its RTP timestamps are unwrapped to
//! 64 bits and mapped linearly (`clock_rate`), either
//! - from the arrival of the source's first packet (no Sender Report yet), or
//! - through the sender's NTP clock, once a Sender Report gave an (NTP, RTP) pair:
//!   `local = ntp(rtp) + offset`. The [`SenderClock`] offset is one for all tracks of the
//!   participant (one browser, one NTP clock): the smallest `arrival − ntp` seen, i.e. the
//!   track with the least capture-to-arrival latency sets it, and a track that arrives
//!   later (video behind its encoder) lines up with it as the sender captured them.
//!
//! The offset may still go down while nothing is written; the recorder freezes it at its
//! first write so the timeline never jumps because the network got faster.
//!
//! Likewise a source's mapping is locked once the recorder wrote one of its frames
//! ([`SourceClock::lock`]): later reports then move it only when they disagree with it by
//! [`RESYNC_US`] or more (a real discontinuity). Each report carries some jitter (the
//! sender reads its clocks at slightly different moments); following it would shift frames
//! by a few milliseconds at every report, which players see as irregular frame times.
//!
//! Invariants: pure arithmetic, no clock reads; a report that would move a track by more
//! than [`MAX_REPORT_JUMP_US`] from where its packets arrive is ignored as bogus; times are
//! not forced monotonic here (the muxer does that per track).

/// Reports further than this from the arrival-based mapping are not trusted.
pub const MAX_REPORT_JUMP_US: i64 = 5_000_000;

/// Once frames of a source are written, a report moves its mapping only by at least this
/// much: smaller disagreements are report jitter or slow drift, below what lip sync
/// perceives (ITU-R BT.1359: audio 45 ms early to 125 ms late).
pub const RESYNC_US: i64 = 100_000;

/// NTP 32.32 fixed point to microseconds.
pub fn ntp_to_us(ntp: u64) -> i64 {
    let secs = (ntp >> 32) as i64;
    let frac = ((ntp & 0xFFFF_FFFF) * 1_000_000) >> 32;
    secs * 1_000_000 + frac as i64
}

/// The sender's NTP clock relative to the local timeline, shared by a recorder's tracks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SenderClock {
    /// local_us − sender_ntp_us: the smallest latency seen.
    offset_us: Option<i64>,
    frozen: bool,
}

impl SenderClock {
    pub fn offset_us(&self) -> Option<i64> {
        self.offset_us
    }

    /// A packet captured at `ntp_us` (sender clock) arrived at `arrival_us` (local).
    pub fn observe(&mut self, arrival_us: i64, ntp_us: i64) {
        let latency = arrival_us - ntp_us;
        match self.offset_us {
            None => self.offset_us = Some(latency),
            Some(o) if latency < o && !self.frozen => self.offset_us = Some(latency),
            _ => {}
        }
    }

    /// From now on the offset stays (something was written with it).
    pub fn freeze(&mut self) {
        self.frozen = true;
    }
}

/// RTP timestamps of one source to the recorder's timeline.
#[derive(Debug, Clone)]
pub struct SourceClock {
    clock_rate: i64,
    /// Highest unwrapped timestamp seen (the unwrap reference).
    last: i64,
    anchored: bool,
    /// First packet: (unwrapped RTP, arrival µs).
    arrival_anchor: (i64, i64),
    /// Latest Sender Report: (unwrapped RTP, NTP µs).
    report: Option<(i64, i64)>,
    /// Frames of this source are on disk: only large corrections apply.
    locked: bool,
}

impl SourceClock {
    pub fn new(clock_rate: u32) -> Self {
        SourceClock {
            clock_rate: clock_rate.max(1) as i64,
            last: 0,
            anchored: false,
            arrival_anchor: (0, 0),
            report: None,
            locked: false,
        }
    }

    /// Frames mapped with the current mapping were written: from now on reports move it
    /// only by [`RESYNC_US`] or more.
    pub fn lock(&mut self) {
        self.locked = true;
    }

    pub fn is_anchored(&self) -> bool {
        self.anchored
    }

    /// Whether a Sender Report maps this source.
    pub fn by_report(&self) -> bool {
        self.report.is_some()
    }

    /// Unwraps `ts` next to the timestamps seen (both directions: reordering and reports
    /// slightly ahead are fine).
    pub fn unwrap(&mut self, ts: u32) -> i64 {
        if !self.anchored {
            return ts as i64;
        }
        let diff = ts.wrapping_sub(self.last as u32) as i32 as i64;
        let ext = self.last + diff;
        self.last = self.last.max(ext);
        ext
    }

    /// Takes a packet's timestamp: the first anchors the clock at `arrival_us`. Returns the
    /// unwrapped timestamp, and tells `sender` the packet's latency when a report maps it.
    pub fn on_packet(&mut self, ts: u32, arrival_us: i64, sender: &mut SenderClock) -> i64 {
        if !self.anchored {
            self.anchored = true;
            self.last = ts as i64;
            self.arrival_anchor = (ts as i64, arrival_us);
        }
        let ext = self.unwrap(ts);
        if let Some(ntp) = self.ntp_us(ext) {
            sender.observe(arrival_us, ntp);
        }
        ext
    }

    fn ticks_to_us(&self, ticks: i64) -> i64 {
        ticks * 1_000_000 / self.clock_rate
    }

    fn ntp_us(&self, ext: i64) -> Option<i64> {
        self.report
            .map(|(rtp, ntp)| ntp + self.ticks_to_us(ext - rtp))
    }

    fn arrival_mapped(&self, ext: i64) -> i64 {
        self.arrival_anchor.1 + self.ticks_to_us(ext - self.arrival_anchor.0)
    }

    /// Local time of an unwrapped timestamp.
    pub fn local_us(&self, ext: i64, sender: &SenderClock) -> i64 {
        match (self.ntp_us(ext), sender.offset_us) {
            (Some(ntp), Some(offset)) => ntp + offset,
            _ => self.arrival_mapped(ext),
        }
    }

    /// Applies a Sender Report (`ntp`, `rtp_ts`) of this source. Returns false when it was
    /// not applied (no packet seen yet, or too far from where the packets arrive).
    pub fn apply_report(&mut self, sender: &SenderClock, ntp: u64, rtp_ts: u32) -> bool {
        if !self.anchored {
            return false;
        }
        let ext = self.unwrap(rtp_ts);
        let ntp_us = ntp_to_us(ntp);
        if let Some(offset) = sender.offset_us {
            let by_report = ntp_us + offset;
            if (by_report - self.arrival_mapped(ext)).abs() > MAX_REPORT_JUMP_US {
                return false;
            }
            if self.locked && (by_report - self.local_us(ext, sender)).abs() < RESYNC_US {
                return false;
            }
        }
        self.report = Some((ext, ntp_us));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_conversion() {
        assert_eq!(ntp_to_us(0), 0);
        assert_eq!(ntp_to_us(1 << 32), 1_000_000);
        assert_eq!(ntp_to_us((3 << 32) | (1 << 31)), 3_500_000);
    }

    #[test]
    fn arrival_anchor_and_wrap() {
        let mut s = SenderClock::default();
        let mut c = SourceClock::new(90_000);
        let e = c.on_packet(u32::MAX - 8999, 1_000, &mut s);
        assert_eq!(c.local_us(e, &s), 1_000);
        // 9000 ticks later, across the wrap: +100 ms, whatever the arrival.
        let e = c.on_packet(0, 999_999, &mut s);
        assert_eq!(c.local_us(e, &s), 101_000);
        // A reordered older packet maps before.
        let e = c.on_packet(u32::MAX - 4499, 0, &mut s);
        assert_eq!(c.local_us(e, &s), 51_000);
    }

    #[test]
    fn reports_line_tracks_up() {
        // The sender captures audio and video at the same instants; video packets arrive
        // 200 ms later than audio ones (encoder delay). Its NTP clock is unrelated to ours.
        let ntp_base: u64 = 3_900_000_000 << 32;
        let mut s = SenderClock::default();
        let mut audio = SourceClock::new(48_000);
        let mut video = SourceClock::new(90_000);
        let (a0, v0) = (1_000u32, 50_000u32);
        // First packets (capture time 0) arrive at 10 ms and 210 ms.
        audio.on_packet(a0, 10_000, &mut s);
        video.on_packet(v0, 210_000, &mut s);
        // Reports (capture time 1 s), then packets captured at 1 s.
        assert!(video.apply_report(&s, ntp_base + (1 << 32), v0 + 90_000));
        assert!(audio.apply_report(&s, ntp_base + (1 << 32), a0 + 48_000));
        video.on_packet(v0 + 90_000, 1_210_000, &mut s);
        audio.on_packet(a0 + 48_000, 1_010_000, &mut s);
        // Capture time 2 s maps to the same instant on both tracks, at audio's latency.
        let a = audio.on_packet(a0 + 96_000, 2_010_000, &mut s);
        let v = video.on_packet(v0 + 180_000, 2_210_000, &mut s);
        assert_eq!(audio.local_us(a, &s), 2_010_000);
        assert_eq!(video.local_us(v, &s), 2_010_000);
    }

    #[test]
    fn frozen_offset_stays() {
        let mut s = SenderClock::default();
        s.observe(100, 0);
        s.observe(50, 0);
        assert_eq!(s.offset_us(), Some(50));
        s.freeze();
        s.observe(10, 0);
        assert_eq!(s.offset_us(), Some(50));
    }

    #[test]
    fn bogus_reports_are_ignored() {
        let mut s = SenderClock::default();
        let mut a = SourceClock::new(48_000);
        let mut b = SourceClock::new(48_000);
        assert!(!a.apply_report(&s, 1 << 32, 0)); // no packet yet
        a.on_packet(0, 0, &mut s);
        b.on_packet(0, 0, &mut s);
        assert!(a.apply_report(&s, 100 << 32, 48_000));
        a.on_packet(48_000, 1_000_000, &mut s);
        // b claims its timestamp 48000 was captured an hour later.
        assert!(!b.apply_report(&s, 3700 << 32, 48_000));
        assert!(!b.by_report());
    }

    #[test]
    fn locked_mapping_ignores_report_jitter() {
        let mut s = SenderClock::default();
        let mut c = SourceClock::new(90_000);
        let ntp0: u64 = 1000 << 32;
        c.on_packet(0, 0, &mut s);
        assert!(c.apply_report(&s, ntp0, 0));
        c.on_packet(90_000, 1_000_000, &mut s);
        s.freeze();
        c.lock();
        let before = c.local_us(180_000, &s);
        // A report 8 ms off: jitter, ignored.
        let off_8ms = ntp0 + (2 << 32) + ((8u64 << 32) / 1000);
        assert!(!c.apply_report(&s, off_8ms, 180_000));
        assert_eq!(c.local_us(180_000, &s), before);
        // 300 ms off: a discontinuity, followed.
        let off_300ms = ntp0 + (2 << 32) + ((300u64 << 32) / 1000);
        assert!(c.apply_report(&s, off_300ms, 180_000));
        assert!((c.local_us(180_000, &s) - before - 300_000).abs() < 1_000);
    }

    proptest::proptest! {
        /// Packets of a steady stream, whatever the arrival jitter, map to times that follow
        /// their RTP order once a report maps them and the offset is frozen.
        #[test]
        fn mapping_follows_rtp_order(
            start in proptest::num::u32::ANY,
            jitter in proptest::collection::vec(0i64..50_000, 1..200),
        ) {
            let mut s = SenderClock::default();
            let mut c = SourceClock::new(90_000);
            let mut last = i64::MIN;
            for (i, j) in jitter.iter().enumerate() {
                let ts = start.wrapping_add(3000 * i as u32);
                let e = c.on_packet(ts, i as i64 * 33_333 + j, &mut s);
                if i == 10 {
                    c.apply_report(&s, (5u64 << 40) + i as u64 * 143_165_576, ts);
                    s.freeze();
                }
                let t = c.local_us(e, &s);
                // From the first packet after the report on, the mapping is the report's.
                if i > 11 {
                    proptest::prop_assert!(t > last);
                }
                last = t;
            }
        }
    }
}
