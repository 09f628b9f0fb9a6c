//! A pacer for one connection's video: what leaves for the client no faster than its link
//! takes, so a keyframe (tens of datagrams at once) does not overflow a mobile link's queue.
//!
//! Only video goes through it, and only while the connection's estimate limits anything:
//! audio and retransmissions leave at once (audio first: a late word is worse than a late
//! frame; a retransmission is already late). Datagrams are queued encrypted, in order, and
//! released at [`PACING_FACTOR`] × the estimate with a burst of [`BURST_BYTES`].
//!
//! Invariants:
//! - the queue holds at most [`MAX_QUEUE_DELAY`] of data at the pacing rate (and at most
//!   [`MAX_QUEUED`] datagrams); beyond, the oldest datagram is dropped (counted): the client
//!   NACKs it like a loss, and it is repaired from the datagrams kept for NACKs while the round
//!   trip allows;
//! - with no rate set (the estimate limits nothing), nothing is queued and whatever was queued
//!   is released at once;
//! - no clock is read: every instant is a parameter.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Pacing rate over the estimate (room for the estimate to be low, and for bursts to drain).
pub const PACING_FACTOR: f64 = 1.5;
/// Bytes that may leave at once after a quiet spell (a few datagrams).
pub const BURST_BYTES: f64 = 6_000.0;
/// The longest a datagram waits in the queue (at the pacing rate).
pub const MAX_QUEUE_DELAY: Duration = Duration::from_millis(400);
/// Most datagrams queued, whatever the rate.
pub const MAX_QUEUED: usize = 512;

#[derive(Debug)]
pub struct Pacer<T> {
    /// Bits per second; `None`: not pacing.
    rate: Option<f64>,
    /// Bytes that may leave now (up to [`BURST_BYTES`]).
    budget: f64,
    last: Option<Instant>,
    queue: VecDeque<(T, usize)>,
    queued_bytes: usize,
    /// Datagrams dropped because the queue was full.
    pub dropped: u64,
}

impl<T> Default for Pacer<T> {
    fn default() -> Self {
        Self {
            rate: None,
            budget: BURST_BYTES,
            last: None,
            queue: VecDeque::new(),
            queued_bytes: 0,
            dropped: 0,
        }
    }
}

impl<T> Pacer<T> {
    /// Pace at `PACING_FACTOR × estimate` (`None`: stop pacing).
    pub fn set_estimate(&mut self, estimate: Option<f64>) {
        self.rate = estimate.map(|e| (e * PACING_FACTOR).max(1.0));
    }

    pub fn pacing(&self) -> bool {
        self.rate.is_some()
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    fn refill(&mut self, now: Instant) {
        let Some(rate) = self.rate else {
            self.budget = BURST_BYTES;
            self.last = Some(now);
            return;
        };
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.budget = (self.budget + elapsed * rate / 8.0).min(BURST_BYTES);
        }
        self.last = Some(now);
    }

    /// A video datagram of `size` bytes to send at `now`: `Some(item)` to send at once, `None`
    /// when it was queued (then [`Self::release`] at [`Self::next_release`]). Datagrams dropped
    /// to make room are returned in `dropped`'s count.
    pub fn offer(&mut self, item: T, size: usize, now: Instant) -> Option<T> {
        self.refill(now);
        let Some(rate) = self.rate else {
            return Some(item);
        };
        if self.queue.is_empty() && self.budget >= 0.0 {
            self.budget -= size as f64;
            return Some(item);
        }
        let max_bytes = (rate / 8.0 * MAX_QUEUE_DELAY.as_secs_f64()) as usize;
        while !self.queue.is_empty()
            && (self.queue.len() >= MAX_QUEUED || self.queued_bytes + size > max_bytes)
        {
            if let Some((_, n)) = self.queue.pop_front() {
                self.queued_bytes -= n;
                self.dropped += 1;
            }
        }
        self.queue.push_back((item, size));
        self.queued_bytes += size;
        None
    }

    /// What may leave at `now`, in order (everything when no longer pacing).
    pub fn release(&mut self, now: Instant, out: &mut Vec<T>) {
        self.refill(now);
        while let Some((_, size)) = self.queue.front() {
            if self.rate.is_some() && self.budget < 0.0 {
                break;
            }
            self.budget -= *size as f64;
            let (item, size) = self.queue.pop_front().expect("front exists");
            self.queued_bytes -= size;
            out.push(item);
        }
    }

    /// When the queue's head may leave (now, when it may already).
    pub fn next_release(&self, now: Instant) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        let Some(rate) = self.rate else {
            return Some(now);
        };
        if self.budget >= 0.0 {
            return Some(now);
        }
        let wait = -self.budget * 8.0 / rate;
        Some(self.last.unwrap_or(now) + Duration::from_secs_f64(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn without_an_estimate_everything_leaves_at_once() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        for i in 0..100 {
            assert_eq!(p.offer(i, 1200, t0), Some(i));
        }
        assert_eq!(p.next_release(t0), None);
    }

    #[test]
    fn a_keyframe_is_spread_at_the_pacing_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        // 400 kbit/s estimate: 600 kbit/s pacing, 75 bytes a millisecond.
        p.set_estimate(Some(400_000.0));
        // A keyframe of 30 datagrams of 1,000 bytes, all at once.
        let at_once = (0..30).filter(|i| p.offer(*i, 1000, t0).is_some()).count();
        assert!((5..=7).contains(&at_once), "{at_once} left at once");
        // The rest leaves over the next ~320 ms, in order, never faster than the rate.
        let mut out = Vec::new();
        let mut t = t0;
        let mut last_out = at_once;
        while let Some(next) = p.next_release(t) {
            assert!(next >= t);
            t = next.max(t + MS);
            p.release(t, &mut out);
            let sent_bytes = (out.len() + at_once) as f64 * 1000.0;
            let allowed = BURST_BYTES + 1000.0 + t.duration_since(t0).as_secs_f64() * 75_000.0;
            assert!(sent_bytes <= allowed, "{sent_bytes} > {allowed} at {t:?}");
            last_out = out.len();
        }
        assert_eq!(out, (at_once..30).collect::<Vec<_>>());
        let _ = last_out;
        let took = t.duration_since(t0);
        assert!(
            (Duration::from_millis(280)..Duration::from_millis(360)).contains(&took),
            "{took:?}"
        );
        assert_eq!(p.dropped, 0);
    }

    #[test]
    fn a_queue_longer_than_its_limit_drops_its_oldest() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        p.set_estimate(Some(100_000.0)); // 150 kbit/s: 400 ms is 7,500 bytes.
        for i in 0..40 {
            p.offer(i, 1000, t0);
        }
        assert!(p.dropped > 20, "{}", p.dropped);
        assert!(p.queued() <= 8);
        // The newest are kept.
        let mut out = Vec::new();
        p.set_estimate(None);
        p.release(t0, &mut out);
        assert_eq!(out.last(), Some(&39));
        assert_eq!(p.queued(), 0);
    }

    #[test]
    fn pacing_stops_and_the_queue_leaves_when_the_estimate_is_lifted() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        p.set_estimate(Some(300_000.0));
        for i in 0..20 {
            p.offer(i, 1200, t0);
        }
        assert!(p.queued() > 0);
        p.set_estimate(None);
        assert_eq!(p.next_release(t0), Some(t0));
        let mut out = Vec::new();
        p.release(t0, &mut out);
        assert_eq!(p.queued(), 0);
        assert_eq!(p.offer(99, 1200, t0), Some(99));
    }
}
