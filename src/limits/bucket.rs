//! Token buckets: a sustained rate with a burst on top, alone or per key.

use std::collections::HashMap;
use std::hash::Hash;

use parking_lot::Mutex;

use crate::clock::{Millis, SharedClock};

/// Keys tracked at most by [`Buckets`]; past it, full (idle) buckets are forgotten first.
const MAX_TRACKED: usize = 100_000;

/// `per_second` tokens flow in, up to `burst` saved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    pub const fn new(per_second: f64, burst: f64) -> Self {
        Self { per_second, burst }
    }
}

/// One bucket. Starts full.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    at: Millis,
}

impl TokenBucket {
    pub fn full(rate: Rate, now: Millis) -> Self {
        Self {
            tokens: rate.burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Millis) {
        if now > self.at {
            let gained = (now - self.at) as f64 / 1000.0 * rate.per_second;
            self.tokens = (self.tokens + gained).min(rate.burst);
            self.at = now;
        }
    }

    /// Takes one token, or says in how many milliseconds one will be there.
    pub fn take(&mut self, rate: Rate, now: Millis) -> Result<(), Millis> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if rate.per_second <= 0.0 {
            Err(Millis::MAX)
        } else {
            // (Less a hair of float error: 0.99 token short at 10/s is 1 ms, not 2.)
            Err((((1.0 - self.tokens) / rate.per_second) * 1000.0 - 1e-6)
                .ceil()
                .max(1.0) as Millis)
        }
    }

    fn is_full(&mut self, rate: Rate, now: Millis) -> bool {
        self.refill(rate, now);
        self.tokens >= rate.burst
    }
}

/// A bucket per key (a user, a socket, an address), all at one rate.
pub struct Buckets<K> {
    rate: Rate,
    clock: SharedClock,
    buckets: Mutex<HashMap<K, TokenBucket>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(rate: Rate, clock: SharedClock) -> Self {
        Self {
            rate,
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one of `key`'s tokens, or the milliseconds until one is there.
    pub fn take(&self, key: &K) -> Result<(), Millis> {
        let now = self.clock.now_ms();
        let rate = self.rate;
        let mut buckets = self.buckets.lock();
        if let Some(b) = buckets.get_mut(key) {
            return b.take(rate, now);
        }
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, b| !b.is_full(rate, now));
            if buckets.len() >= MAX_TRACKED {
                // Still full of active keys: forget half of them (they start full again).
                let drop: Vec<K> = buckets.keys().take(MAX_TRACKED / 2).cloned().collect();
                for k in drop {
                    buckets.remove(&k);
                }
            }
        }
        let mut b = TokenBucket::full(rate, now);
        let r = b.take(rate, now);
        buckets.insert(key.clone(), b);
        r
    }

    /// Forgets `key` (its socket closed).
    pub fn forget(&self, key: &K) {
        self.buckets.lock().remove(key);
    }

    pub fn tracked(&self) -> usize {
        self.buckets.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn burst_then_rate() {
        let rate = Rate::new(10.0, 5.0);
        let mut b = TokenBucket::full(rate, 0);
        for _ in 0..5 {
            assert_eq!(b.take(rate, 0), Ok(()));
        }
        assert_eq!(b.take(rate, 0), Err(100));
        assert_eq!(b.take(rate, 99), Err(1));
        assert_eq!(b.take(rate, 100), Ok(()));
        // A long pause saves no more than the burst.
        let mut taken = 0;
        while b.take(rate, 60_000).is_ok() {
            taken += 1;
        }
        assert_eq!(taken, 5);
    }

    #[test]
    fn keys_are_apart_and_bounded() {
        let clock = ManualClock::new(0);
        let b = Buckets::new(Rate::new(1.0, 2.0), clock.clone());
        assert!(b.take(&1).is_ok());
        assert!(b.take(&1).is_ok());
        assert!(b.take(&1).is_err());
        assert!(b.take(&2).is_ok());
        clock.advance(1000);
        assert!(b.take(&1).is_ok());
        for k in 0..(MAX_TRACKED as u32 + 10) {
            let _ = b.take(&k);
        }
        assert!(b.tracked() <= MAX_TRACKED);
        b.forget(&3);
    }

    proptest::proptest! {
        /// Over any schedule, a key never gets more than burst + rate × elapsed tokens.
        #[test]
        fn never_more_than_the_rate(steps in proptest::collection::vec(0i64..400, 1..300)) {
            let rate = Rate::new(5.0, 3.0);
            let mut b = TokenBucket::full(rate, 0);
            let (mut now, mut granted) = (0, 0u32);
            for s in steps {
                now += s;
                if b.take(rate, now).is_ok() {
                    granted += 1;
                }
            }
            let allowed = 3.0 + 5.0 * now as f64 / 1000.0;
            proptest::prop_assert!(f64::from(granted) <= allowed + 1e-9);
        }
    }
}
