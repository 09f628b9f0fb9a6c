//! The estimator against a simulated path: a FIFO bottleneck of a given capacity and buffer,
//! a base delay and random loss, fed by a sender that encodes for the estimate (as a browser
//! does under the REMB relais sends it), with feedback written by relais's own transport-cc
//! recorder (so the wire format is the real one) every 100 ms.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::sfu::feedback::twcc::TwccRecorder;

const MS: Duration = Duration::from_millis(1);

struct Link {
    capacity_bps: f64,
    /// Bytes the queue holds before it drops (a tbf `limit`).
    buffer: f64,
    base_delay: Duration,
    loss: f64,
    busy_until: Instant,
}

impl Link {
    fn new(t0: Instant, capacity_bps: f64) -> Self {
        Self {
            capacity_bps,
            buffer: 150_000.0,
            base_delay: Duration::from_millis(20),
            loss: 0.0,
            busy_until: t0,
        }
    }

    fn backlog(&self, at: Instant) -> Duration {
        self.busy_until.saturating_duration_since(at)
    }

    /// When a datagram sent at `at` arrives, if it does.
    fn send(&mut self, at: Instant, size: usize, rng: &mut StdRng) -> Option<Instant> {
        let queued = self.backlog(at).as_secs_f64() * self.capacity_bps / 8.0;
        if queued + size as f64 > self.buffer {
            return None;
        }
        let start = self.busy_until.max(at);
        self.busy_until = start + Duration::from_secs_f64(size as f64 * 8.0 / self.capacity_bps);
        if rng.random::<f64>() < self.loss {
            return None;
        }
        Some(self.busy_until + self.base_delay)
    }
}

/// What one run saw, per second.
#[derive(Debug, Default)]
struct Trace {
    /// (second, estimate, sent bps, delivered bps, queueing delay at the end of the second)
    seconds: Vec<(u64, f64, f64, f64, Duration)>,
}

impl Trace {
    fn at(&self, s: u64) -> (f64, f64, f64, Duration) {
        let (_, e, sent, got, q) = self.seconds[s as usize];
        (e, sent, got, q)
    }
}

/// Runs `secs` seconds; `shape(second, link)` changes the link at the start of each second.
fn run(secs: u64, source_bps: f64, seed: u64, mut shape: impl FnMut(u64, &mut Link)) -> Trace {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut link = Link::new(t0, 50_000_000.0);
    let mut log = SendLog::default();
    let mut recorder = TwccRecorder::default();
    let mut est = Estimator::new(Bounds::default());
    let mut in_flight: Vec<(Instant, u16)> = Vec::new();
    let mut trace = Trace::default();
    // The encoder follows the estimate with a lag (as a browser does after a REMB).
    let mut encoder_bps = source_bps;
    let mut sent_bits = 0.0;
    for ms in 0..secs * 1000 {
        let now = t0 + MS * ms as u32;
        if ms % 1000 == 0 {
            shape(ms / 1000, &mut link);
        }
        if ms % 250 == 0 {
            encoder_bps = source_bps.min(est.estimate(now) - 40_000.0).max(50_000.0);
        }
        let mut send = |size: usize, link: &mut Link, rng: &mut StdRng| {
            let seq = log.next(now, size);
            sent_bits += size as f64 * 8.0;
            if let Some(at) = link.send(now, size, rng) {
                in_flight.push((at, seq));
            }
        };
        // Audio: 20 ms packets of 100 bytes.
        if ms % 20 == 0 {
            send(100, &mut link, &mut rng);
        }
        // Video: 30 frames a second, each sent as a burst of packets of up to 1,200 bytes, a
        // keyframe (five times the size) every two seconds.
        if ms % 33 == 0 {
            let keyframe = ms % 2000 < 33;
            let mut left = (encoder_bps / 30.0 / 8.0) as usize * if keyframe { 5 } else { 1 };
            while left > 0 {
                let size = left.min(1200);
                send(size, &mut link, &mut rng);
                left -= size;
            }
        }
        in_flight.retain(|&(at, seq)| {
            if at <= now {
                recorder.record(seq, 1, at);
                false
            } else {
                true
            }
        });
        if ms % 100 == 0 {
            for fb in recorder.feedback(7) {
                // The feedback crosses an uncongested return path.
                est.on_twcc(&log, &fb, now + Duration::from_millis(20));
            }
        }
        if ms % 1000 == 999 {
            let delivered = est.received.rate().unwrap_or(0.0);
            trace.seconds.push((
                ms / 1000,
                est.estimate(now),
                sent_bits,
                delivered,
                link.backlog(now),
            ));
            sent_bits = 0.0;
        }
    }
    trace
}

