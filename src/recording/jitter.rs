//! A per-source jitter buffer: puts RTP packets back in sequence order, waits a bounded time
//! for a missing packet, then reports it lost and moves on.
//!
//! Invariants:
//! - packets leave in strictly increasing (extended) sequence order, each at most once;
//!   duplicates and packets older than what already left are dropped and counted;
//! - a gap is held for at most `window` after the first packet behind it arrived, or until
//!   the buffer holds `capacity` sequence numbers' worth of packets; then it is released as
//!   [`Released::Lost`] so the depacketizer drops the frame it broke;
//! - memory is fixed at construction (`capacity` slots); pushing never blocks and never
//!   allocates (the payload is a reference-counted `Bytes`);
//! - time only comes in as arguments (`arrival`, `now`).

use std::time::{Duration, Instant};

use bytes::Bytes;

/// What the buffer keeps of an RTP packet: what depacketizing and timing need.
#[derive(Debug, Clone)]
pub struct BufferedPacket {
    /// Extended (unwrapped) sequence number.
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
    pub arrival: Instant,
}

/// What comes out of the buffer, in sequence order.
#[derive(Debug)]
pub enum Released {
    Packet(BufferedPacket),
    /// `count` sequence numbers were given up on just before the next released packet.
    Lost {
        count: u64,
    },
}

/// Why a pushed packet was not buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Duplicate,
    /// Older than what already left the buffer.
    Late,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JitterStats {
    pub packets: u64,
    pub duplicates: u64,
    pub late: u64,
    pub lost: u64,
    pub resets: u64,
}

/// Consecutive packets this far behind the head mean the sender restarted its sequence
/// numbers (same SSRC): start over from them rather than drop the stream forever.
const RESET_AFTER_LATE_RUN: u32 = 16;

pub struct JitterBuffer {
    slots: Box<[Option<BufferedPacket>]>,
    mask: u64,
    window: Duration,
    /// Next sequence number to release; meaningful once `started`.
    head: u64,
    /// Highest extended sequence number seen (the unwrap reference).
    highest: u64,
    started: bool,
    buffered: usize,
    late_run: u32,
    /// A loss found while pushing (too far ahead, reset) that `pop` still has to report.
    pending_loss: u64,
    /// Until the first release, packets before the first one pushed may still come (the
    /// stream's first packet reordered or retransmitted): the head can move back.
    released_any: bool,
    first_arrival: Option<Instant>,
    pub stats: JitterStats,
}

impl JitterBuffer {
    /// `capacity` is rounded up to a power of two (at least 16).
    pub fn new(capacity: usize, window: Duration) -> Self {
        let cap = capacity.max(16).next_power_of_two();
        JitterBuffer {
            slots: (0..cap).map(|_| None).collect(),
            mask: cap as u64 - 1,
            window,
            head: 0,
            highest: 0,
            started: false,
            buffered: 0,
            late_run: 0,
            pending_loss: 0,
            released_any: false,
            first_arrival: None,
            stats: JitterStats::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn len(&self) -> usize {
        self.buffered
    }

    pub fn is_empty(&self) -> bool {
        self.buffered == 0
    }

    fn unwrap_seq(&self, seq: u16) -> u64 {
        if !self.started {
            // Start high enough that unwrapping backwards never goes below zero.
            return (1u64 << 32) + seq as u64;
        }
        let diff = seq.wrapping_sub(self.highest as u16) as i16 as i64;
        (self.highest as i64 + diff) as u64
    }

    /// Buffers a packet. Call [`pop`](Self::pop) until it returns `None` afterwards.
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: Bytes,
        arrival: Instant,
    ) -> Result<(), Rejected> {
        let ext = self.unwrap_seq(seq);
        if !self.started {
            self.started = true;
            self.head = ext;
            self.highest = ext;
        }
        let cap = self.slots.len() as u64;
        self.first_arrival.get_or_insert(arrival);
        if ext < self.head && !self.released_any && self.highest - ext < cap {
            self.head = ext;
        }
        if ext < self.head {
            self.late_run += 1;
            if self.late_run >= RESET_AFTER_LATE_RUN && self.head - ext > cap {
                self.restart_at(ext);
            } else {
                self.stats.late += 1;
                return Err(Rejected::Late);
            }
        } else {
            self.late_run = 0;
        }
        if ext >= self.head + 2 * cap {
            // A jump far beyond the window: whatever is buffered will never be completed.
            self.restart_at(ext);
        }
        while ext >= self.head + cap {
            // Make room: give up on the oldest sequence number.
            self.advance_head_lost();
        }
        let slot = &mut self.slots[(ext & self.mask) as usize];
        if slot.is_some() {
            self.stats.duplicates += 1;
            return Err(Rejected::Duplicate);
        }
        *slot = Some(BufferedPacket {
            seq: ext,
            timestamp,
            marker,
            payload,
            arrival,
        });
        self.buffered += 1;
        self.stats.packets += 1;
        self.highest = self.highest.max(ext);
        Ok(())
    }

    /// Flushes what is buffered as losses and restarts the sequence at `ext`.
    fn restart_at(&mut self, ext: u64) {
        self.stats.resets += 1;
        // What was buffered is dropped rather than released: it would be followed by an
        // unrelated stream anyway, and the loss makes the depacketizer start over.
        let dropped = self.buffered as u64;
        for s in self.slots.iter_mut() {
            *s = None;
        }
        self.buffered = 0;
        self.pending_loss += dropped.max(1);
        self.stats.lost += dropped.max(1);
        self.head = ext;
        self.highest = ext;
        self.late_run = 0;
        self.released_any = false;
        self.first_arrival = None;
    }

    fn advance_head_lost(&mut self) {
        let i = (self.head & self.mask) as usize;
        if let Some(p) = self.slots[i].take() {
            // Present but not released yet: only happens when popping lagged; keep order by
            // not reordering — report it lost (the caller pops after every push, so rare).
            drop(p);
            self.buffered -= 1;
        }
        self.pending_loss += 1;
        self.stats.lost += 1;
        self.head += 1;
    }

    /// The next packet or loss in order, if it is due at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<Released> {
        self.pop_inner(Some(now))
    }

