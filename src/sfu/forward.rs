//! The forwarding decision for one outgoing leg: which packets go out, and with which sequence
//! number and timestamp. Plain code, no IO, no clock of its own (arrival times come in).
//!
//! Invariants (checked by the property tests below):
//! - a subscriber sees one stream: its SSRC never changes, and across a change of source (the
//!   publisher's SSRC changed, or the leg now carries another source) sequence numbers continue
//!   at +1 and timestamps keep moving forward by the wall-clock time that passed;
//! - a video leg starts (and restarts after a source change) on a keyframe;
//! - within one source, gaps and reordering are preserved (offsets, not renumbering), so the
//!   subscriber's NACKs and jitter buffer see the truth;
//! - keyframe until pass ([`LegGate`]): while a video leg waits for a keyframe, nothing of its
//!   source passes, and the publisher is asked for one at once and then at most once per
//!   [`KEYFRAME_REQUEST_INTERVAL`] until it comes;
//! - a [`Throttle`] lets the first request through and then at most one per interval, whatever
//!   the rate of asking (the keyframe requests of legs, subscribers and publishers use it).

use std::time::{Duration, Instant};

/// One packet as the decision needs to see it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming {
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub keyframe: bool,
    pub at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Forward { seq: u16, ts: u32 },
    Drop(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Video waits for a keyframe before its first packet (or after a source change).
    AwaitingKeyframe,
    /// A late packet from before the point this source was mapped at.
    BeforeStart,
}

impl DropReason {
    pub fn label(self) -> &'static str {
        match self {
            DropReason::AwaitingKeyframe => "awaiting_keyframe",
            DropReason::BeforeStart => "before_start",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    ssrc: u32,
    /// The oldest input number this mapping forwards. It starts at the source's first packet
    /// and follows the stream at most `MAX_LATE` behind the newest one, so that serial
    /// arithmetic against it stays meaningful however long the source runs.
    first_seq: u16,
    seq_offset: u16,
    ts_offset: u32,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    seq: u16,
    ts: u32,
    at: Instant,
}

/// How far behind the newest packet of a source a late packet may still be forwarded.
/// Anything older is useless to a receiver (seconds late) and ambiguous in 16-bit space.
const MAX_LATE: u16 = 0x4000;

/// `a` comes after `b` in RTP sequence space (RFC 3550 serial arithmetic).
pub fn seq_after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// Maps one source at a time onto an outgoing leg's continuous numbering.
#[derive(Debug, Clone)]
pub struct Rewriter {
    clock_rate: u32,
    video: bool,
    initial_seq: u16,
    mapping: Option<Mapping>,
    last: Option<Last>,
}

impl Rewriter {
    /// `initial_seq` should be random (RFC 3550 §5.1).
    pub fn new(clock_rate: u32, video: bool, initial_seq: u16) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            video,
            initial_seq,
            mapping: None,
            last: None,
        }
    }

    /// True while a video leg waits for a keyframe (the caller asks the publisher for one).
    pub fn awaiting_keyframe(&self) -> bool {
        self.video && self.mapping.is_none()
    }

    /// Decides for one packet and records what was sent.
    pub fn decide(&mut self, p: &Incoming) -> Decision {
        if self.mapping.map(|m| m.ssrc) != Some(p.ssrc) {
            if self.video && !p.keyframe {
                // Forget the old source: until the new one gives a keyframe nothing goes out.
                self.mapping = None;
                return Decision::Drop(DropReason::AwaitingKeyframe);
            }
            let (out_seq, out_ts) = match self.last {
                None => (self.initial_seq, p.ts),
                Some(last) => {
                    let elapsed_ms = p.at.saturating_duration_since(last.at).as_millis() as u64;
                    let ticks = (elapsed_ms * u64::from(self.clock_rate) / 1000).max(1);
                    (last.seq.wrapping_add(1), last.ts.wrapping_add(ticks as u32))
                }
            };
            self.mapping = Some(Mapping {
                ssrc: p.ssrc,
                first_seq: p.seq,
                seq_offset: out_seq.wrapping_sub(p.seq),
                ts_offset: out_ts.wrapping_sub(p.ts),
            });
        }
        let m = self.mapping.as_mut().expect("set above");
        if seq_after(m.first_seq, p.seq) {
            return Decision::Drop(DropReason::BeforeStart);
        }
        if p.seq.wrapping_sub(m.first_seq) > MAX_LATE {
            m.first_seq = p.seq.wrapping_sub(MAX_LATE);
        }
        let seq = p.seq.wrapping_add(m.seq_offset);
        let ts = p.ts.wrapping_add(m.ts_offset);
        if self.last.is_none_or(|l| seq_after(seq, l.seq)) {
            self.last = Some(Last { seq, ts, at: p.at });
        }
        Decision::Forward { seq, ts }
    }
}