fn print(trace: &Trace) {
    for (s, e, sent, got, q) in &trace.seconds {
        eprintln!(
            "{s:>3}s estimate {:>6.0} kbit/s  sent {:>6.0}  delivered {:>6.0}  queue {:>4} ms",
            e / 1000.0,
            sent / 1000.0,
            got / 1000.0,
            q.as_millis()
        );
    }
}

#[test]
fn an_ample_path_is_never_capped() {
    let trace = run(20, 2_000_000.0, 1, |_, _| {});
    print(&trace);
    for s in 0..20 {
        let (e, _, _, q) = trace.at(s);
        assert!(e >= 2_500_000.0, "second {s}: estimate {e}");
        assert!(q < Duration::from_millis(5));
    }
}

#[test]
fn a_step_down_is_followed_within_seconds_and_the_queue_stays_short() {
    // 2 Mbit/s over an ample path, then the path falls to 1 Mbit/s at 10 s.
    let trace = run(40, 2_000_000.0, 2, |s, link| {
        if s == 10 {
            link.capacity_bps = 1_000_000.0;
        }
    });
    print(&trace);
    let (e, ..) = trace.at(13);
    assert!(e <= 1_000_000.0, "3 s after the step: {e}");
    // Settled: the sender uses most of the path, and what it sends arrives.
    for s in 20..40 {
        let (e, sent, _, q) = trace.at(s);
        assert!(
            (600_000.0..=1_150_000.0).contains(&e),
            "second {s}: estimate {e}"
        );
        // A second with a keyframe sends more than the mean.
        assert!(sent <= 1_300_000.0, "second {s}: sent {sent}");
        assert!(q < Duration::from_millis(250), "second {s}: queue {q:?}");
    }
    let mean: f64 = (20..40).map(|s| trace.at(s).1).sum::<f64>() / 20.0;
    assert!(mean >= 650_000.0, "mean sent {mean}");
}

#[test]
fn a_slow_path_from_the_start_and_a_deep_buffer() {
    // 400 kbit/s with a deep buffer (a second of it): the delay signal must act, not loss.
    let trace = run(40, 2_000_000.0, 3, |s, link| {
        if s == 0 {
            link.capacity_bps = 400_000.0;
            link.buffer = 50_000.0;
        }
    });
    print(&trace);
    for s in 15..40 {
        let (e, _, _, q) = trace.at(s);
        assert!((200_000.0..=460_000.0).contains(&e), "second {s}: {e}");
        assert!(q < Duration::from_millis(400), "second {s}: queue {q:?}");
    }
}

#[test]
fn a_step_up_is_found_again_within_fifteen_seconds() {
    let trace = run(45, 2_000_000.0, 4, |s, link| match s {
        5 => link.capacity_bps = 400_000.0,
        20 => link.capacity_bps = 50_000_000.0,
        _ => {}
    });
    print(&trace);
    let (e, ..) = trace.at(19);
    assert!(e <= 460_000.0, "capped: {e}");
    let back = (20..45).find(|&s| trace.at(s).0 >= 2_040_000.0);
    assert!(
        back.is_some_and(|s| s <= 35),
        "the estimate is back above the source's rate at second {back:?}"
    );
}

#[test]
fn a_loss_burst_lowers_the_estimate_and_it_recovers() {
    // No queueing anywhere; 30 % of the datagrams lost from 10 s to 13 s.
    let trace = run(40, 2_000_000.0, 5, |s, link| match s {
        10 => link.loss = 0.3,
        13 => link.loss = 0.0,
        _ => {}
    });
    print(&trace);
    let (e, ..) = trace.at(12);
    assert!(e < 1_800_000.0, "during the burst: {e}");
    let (e, ..) = trace.at(39);
    assert!(e >= 2_040_000.0, "after: {e}");
}

