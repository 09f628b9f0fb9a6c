//! A send-side bandwidth estimate for one connection (all the legs relais sends one client),
//! in the spirit of Google Congestion Control (draft-ietf-rmcat-gcc-02): the client's
//! transport-cc feedback says when each numbered datagram arrived; a growing one-way delay
//! (the delay gradient of groups of datagrams, filtered, against an adaptive threshold) or a
//! high loss fraction means the path is full, and the estimate falls to a fraction of what the
//! client is receiving; otherwise it climbs.
//!
//! The signal processing (arrival groups, the trend filter, the overuse detector with its
//! adaptive threshold, the received rate) is `rtc`'s ([`rtc::interceptor`]); the control — what
//! to do about it — is here, because an SFU leg is not a sender that chooses its own rate:
//! - the estimate starts **unlimited** ([`Bounds::max`]): a leg is not capped before its path
//!   has shown a limit, so a call on a good link is never held back while an estimate climbs;
//! - it falls to [`DELAY_BACKOFF`] × the received rate on overuse (the delay gradient grows
//!   while a queue stands, or a queue of more than [`QUEUE_HIGH`] stands: the least delay of
//!   the last [`STANDING_WINDOW`] above the path's base, so a keyframe's burst is not
//!   congestion), to `1 − loss / 2` × the received rate when more than [`HIGH_LOSS`] of the
//!   datagrams of the last [`LOSS_WINDOW`] are lost, at most once per [`DECREASE_HOLD`] (the
//!   publisher's encoder needs that long to follow), and remembers the rate it fell from (the
//!   ceiling);
//! - it climbs while the path is quiet: slowly near the ceiling ([`NEAR_CEILING_GROWTH`] of the
//!   ceiling per second), fast away from it ([`FAST_GROWTH`] per second), and forgets the
//!   ceiling once well above it, so a link that recovered is found again within seconds;
//! - a client that sends REMB instead (aiortc) caps the estimate with it.
//!
//! Invariants: the estimate is within `bounds.min..=bounds.max`; no clock is read (every
//! instant is a parameter); feedback about a number already reported, unknown, or too old is
//! ignored; retransmitted datagrams count for loss but not for delay.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::{OveruseDetector, PacketReport, SlopeEstimator, Usage};
use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;

use super::send_log::SendLog;

/// On overuse the estimate falls to this share of the received rate.
pub const DELAY_BACKOFF: f64 = 0.85;
/// A loss fraction above this (over the last [`LOSS_WINDOW`]) lowers the estimate.
pub const HIGH_LOSS: f64 = 0.10;
/// Loss is judged over this much feedback, once it covers [`LOSS_MIN_PACKETS`]: per feedback
/// packet a single loss among a handful of datagrams would read as a disaster.
pub const LOSS_WINDOW: Duration = Duration::from_secs(1);
pub const LOSS_MIN_PACKETS: usize = 30;
/// After a decrease, the next waits this long (or a round trip, when longer): the publisher's
/// encoder needs a REMB and a few frames to follow.
pub const DECREASE_HOLD: Duration = Duration::from_millis(1000);
/// The standing queue is the least queueing delay over this window.
pub const STANDING_WINDOW: Duration = Duration::from_millis(500);
/// A standing queue longer than this on the path (one-way delay above the lowest seen
/// recently) is overuse, whatever the delay gradient says: a full buffer that no longer grows
/// has a flat gradient, and its delay is what makes speech late.
pub const QUEUE_HIGH: Duration = Duration::from_millis(80);
/// The estimate climbs only while the queue is shorter than this.
pub const QUEUE_LOW: Duration = Duration::from_millis(30);
/// Below this the estimate may climb (between the two it holds: a few per cent loss is normal
/// on a radio link, and reacting to it would give up capacity for good).
pub const LOW_LOSS: f64 = 0.02;
/// Growth per second away from the last ceiling.
pub const FAST_GROWTH: f64 = 1.25;
/// Growth per second near the last ceiling, as a share of it.
pub const NEAR_CEILING_GROWTH: f64 = 0.05;
/// Two changes are at least this far apart (or a round trip, when longer).
pub const MIN_CHANGE_INTERVAL: Duration = Duration::from_millis(200);
/// A REMB older than this no longer caps the estimate.
pub const REMB_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub min: f64,
    pub max: f64,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            min: 100_000.0,
            max: 10_000_000.0,
        }
    }
}

