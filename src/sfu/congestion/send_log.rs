//! What left on one connection, by transport-wide sequence number: when and how large, so
//! that the client's transport-cc feedback (when each packet arrived) can be joined with it.
//!
//! Invariants of [`SendLog`]:
//! - sequence numbers are handed out by [`SendLog::next`], one per datagram, consecutive
//!   modulo 2^16; `entries[i]` is the record of `first + i` (unwrapped), so a lookup is an index;
//! - at most [`MAX_KEPT`] records are kept: the oldest go first (feedback for them, if it ever
//!   comes, is ignored);
//! - a record sent again (a NACK answered with the same datagram) is marked: its arrival may be
//!   the retransmission's, so it says nothing about the path's delay.

use std::collections::VecDeque;
use std::time::Instant;

/// Records kept: seconds of what one client receives (a 1:1 call at 2 Mbit/s is ~200
/// datagrams a second), a fraction of a second for a large group; 24 KiB a connection at most.
pub const MAX_KEPT: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentPacket {
    pub at: Instant,
    pub size: u16,
    pub resent: bool,
}

#[derive(Debug, Default)]
pub struct SendLog {
    /// Unwrapped number of `entries[0]`.
    first: i64,
    /// Unwrapped number the next datagram gets.
    next: i64,
    entries: VecDeque<SentPacket>,
}

impl SendLog {
    /// The number for a datagram about to leave at `at` with `size` octets, recorded.
    pub fn next(&mut self, at: Instant, size: usize) -> u16 {
        let seq = self.next;
        self.next += 1;
        if self.entries.len() == MAX_KEPT {
            self.entries.pop_front();
            self.first += 1;
        }
        if self.entries.is_empty() {
            self.first = seq;
        }
        self.entries.push_back(SentPacket {
            at,
            size: u16::try_from(size).unwrap_or(u16::MAX),
            resent: false,
        });
        seq as u16
    }

    /// The unwrapped number of `seq`: the one closest to the last number handed out.
    pub fn unwrap(&self, seq: u16) -> i64 {
        let last = self.next - 1;
        let diff = i64::from(seq.wrapping_sub(last as u16) as i16);
        last + diff
    }

    /// The record of `seq`, if still kept.
    pub fn get(&self, seq: i64) -> Option<SentPacket> {
        let index = usize::try_from(seq - self.first).ok()?;
        self.entries.get(index).copied()
    }

    /// `seq` was sent again: its arrival no longer times the path.
    pub fn mark_resent(&mut self, seq: u16) {
        let seq = self.unwrap(seq);
        if let Ok(index) = usize::try_from(seq - self.first)
            && let Some(p) = self.entries.get_mut(index)
        {
            p.resent = true;
        }
    }

    /// `seq` left only now (it waited in the pacer): its departure is what times the path.
    pub fn set_departure(&mut self, seq: u16, at: Instant) {
        let seq = self.unwrap(seq);
        if let Ok(index) = usize::try_from(seq - self.first)
            && let Some(p) = self.entries.get_mut(index)
        {
            p.at = at;
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn numbers_are_consecutive_and_found_again_across_the_wrap() {
        let t0 = Instant::now();
        let mut log = SendLog::default();
        let mut last: u16 = 0;
        for i in 0..70_000u32 {
            let seq = log.next(
                t0 + Duration::from_micros(u64::from(i)),
                100 + (i % 1000) as usize,
            );
            if i > 0 {
                assert_eq!(seq, last.wrapping_add(1));
            }
            last = seq;
        }
        assert_eq!(log.len(), MAX_KEPT);
        // The newest is found by its 16-bit number, with its size.
        let newest = log.unwrap(last);
        assert_eq!(newest, 69_999);
        let p = log.get(newest).expect("kept");
        assert_eq!(p.size, 100 + (69_999 % 1000) as u16);
        // What fell out is not found.
        assert!(log.get(newest - MAX_KEPT as i64).is_none());
        assert!(log.get(newest - MAX_KEPT as i64 + 1).is_some());
        // A number ahead of what was sent is not found either.
        assert!(log.get(log.unwrap(last.wrapping_add(5))).is_none());
    }

    #[test]
    fn a_resent_packet_is_marked() {
        let t0 = Instant::now();
        let mut log = SendLog::default();
        let a = log.next(t0, 1000);
        let b = log.next(t0, 1000);
        log.mark_resent(a);
        assert!(log.get(log.unwrap(a)).unwrap().resent);
        assert!(!log.get(log.unwrap(b)).unwrap().resent);
        // An unknown number changes nothing and does not panic.
        log.mark_resent(b.wrapping_add(100));
        log.mark_resent(b.wrapping_sub(30_000));
    }
}
