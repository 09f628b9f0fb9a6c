//! The process's CPU use, for the node directory: the share of the machine's CPUs this
//! process used since the previous sample (0–100), from `/proc/self/stat` on Linux.
//!
//! `utime` and `stime` are counted in clock ticks of `USER_HZ`, which Linux fixes at 100 on
//! every architecture relais runs on. Elsewhere (no `/proc`) there is no figure.

use std::time::Instant;

const USER_HZ: f64 = 100.0;
/// Shorter windows than this say little (a few ticks) and keep the previous figure.
const MIN_WINDOW_SECS: f64 = 0.5;

/// Successive samples of the process's CPU time.
#[derive(Debug)]
pub struct CpuSampler {
    last: Option<(Instant, u64)>,
    value: Option<f64>,
    cpus: f64,
}

impl Default for CpuSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuSampler {
    pub fn new() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0);
        Self {
            last: None,
            value: None,
            cpus,
        }
    }

    /// Percent of the machine used since the previous sample at least half a second ago;
    /// `None` until there is one, and without `/proc`.
    pub fn sample(&mut self) -> Option<f64> {
        let ticks = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| parse_ticks(&s))?;
        let now = Instant::now();
        let Some((then, before)) = self.last else {
            self.last = Some((now, ticks));
            return None;
        };
        let wall = now.duration_since(then).as_secs_f64();
        if wall < MIN_WINDOW_SECS {
            return self.value;
        }
        self.last = Some((now, ticks));
        let busy = ticks.saturating_sub(before) as f64 / USER_HZ;
        self.value = Some((busy / wall / self.cpus * 100.0).clamp(0.0, 100.0));
        self.value
    }
}

/// `utime + stime` from a `/proc/<pid>/stat` line. The command name (field 2) may hold
/// spaces and parentheses: fields are counted after its last `)`.
fn parse_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (3) … utime is field 14, stime 15 (1-based, whole line).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime() {
        let line = "4242 (relais (x) y) S 1 4242 4242 0 -1 4194560 1203 0 0 0 170 30 0 0 20 0 \
                    9 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(parse_ticks(line), Some(200));
        assert_eq!(parse_ticks("garbage"), None);
        assert_eq!(parse_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn samples_are_percentages() {
        let mut s = CpuSampler::new();
        assert_eq!(s.sample(), None, "no figure before a window");
        // Too short a window keeps the previous figure (none yet).
        assert_eq!(s.sample(), None);
        if std::path::Path::new("/proc/self/stat").exists() {
            std::thread::sleep(std::time::Duration::from_millis(550));
            let p = s.sample().expect("a figure after half a second");
            assert!((0.0..=100.0).contains(&p), "{p}");
            assert_eq!(s.sample(), Some(p), "kept within the next half second");
        }
    }
}
