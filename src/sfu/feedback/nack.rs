//! Which packets of an incoming video stream to ask the publisher for again (generic NACK,
//! RFC 4585 §6.2.1).
//!
//! A gap in the sequence numbers marks the packets in it missing. A missing packet is asked for
//! once it has been missing [`REORDER_WAIT`] (a packet that is only late arrives in that time
//! and costs nothing), then again every [`RETRY_INTERVAL`] while it stays missing, at most
//! [`MAX_NACKS`] times. It is forgotten when it arrives, after its last request has had its
//! retry interval, or when it falls [`MAX_MISSING`] packets behind.
//!
//! Invariants of [`NackTracker`]:
//! - `missing` is in sequence order (serial arithmetic, RFC 1982) and every entry is after
//!   the first one and not after `highest`;
//! - a jump larger than [`MAX_GAP`] is a new numbering (a restarted encoder), not loss.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a hole waits for a reordered packet before it is NACKed.
pub const REORDER_WAIT: Duration = Duration::from_millis(10);
/// Time between two requests for the same packet.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// Requests for one packet.
pub const MAX_NACKS: u8 = 3;
/// Holes remembered per stream (the oldest are forgotten first).
pub const MAX_MISSING: usize = 256;
/// A forward jump larger than this is a renumbering, not a loss.
pub const MAX_GAP: u16 = 512;

#[derive(Debug, Clone, Copy)]
struct Missing {
    seq: u16,
    /// When the packet was first asked for, or may first be.
    next: Instant,
    sent: u8,
}

/// The holes of one incoming stream.
#[derive(Debug, Default)]
pub struct NackTracker {
    highest: Option<u16>,
    missing: VecDeque<Missing>,
}

impl NackTracker {
    /// A packet of the stream arrived (an original, a retransmission or a duplicate).
    pub fn record(&mut self, seq: u16, now: Instant) {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return;
        };
        let ahead = seq.wrapping_sub(highest);
        if ahead == 0 {
            return;
        }
        if ahead < 0x8000 {
            if ahead > MAX_GAP {
                self.missing.clear();
            } else {
                let next = now + REORDER_WAIT;
                for i in 1..ahead {
                    self.missing.push_back(Missing {
                        seq: highest.wrapping_add(i),
                        next,
                        sent: 0,
                    });
                }
                let excess = self.missing.len().saturating_sub(MAX_MISSING);
                self.missing.drain(..excess);
            }
            self.highest = Some(seq);
        } else if let Some(first) = self.missing.front().map(|m| m.seq) {
            // Late or repaired: find it by its offset from the first hole.
            let key = seq.wrapping_sub(first);
            if let Ok(i) = self
                .missing
                .binary_search_by_key(&key, |m| m.seq.wrapping_sub(first))
            {
                self.missing.remove(i);
            }
        }
    }

    /// Appends to `out` the packets to ask for at `now`, and counts the requests.
    pub fn due(&mut self, now: Instant, out: &mut Vec<u16>) {
        self.missing.retain_mut(|m| {
            if m.next > now {
                return true;
            }
            if m.sent >= MAX_NACKS {
                return false;
            }
            out.push(m.seq);
            m.sent += 1;
            m.next = now + RETRY_INTERVAL;
            true
        });
    }

    /// When [`Self::due`] next has something to do.
    pub fn next_due(&self) -> Option<Instant> {
        self.missing.iter().map(|m| m.next).min()
    }

    /// Holes currently tracked.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn due(t: &mut NackTracker, now: Instant) -> Vec<u16> {
        let mut out = Vec::new();
        t.due(now, &mut out);
        out
    }

    #[test]
    fn a_hole_is_asked_for_after_the_reorder_wait_then_retried() {
        let t0 = Instant::now();
        let mut t = NackTracker::default();
        for seq in [100u16, 101, 104] {
            t.record(seq, t0);
        }
        assert!(
            due(&mut t, t0).is_empty(),
            "a reordered packet may still come"
        );
        assert_eq!(due(&mut t, t0 + REORDER_WAIT), vec![102, 103]);
        assert!(due(&mut t, t0 + REORDER_WAIT * 2).is_empty());
        t.record(103, t0 + REORDER_WAIT * 2);
        let retry = t0 + REORDER_WAIT + RETRY_INTERVAL;
        assert_eq!(due(&mut t, retry), vec![102]);
        assert_eq!(due(&mut t, retry + RETRY_INTERVAL), vec![102]);
        // Three requests, then it is given up.
        assert!(due(&mut t, retry + RETRY_INTERVAL * 2).is_empty());
        assert_eq!(t.missing(), 0);
    }

    #[test]
    fn reordering_within_the_wait_costs_nothing() {
        let t0 = Instant::now();
        let mut t = NackTracker::default();
        for seq in [1u16, 3, 2, 4] {
            t.record(seq, t0);
        }
        assert!(due(&mut t, t0 + REORDER_WAIT).is_empty());
        assert_eq!(t.next_due(), None);
    }

    #[test]
    fn holes_across_the_wrap_and_a_renumbering() {
        let t0 = Instant::now();
        let mut t = NackTracker::default();
        t.record(65534, t0);
        t.record(1, t0);
        assert_eq!(due(&mut t, t0 + REORDER_WAIT), vec![65535, 0]);
        t.record(0, t0);
        t.record(5000, t0);
        assert_eq!(t.missing(), 0, "a jump of thousands is a new numbering");
    }

    #[test]
    fn at_most_max_missing_holes() {
        let t0 = Instant::now();
        let mut t = NackTracker::default();
        t.record(0, t0);
        t.record(MAX_GAP, t0);
        assert_eq!(t.missing(), MAX_MISSING);
        let asked = due(&mut t, t0 + REORDER_WAIT);
        assert_eq!(asked.first(), Some(&(MAX_GAP - MAX_MISSING as u16)));
        assert_eq!(asked.last(), Some(&(MAX_GAP - 1)));
    }

    proptest! {
        /// Whatever arrives in whatever order: nothing that arrived is ever asked for, and
        /// nothing is asked for more than MAX_NACKS times.
        #[test]
        fn never_asks_for_what_arrived(
            start in any::<u16>(),
            steps in proptest::collection::vec((0u16..40, any::<bool>()), 1..300),
        ) {
            let t0 = Instant::now();
            let mut t = NackTracker::default();
            let mut arrived = std::collections::HashSet::new();
            let mut asked = std::collections::HashMap::<u16, u8>::new();
            let mut now = t0;
            for (i, (offset, back)) in steps.into_iter().enumerate() {
                let seq = if back {
                    start.wrapping_add(i as u16).wrapping_sub(offset)
                } else {
                    start.wrapping_add(i as u16).wrapping_add(offset / 8)
                };
                t.record(seq, now);
                arrived.insert(seq);
                now += Duration::from_millis(7);
                for s in due(&mut t, now) {
                    prop_assert!(!arrived.contains(&s), "{s} arrived but was asked for");
                    let n = asked.entry(s).or_default();
                    *n += 1;
                    prop_assert!(*n <= MAX_NACKS);
                }
            }
        }
    }
}