/// What one feedback packet did.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct FeedbackOutcome {
    /// Datagrams it reported (known to us).
    pub reported: usize,
    pub lost: usize,
}

#[derive(Debug)]
pub struct Estimator {
    bounds: Bounds,
    slope: SlopeEstimator,
    detector: OveruseDetector,
    received: DeliveryRate,
    usage: Usage,
    /// Loss fraction over the last [`LOSS_WINDOW`], when it says anything.
    loss: Option<f64>,
    losses: LossWindow,
    target: f64,
    /// The received rate when the estimate last fell.
    ceiling: Option<f64>,
    last_change: Option<Instant>,
    last_decrease: Option<Instant>,
    rtt: Option<Duration>,
    remb: Option<(f64, Instant)>,
    /// One-way delays (plus the clocks' constant offset), for the standing queue.
    queue: QueueDelay,
    /// Highest (unwrapped) number already reported.
    reported_up_to: Option<i64>,
    reports: Vec<PacketReport>,
    /// Times the estimate fell.
    pub decreases: u64,
}

impl Estimator {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            slope: SlopeEstimator::new(),
            detector: OveruseDetector::new(),
            received: DeliveryRate::default(),
            usage: Usage::Normal,
            loss: None,
            losses: LossWindow::default(),
            target: bounds.max,
            ceiling: None,
            last_change: None,
            last_decrease: None,
            rtt: None,
            remb: None,
            queue: QueueDelay::default(),
            reported_up_to: None,
            reports: Vec::new(),
            decreases: 0,
        }
    }

    /// The estimate, in bits per second.
    pub fn estimate(&self, now: Instant) -> f64 {
        match self.remb {
            Some((remb, at)) if now.saturating_duration_since(at) < REMB_TIMEOUT => {
                self.target.min(remb.max(self.bounds.min))
            }
            _ => self.target,
        }
    }

    /// Whether the estimate limits anything yet (it fell at least once, or a REMB capped it).
    pub fn limited(&self, now: Instant) -> bool {
        self.estimate(now) < self.bounds.max
    }

    pub fn loss(&self) -> Option<f64> {
        self.loss
    }

    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// The round trip, measured elsewhere (our Sender Reports and the client's answers).
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = Some(rtt);
    }

    /// A REMB from the client (which then probably sends no transport-cc feedback).
    pub fn on_remb(&mut self, bps: f64, now: Instant) {
        if bps.is_finite() && bps >= 0.0 {
            self.remb = Some((bps, now));
        }
    }

    /// One transport-cc feedback packet from the client, received at `now`.
    pub fn on_twcc(
        &mut self,
        log: &SendLog,
        feedback: &TransportLayerCc,
        now: Instant,
    ) -> FeedbackOutcome {
        let mut reports = std::mem::take(&mut self.reports);
        reports.clear();
        for ack in rtc::interceptor::convert_twcc(feedback) {
            let seq = log.unwrap(ack.sequence_number);
            if self.reported_up_to.is_some_and(|r| seq <= r) {
                continue;
            }
            let Some(sent) = log.get(seq) else {
                continue;
            };
            reports.push(PacketReport {
                ssrc: 0,
                id: seq as u64,
                rtp_sequence_number: 0,
                is_twcc: true,
                twcc_sequence_number: ack.sequence_number,
                size: usize::from(sent.size),
                // A retransmitted datagram's arrival may be the second copy's: loss only.
                arrived: ack.arrived,
                departure: sent.at,
                arrival: if sent.resent { None } else { ack.arrival },
                ecn: Ecn::default(),
            });
        }
        reports.sort_by_key(|r| r.id);
        let outcome = self.on_reports(&reports, now);
        self.reports = reports;
        outcome
    }

    /// Reports in send order (unwrapped numbers as ids); the testable core of [`Self::on_twcc`].
    pub fn on_reports(&mut self, reports: &[PacketReport], now: Instant) -> FeedbackOutcome {
        let Some(last) = reports.last() else {
            return FeedbackOutcome::default();
        };
        self.reported_up_to = Some(self.reported_up_to.unwrap_or(i64::MIN).max(last.id as i64));
        let mut lost = 0;
        let mut lowest_owd: Option<f64> = None;
        for r in reports {
            if !r.arrived {
                lost += 1;
                continue;
            }
            if let Some(arrival) = r.arrival {
                self.received.add(arrival, r.size);
            }
            if let Some(owd) = self.queue.one_way(r) {
                lowest_owd = Some(lowest_owd.map_or(owd, |l| l.min(owd)));
            }
            if let Some(trend) = self.slope.accumulate(r) {
                self.usage = self.detector.update(trend.at, trend.estimate_ms);
            }
        }
        self.losses.add(now, lost, reports.len());
        let received = self.received.rate();
        if let Some(owd) = lowest_owd {
            self.queue.update(owd, now);
        }
        self.control(now, received);
        FeedbackOutcome {
            reported: reports.len(),
            lost,
        }
    }

    /// The standing queue: the least queueing delay any datagram saw over the last
    /// [`STANDING_WINDOW`] (a burst that queues for a moment is not a standing queue).
    pub fn queue_delay(&self) -> Option<Duration> {
        self.queue.standing()
    }

    fn control(&mut self, now: Instant, received: Option<f64>) {
        let queue = self.queue.standing();
        let loss = self.losses.fraction();
        self.loss = loss;
        // Delay: the gradient says the queue grows and it already holds something, or it
        // stands long.
        let delay_overuse = (self.usage == Usage::Over && queue.is_some_and(|q| q > QUEUE_LOW))
            || queue.is_some_and(|q| q > QUEUE_HIGH);
        let decrease = if delay_overuse {
            Some(DELAY_BACKOFF)
        } else {
            loss.filter(|l| *l > HIGH_LOSS).map(|l| 1.0 - 0.5 * l)
        };
        if let Some(factor) = decrease {
            let Some(received) = received else {
                return;
            };
            // One decrease, then time for the publisher's encoder to follow (a REMB, then its
            // next frames) before the next: the queue it leaves behind is not a new reason.
            let hold = self.rtt.map_or(DECREASE_HOLD, |r| r.max(DECREASE_HOLD));
            if self
                .last_decrease
                .is_some_and(|t| now.saturating_duration_since(t) < hold)
            {
                return;
            }
            // From what arrives, or from the estimate when that is lower (a standing queue
            // with the estimate already at the delivery rate must still shrink).
            let lowered = (received.min(self.target) * factor).max(self.bounds.min);
            if lowered < self.target {
                self.target = lowered;
                self.decreases += 1;
            }
            self.ceiling = Some(received);
            self.last_decrease = Some(now);
            self.last_change = Some(now);
            return;
        }
        if self.usage == Usage::Under
            || loss.is_some_and(|l| l >= LOW_LOSS)
            || queue.is_some_and(|q| q > QUEUE_LOW)
        {
            // The queue drains, or the path loses a fair share: hold.
            return;
        }
        let elapsed = match self.last_change {
            Some(t) if now.saturating_duration_since(t) < MIN_CHANGE_INTERVAL => return,
            Some(t) => now.saturating_duration_since(t).min(Duration::from_secs(1)),
            None => MIN_CHANGE_INTERVAL,
        };
        let secs = elapsed.as_secs_f64();
        self.target = match self.ceiling {
            Some(c) if self.target >= 0.8 * c && self.target <= 1.2 * c => {
                self.target + NEAR_CEILING_GROWTH * c * secs
            }
            _ => self.target * FAST_GROWTH.powf(secs),
        }
        .clamp(self.bounds.min, self.bounds.max);
        if self.ceiling.is_some_and(|c| self.target > 2.0 * c) {
            self.ceiling = None;
        }
        self.last_change = Some(now);
    }
}

