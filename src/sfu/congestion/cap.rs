//! The publisher's side of congestion control: what each subscriber of a published video track
//! can take (its share of its own estimate), the lowest of these, and the REMB relais sends the
//! publisher's client so that it encodes for its weakest subscriber (a publisher without
//! simulcast has one encoding for everyone).
//!
//! Invariants:
//! - a subscriber's figure counts for [`ESTIMATE_TTL`] after it was last given (a subscriber
//!   whose feedback stopped, or who left without saying so, stops capping the publisher);
//! - a REMB goes out when the cap falls (at once), when it rises by more than
//!   [`RISE_TO_REPORT`], and every [`REMB_INTERVAL`] while there is a cap; once no cap is left,
//!   one last REMB of [`UNCAPPED_BPS`] lifts it, and then none is sent.

use std::time::{Duration, Instant};

use crate::sfu::types::PeerId;

/// What a subscriber's audio legs are assumed to take out of its estimate (Opus at its usual
/// rate plus headers), before the rest is shared among its video legs.
pub const AUDIO_ALLOWANCE_BPS: f64 = 40_000.0;
/// A video leg's share is never set below this (below it, a browser sends nothing useful).
pub const MIN_VIDEO_SHARE_BPS: f64 = 60_000.0;
/// How long a subscriber's figure counts without being renewed.
pub const ESTIMATE_TTL: Duration = Duration::from_secs(10);
/// A standing cap is repeated this often (a lost REMB is not fatal).
pub const REMB_INTERVAL: Duration = Duration::from_secs(1);
/// A rise smaller than this share waits for the next periodic REMB.
pub const RISE_TO_REPORT: f64 = 0.10;
/// What a REMB that lifts the cap says.
pub const UNCAPPED_BPS: f64 = 50_000_000.0;

/// The share of a subscriber's `estimate` for each of its `video_legs` (after its `audio_legs`).
pub fn video_share(estimate: f64, audio_legs: usize, video_legs: usize) -> Option<f64> {
    if video_legs == 0 {
        return None;
    }
    let left = estimate - AUDIO_ALLOWANCE_BPS * audio_legs as f64;
    Some((left / video_legs as f64).max(MIN_VIDEO_SHARE_BPS))
}

/// What each subscriber of one published track can take.
#[derive(Debug, Default)]
pub struct TrackCaps {
    subscribers: Vec<(PeerId, f64, Instant)>,
}

impl TrackCaps {
    pub fn set(&mut self, peer: PeerId, bps: f64, now: Instant) {
        match self.subscribers.iter_mut().find(|(p, ..)| *p == peer) {
            Some(entry) => *entry = (peer, bps, now),
            None => self.subscribers.push((peer, bps, now)),
        }
    }

    pub fn remove(&mut self, peer: PeerId) {
        self.subscribers.retain(|(p, ..)| *p != peer);
    }

    /// The lowest figure still counting at `now` (stale ones are forgotten).
    pub fn lowest(&mut self, now: Instant) -> Option<f64> {
        self.subscribers
            .retain(|(_, _, at)| now.saturating_duration_since(*at) < ESTIMATE_TTL);
        self.subscribers
            .iter()
            .map(|(_, bps, _)| *bps)
            .min_by(f64::total_cmp)
    }

    pub fn len(&self) -> usize {
        self.subscribers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }
}

/// The whole connection's cap: the video tracks' caps, each track with no cap making the whole
/// uncapped (REMB covers everything the client sends), plus its audio.
pub fn publisher_cap(video_caps: &[Option<f64>], audio_tracks: usize) -> Option<f64> {
    if video_caps.is_empty() {
        return None;
    }
    let mut total = AUDIO_ALLOWANCE_BPS * audio_tracks as f64;
    for cap in video_caps {
        total += (*cap)?;
    }
    Some(total)
}

/// A participant's downlink as others are told it is ([`LinkQuality::update`]): weak below
/// [`WEAK_BELOW_BPS`] of video share, good again above [`GOOD_ABOVE_BPS`] (or unlimited). The gap
/// keeps a link near one figure from flickering.
pub const WEAK_BELOW_BPS: f64 = 450_000.0;
pub const GOOD_ABOVE_BPS: f64 = 700_000.0;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkQuality {
    weak: bool,
}

impl LinkQuality {
    /// The smallest video share of this connection now (`None`: not limited); `Some(weak)`
    /// when the verdict changed.
    pub fn update(&mut self, share: Option<f64>) -> Option<bool> {
        let weak = match share {
            None => false,
            Some(s) if s < WEAK_BELOW_BPS => true,
            Some(s) if s > GOOD_ABOVE_BPS => false,
            Some(_) => self.weak,
        };
        (weak != self.weak).then(|| {
            self.weak = weak;
            weak
        })
    }

    pub fn weak(&self) -> bool {
        self.weak
    }
}

/// When to tell the publisher's client, and what.
#[derive(Debug, Default)]
pub struct RembSchedule {
    /// The last cap sent and when; `None` when no cap stands.
    last: Option<(f64, Instant)>,
}

