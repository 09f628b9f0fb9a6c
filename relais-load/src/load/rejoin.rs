//! What a synthetic participant decides when its consultation breaks (the server restarted,
//! its signaling connection or its PeerConnection died): when to try again, when to give up,
//! and how long the media was away. Plain code with time passed in; the signaling task and
//! the leg (see [`super::signaling`], [`super::engine::rtc_leg`]) are its IO shells.
//!
//! Invariants:
//! - attempts are at least [`RetrySchedule::interval`] apart and none starts later than
//!   `within` after the loss: a participant never retries forever, nor in a burst;
//! - an outage starts at the first loss and lasts until the first media packet received
//!   after a rejoin; losses during a rejoin (a failed attempt) extend the same outage;
//! - a packet received before any rejoin (still in flight from before the loss) does not
//!   end an outage.

use std::time::{Duration, Instant};

/// Bounded retries after a loss.
#[derive(Debug, Clone, Copy)]
pub struct RetrySchedule {
    /// Time between the starts of two attempts.
    pub interval: Duration,
    /// No attempt starts later than this after the loss.
    pub within: Duration,
}

impl RetrySchedule {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);

    pub fn new(within: Duration) -> Self {
        Self {
            interval: Self::DEFAULT_INTERVAL,
            within,
        }
    }

    /// When the next attempt starts (`None`: give up). The first one starts at the loss; the
    /// next one an interval after the previous one started, or now if that is past.
    pub fn next_attempt(
        &self,
        lost_at: Instant,
        last_attempt: Option<Instant>,
        now: Instant,
    ) -> Option<Instant> {
        let at = match last_attempt {
            None => lost_at,
            Some(t) => t + self.interval,
        }
        .max(now);
        (at <= lost_at + self.within).then_some(at)
    }

    /// The last instant an attempt may still be under way (its connection wait included).
    pub fn deadline(&self, lost_at: Instant) -> Instant {
        lost_at + self.within
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    /// Lost at `since`, no new connection yet.
    Lost {
        since: Instant,
    },
    /// A new connection was built; media not back yet.
    Rejoined {
        since: Instant,
    },
}

/// One participant's outages: counts and how long each one kept the media away.
#[derive(Debug, Clone)]
pub struct Outages {
    state: State,
    /// Connections rebuilt (attempts that got as far as a new PeerConnection).
    pub attempts: u64,
    /// Outages that ended with media back.
    pub rejoins: u64,
    /// Loss → first media packet received after the rejoin, one per ended outage.
    pub media_back: Vec<Duration>,
}

impl Default for Outages {
    fn default() -> Self {
        Self {
            state: State::Up,
            attempts: 0,
            rejoins: 0,
            media_back: Vec::new(),
        }
    }
}

impl Outages {
    /// Signaling or media was lost at `now` (a second loss during an outage changes nothing).
    pub fn lost(&mut self, now: Instant) {
        if self.state == State::Up {
            self.state = State::Lost { since: now };
        }
    }

    /// A new connection replaced the lost one.
    pub fn rebuilt(&mut self) {
        self.attempts += 1;
        if let State::Lost { since } | State::Rejoined { since } = self.state {
            self.state = State::Rejoined { since };
        }
    }

    /// A media packet arrived at `now`; returns the outage it ended, if any.
    pub fn media(&mut self, now: Instant) -> Option<Duration> {
        let State::Rejoined { since } = self.state else {
            return None;
        };
        let d = now.saturating_duration_since(since);
        self.state = State::Up;
        self.rejoins += 1;
        self.media_back.push(d);
        Some(d)
    }

    /// When the current outage began (`None`: media is up, or was never lost).
    pub fn since(&self) -> Option<Instant> {
        match self.state {
            State::Up => None,
            State::Lost { since } | State::Rejoined { since } => Some(since),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn attempts_are_spaced_and_bounded() {
        let s = RetrySchedule {
            interval: 500 * MS,
            within: 2000 * MS,
        };
        let t0 = Instant::now();
        // The first attempt at once.
        assert_eq!(s.next_attempt(t0, None, t0), Some(t0));
        // Then every interval from the previous start...
        assert_eq!(
            s.next_attempt(t0, Some(t0), t0 + 10 * MS),
            Some(t0 + 500 * MS)
        );
        // ...or now when an attempt took longer than the interval (no catching up in a burst).
        assert_eq!(
            s.next_attempt(t0, Some(t0 + 500 * MS), t0 + 1700 * MS),
            Some(t0 + 1700 * MS)
        );
        // The last attempt may start at the bound, none after.
        assert_eq!(
            s.next_attempt(t0, Some(t0 + 1500 * MS), t0 + 1600 * MS),
            Some(t0 + 2000 * MS)
        );
        assert_eq!(
            s.next_attempt(t0, Some(t0 + 1600 * MS), t0 + 1600 * MS),
            None
        );
        assert_eq!(
            s.next_attempt(t0, Some(t0 + 500 * MS), t0 + 2500 * MS),
            None
        );
        assert_eq!(s.deadline(t0), t0 + 2000 * MS);
    }

    #[test]
    fn every_attempt_of_a_long_outage_is_spaced() {
        let s = RetrySchedule::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let (mut last, mut n) = (None, 0);
        while let Some(at) = s.next_attempt(t0, last, last.unwrap_or(t0)) {
            if let Some(l) = last {
                assert!(at - l >= s.interval);
            }
            assert!(at <= t0 + s.within);
            last = Some(at);
            n += 1;
        }
        assert_eq!(n, 121); // 0 s, 0.5 s, …, 60 s
    }

    #[test]
    fn an_outage_lasts_from_the_first_loss_to_media_after_the_rejoin() {
        let t0 = Instant::now();
        let mut o = Outages::default();
        // Media while up ends nothing.
        assert_eq!(o.media(t0), None);
        o.lost(t0);
        // A packet still in flight from before the loss: not media back.
        assert_eq!(o.media(t0 + 5 * MS), None);
        // The signaling loss, then the PeerConnection's failure: one outage from the first.
        o.lost(t0 + 800 * MS);
        o.rebuilt();
        // The first attempt failed and was rebuilt again: still the same outage.
        o.lost(t0 + 1500 * MS);
        o.rebuilt();
        assert_eq!(o.since(), Some(t0));
        assert_eq!(o.media(t0 + 2300 * MS), Some(2300 * MS));
        assert_eq!(o.since(), None);
        assert_eq!(o.media(t0 + 2400 * MS), None);
        assert_eq!((o.attempts, o.rejoins), (2, 1));
        // A second outage is counted on its own.
        o.lost(t0 + 10_000 * MS);
        o.rebuilt();
        assert_eq!(o.media(t0 + 11_000 * MS), Some(1000 * MS));
        assert_eq!(o.rejoins, 2);
        assert_eq!(o.media_back, vec![2300 * MS, 1000 * MS]);
    }

    #[test]
    fn a_rebuild_without_a_loss_opens_no_outage() {
        let mut o = Outages::default();
        o.rebuilt();
        assert_eq!(o.since(), None);
        assert_eq!(o.media(Instant::now()), None);
        assert_eq!(o.rejoins, 0);
    }
}
