//! Latency samples and percentiles: [`Samples`] keeps every value (small series such as join
//! times); [`Histogram`] keeps log-linear buckets (fixed memory, mergeable, about 3 % relative
//! error) for the media path, where a run records millions of packets.

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

/// Sub-buckets per power of two: 2^5 = 32, so a bucket is at most 1/32 (≈ 3 %) wide.
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Values below this are their own bucket.
const LINEAR: u64 = 2 * SUB as u64;
const BUCKETS: usize = LINEAR as usize + (64 - SUB_BITS as usize - 1) * SUB;

/// A log-linear histogram of non-negative integers (microseconds here).
///
/// Invariant: `count` is the sum of all buckets; `max` is the largest value recorded exactly.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            count: 0,
            sum: 0,
            max: 0,
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // ≥ SUB_BITS + 1
    let sub = ((v >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    LINEAR as usize + (exp as usize - SUB_BITS as usize - 1) * SUB + sub
}

/// The highest value a bucket holds.
fn bucket_top(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let k = i - LINEAR as usize;
    let exp = (k / SUB) as u32 + SUB_BITS + 1;
    let sub = (k % SUB) as u64;
    let low = (1u64 << exp) | (sub << (exp - SUB_BITS));
    low + (1u64 << (exp - SUB_BITS)) - 1
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        self.buckets[bucket_of(v)] += 1;
        self.count += 1;
        self.sum += u128::from(v);
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The `p`-th percentile (0–100): the top of the bucket holding that rank (never above
    /// `max`); 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_top(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_within_bucket_error() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (p, want) in [(50.0, 50_000f64), (99.0, 99_000.0), (100.0, 100_000.0)] {
            let got = h.percentile(p) as f64;
            assert!((got - want).abs() / want < 0.035, "p{p}: {got} vs {want}");
        }
        assert_eq!(h.max(), 100_000);
        assert_eq!(h.count(), 100_000);
        let mut other = Histogram::default();
        other.record(7);
        h.merge(&other);
        assert_eq!(h.count(), 100_001);
        assert_eq!(Histogram::default().percentile(50.0), 0);
        // Every bucket's top maps back to that bucket.
        for i in 0..BUCKETS - 1 {
            assert_eq!(bucket_of(bucket_top(i)), i);
        }
    }

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
