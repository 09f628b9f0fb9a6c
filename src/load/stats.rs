//! Latency samples and percentiles.

/// Latency samples in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    values: Vec<u64>,
    sorted: bool,
}

impl Samples {
    pub fn push(&mut self, micros: u64) {
        self.values.push(micros);
        self.sorted = false;
    }

    pub fn extend(&mut self, other: &Samples) {
        self.values.extend_from_slice(&other.values);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The `p`-th percentile (0–100), nearest rank; 0 when empty.
    pub fn percentile(&mut self, p: f64) -> u64 {
        if self.values.is_empty() {
            return 0;
        }
        if !self.sorted {
            self.values.sort_unstable();
            self.sorted = true;
        }
        let rank = ((p / 100.0) * self.values.len() as f64).ceil() as usize;
        self.values[rank.clamp(1, self.values.len()) - 1]
    }

    /// The samples recorded after the first `from` (in recording order).
    pub fn tail(&self, from: usize) -> Samples {
        Samples {
            values: self
                .values
                .get(from..)
                .map(<[u64]>::to_vec)
                .unwrap_or_default(),
            sorted: self.sorted,
        }
    }

    /// Mean absolute difference between consecutive samples, in ms (a latency series' jitter);
    /// `None` with fewer than two samples or once sorted (order lost).
    pub fn jitter_ms(&self) -> Option<f64> {
        if self.values.len() < 2 || self.sorted {
            return None;
        }
        let sum: u64 = self.values.windows(2).map(|w| w[0].abs_diff(w[1])).sum();
        Some(sum as f64 / (self.values.len() - 1) as f64 / 1000.0)
    }

    pub fn max(&self) -> u64 {
        self.values.iter().copied().max().unwrap_or(0)
    }

    pub fn mean(&self) -> f64 {
        if self.values.is_empty() {
            0.0
        } else {
            self.values.iter().sum::<u64>() as f64 / self.values.len() as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let mut s = Samples::default();
        for v in 1..=100 {
            s.push(v);
        }
        assert_eq!(s.percentile(50.0), 50);
        assert_eq!(s.percentile(99.0), 99);
        assert_eq!(s.percentile(100.0), 100);
        assert_eq!(s.max(), 100);
        assert_eq!(Samples::default().percentile(50.0), 0);
    }
}
