//! Log lines that a client can cause, at a bounded rate: a flood of bad requests writes a few
//! lines and a count of the ones it left out, not one line each.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::clock::{Millis, SharedClock};

/// Per kind of line (`&'static str`, so the table cannot grow with client input): at most
/// `per_window` lines per `window_ms`.
pub struct LogBudget {
    per_window: u32,
    window_ms: Millis,
    clock: SharedClock,
    kinds: Mutex<HashMap<&'static str, Kind>>,
}

#[derive(Default)]
struct Kind {
    start: Millis,
    written: u32,
    suppressed: u64,
}

impl LogBudget {
    pub fn new(per_window: u32, window_ms: Millis, clock: SharedClock) -> Self {
        Self {
            per_window,
            window_ms,
            clock,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` when a line of `kind` may be written now; `n` lines of that kind were left out
    /// since the last one written (say it in the line). `None`: leave it out.
    pub fn admit(&self, kind: &'static str) -> Option<u64> {
        let now = self.clock.now_ms();
        let mut kinds = self.kinds.lock();
        let k = kinds.entry(kind).or_insert_with(|| Kind {
            start: now,
            ..Kind::default()
        });
        if now - k.start >= self.window_ms {
            k.start = now;
            k.written = 0;
        }
        if k.written < self.per_window {
            k.written += 1;
            Some(std::mem::take(&mut k.suppressed))
        } else {
            k.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn a_flood_writes_a_few_lines_and_counts_the_rest() {
        let clock = ManualClock::new(0);
        let b = LogBudget::new(3, 10_000, clock.clone());
        let written: Vec<_> = (0..1000).filter_map(|_| b.admit("http")).collect();
        assert_eq!(written, vec![0, 0, 0]);
        assert_eq!(b.admit("other"), Some(0));
        clock.advance(10_000);
        assert_eq!(b.admit("http"), Some(997));
        assert_eq!(b.admit("http"), Some(0));
    }
}