/// At most one request per interval: the first goes at once, the next when `interval` has
/// passed since the last one that went. The caller says what time it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    /// True, and noted as sent, when a request may go at `now`.
    pub fn allow(&mut self, now: Instant, interval: Duration) -> bool {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// A waiting video leg asks its publisher for a keyframe at most this often.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// What a leg does with one packet ([`LegGate::decide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateDecision {
    /// Send it with these numbers.
    Forward { seq: u16, ts: u32 },
    /// Do not send it (counted under this reason).
    Drop(DropReason),
    /// Do not send it: the leg waits for a keyframe, and asks its publisher for one now.
    DropAndAskKeyframe,
}

/// One outgoing leg's forwarding with its keyframe requests: the [`Rewriter`]'s decision, and
/// while a video leg waits for a keyframe, a request to the publisher at most once per
/// [`KEYFRAME_REQUEST_INTERVAL`] (the packet's arrival time is the clock).
#[derive(Debug, Clone)]
pub struct LegGate {
    rewriter: Rewriter,
    keyframe_requests: Throttle,
}

impl LegGate {
    /// `initial_seq` should be random (RFC 3550 §5.1).
    pub fn new(clock_rate: u32, video: bool, initial_seq: u16) -> Self {
        Self {
            rewriter: Rewriter::new(clock_rate, video, initial_seq),
            keyframe_requests: Throttle::default(),
        }
    }

