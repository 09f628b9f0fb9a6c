//! The process's CPU use, for the node directory: the share of the machine's CPUs this
//! process used since the previous sample (0–100), from `/proc/self/stat` on Linux.
//!
//! `utime` and `stime` are counted in clock ticks of `USER_HZ`, which Linux fixes at 100 on
//! every architecture relais runs on. Elsewhere (no `/proc`) there is no figure.

use std::time::Instant;

const USER_HZ: f64 = 100.0;

/// Successive samples of the process's CPU time.
#[derive(Debug)]
pub struct CpuSampler {
    last: Option<(Instant, u64)>,
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
        Self { last: None, cpus }
    }

    /// Percent of the machine used since the previous call; `None` the first time or without
    /// `/proc`.
    pub fn sample(&mut self) -> Option<f64> {
        let ticks = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| parse_ticks(&s))?;
        let now = Instant::now();
        let previous = self.last.replace((now, ticks));
        let (then, before) = previous?;
        let wall = now.duration_since(then).as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        let busy = ticks.saturating_sub(before) as f64 / USER_HZ;
        Some((busy / wall / self.cpus * 100.0).clamp(0.0, 100.0))
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
        let first = s.sample();
        // Burn a little CPU so the second sample has something to show.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        if first.is_none() && std::path::Path::new("/proc/self/stat").exists() {
            let p = s.sample().expect("second sample");
            assert!((0.0..=100.0).contains(&p), "{p}");
        }
    }
}
