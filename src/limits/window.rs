//! Failures per key in fixed windows (a minute by default).

use std::collections::HashMap;
use std::hash::Hash;

use parking_lot::Mutex;

use crate::clock::{Millis, SharedClock};

/// Keys tracked at most; past it, expired windows are dropped, then the oldest half.
const MAX_TRACKED: usize = 50_000;

/// Counts failures per key; a key that used its allowance is "over" until its window ends.
pub struct FailureWindows<K> {
    per_window: u32,
    window_ms: Millis,
    clock: SharedClock,
    windows: Mutex<HashMap<K, (Millis, u32)>>,
}

impl<K: Hash + Eq + Clone> FailureWindows<K> {
    /// `per_window` failures allowed per key per `window_ms`.
    pub fn new(per_window: u32, window_ms: Millis, clock: SharedClock) -> Self {
        Self {
            per_window,
            window_ms,
            clock,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// A minute's windows.
    pub fn per_minute(per_window: u32, clock: SharedClock) -> Self {
        Self::new(per_window, 60_000, clock)
    }

    /// Failures `key` has had in its current window.
    pub fn failures(&self, key: &K) -> u32 {
        let now = self.clock.now_ms();
        match self.windows.lock().get(key) {
            Some((start, n)) if now - start < self.window_ms => *n,
            _ => 0,
        }
    }

    /// True when `key` used up its failures for the current window.
    pub fn is_over(&self, key: &K) -> bool {
        self.failures(key) >= self.per_window
    }

    /// Counts one failure of `key`; true when it is now over its allowance.
    pub fn record(&self, key: K) -> bool {
        let now = self.clock.now_ms();
        let mut windows = self.windows.lock();
        if windows.len() >= MAX_TRACKED && !windows.contains_key(&key) {
            let window = self.window_ms;
            windows.retain(|_, (start, _)| now - *start < window);
            if windows.len() >= MAX_TRACKED {
                let mut starts: Vec<Millis> = windows.values().map(|(s, _)| *s).collect();
                starts.sort_unstable();
                let cut = starts[starts.len() / 2];
                windows.retain(|_, (start, _)| *start > cut);
            }
        }
        let entry = windows.entry(key).or_insert((now, 0));
        if now - entry.0 >= self.window_ms {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 >= self.per_window
    }

    /// Milliseconds until `key`'s window ends (0 when it has none).
    pub fn retry_after_ms(&self, key: &K) -> Millis {
        let now = self.clock.now_ms();
        match self.windows.lock().get(key) {
            Some((start, _)) => (start + self.window_ms - now).max(0),
            None => 0,
        }
    }

    pub fn tracked(&self) -> usize {
        self.windows.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn over_after_the_allowance_then_forgets() {
        let clock = ManualClock::new(0);
        let w = FailureWindows::per_minute(3, clock.clone());
        for i in 0..3 {
            assert!(!w.is_over(&"a"));
            assert_eq!(w.record("a"), i == 2);
        }
        assert!(w.is_over(&"a"));
        assert!(!w.is_over(&"b"));
        assert_eq!(w.retry_after_ms(&"a"), 60_000);
        clock.advance(59_999);
        assert!(w.is_over(&"a"));
        clock.advance(1);
        assert!(!w.is_over(&"a"));
        assert_eq!(w.failures(&"a"), 0);
    }

    #[test]
    fn memory_stays_bounded() {
        let clock = ManualClock::new(0);
        let w = FailureWindows::per_minute(3, clock.clone());
        for i in 0..(MAX_TRACKED as u32 + 1000) {
            w.record(i);
            if i % 1000 == 0 {
                clock.advance(1);
            }
        }
        assert!(w.tracked() <= MAX_TRACKED);
    }
}