    pub fn decide(&mut self, p: &Incoming) -> GateDecision {
        match self.rewriter.decide(p) {
            Decision::Forward { seq, ts } => GateDecision::Forward { seq, ts },
            Decision::Drop(DropReason::AwaitingKeyframe)
                if self
                    .keyframe_requests
                    .allow(p.at, KEYFRAME_REQUEST_INTERVAL) =>
            {
                GateDecision::DropAndAskKeyframe
            }
            Decision::Drop(reason) => GateDecision::Drop(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pkt(ssrc: u32, seq: u16, ts: u32, keyframe: bool, at: Instant) -> Incoming {
        Incoming {
            ssrc,
            seq,
            ts,
            keyframe,
            at,
        }
    }

    #[test]
    fn video_waits_for_a_keyframe() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000, true, 1000);
        assert!(r.awaiting_keyframe());
        assert_eq!(
            r.decide(&pkt(1, 10, 500, false, t0)),
            Decision::Drop(DropReason::AwaitingKeyframe)
        );
        assert_eq!(
            r.decide(&pkt(1, 11, 500, true, t0)),
            Decision::Forward { seq: 1000, ts: 500 }
        );
        assert!(!r.awaiting_keyframe());
        assert_eq!(
            r.decide(&pkt(1, 12, 3500, false, t0)),
            Decision::Forward {
                seq: 1001,
                ts: 3500
            }
        );
        // A late packet from before the start is not sent (its number belongs to nothing).
        assert_eq!(
            r.decide(&pkt(1, 10, 500, false, t0)),
            Decision::Drop(DropReason::BeforeStart)
        );
        // Gaps stay gaps, reordering stays reordering.
        assert_eq!(
            r.decide(&pkt(1, 15, 9000, false, t0)),
            Decision::Forward {
                seq: 1004,
                ts: 9000
            }
        );
        assert_eq!(
            r.decide(&pkt(1, 14, 9000, false, t0)),
            Decision::Forward {
                seq: 1003,
                ts: 9000
            }
        );
    }

    #[test]
    fn audio_starts_at_once_and_survives_a_source_change() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(48_000, false, 65_534);
        assert_eq!(
            r.decide(&pkt(7, 100, 0, false, t0)),
            Decision::Forward { seq: 65_534, ts: 0 }
        );
        assert_eq!(
            r.decide(&pkt(7, 101, 960, false, t0)),
            Decision::Forward {
                seq: 65_535,
                ts: 960
            }
        );
        // New SSRC 100 ms later: numbering continues, time advances by 100 ms of clock.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(
            r.decide(&pkt(9, 5000, 123_456, false, t1)),
            Decision::Forward {
                seq: 0,
                ts: 960 + 4800
            }
        );
        assert_eq!(
            r.decide(&pkt(9, 5001, 124_416, false, t1)),
            Decision::Forward {
                seq: 1,
                ts: 960 + 4800 + 960
            }
        );
    }

    #[test]
    fn video_source_change_waits_for_the_new_keyframe() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000, true, 0);
        r.decide(&pkt(1, 1, 0, true, t0));
        assert_eq!(
            r.decide(&pkt(2, 50, 7, false, t0)),
            Decision::Drop(DropReason::AwaitingKeyframe)
        );
        assert!(r.awaiting_keyframe());
        // The old source's stragglers are not sent either once the leg switched away.
        assert_eq!(
            r.decide(&pkt(1, 2, 3000, false, t0)),
            Decision::Drop(DropReason::AwaitingKeyframe)
        );
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(
            r.decide(&pkt(2, 51, 7, true, t1)),
            Decision::Forward { seq: 1, ts: 900 }
        );
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_throttle_lets_the_first_request_through_then_one_per_interval() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        assert!(t.allow(t0, ms(100)));
        assert!(!t.allow(t0, ms(100)));
        assert!(!t.allow(t0 + ms(99), ms(100)));
        assert!(t.allow(t0 + ms(100), ms(100)));
        // The interval counts from the last request that went, not the last asked.
        assert!(!t.allow(t0 + ms(150), ms(100)));
        assert!(!t.allow(t0 + ms(199), ms(100)));
        assert!(t.allow(t0 + ms(200), ms(100)));
        // A flood at one instant: one request.
        let later = t0 + ms(5_000);
        let sent = (0..1000).filter(|_| t.allow(later, ms(100))).count();
        assert_eq!(sent, 1);
    }

    #[test]
    fn a_throttle_tolerates_a_clock_read_out_of_order() {
        let t0 = Instant::now() + ms(1_000);
        let mut t = Throttle::default();
        assert!(t.allow(t0, ms(300)));
        // An earlier instant (read before, handled after) counts as no time passed.
        assert!(!t.allow(t0 - ms(500), ms(300)));
        assert!(t.allow(t0 + ms(300), ms(300)));
    }

    #[test]
    fn a_new_video_leg_passes_nothing_before_a_keyframe_and_asks_for_one_twice_a_second() {
        let t0 = Instant::now();
        let mut g = LegGate::new(90_000, true, 100);
        // The first delta frame: dropped, and a keyframe is asked for at once.
        assert_eq!(
            g.decide(&pkt(1, 10, 0, false, t0)),
            GateDecision::DropAndAskKeyframe
        );
        // More deltas within the interval: dropped, nothing asked.
        for (i, at) in [ms(1), ms(100), ms(499)].into_iter().enumerate() {
            assert_eq!(
                g.decide(&pkt(1, 11 + i as u16, 0, false, t0 + at)),
                GateDecision::Drop(DropReason::AwaitingKeyframe)
            );
        }
        // Still none after the interval: asked again.
        assert_eq!(
            g.decide(&pkt(1, 14, 0, false, t0 + ms(500))),
            GateDecision::DropAndAskKeyframe
        );
        // The keyframe passes, and everything after it.
        assert_eq!(
            g.decide(&pkt(1, 15, 9000, true, t0 + ms(600))),
            GateDecision::Forward { seq: 100, ts: 9000 }
        );
        assert_eq!(
            g.decide(&pkt(1, 16, 12000, false, t0 + ms(633))),
            GateDecision::Forward {
                seq: 101,
                ts: 12000
            }
        );
    }

    #[test]
    fn an_audio_leg_passes_at_once_and_never_asks() {
        let t0 = Instant::now();
        let mut g = LegGate::new(48_000, false, 7);
        assert_eq!(
            g.decide(&pkt(3, 1, 960, false, t0)),
            GateDecision::Forward { seq: 7, ts: 960 }
        );
        assert_eq!(
            g.decide(&pkt(4, 900, 5, false, t0 + ms(20))),
            GateDecision::Forward { seq: 8, ts: 1920 }
        );
    }

    #[test]
    fn a_source_change_waits_for_the_new_keyframe_and_asks_for_it() {
        let t0 = Instant::now();
        let mut g = LegGate::new(90_000, true, 0);
        assert_eq!(
            g.decide(&pkt(1, 1, 0, true, t0)),
            GateDecision::Forward { seq: 0, ts: 0 }
        );
        // Long after the last request (none since the start): the new source is asked for a
        // keyframe on its first packet.
        let t1 = t0 + ms(2_000);
        assert_eq!(
            g.decide(&pkt(2, 50, 7, false, t1)),
            GateDecision::DropAndAskKeyframe
        );
        assert_eq!(
            g.decide(&pkt(2, 51, 7, false, t1 + ms(10))),
            GateDecision::Drop(DropReason::AwaitingKeyframe)
        );
        assert_eq!(
            g.decide(&pkt(2, 52, 7, true, t1 + ms(20))),
            GateDecision::Forward {
                seq: 1,
                ts: 180_000 + 1_800
            }
        );
        // A late packet of the new source from before its keyframe is not a keyframe wait.
        assert_eq!(
            g.decide(&pkt(2, 51, 7, false, t1 + ms(30))),
            GateDecision::Drop(DropReason::BeforeStart)
        );
    }

    #[test]
    fn a_long_source_is_never_cut_off() {
        // 200,000 packets wrap the 16-bit space three times: every one goes out, in order.
        let t0 = Instant::now();
        let mut r = Rewriter::new(90_000, true, 17);
        let mut expected = 17u16;
        for i in 0..200_000u32 {
            let p = pkt(5, 40_000u16.wrapping_add(i as u16), i * 3000, i == 0, t0);
            assert_eq!(
                r.decide(&p),
                Decision::Forward {
                    seq: expected,
                    ts: i * 3000
                },
                "packet {i}"
            );
            expected = expected.wrapping_add(1);
        }
        // A packet a little late is still forwarded; one from far back is not.
        let newest = 40_000u16.wrapping_add(199_999u32 as u16);
        assert!(matches!(
            r.decide(&pkt(5, newest.wrapping_sub(100), 0, false, t0)),
            Decision::Forward { .. }
        ));
        assert_eq!(
            r.decide(&pkt(5, newest.wrapping_sub(MAX_LATE + 10), 0, false, t0)),
            Decision::Drop(DropReason::BeforeStart)
        );
    }

    proptest! {
        /// In-order packets from any succession of sources, each starting on a keyframe:
        /// the output is one continuous stream.
        #[test]
        fn output_is_continuous(
            initial in any::<u16>(),
            sources in prop::collection::vec((any::<u32>(), any::<u16>(), any::<u32>(), 1usize..60, 0u64..500), 1..8),
        ) {
            let t0 = Instant::now();
            let mut at = t0;
            let mut r = Rewriter::new(90_000, true, initial);
            let mut out: Vec<(u16, u32)> = Vec::new();
            let mut prev_ssrc = None;
            for (ssrc, seq0, ts0, count, gap_ms) in sources {
                // Distinct consecutive sources (the same SSRC twice is one source).
                let ssrc = if prev_ssrc == Some(ssrc) { ssrc.wrapping_add(1) } else { ssrc };
                prev_ssrc = Some(ssrc);
                at += Duration::from_millis(gap_ms);
                for i in 0..count {
                    let p = pkt(ssrc, seq0.wrapping_add(i as u16), ts0.wrapping_add(3000 * i as u32), i == 0, at);
                    match r.decide(&p) {
                        Decision::Forward { seq, ts } => out.push((seq, ts)),
                        Decision::Drop(d) => prop_assert!(false, "dropped {:?}", d),
                    }
                    at += Duration::from_millis(33);
                }
            }
            prop_assert_eq!(out[0].0, initial);
            for w in out.windows(2) {
                prop_assert_eq!(w[1].0, w[0].0.wrapping_add(1), "sequence continuous");
                let dt = w[1].1.wrapping_sub(w[0].1);
                prop_assert!(dt > 0 && dt < 0x8000_0000, "timestamps move forward");
            }
        }

        /// Whatever arrives (any order, any sources), nothing panics and two forwarded packets
        /// of one source never share an output number unless they shared an input number.
        #[test]
        fn arbitrary_input_is_safe(
            packets in prop::collection::vec((0u32..3, any::<u16>(), any::<u32>(), any::<bool>()), 0..200),
        ) {
            let t0 = Instant::now();
            let mut r = Rewriter::new(48_000, false, 0);
            let mut seen = std::collections::HashMap::new();
            let mut current = None;
            for (i, (ssrc, seq, ts, key)) in packets.into_iter().enumerate() {
                if current != Some(ssrc) {
                    seen.clear();
                    current = Some(ssrc);
                }
                let at = t0 + Duration::from_millis(i as u64);
                if let Decision::Forward { seq: out, .. } = r.decide(&pkt(ssrc, seq, ts, key, at))
                    && let Some(prev_in) = seen.insert(out, seq)
                {
                    prop_assert_eq!(prev_in, seq);
                }
            }
        }
    }
}
