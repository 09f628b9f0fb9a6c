//! Receive-side accounting of synthetic media, kept by the task that owns the leg (no lock):
//! per sending track (the payload's tag, which survives the SFU's SSRC rewriting) the counters
//! seen, and per owner an interval latency histogram that the collector takes each second.
//!
//! Loss is counted from the payload counters: `expected = highest − first + 1` per stream,
//! minus the unique packets received; packets still in flight at the end are not loss (the
//! highest counter seen bounds the expectation).

use std::collections::HashMap;

use super::stats::Histogram;
use crate::synthetic::{Decoded, decode, now_us};

/// Counters recent enough to be told apart from duplicates.
const DUP_WINDOW: u32 = 1024;

#[derive(Debug, Clone, Default)]
pub struct StreamRecv {
    pub packets: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub reordered: u64,
    first: Option<u32>,
    highest: Option<u32>,
    /// Bit i: counter `highest - i` was received.
    window: [u64; (DUP_WINDOW / 64) as usize],
    /// RFC 3550 interarrival jitter over send/receive times, in µs (×16 fixed point).
    jitter16: u64,
    last_transit: Option<i64>,
}

impl StreamRecv {
    /// Counters expected so far (first to highest).
    pub fn expected(&self) -> u64 {
        match (self.first, self.highest) {
            (Some(f), Some(h)) => u64::from(h.wrapping_sub(f)) + 1,
            _ => 0,
        }
    }

    pub fn jitter_us(&self) -> f64 {
        self.jitter16 as f64 / 16.0
    }

    fn bit(&self, offset: u32) -> Option<(usize, u64)> {
        (offset < DUP_WINDOW).then(|| ((offset / 64) as usize, 1u64 << (offset % 64)))
    }

    fn shift(&mut self, by: u32) {
        if by >= DUP_WINDOW {
            self.window = Default::default();
            return;
        }
        let (words, bits) = ((by / 64) as usize, by % 64);
        let n = self.window.len();
        for i in (0..n).rev() {
            let src = i.checked_sub(words);
            let hi = src.map_or(0, |s| self.window[s]);
            let lo = src
                .and_then(|s| s.checked_sub(1))
                .map_or(0, |s| self.window[s]);
            self.window[i] = if bits == 0 {
                hi
            } else {
                (hi << bits) | (lo >> (64 - bits))
            };
        }
    }

    /// Records one decoded packet received at `now_us`.
    pub fn record(&mut self, d: &Decoded, now_us: u64) {
        self.packets += 1;
        let Some(highest) = self.highest else {
            self.first = Some(d.counter);
            self.highest = Some(d.counter);
            self.window[0] = 1;
            self.unique += 1;
            return;
        };
        let ahead = d.counter.wrapping_sub(highest);
        if ahead != 0 && ahead < 0x8000_0000 {
            self.shift(ahead);
            self.window[0] |= 1;
            self.highest = Some(d.counter);
            self.unique += 1;
        } else {
            let behind = highest.wrapping_sub(d.counter);
            match self.bit(behind) {
                Some((w, b)) if self.window[w] & b != 0 => self.duplicates += 1,
                Some((w, b)) => {
                    self.window[w] |= b;
                    self.unique += 1;
                    self.reordered += 1;
                }
                // Too old to tell: count it as a late (reordered) arrival.
                None => {
                    self.unique += 1;
                    self.reordered += 1;
                }
            }
        }
        let transit = now_us as i64 - d.sent_us as i64;
        if let Some(last) = self.last_transit {
            let diff = (transit - last).unsigned_abs();
            // J += (|D| − J) / 16, kept ×16.
            self.jitter16 = self.jitter16 + diff - (self.jitter16 >> 4);
        }
        self.last_transit = Some(transit);
    }
}

/// Everything one leg received.
#[derive(Debug, Default)]
pub struct LegRecv {
    pub streams: HashMap<u32, StreamRecv>,
    pub corrupt: u64,
    pub first_packet_us: Option<u64>,
}

impl LegRecv {
    /// Accounts one RTP payload; latency goes into `latency` (the owner's interval histogram).
    pub fn on_payload(&mut self, payload: &[u8], latency: &mut Histogram) {
        let now = now_us();
        self.first_packet_us.get_or_insert(now);
        match decode(payload) {
            Some(d) if d.intact => {
                latency.record(now.saturating_sub(d.sent_us));
                self.streams.entry(d.tag).or_default().record(&d, now);
            }
            _ => self.corrupt += 1,
        }
    }
}

/// Totals over many legs at one instant (cumulative counters).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RecvTotals {
    pub packets: u64,
    pub unique: u64,
    pub expected: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub corrupt: u64,
    pub streams: u64,
    pub jitter_us_sum: f64,
}

impl RecvTotals {
    pub fn add_leg(&mut self, r: &LegRecv) {
        self.corrupt += r.corrupt;
        for s in r.streams.values() {
            self.packets += s.packets;
            self.unique += s.unique;
            self.expected += s.expected();
            self.duplicates += s.duplicates;
            self.reordered += s.reordered;
            self.streams += 1;
            self.jitter_us_sum += s.jitter_us();
        }
    }

    pub fn add(&mut self, o: &RecvTotals) {
        self.packets += o.packets;
        self.unique += o.unique;
        self.expected += o.expected;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.corrupt += o.corrupt;
        self.streams += o.streams;
        self.jitter_us_sum += o.jitter_us_sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(counter: u32, sent_us: u64) -> Decoded {
        Decoded {
            tag: 1,
            counter,
            sent_us,
            intact: true,
        }
    }

    #[test]
    fn loss_duplicates_reordering() {
        let mut s = StreamRecv::default();
        for (i, c) in [10u32, 11, 13, 12, 13, 16, 14].into_iter().enumerate() {
            s.record(&d(c, i as u64 * 1000), i as u64 * 1000 + 500);
        }
        assert_eq!(s.expected(), 7); // 10..=16
        assert_eq!(s.unique, 6); // 15 missing
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.reordered, 2); // 12 and 14
        assert_eq!(s.jitter_us(), 0.0); // constant transit
        // A jump beyond the window clears it; an old counter then is late, not a duplicate.
        s.record(&d(5000, 0), 0);
        s.record(&d(16, 0), 0);
        assert_eq!(s.duplicates, 1);
    }

    #[test]
    fn window_shift_keeps_bits() {
        let mut s = StreamRecv::default();
        for c in 0..200u32 {
            s.record(&d(c, 0), 0);
        }
        for c in 0..200u32 {
            s.record(&d(c, 0), 0);
        }
        assert_eq!(s.duplicates, 200);
        assert_eq!(s.unique, 200);
    }
}
