//! Live progress on stderr: a bar redrawn in place on a terminal; on anything else (CI, a
//! file) a plain line every few seconds, so logs stay readable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub struct ProgressBar {
    tty: bool,
    last_plain: Mutex<Option<Instant>>,
    enabled: bool,
}

const PLAIN_EVERY: Duration = Duration::from_secs(5);
const WIDTH: usize = 24;

impl ProgressBar {
    /// `enabled = false` prints nothing (library use, tests).
    pub fn new(enabled: bool) -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last_plain: Mutex::new(None),
            enabled,
        }
    }

    /// Shows `phase` at `done` of `total` with a status text.
    pub fn update(&self, phase: &str, done: f64, total: f64, status: &str) {
        if !self.enabled {
            return;
        }
        let frac = if total > 0.0 {
            (done / total).clamp(0.0, 1.0)
        } else {
            0.0
        };
        if self.tty {
            let filled = (frac * WIDTH as f64).round() as usize;
            let bar = format!("{}{}", "#".repeat(filled), ".".repeat(WIDTH - filled));
            let mut e = std::io::stderr().lock();
            let _ = write!(
                e,
                "\r\x1b[2K{phase:<9} [{bar}] {:>3.0}% {status}",
                frac * 100.0
            );
            let _ = e.flush();
        } else {
            let mut last = self.last_plain.lock();
            if last.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) || frac >= 1.0 {
                *last = Some(Instant::now());
                eprintln!("{phase} {:>3.0}% {status}", frac * 100.0);
            }
        }
    }

    /// Ends the current bar line (before other output).
    pub fn finish(&self) {
        if self.enabled && self.tty {
            eprintln!();
        }
    }

    /// A line of its own.
    pub fn say(&self, line: &str) {
        if self.enabled {
            if self.tty {
                eprint!("\r\x1b[2K");
            }
            eprintln!("{line}");
        }
    }
}