impl RembSchedule {
    /// The REMB to send at `now`, if one is due, for the cap `wanted` (`None`: no cap).
    pub fn due(&mut self, wanted: Option<f64>, now: Instant) -> Option<f64> {
        match (wanted, self.last) {
            (None, None) => None,
            (None, Some(_)) => {
                self.last = None;
                Some(UNCAPPED_BPS)
            }
            (Some(cap), last) => {
                let send = match last {
                    None => true,
                    Some((sent, at)) => {
                        cap < sent
                            || cap > sent * (1.0 + RISE_TO_REPORT)
                            || now.saturating_duration_since(at) >= REMB_INTERVAL
                    }
                };
                if send {
                    self.last = Some((cap, now));
                    Some(cap)
                } else {
                    None
                }
            }
        }
    }

    /// When [`Self::due`] next has something to send, if a cap stands.
    pub fn next_due(&self) -> Option<Instant> {
        self.last.map(|(_, at)| at + REMB_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_subscriber_share_leaves_room_for_audio_and_splits_video() {
        assert_eq!(video_share(1_000_000.0, 1, 1), Some(960_000.0));
        assert_eq!(video_share(1_000_000.0, 2, 2), Some(460_000.0));
        assert_eq!(video_share(50_000.0, 1, 1), Some(MIN_VIDEO_SHARE_BPS));
        assert_eq!(video_share(1_000_000.0, 1, 0), None);
    }

    #[test]
    fn the_weakest_subscriber_sets_the_cap_until_it_leaves_or_goes_quiet() {
        let t0 = Instant::now();
        let mut caps = TrackCaps::default();
        assert_eq!(caps.lowest(t0), None);
        caps.set(PeerId(1), 2_000_000.0, t0);
        caps.set(PeerId(2), 400_000.0, t0);
        assert_eq!(caps.lowest(t0), Some(400_000.0));
        // Renewed figure replaces the old one.
        caps.set(PeerId(2), 600_000.0, t0 + S);
        assert_eq!(caps.lowest(t0 + S), Some(600_000.0));
        caps.remove(PeerId(2));
        assert_eq!(caps.lowest(t0 + S), Some(2_000_000.0));
        // Quiet for longer than the TTL: forgotten.
        assert_eq!(caps.lowest(t0 + ESTIMATE_TTL), None);
        assert!(caps.is_empty());
    }

    #[test]
    fn a_link_turns_weak_and_good_again_without_flickering() {
        let mut q = LinkQuality::default();
        assert_eq!(q.update(None), None);
        assert_eq!(q.update(Some(2_000_000.0)), None);
        assert_eq!(q.update(Some(400_000.0)), Some(true));
        // Between the two figures: unchanged, either way.
        assert_eq!(q.update(Some(600_000.0)), None);
        assert_eq!(q.update(Some(400_000.0)), None);
        assert_eq!(q.update(Some(800_000.0)), Some(false));
        assert_eq!(q.update(Some(600_000.0)), None);
        assert_eq!(q.update(Some(100_000.0)), Some(true));
        assert_eq!(q.update(None), Some(false));
        assert!(!q.weak());
    }

    #[test]
    fn a_track_without_a_cap_leaves_the_publisher_uncapped() {
        assert_eq!(publisher_cap(&[], 1), None);
        assert_eq!(publisher_cap(&[Some(500_000.0)], 1), Some(540_000.0));
        assert_eq!(
            publisher_cap(&[Some(500_000.0), Some(300_000.0)], 1),
            Some(840_000.0)
        );
        assert_eq!(publisher_cap(&[Some(500_000.0), None], 1), None);
    }

    #[test]
    fn remb_goes_out_on_a_fall_at_once_and_on_a_rise_when_it_matters() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = RembSchedule::default();
        assert_eq!(r.due(None, t0), None);
        assert_eq!(r.next_due(), None);
        assert_eq!(r.due(Some(1_000_000.0), t0), Some(1_000_000.0));
        // Unchanged: not before the interval.
        assert_eq!(r.due(Some(1_000_000.0), t0 + ms(100)), None);
        // A fall: at once.
        assert_eq!(r.due(Some(900_000.0), t0 + ms(200)), Some(900_000.0));
        // A small rise waits; a large one does not.
        assert_eq!(r.due(Some(950_000.0), t0 + ms(300)), None);
        assert_eq!(r.due(Some(1_200_000.0), t0 + ms(400)), Some(1_200_000.0));
        assert_eq!(r.next_due(), Some(t0 + ms(400) + REMB_INTERVAL));
        // Repeated every interval.
        assert_eq!(
            r.due(Some(1_200_000.0), t0 + ms(400) + REMB_INTERVAL),
            Some(1_200_000.0)
        );
        // Lifted once, then silence.
        assert_eq!(r.due(None, t0 + 3 * S), Some(UNCAPPED_BPS));
        assert_eq!(r.due(None, t0 + 4 * S), None);
        assert_eq!(r.next_due(), None);
    }
}