/// The standing queue. Arrival times are on the client's clock and departures on ours: their
/// difference is the one-way delay plus a constant, which subtracting the path's base (the
/// lowest per-second figure of the last [`BASE_WINDOW_SECS`] seconds) cancels. Each feedback
/// gives its least delay; the standing queue is the least of those over [`STANDING_WINDOW`].
#[derive(Debug, Default)]
struct QueueDelay {
    epoch: Option<Instant>,
    /// (second, lowest delay in that second), oldest first.
    minima: VecDeque<(u64, f64)>,
    /// (when, lowest delay of that feedback) over the standing window.
    recent: VecDeque<(Instant, f64)>,
}

/// Seconds of history for the path's base delay.
const BASE_WINDOW_SECS: u64 = 30;

impl QueueDelay {
    /// One datagram's one-way delay plus the offset, in seconds.
    fn one_way(&mut self, r: &PacketReport) -> Option<f64> {
        let arrival = r.arrival?;
        let epoch = *self.epoch.get_or_insert(r.departure);
        let departure = r.departure.checked_duration_since(epoch)?;
        Some(arrival.as_secs_f64() - departure.as_secs_f64())
    }

    fn update(&mut self, lowest: f64, now: Instant) {
        let epoch = *self.epoch.get_or_insert(now);
        let second = now.saturating_duration_since(epoch).as_secs();
        match self.minima.back_mut() {
            Some((s, m)) if *s == second => *m = m.min(lowest),
            _ => self.minima.push_back((second, lowest)),
        }
        while self
            .minima
            .front()
            .is_some_and(|(s, _)| *s + BASE_WINDOW_SECS < second)
        {
            self.minima.pop_front();
        }
        self.recent.push_back((now, lowest));
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > STANDING_WINDOW)
        {
            self.recent.pop_front();
        }
    }

    fn standing(&self) -> Option<Duration> {
        let base = self.minima.iter().map(|(_, m)| *m).reduce(f64::min)?;
        let least = self.recent.iter().map(|(_, d)| *d).reduce(f64::min)?;
        Some(Duration::from_secs_f64((least - base).max(0.0)))
    }
}

