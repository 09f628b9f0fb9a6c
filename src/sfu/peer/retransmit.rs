//! Answers a subscriber's NACKs from the SRTP datagrams recently sent to it.
//!
//! Without RTX (none is negotiated, see [`super::setup`]) a retransmission is the original
//! packet again: same SSRC, same sequence number, same payload. SRTP's keystream is a function
//! of the SSRC and the packet index, so it is also the same bytes on the wire. What is kept is
//! therefore the encrypted datagram as it left, shared with the send queue (no copy), and a
//! retransmission costs no encryption and no allocation. A receiver that did get
//! the first copy drops the second one by SRTP replay protection.
//!
//! Datagrams are kept for a time, not a count: whether a NACK can still repair a loss depends
//! on the round trip, not on the bitrate. [`WINDOW`] covers the first NACK of a path with a
//! round trip up to about a quarter of a second, and its repeats on shorter ones; at 1 Mbit/s
//! that is about 35 packets, 40 KiB per outgoing video track.
//!
//! Invariants of [`SentHistory`]:
//! - entries are in sequence order (modulo 2^16), each number once: a packet forwarded late
//!   (reordered on the publisher's path, or a repair of a loss there) is put in its place, so
//!   that it too can be sent again;
//! - no entry is older than [`WINDOW`] before the newest one, and there are at most
//!   [`MAX_PACKETS`];
//! - one sequence number is sent again at most once per [`RESEND_INTERVAL`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How long a sent video datagram can be asked for again.
pub const WINDOW: Duration = Duration::from_millis(300);
/// Most datagrams kept per outgoing track, whatever the bitrate (about 8 Mbit/s over the window).
pub const MAX_PACKETS: usize = 256;
/// A sequence number asked for again sooner than this after it was resent is not resent: the
/// NACK was sent before the first retransmission could arrive.
pub const RESEND_INTERVAL: Duration = Duration::from_millis(20);

struct Sent {
    seq: u16,
    at: Instant,
    resent: Option<Instant>,
    datagram: Bytes,
}

/// The datagrams recently sent on one outgoing track.
#[derive(Default)]
pub struct SentHistory {
    entries: VecDeque<Sent>,
}

impl SentHistory {
    /// Keeps `datagram`, sent at `at` with sequence number `seq`, and forgets what is too old.
    pub fn record(&mut self, seq: u16, at: Instant, datagram: Bytes) {
        if let (Some(first), Some(last)) = (self.entries.front(), self.entries.back())
            && !(1..0x8000).contains(&offset(last.seq, seq))
        {
            // Late: in its place if it falls within what is kept, and only once.
            let key = offset(first.seq, seq);
            if key < 0x8000
                && let Err(i) = self
                    .entries
                    .binary_search_by_key(&key, |e| offset(first.seq, e.seq))
            {
                self.entries.insert(
                    i,
                    Sent {
                        seq,
                        at,
                        resent: None,
                        datagram,
                    },
                );
            }
            return;
        }
        while self.entries.len() >= MAX_PACKETS
            || self
                .entries
                .front()
                .is_some_and(|first| at.saturating_duration_since(first.at) > WINDOW)
        {
            self.entries.pop_front();
        }
        self.entries.push_back(Sent {
            seq,
            at,
            resent: None,
            datagram,
        });
    }

    /// The datagram to send again for a NACK of `seq` at `now`, if it is still kept and was not
    /// resent in the last [`RESEND_INTERVAL`].
    pub fn resend(&mut self, seq: u16, now: Instant) -> Option<Bytes> {
        let first = self.entries.front()?.seq;
        let key = offset(first, seq);
        let i = self
            .entries
            .binary_search_by_key(&key, |e| offset(first, e.seq))
            .ok()?;
        let entry = &mut self.entries[i];
        if now.saturating_duration_since(entry.at) > WINDOW
            || entry
                .resent
                .is_some_and(|t| now.saturating_duration_since(t) < RESEND_INTERVAL)
        {
            return None;
        }
        entry.resent = Some(now);
        Some(entry.datagram.clone())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// How far `seq` is after `from`, modulo 2^16.
fn offset(from: u16, seq: u16) -> u16 {
    seq.wrapping_sub(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(seq: u16) -> Bytes {
        let mut d = vec![0x80, 96];
        d.extend_from_slice(&seq.to_be_bytes());
        d.extend_from_slice(&[0; 4]);
        d.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        d.extend_from_slice(&[7; 100]);
        Bytes::from(d)
    }

    #[test]
    fn resends_what_it_kept_once_per_interval() {
        let t0 = Instant::now();
        let mut h = SentHistory::default();
        for i in 0..10u16 {
            h.record(65530u16.wrapping_add(i), t0, datagram(i));
        }
        // Across the wrap of the sequence numbers.
        assert_eq!(h.resend(3, t0).as_deref(), Some(&datagram(9)[..]));
        assert_eq!(h.resend(65531, t0).as_deref(), Some(&datagram(1)[..]));
        assert!(h.resend(3, t0 + Duration::from_millis(5)).is_none());
        assert!(h.resend(3, t0 + RESEND_INTERVAL).is_some());
        // Never sent, or before the first kept.
        assert!(h.resend(4, t0).is_none());
        assert!(h.resend(65000, t0).is_none());
    }

    #[test]
    fn forgets_by_age_and_count() {
        let t0 = Instant::now();
        let mut h = SentHistory::default();
        h.record(1, t0, datagram(1));
        h.record(2, t0 + WINDOW / 2, datagram(2));
        h.record(3, t0 + WINDOW + Duration::from_millis(1), datagram(3));
        assert_eq!(h.len(), 2, "the first is past the window");
        assert!(h.resend(1, t0 + WINDOW).is_none());
        // Kept, but asked for too late.
        assert!(h.resend(2, t0 + WINDOW * 2).is_none());
        assert!(h.resend(3, t0 + WINDOW).is_some());

        let mut h = SentHistory::default();
        for i in 0..(MAX_PACKETS as u16 + 10) {
            h.record(i, t0, datagram(i));
        }
        assert_eq!(h.len(), MAX_PACKETS);
        assert!(h.resend(9, t0).is_none());
        assert!(h.resend(10, t0).is_some());
    }

    #[test]
    fn a_gap_in_sequence_numbers_is_not_a_hit() {
        let t0 = Instant::now();
        let mut h = SentHistory::default();
        for seq in [10u16, 11, 14, 15] {
            h.record(seq, t0, datagram(seq));
        }
        // A repeat is not recorded again; a number before the first kept is not recorded.
        h.record(11, t0, datagram(99));
        h.record(9, t0, datagram(9));
        assert_eq!(h.len(), 4);
        assert!(h.resend(12, t0).is_none());
        assert!(h.resend(13, t0).is_none());
        // A late one within the span takes its place.
        h.record(13, t0, datagram(13));
        assert_eq!(h.len(), 5);
        assert_eq!(h.resend(13, t0).as_deref(), Some(&datagram(13)[..]));
        assert_eq!(h.resend(15, t0).as_deref(), Some(&datagram(15)[..]));
        assert_eq!(h.resend(14, t0).as_deref(), Some(&datagram(14)[..]));
        assert_eq!(h.resend(11, t0).as_deref(), Some(&datagram(11)[..]));
    }
}
