//! A small log-linear latency histogram: fixed memory, values to within 1/128 (under 0.8 %).
//!
//! Values below 256 are kept exactly; above, each power of two is cut into 128 equal buckets.
//! Values are clamped to 2^40 (about 18 minutes in nanoseconds).

/// Bits of precision kept: values below `1 << SUB_BITS` are exact.
const SUB_BITS: u32 = 8;
const HALF: usize = 1 << (SUB_BITS - 1);
/// The largest value kept; larger ones are clamped to it.
const MAX_VALUE: u64 = (1 << 40) - 1;
const BUCKETS: usize = (40 - SUB_BITS as usize + 2) * HALF;

/// A histogram of `u64` values (nanoseconds here).
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    fn index(value: u64) -> usize {
        if value < (1 << SUB_BITS) {
            // Below 2^SUB_BITS the value is its own bucket.
            return usize::try_from(value).unwrap_or(0);
        }
        let msb = 63 - value.leading_zeros();
        let shift = msb + 1 - SUB_BITS;
        let mantissa = usize::try_from(value >> shift).unwrap_or(0);
        ((shift as usize) << (SUB_BITS - 1)) + mantissa
    }

    /// The smallest and largest value of bucket `index`.
    fn bounds(index: usize) -> (u64, u64) {
        if index < (1 << SUB_BITS) {
            let v = index as u64;
            return (v, v);
        }
        let shift = (index >> (SUB_BITS - 1)) - 1;
        let mantissa = (index - (shift << (SUB_BITS - 1))) as u64;
        let low = mantissa << shift;
        (low, low + (1u64 << shift) - 1)
    }

    /// Records one value.
    pub fn record(&mut self, value: u64) {
        let value = value.min(MAX_VALUE);
        if let Some(c) = self.counts.get_mut(Self::index(value)) {
            *c += 1;
        }
        self.total += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += *b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// How many values were recorded.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (exact), 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1): the middle of the bucket holding the value of rank
    /// `ceil(q * count)`, kept within the recorded min and max. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, high) = Self::bounds(i);
                let mid = low + (high - low) / 2;
                return mid.clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bounded() {
        let mut prev_high = None;
        for i in 0..BUCKETS {
            let (low, high) = Histogram::bounds(i);
            assert!(low <= high);
            if let Some(p) = prev_high {
                assert_eq!(low, p + 1, "gap before bucket {i}");
            }
            prev_high = Some(high);
            assert_eq!(Histogram::index(low), i);
            assert_eq!(Histogram::index(high), i);
        }
        assert!(prev_high.unwrap() >= MAX_VALUE);
        assert!(Histogram::index(MAX_VALUE) < BUCKETS);
    }

    #[test]
    fn quantiles_are_close_and_ordered() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        for (q, expect) in [
            (0.5, 50_000_000.0),
            (0.9, 90_000_000.0),
            (0.99, 99_000_000.0),
        ] {
            let got = h.quantile(q) as f64;
            assert!(
                (got - expect).abs() / expect < 0.01,
                "q{q}: {got} vs {expect}"
            );
        }
        assert!(h.quantile(0.5) <= h.quantile(0.9));
        assert!(h.quantile(0.9) <= h.quantile(0.99));
        assert!(h.quantile(0.99) <= h.quantile(0.999));
        assert!(h.quantile(0.999) <= h.max());
        assert_eq!(h.max(), 100_000_000);
        assert!(
            (1000..=1008).contains(&h.quantile(0.0)),
            "{}",
            h.quantile(0.0)
        );
        assert_eq!(h.count(), 100_000);
    }

    #[test]
    fn small_values_exact_and_merge_adds() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(7);
        b.record(9);
        b.record(u64::MAX);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.quantile(0.01), 7);
        assert_eq!(a.quantile(0.5), 9);
        assert_eq!(a.max(), MAX_VALUE);
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }
}