    /// Like `pop`, but gives up on every gap at once: the end of the stream.
    pub fn drain(&mut self) -> Option<Released> {
        self.pop_inner(None)
    }

    /// `now: None` flushes: gaps are given up on without waiting.
    fn pop_inner(&mut self, now: Option<Instant>) -> Option<Released> {
        if self.pending_loss > 0 {
            let count = std::mem::take(&mut self.pending_loss);
            return Some(Released::Lost { count });
        }
        if self.buffered == 0 {
            return None;
        }
        if !self.released_any
            && let (Some(now), Some(first)) = (now, self.first_arrival)
        {
            // The stream's first packets wait a window for earlier ones.
            if now.saturating_duration_since(first) < self.window {
                return None;
            }
        }
        self.released_any = true;
        let i = (self.head & self.mask) as usize;
        if let Some(p) = self.slots[i].take() {
            self.buffered -= 1;
            self.head += 1;
            return Some(Released::Packet(p));
        }
        // A gap at the head: find the first packet behind it (buffered > 0, so one exists
        // within the capacity).
        let cap = self.slots.len() as u64;
        let mut gap = 1;
        while gap < cap && self.slots[((self.head + gap) & self.mask) as usize].is_none() {
            gap += 1;
        }
        let next = self.slots[((self.head + gap) & self.mask) as usize].as_ref()?;
        let due = match now {
            None => true,
            Some(now) => now.saturating_duration_since(next.arrival) >= self.window,
        };
        if due {
            self.head += gap;
            self.stats.lost += gap;
            return Some(Released::Lost { count: gap });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(150);

    fn t0() -> Instant {
        static B: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *B.get_or_init(Instant::now)
    }

    fn at(ms: u64) -> Instant {
        t0() + Duration::from_millis(ms)
    }

    /// Pushes (seq, arrival ms) and pops after each push; returns the released sequence
    /// numbers (16-bit) and losses as None.
    fn run(jb: &mut JitterBuffer, pushes: &[(u16, u64)], end_ms: u64) -> Vec<Option<u16>> {
        let mut out = Vec::new();
        let drain = |jb: &mut JitterBuffer, now: Instant, out: &mut Vec<Option<u16>>| {
            while let Some(r) = jb.pop(now) {
                out.push(match r {
                    Released::Packet(p) => Some(p.seq as u16),
                    Released::Lost { .. } => None,
                });
            }
        };
        for &(seq, ms) in pushes {
            let _ = jb.push(seq, seq as u32, false, Bytes::from_static(b"x"), at(ms));
            drain(jb, at(ms), &mut out);
        }
        drain(jb, at(end_ms), &mut out);
        out
    }

    #[test]
    fn in_order_passes_after_the_start_window() {
        let mut jb = JitterBuffer::new(64, W);
        let out = run(&mut jb, &[(1, 0), (2, 20), (3, 40)], 200);
        assert_eq!(out, vec![Some(1), Some(2), Some(3)]);
        // Once started, a packet in order leaves at once.
        let out = run(&mut jb, &[(4, 220)], 220);
        assert_eq!(out, vec![Some(4)]);
    }

    #[test]
    fn reorders_within_the_window_and_across_the_wrap() {
        let mut jb = JitterBuffer::new(64, W);
        let pushes = [(65534, 0), (1, 10), (65535, 20), (0, 30), (2, 40)];
        let out = run(&mut jb, &pushes, 300);
        assert_eq!(
            out,
            vec![Some(65534), Some(65535), Some(0), Some(1), Some(2)]
        );
    }

    #[test]
    fn first_packet_late_still_counts() {
        // The stream's first packet was retransmitted: it comes after the second.
        let mut jb = JitterBuffer::new(64, W);
        let out = run(&mut jb, &[(11, 0), (10, 80)], 300);
        assert_eq!(out, vec![Some(10), Some(11)]);
    }

    #[test]
    fn a_gap_is_given_up_after_the_window() {
        let mut jb = JitterBuffer::new(64, W);
        run(&mut jb, &[(1, 0)], 200);
        // 2 never comes; 3 arrives at 210, and the gap is released at 360.
        let out = run(&mut jb, &[(3, 210), (4, 300)], 300);
        assert!(out.is_empty());
        let out = run(&mut jb, &[], 360);
        assert_eq!(out, vec![None, Some(3), Some(4)]);
        // The lost packet arriving afterwards is late.
        assert_eq!(
            jb.push(2, 0, false, Bytes::new(), at(400)),
            Err(Rejected::Late)
        );
        assert_eq!(jb.stats.lost, 1);
        assert_eq!(jb.stats.late, 1);
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut jb = JitterBuffer::new(64, W);
        let out = run(&mut jb, &[(5, 0), (5, 1), (6, 2), (6, 3)], 200);
        assert_eq!(out, vec![Some(5), Some(6)]);
        assert_eq!(jb.stats.duplicates, 2);
    }

    #[test]
    fn capacity_bounds_the_wait() {
        let mut jb = JitterBuffer::new(16, Duration::from_secs(10));
        run(&mut jb, &[(0, 0)], 20_000);
        // 1 is lost; 16 more packets fill the buffer: the gap is given up without waiting.
        let pushes: Vec<_> = (2..=17).map(|s| (s, 20_000)).collect();
        let out = run(&mut jb, &pushes, 20_000);
        assert_eq!(out.first(), Some(&None));
        assert_eq!(out.len(), 17);
        assert!(jb.len() <= jb.capacity());
    }

    #[test]
    fn a_huge_jump_restarts() {
        let mut jb = JitterBuffer::new(16, W);
        run(&mut jb, &[(100, 0), (101, 1)], 200);
        let out = run(&mut jb, &[(30_000, 300), (30_001, 301)], 500);
        assert_eq!(out, vec![None, Some(30_000), Some(30_001)]);
        assert_eq!(jb.stats.resets, 1);
    }

    #[test]
    fn a_sequence_restart_backwards_is_followed() {
        let mut jb = JitterBuffer::new(16, W);
        run(&mut jb, &[(10_000, 0)], 200);
        // The sender restarts its numbering 5000 lower; after a run of "late" packets the
        // buffer follows it.
        let pushes: Vec<_> = (5_000..5_040).map(|s| (s, 300)).collect();
        let out = run(&mut jb, &pushes, 1_000);
        assert!(out.iter().flatten().any(|&s| s == 5_039), "{out:?}");
    }

    proptest::proptest! {
        /// Whatever the order (within the window), losses and duplicates: packets leave in
        /// increasing order, each at most once, and every packet not given up on leaves.
        #[test]
        fn order_and_uniqueness(
            start in proptest::num::u16::ANY,
            n in 1usize..300,
            drops in proptest::collection::vec(proptest::bool::weighted(0.1), 300),
            dups in proptest::collection::vec(proptest::bool::weighted(0.05), 300),
            delays in proptest::collection::vec(0u64..100, 300),
        ) {
            let mut arrivals: Vec<(u16, u64)> = Vec::new();
            for i in 0..n {
                if drops[i] {
                    continue;
                }
                let seq = start.wrapping_add(i as u16);
                let t = i as u64 * 5 + delays[i];
                arrivals.push((seq, t));
                if dups[i] {
                    arrivals.push((seq, t + 3));
                }
            }
            arrivals.sort_by_key(|a| a.1);
            let mut jb = JitterBuffer::new(512, W);
            let end = n as u64 * 5 + 1000;
            let mut out = run(&mut jb, &arrivals, end);
            while let Some(r) = jb.drain() {
                if let Released::Packet(p) = r {
                    out.push(Some(p.seq as u16));
                }
            }
            let got: Vec<u16> = out.into_iter().flatten().collect();
            let offsets: Vec<u16> = got.iter().map(|s| s.wrapping_sub(start)).collect();
            proptest::prop_assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
            // Delays are below the window: nothing that arrived is given up on, except
            // packets before the first one pushed that came after the start window.
            let expected: std::collections::BTreeSet<u16> =
                arrivals.iter().map(|a| a.0.wrapping_sub(start)).collect();
            let got_set: std::collections::BTreeSet<u16> = offsets.iter().copied().collect();
            let first = arrivals.first().map(|a| a.0.wrapping_sub(start)).unwrap_or(0);
            for e in &expected {
                if *e >= first {
                    proptest::prop_assert!(got_set.contains(e), "missing {e}");
                }
            }
        }
    }
}
