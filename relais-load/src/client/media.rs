//! What a test peer received, per stream: packets and bytes, latency, loss, duplicates,
//! reordering and payloads that did not arrive byte for byte as sent — read from the
//! [`crate::synthetic`] payloads the senders write.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::stats::Samples;
use crate::synthetic::{decode, now_us};

/// Counters of one received stream (one SSRC).
#[derive(Debug, Clone, Default)]
pub struct StreamCounters {
    pub video: bool,
    pub packets: u64,
    pub bytes: u64,
    /// Payloads whose bytes differ from what was sent (or that carry no synthetic header).
    pub corrupt: u64,
    /// Sequence numbers not exactly previous + 1 (gaps or reordering, as the SFU rewrote them).
    pub seq_discontinuities: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub latency: Samples,
    pub first_packet_us: Option<u64>,
    pub tags: Vec<u32>,
    last_seq: Option<u16>,
    highest_counter: Option<u32>,
    lowest_counter: Option<u32>,
    seen_counters: std::collections::BTreeSet<u32>,
}

impl StreamCounters {
    fn record(&mut self, seq: u16, payload: &[u8], now_us: u64) {
        self.packets += 1;
        self.bytes += payload.len() as u64;
        self.first_packet_us.get_or_insert(now_us);
        if let Some(last) = self.last_seq
            && seq != last.wrapping_add(1)
        {
            self.seq_discontinuities += 1;
        }
        self.last_seq = Some(seq);
        match decode(payload) {
            Some(d) if d.intact => {
                if !self.tags.contains(&d.tag) {
                    self.tags.push(d.tag);
                }
                self.latency.push(now_us.saturating_sub(d.sent_us));
                if !self.seen_counters.insert(d.counter) {
                    self.duplicates += 1;
                } else if self.highest_counter.is_some_and(|h| d.counter < h) {
                    self.reordered += 1;
                }
                self.highest_counter =
                    Some(self.highest_counter.map_or(d.counter, |h| h.max(d.counter)));
                self.lowest_counter =
                    Some(self.lowest_counter.map_or(d.counter, |l| l.min(d.counter)));
                // Keep the set small: only the recent window matters for duplicates.
                if self.seen_counters.len() > 4096 {
                    let cut = d.counter.saturating_sub(2048);
                    self.seen_counters = self.seen_counters.split_off(&cut);
                }
            }
            _ => self.corrupt += 1,
        }
    }

    /// Counters expected between the first and the highest seen, minus those received.
    pub fn loss(&self, first_counter: u32) -> u64 {
        match self.highest_counter {
            Some(h) => u64::from(h.saturating_sub(first_counter) + 1).saturating_sub(self.unique()),
            None => 0,
        }
    }

    /// Loss from the first counter this receiver saw (it may have joined mid-stream).
    pub fn loss_from_first(&self) -> u64 {
        self.lowest_counter.map_or(0, |first| self.loss(first))
    }

    fn unique(&self) -> u64 {
        self.packets - self.duplicates - self.corrupt
    }
}

/// Everything one peer received, by SSRC.
#[derive(Debug, Default)]
pub struct Received {
    streams: Mutex<HashMap<u32, StreamCounters>>,
}

impl Received {
    pub fn record(&self, ssrc: u32, video: bool, seq: u16, payload: &[u8]) {
        let now = now_us();
        let mut streams = self.streams.lock();
        let s = streams.entry(ssrc).or_default();
        s.video = video;
        s.record(seq, payload, now);
    }

    pub fn snapshot(&self) -> HashMap<u32, StreamCounters> {
        self.streams.lock().clone()
    }

    /// Streams that received at least `min` packets, as (audio, video) counts.
    pub fn streams_with(&self, min: u64) -> (usize, usize) {
        let streams = self.streams.lock();
        let audio = streams
            .values()
            .filter(|s| !s.video && s.packets >= min)
            .count();
        let video = streams
            .values()
            .filter(|s| s.video && s.packets >= min)
            .count();
        (audio, video)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::payload;

    #[test]
    fn counters_see_gaps_duplicates_and_reordering() {
        let r = Received::default();
        for (seq, counter) in [(1u16, 0u32), (2, 1), (4, 3), (3, 2), (5, 3)] {
            r.record(11, false, seq, &payload(1, counter, 40, |_| {}));
        }
        let s = &r.snapshot()[&11];
        assert_eq!(s.packets, 5);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.reordered, 1);
        assert_eq!(s.seq_discontinuities, 3);
        assert_eq!(s.loss(0), 0);
        assert_eq!(s.corrupt, 0);
    }

    #[test]
    fn loss_counts_from_the_first_counter_seen() {
        let r = Received::default();
        // Joined mid-stream at 100; 102 and 104 never came.
        for counter in [101u32, 100, 103, 105] {
            r.record(11, true, 0, &payload(1, counter, 200, |_| {}));
        }
        let s = &r.snapshot()[&11];
        assert_eq!(s.loss_from_first(), 2);
        assert_eq!(s.loss(98), 4);
    }
}
