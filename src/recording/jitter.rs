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
