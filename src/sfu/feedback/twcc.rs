//! Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01):
//! when each packet of a publisher arrived, by its transport-wide sequence number, so that the
//! browser's send-side bandwidth estimator can raise (or lower) its bitrate.
//!
//! Arrival times are kept in 250 µs ticks from the recorder's first packet. A feedback packet
//! covers every sequence number from the first one not yet reported to the highest received:
//! the missing ones as "not received", the others with their arrival delta (to the reference
//! time for the first, to the previous received packet for the rest).
//!
//! Invariants of [`TwccRecorder`]:
//! - sequence numbers are unwrapped to a monotonic `i64`; `arrivals[i]` is the arrival of
//!   `next + i` (`next`: the first unreported number); `arrivals` is empty or ends with an
//!   arrival (it grows only to hold one), so "something to report" is "not empty";
//! - at most [`MAX_KEPT`] numbers are kept: a longer span moves `next` forward, and what it
//!   skips is never reported (the sender treats it as lost feedback, not as loss);
//! - one feedback packet holds at most [`MAX_STATUS_PER_PACKET`] statuses, and its deltas fit
//!   their encoding (a delta too large for 16 bits ends the packet; the next one starts there).

use std::collections::VecDeque;
use std::time::Instant;

use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk,
    SymbolSizeTypeTcc, SymbolTypeTcc, TransportLayerCc,
};

/// 250 µs ticks per reference-time unit (64 ms).
const TICKS_PER_REFERENCE: i64 = 256;
const TICK_US: i64 = 250;
/// Sequence numbers remembered between two feedback packets.
pub const MAX_KEPT: usize = 4096;
/// Statuses in one feedback packet (a few hundred bytes at most).
pub const MAX_STATUS_PER_PACKET: usize = 512;
/// Longest run one run-length chunk can state (13 bits).
const MAX_RUN: usize = 0x1fff;
/// Symbols in a two-bit status vector chunk.
const VECTOR_SYMBOLS: usize = 7;

/// Arrival times of one connection's packets, by transport-wide sequence number.
#[derive(Debug, Default)]
pub struct TwccRecorder {
    epoch: Option<Instant>,
    last_unwrapped: Option<i64>,
    /// First sequence number not yet reported.
    next: i64,
    /// Arrival ticks of `next + i`.
    arrivals: VecDeque<Option<i64>>,
    feedback_count: u8,
    media_ssrc: u32,
}

impl TwccRecorder {
    /// Packet `seq` (of the stream `media_ssrc`) arrived at `at`.
    pub fn record(&mut self, seq: u16, media_ssrc: u32, at: Instant) {
        let seq = self.unwrap(seq);
        let epoch = match self.epoch {
            Some(epoch) => epoch,
            None => {
                // The first packet: reports start with it.
                self.next = seq;
                *self.epoch.insert(at)
            }
        };
        let ticks = (at.saturating_duration_since(epoch).as_micros() as i64) / TICK_US;
        if seq < self.next {
            // Reported already (as lost): too late to say otherwise.
            return;
        }
        let index = (seq - self.next) as usize;
        if index >= MAX_KEPT {
            let skip = index + 1 - MAX_KEPT;
            if skip >= self.arrivals.len() {
                self.arrivals.clear();
            } else {
                self.arrivals.drain(..skip);
            }
            self.next += skip as i64;
        }
        let index = (seq - self.next) as usize;
        if self.arrivals.len() <= index {
            self.arrivals.resize(index + 1, None);
        }
        self.arrivals[index].get_or_insert(ticks);
        self.media_ssrc = media_ssrc;
    }

    fn unwrap(&mut self, seq: u16) -> i64 {
        let unwrapped = match self.last_unwrapped {
            None => i64::from(seq),
            Some(last) => {
                let delta = i64::from(seq.wrapping_sub(last as u16) as i16);
                last + delta
            }
        };
        if self.last_unwrapped.is_none_or(|l| unwrapped > l) {
            self.last_unwrapped = Some(unwrapped);
        }
        unwrapped
    }

