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
//! - one sequence number is sent again at most once per [`RESEND_INTERVAL`], and at most
//!   [`MAX_RESENDS`] times;
//! - over time, retransmissions are at most half as many as the packets sent (a budget that
//!   sending fills and resending drains, with a burst of [`BURST`]): however many NACKs a client
//!   sends, it cannot make the server send much more than the stream itself.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How long a sent video datagram can be asked for again, at least (and before any round trip
/// was measured)…
pub const WINDOW: Duration = Duration::from_millis(300);
/// …and at most, however long the round trip.
pub const MAX_WINDOW: Duration = Duration::from_millis(1500);
/// Most datagrams kept per outgoing track, whatever the bitrate (about 8 Mbit/s over the window).
pub const MAX_PACKETS: usize = 256;
/// A sequence number asked for again sooner than this after it was resent is not resent: the
/// NACK was sent before the first retransmission could arrive.
pub const RESEND_INTERVAL: Duration = Duration::from_millis(20);
/// How many times one packet is sent again, whatever is asked.
pub const MAX_RESENDS: u8 = 3;
/// Retransmissions that may go out at once after a quiet spell (a lost keyframe is ~30 packets).
pub const BURST: u32 = 64;
/// The budget counts in halves: a sent packet adds one, a retransmission takes two.
const BUDGET_CAP: u32 = 2 * BURST;
const RESEND_COST: u32 = 2;

struct Sent {
    seq: u16,
    /// Its transport-wide number, when the leg numbers its datagrams.
    twcc: Option<u16>,
    at: Instant,
    resent: Option<Instant>,
    resends: u8,
    datagram: Bytes,
}

/// The datagrams recently sent on one outgoing track.
pub struct SentHistory {
    entries: VecDeque<Sent>,
    /// How long a datagram is kept: [`WINDOW`] until the round trip is known, then two round
    /// trips and a little (a NACK comes a round trip after the loss, and may be repeated), within
    /// [`WINDOW`]..=[`MAX_WINDOW`].
    window: Duration,
    /// Retransmission budget, in halves of a packet (see the module invariants).
    budget: u32,
}

impl Default for SentHistory {
    fn default() -> Self {
        Self {
            entries: VecDeque::new(),
            window: WINDOW,
            budget: BUDGET_CAP,
        }
    }
}

impl SentHistory {
    /// Keeps `datagram`, sent at `at` with sequence number `seq`, and forgets what is too old.
    pub fn record(&mut self, seq: u16, twcc: Option<u16>, at: Instant, datagram: Bytes) {
        self.budget = (self.budget + 1).min(BUDGET_CAP);
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
                        twcc,
                        at,
                        resent: None,
                        resends: 0,
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
                .is_some_and(|first| at.saturating_duration_since(first.at) > self.window)
        {
            self.entries.pop_front();
        }
        self.entries.push_back(Sent {
            seq,
            twcc,
            at,
            resent: None,
            resends: 0,
            datagram,
        });
    }

    /// The datagram to send again for a NACK of `seq` at `now`, if it is still kept, was not
    /// resent in the last [`RESEND_INTERVAL`] nor [`MAX_RESENDS`] times, and the budget allows;
    /// with its transport-wide number, if it has one.
    pub fn resend(&mut self, seq: u16, now: Instant) -> Option<(Bytes, Option<u16>)> {
        if self.budget < RESEND_COST {
            return None;
        }
        let first = self.entries.front()?.seq;
        let key = offset(first, seq);
        let i = self
            .entries
            .binary_search_by_key(&key, |e| offset(first, e.seq))
            .ok()?;
        let entry = &mut self.entries[i];
        if now.saturating_duration_since(entry.at) > self.window
            || entry.resends >= MAX_RESENDS
            || entry
                .resent
                .is_some_and(|t| now.saturating_duration_since(t) < RESEND_INTERVAL)
        {
            return None;
        }
        entry.resent = Some(now);
        entry.resends += 1;
        self.budget -= RESEND_COST;
        Some((entry.datagram.clone(), entry.twcc))
    }

