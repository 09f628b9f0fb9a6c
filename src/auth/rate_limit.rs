//! Per-address limit on failed authentications (fixed one-minute windows).
//!
//! Invariant: memory is bounded: when the table grows past [`MAX_TRACKED`] addresses, expired
//! windows are dropped, and if that is not enough the oldest half goes.

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;

use crate::clock::{Millis, SharedClock};

const WINDOW_MS: Millis = 60_000;
const MAX_TRACKED: usize = 50_000;

pub struct FailureLimiter {
    per_window: u32,
    clock: SharedClock,
    windows: Mutex<HashMap<IpAddr, (Millis, u32)>>,
}

impl FailureLimiter {
    pub fn new(per_minute: u32, clock: SharedClock) -> Self {
        Self {
            per_window: per_minute,
            clock,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// True when this address used up its failures for the current window.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        let now = self.clock.now_ms();
        let windows = self.windows.lock();
        matches!(windows.get(&ip), Some((start, n)) if now - start < WINDOW_MS && *n >= self.per_window)
    }

    pub fn record_failure(&self, ip: IpAddr) {
        let now = self.clock.now_ms();
        let mut windows = self.windows.lock();
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, (start, _)| now - *start < WINDOW_MS);
            if windows.len() >= MAX_TRACKED {
                let mut starts: Vec<Millis> = windows.values().map(|(s, _)| *s).collect();
                starts.sort_unstable();
                let cut = starts[starts.len() / 2];
                windows.retain(|_, (start, _)| *start > cut);
            }
        }
        let entry = windows.entry(ip).or_insert((now, 0));
        if now - entry.0 >= WINDOW_MS {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn blocks_after_limit_then_forgets() {
        let clock = ManualClock::new(0);
        let l = FailureLimiter::new(3, clock.clone());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(!l.is_blocked(ip));
            l.record_failure(ip);
        }
        assert!(l.is_blocked(ip));
        assert!(!l.is_blocked(other));
        clock.advance(WINDOW_MS);
        assert!(!l.is_blocked(ip));
    }
}