    /// Whether a feedback packet would report anything.
    pub fn has_pending(&self) -> bool {
        debug_assert!(self.arrivals.back().is_none_or(Option::is_some));
        !self.arrivals.is_empty()
    }

    /// Feedback for everything recorded since the last call, from `sender_ssrc`.
    pub fn feedback(&mut self, sender_ssrc: u32) -> Vec<TransportLayerCc> {
        let mut out = Vec::new();
        while let Some(last) = self.arrivals.iter().rposition(Option::is_some) {
            let first = self
                .arrivals
                .iter()
                .position(Option::is_some)
                .expect("one arrival exists");
            let reference = self.arrivals[first].expect("found") / TICKS_PER_REFERENCE;
            let mut previous = reference * TICKS_PER_REFERENCE;
            let mut symbols = Vec::new();
            let mut deltas = Vec::new();
            let end = (last + 1).min(MAX_STATUS_PER_PACKET);
            for arrival in self.arrivals.iter().take(end) {
                let Some(ticks) = *arrival else {
                    symbols.push(SymbolTypeTcc::PacketNotReceived);
                    continue;
                };
                let delta = ticks - previous;
                let symbol = if (0..=255).contains(&delta) {
                    SymbolTypeTcc::PacketReceivedSmallDelta
                } else if (i64::from(i16::MIN)..=i64::from(i16::MAX)).contains(&delta) {
                    SymbolTypeTcc::PacketReceivedLargeDelta
                } else {
                    break;
                };
                symbols.push(symbol);
                deltas.push(RecvDelta {
                    type_tcc_packet: symbol,
                    delta: delta * TICK_US,
                });
                previous = ticks;
            }
            let count = symbols.len();
            out.push(TransportLayerCc {
                sender_ssrc,
                media_ssrc: self.media_ssrc,
                base_sequence_number: self.next as u16,
                packet_status_count: count as u16,
                reference_time: (reference as u32) & 0x00ff_ffff,
                fb_pkt_count: self.feedback_count,
                packet_chunks: chunks(&symbols),
                recv_deltas: deltas,
            });
            self.feedback_count = self.feedback_count.wrapping_add(1);
            self.arrivals.drain(..count);
            self.next += count as i64;
        }
        // What is left has no arrival: it is reported with the next packet that arrives.
        out
    }
}