    /// The path's round trip was measured: keep datagrams as long as a NACK can still come.
    pub fn set_round_trip(&mut self, rtt: Duration) {
        self.window = (rtt * 2 + Duration::from_millis(50)).clamp(WINDOW, MAX_WINDOW);
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
    fn the_window_follows_the_round_trip() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut h = SentHistory::default();
        h.record(1, None, t0, datagram(1));
        assert!(h.resend(1, t0 + ms(400)).is_none(), "300 ms by default");
        // A 500 ms round trip (a congested mobile link): a NACK 700 ms later still repairs.
        let mut h = SentHistory::default();
        h.set_round_trip(ms(500));
        h.record(1, None, t0, datagram(1));
        h.record(2, None, t0 + ms(700), datagram(2));
        assert!(h.resend(1, t0 + ms(700)).is_some());
        // Never below the default, never above the cap.
        h.set_round_trip(ms(10));
        assert_eq!(h.window, WINDOW);
        h.set_round_trip(Duration::from_secs(9));
        assert_eq!(h.window, MAX_WINDOW);
    }

    #[test]
    fn resends_what_it_kept_once_per_interval() {
        let t0 = Instant::now();
        let mut h = SentHistory::default();
        for i in 0..10u16 {
            h.record(65530u16.wrapping_add(i), None, t0, datagram(i));
        }
        // Across the wrap of the sequence numbers.
        assert_eq!(
            h.resend(3, t0).map(|r| r.0).as_deref(),
            Some(&datagram(9)[..])
        );
        assert_eq!(
            h.resend(65531, t0).map(|r| r.0).as_deref(),
            Some(&datagram(1)[..])
        );
        assert!(h.resend(3, t0 + Duration::from_millis(5)).is_none());
        assert!(h.resend(3, t0 + RESEND_INTERVAL).is_some());
        // Never sent, or before the first kept.
        assert!(h.resend(4, t0).is_none());
        assert!(h.resend(65000, t0).is_none());
    }

    #[test]
    fn resends_are_bounded_per_packet_and_overall() {
        let t0 = Instant::now();
        let mut h = SentHistory::default();
        h.record(1, None, t0, datagram(1));
        let times = (0..10)
            .filter(|i| h.resend(1, t0 + RESEND_INTERVAL * *i).is_some())
            .count();
        assert_eq!(times, usize::from(MAX_RESENDS));

        // A client NACKing everything, all the time: after the burst, one resend per two sent.
        let mut h = SentHistory::default();
        let mut resent = 0;
        let mut sent = 0;
        for i in 0..2_000u32 {
            let at = t0 + Duration::from_millis(u64::from(i));
            h.record(i as u16, None, at, datagram(i as u16));
            sent += 1;
            for back in 0..50u16 {
                if h.resend((i as u16).wrapping_sub(back), at).is_some() {
                    resent += 1;
                }
            }
        }
        assert!(resent <= sent / 2 + BURST as usize, "{resent} of {sent}");
        assert!(resent >= sent / 2, "the budget is used: {resent} of {sent}");
    }

    #[test]
    fn forgets_by_age_and_count() {
        let t0 = Instant::now();
        let mut h = SentHistory::default();
        h.record(1, None, t0, datagram(1));
        h.record(2, None, t0 + WINDOW / 2, datagram(2));
        h.record(3, None, t0 + WINDOW + Duration::from_millis(1), datagram(3));
        assert_eq!(h.len(), 2, "the first is past the window");
        assert!(h.resend(1, t0 + WINDOW).is_none());
        // Kept, but asked for too late.
        assert!(h.resend(2, t0 + WINDOW * 2).is_none());
        assert!(h.resend(3, t0 + WINDOW).is_some());

        let mut h = SentHistory::default();
        for i in 0..(MAX_PACKETS as u16 + 10) {
            h.record(i, None, t0, datagram(i));
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
            h.record(seq, None, t0, datagram(seq));
        }
        // A repeat is not recorded again; a number before the first kept is not recorded.
        h.record(11, None, t0, datagram(99));
        h.record(9, None, t0, datagram(9));
        assert_eq!(h.len(), 4);
        assert!(h.resend(12, t0).is_none());
        assert!(h.resend(13, t0).is_none());
        // A late one within the span takes its place.
        h.record(13, None, t0, datagram(13));
        assert_eq!(h.len(), 5);
        assert_eq!(
            h.resend(13, t0).map(|r| r.0).as_deref(),
            Some(&datagram(13)[..])
        );
        assert_eq!(
            h.resend(15, t0).map(|r| r.0).as_deref(),
            Some(&datagram(15)[..])
        );
        assert_eq!(
            h.resend(14, t0).map(|r| r.0).as_deref(),
            Some(&datagram(14)[..])
        );
        assert_eq!(
            h.resend(11, t0).map(|r| r.0).as_deref(),
            Some(&datagram(11)[..])
        );
    }
}
