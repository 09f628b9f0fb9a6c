//! What went wrong during a run, counted by message (so a thousand identical refusals are one
//! line of the report).

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

#[derive(Clone, Default)]
pub struct Failures(Arc<Mutex<BTreeMap<String, u64>>>);

impl Failures {
    pub fn add(&self, what: &str) {
        tracing::debug!(failure = what, "load failure");
        *self.0.lock().entry(what.to_string()).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.lock().values().sum()
    }

    /// `(message, count)`, most frequent first.
    pub fn list(&self) -> Vec<(String, u64)> {
        let mut v: Vec<_> = self.0.lock().iter().map(|(k, n)| (k.clone(), *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }
}