#[test]
fn one_per_cent_random_loss_is_not_congestion() {
    let trace = run(30, 2_000_000.0, 6, |s, link| {
        if s == 0 {
            link.loss = 0.01;
        }
    });
    print(&trace);
    for s in 5..30 {
        assert!(trace.at(s).0 >= 2_040_000.0, "second {s}");
    }
}

#[test]
fn a_slow_lossy_link_is_used_not_abandoned() {
    // 400 kbit/s, a queue of 300 ms, 1 % random loss: few datagrams per feedback, so one loss
    // is a large share of one; keyframe bursts queue for a moment. The estimate must settle
    // near the link's rate, not fall to the floor.
    let trace = run(45, 2_000_000.0, 7, |s, link| {
        if s == 0 {
            link.capacity_bps = 400_000.0;
            link.buffer = 400_000.0 / 8.0 * 0.3 + 6000.0;
            link.loss = 0.01;
        }
    });
    print(&trace);
    for s in 10..45 {
        let (e, ..) = trace.at(s);
        assert!((220_000.0..=470_000.0).contains(&e), "second {s}: {e}");
    }
    let mean: f64 = (15..45).map(|s| trace.at(s).1).sum::<f64>() / 30.0;
    assert!(mean >= 270_000.0, "mean sent {mean}");
}

#[test]
fn a_one_megabit_link_with_a_deep_queue_and_loss() {
    let trace = run(45, 2_000_000.0, 8, |s, link| {
        if s == 0 {
            link.capacity_bps = 1_000_000.0;
            link.buffer = 1_000_000.0 / 8.0 * 0.3 + 6000.0;
            link.loss = 0.01;
        }
    });
    print(&trace);
    let mean: f64 = (15..45).map(|s| trace.at(s).1).sum::<f64>() / 30.0;
    assert!(mean >= 700_000.0, "mean sent {mean}");
    for s in 15..45 {
        assert!(trace.at(s).3 < Duration::from_millis(200), "second {s}");
    }
}

#[test]
fn remb_caps_the_estimate_until_it_times_out() {
    let t0 = Instant::now();
    let mut est = Estimator::new(Bounds::default());
    assert!(!est.limited(t0));
    est.on_remb(300_000.0, t0);
    assert_eq!(est.estimate(t0), 300_000.0);
    assert!(est.limited(t0));
    // Below the floor: the floor.
    est.on_remb(1_000.0, t0);
    assert_eq!(est.estimate(t0), Bounds::default().min);
    // Garbage is ignored.
    est.on_remb(f64::NAN, t0);
    est.on_remb(-5.0, t0);
    assert_eq!(est.estimate(t0), Bounds::default().min);
    assert_eq!(est.estimate(t0 + REMB_TIMEOUT), Bounds::default().max);
}

#[test]
fn feedback_for_unknown_or_repeated_numbers_is_ignored() {
    let t0 = Instant::now();
    let mut log = SendLog::default();
    let mut recorder = TwccRecorder::default();
    let mut est = Estimator::new(Bounds::default());
    for i in 0..20u32 {
        let seq = log.next(t0 + MS * i, 1000);
        recorder.record(seq, 1, t0 + MS * (i + 20));
    }
    let fbs = recorder.feedback(9);
    let first = est.on_twcc(&log, &fbs[0], t0 + MS * 100);
    assert_eq!(first.reported, 20);
    // The same feedback again: nothing new.
    assert_eq!(est.on_twcc(&log, &fbs[0], t0 + MS * 120).reported, 0);
    // Feedback about numbers never sent (a forged or confused client).
    let mut other = TwccRecorder::default();
    for i in 0..50u32 {
        other.record(30_000 + i as u16, 1, t0 + MS * i);
    }
    for fb in other.feedback(9) {
        assert_eq!(est.on_twcc(&log, &fb, t0 + MS * 200).reported, 0);
    }
    assert_eq!(est.estimate(t0 + MS * 200), Bounds::default().max);
}