/// Datagrams reported and lost over the last [`LOSS_WINDOW`] of feedback.
#[derive(Debug, Default)]
struct LossWindow {
    batches: VecDeque<(Instant, usize, usize)>,
    lost: usize,
    total: usize,
}

impl LossWindow {
    fn add(&mut self, now: Instant, lost: usize, total: usize) {
        self.batches.push_back((now, lost, total));
        self.lost += lost;
        self.total += total;
        while let Some(&(t, l, n)) = self.batches.front() {
            if now.saturating_duration_since(t) <= LOSS_WINDOW {
                break;
            }
            self.batches.pop_front();
            self.lost -= l;
            self.total -= n;
        }
    }

    fn fraction(&self) -> Option<f64> {
        (self.total >= LOSS_MIN_PACKETS).then(|| self.lost as f64 / self.total as f64)
    }
}

/// What the client receives, by arrival time (its clock): octets over the last
/// [`DELIVERY_WINDOW`] of arrivals. Measured at the receiver, it is the path's rate when the
/// path is full, not the rate feedback happens to come back at.
#[derive(Debug, Default)]
struct DeliveryRate {
    samples: VecDeque<(Duration, usize)>,
    octets: usize,
}

const DELIVERY_WINDOW: Duration = Duration::from_millis(1000);

impl DeliveryRate {
    fn add(&mut self, arrival: Duration, size: usize) {
        if self.samples.back().is_some_and(|(a, _)| arrival < *a) {
            // Reordered: counted with the newest (the window's span is what matters).
            self.octets += size;
            if let Some(last) = self.samples.back_mut() {
                last.1 += size;
            }
            return;
        }
        self.samples.push_back((arrival, size));
        self.octets += size;
        while let Some(&(first, n)) = self.samples.front() {
            if arrival.saturating_sub(first) <= DELIVERY_WINDOW {
                break;
            }
            self.samples.pop_front();
            self.octets -= n;
        }
    }

    /// Bits per second, once the window spans a tenth of a second.
    fn rate(&self) -> Option<f64> {
        let (first, first_size) = *self.samples.front()?;
        let (last, _) = *self.samples.back()?;
        let span = last.saturating_sub(first);
        if span < Duration::from_millis(100) {
            return None;
        }
        // The first sample's octets arrived before the span began.
        Some((self.octets - first_size) as f64 * 8.0 / span.as_secs_f64())
    }
}

#[cfg(test)]
mod tests;