/// Packs `symbols` into chunks: a run-length chunk for runs of [`VECTOR_SYMBOLS`] or more (and
/// for a short tail), two-bit status vectors for mixed stretches.
fn chunks(symbols: &[SymbolTypeTcc]) -> Vec<PacketStatusChunk> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < symbols.len() {
        let run = symbols[i..]
            .iter()
            .take(MAX_RUN)
            .take_while(|s| **s == symbols[i])
            .count();
        let rest = symbols.len() - i;
        if run >= VECTOR_SYMBOLS || rest < VECTOR_SYMBOLS {
            out.push(PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: symbols[i],
                run_length: run as u16,
            }));
            i += run;
        } else {
            out.push(PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                symbol_size: SymbolSizeTypeTcc::TwoBit,
                symbol_list: symbols[i..i + VECTOR_SYMBOLS].to_vec(),
            }));
            i += VECTOR_SYMBOLS;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rtc::shared::marshal::{Marshal, Unmarshal};
    use std::time::Duration;

    /// (sequence number, arrival in µs from the reference time) as a feedback packet says them.
    fn decode(fb: &TransportLayerCc) -> Vec<(u16, Option<i64>)> {
        let mut statuses = Vec::new();
        for chunk in &fb.packet_chunks {
            match chunk {
                PacketStatusChunk::RunLengthChunk(r) => {
                    statuses.extend(std::iter::repeat_n(
                        r.packet_status_symbol,
                        r.run_length as usize,
                    ));
                }
                PacketStatusChunk::StatusVectorChunk(v) => statuses.extend(&v.symbol_list),
            }
        }
        statuses.truncate(fb.packet_status_count as usize);
        let mut deltas = fb.recv_deltas.iter();
        let mut at = i64::from(fb.reference_time) * 64_000;
        statuses
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let seq = fb.base_sequence_number.wrapping_add(i as u16);
                if *s == SymbolTypeTcc::PacketNotReceived {
                    (seq, None)
                } else {
                    at += deltas.next().expect("a delta per received packet").delta;
                    (seq, Some(at))
                }
            })
            .collect()
    }

    /// Through the wire format and back, as a browser would read it.
    fn roundtrip(fb: &TransportLayerCc) -> TransportLayerCc {
        let bytes = fb.marshal().expect("marshals");
        TransportLayerCc::unmarshal(&mut &bytes[..]).expect("unmarshals")
    }

    #[test]
    fn reports_arrivals_and_holes_in_order() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::default();
        // 10 ms apart; 3 and 4 lost; 6 arrives before 5.
        for (seq, ms) in [(1u16, 0u64), (2, 10), (6, 40), (5, 50), (7, 60)] {
            r.record(seq, 42, t0 + Duration::from_millis(ms));
        }
        let fbs = r.feedback(9);
        assert_eq!(fbs.len(), 1);
        let fb = roundtrip(&fbs[0]);
        assert_eq!((fb.sender_ssrc, fb.media_ssrc, fb.fb_pkt_count), (9, 42, 0));
        let got = decode(&fb);
        let ms = |v: i64| Some(v * 1000);
        assert_eq!(
            got,
            vec![
                (1, ms(0)),
                (2, ms(10)),
                (3, None),
                (4, None),
                (5, ms(50)),
                (6, ms(40)),
                (7, ms(60)),
            ]
        );
        assert!(r.feedback(9).is_empty(), "everything was reported");
        r.record(8, 42, t0 + Duration::from_millis(70));
        let next = r.feedback(9);
        assert_eq!(next[0].base_sequence_number, 8);
        assert_eq!(next[0].fb_pkt_count, 1);
    }

    #[test]
    fn a_late_packet_after_its_report_is_not_reported_again() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::default();
        r.record(10, 1, t0);
        r.record(12, 1, t0);
        assert_eq!(decode(&r.feedback(0)[0]).len(), 3);
        r.record(11, 1, t0);
        assert!(!r.has_pending());
        assert!(r.feedback(0).is_empty());
    }

    #[test]
    fn a_long_silence_starts_a_new_packet() {
        let t0 = Instant::now();
        let mut r = TwccRecorder::default();
        r.record(1, 1, t0);
        r.record(2, 1, t0 + Duration::from_secs(20));
        let fbs = r.feedback(0);
        assert_eq!(fbs.len(), 2, "20 s do not fit a 16-bit delta");
        assert_eq!(fbs[1].base_sequence_number, 2);
    }

    proptest! {
        /// Any arrival pattern survives the wire format: every number from the first to the
        /// last is reported once, with its arrival (to 250 µs) or as lost.
        #[test]
        fn feedback_says_what_arrived(
            start in any::<u16>(),
            packets in proptest::collection::vec((0u16..6, 0u64..80_000), 1..400),
        ) {
            let t0 = Instant::now();
            let mut r = TwccRecorder::default();
            let mut seq = start;
            let mut at = 0u64;
            let mut truth = std::collections::BTreeMap::new();
            for (i, (skip, gap_us)) in packets.into_iter().enumerate() {
                // Times are told from the first arrival, the recorder's epoch.
                if i > 0 {
                    seq = seq.wrapping_add(skip + 1);
                    at += gap_us;
                }
                r.record(seq, 7, t0 + Duration::from_micros(at));
                truth.insert(seq.wrapping_sub(start), at as i64);
            }
            let mut reported = Vec::new();
            for fb in r.feedback(1) {
                reported.extend(decode(&roundtrip(&fb)));
            }
            let first = *truth.keys().next().unwrap();
            let last = *truth.keys().last().unwrap();
            prop_assert_eq!(reported.len(), usize::from(last - first) + 1);
            for (seq, got) in reported {
                match truth.get(&seq.wrapping_sub(start)) {
                    None => prop_assert_eq!(got, None),
                    Some(want) => {
                        let got = got.expect("reported as received");
                        let want = want / TICK_US * TICK_US;
                        prop_assert_eq!(got, want);
                    }
                }
            }
        }
    }
}
