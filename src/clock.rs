//! Wall-clock time as the rest of the server sees it.
//!
//! Stored timestamps are milliseconds since the Unix epoch (`i64`), the one representation both
//! database backends share; the wire shows RFC 3339 UTC with milliseconds. Logic that a test
//! must drive (code expiry, retention) reads time through [`Clock`], never the OS directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> Millis;
}

/// The operating system's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as Millis
    }
}

/// A clock tests move by hand.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Millis) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(start)))
    }

    pub fn advance(&self, ms: Millis) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// `2024-01-15T10:30:00.000Z`.
pub fn to_rfc3339(ms: Millis) -> String {
    let secs = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(&Rfc3339)
        .unwrap_or_default();
    // Whole seconds print as `…:00Z`; fix the fraction at three digits for stable sorting.
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), ms.rem_euclid(1000))
}

/// Parses an RFC 3339 timestamp into epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|dt| (dt.unix_timestamp_nanos() / 1_000_000) as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis() {
        assert_eq!(to_rfc3339(1_705_314_600_000), "2024-01-15T10:30:00.000Z");
        assert_eq!(to_rfc3339(1_705_314_600_042), "2024-01-15T10:30:00.042Z");
        assert_eq!(
            parse_rfc3339("2024-01-15T10:30:00Z"),
            Some(1_705_314_600_000)
        );
        assert_eq!(
            parse_rfc3339(&to_rfc3339(1_705_314_600_042)),
            Some(1_705_314_600_042)
        );
    }
}
