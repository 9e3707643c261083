//! A latency histogram with log-linear buckets: every value below 1024 has its own bucket, and
//! each doubling above that is cut into 512 equal buckets, so a recorded value is known to
//! within 1/512 (about 0.2 %, three significant digits) whatever its size. Recording is an
//! index computation and an increment: cheap enough for every message of the hot loop.
//!
//! Values are nanoseconds here, but nothing depends on the unit.

/// Values below this have a bucket each.
const EXACT: u64 = 1 << SUB_BITS;
/// log2 of [`EXACT`].
const SUB_BITS: u32 = 10;
/// Buckets per doubling above [`EXACT`].
const HALF: u64 = EXACT / 2;
/// The largest value kept as is; anything above is counted as this (2^41 ns is about 36
/// minutes, far beyond any timeout of the benchmark).
const CLAMP: u64 = (1 << 41) - 1;
/// Number of buckets: the exact ones, then [`HALF`] per doubling up to [`CLAMP`].
const BUCKETS: usize = index(CLAMP) + 1;

/// The bucket of `v` (at most [`CLAMP`]).
const fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    // The top SUB_BITS - 1 bits below the most significant one pick the bucket in the doubling.
    let msb = 63 - v.leading_zeros();
    let shift = msb - (SUB_BITS - 1);
    let top = v >> shift; // in HALF..EXACT
                          // Cannot truncate: at most BUCKETS, a few tens of thousands.
    (EXACT + (shift as u64 - 1) * HALF + (top - HALF)) as usize
}

/// The smallest and the largest value that land in bucket `i`.
fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < EXACT {
        return (i, i);
    }
    let shift = (i - EXACT) / HALF + 1;
    let top = (i - EXACT) % HALF + HALF;
    let low = top << shift;
    (low, low + (1 << shift) - 1)
}

/// Counts of values by bucket, with the exact maximum.
#[derive(Clone, Debug)]
pub(crate) struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    /// Count one value (values above about 2.2e12 are counted as that).
    #[inline]
    pub(crate) fn record(&mut self, v: u64) {
        let v = v.min(CLAMP);
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// Add all of `other`'s values.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// How many values were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (0 if none).
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// The value below or at which a fraction `q` (0 to 1) of the recorded values lie: the
    /// largest value of the bucket holding the value of rank ⌈q·count⌉, and never above the
    /// maximum. 0 for an empty histogram. Percentiles of one histogram never decrease with `q`.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        // Cannot truncate meaningfully: the rank is at most `total`, which fits in a u64.
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bounds(i).1.min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        let mut expected_low = 0;
        for i in 0..BUCKETS {
            let (low, high) = bounds(i);
            assert_eq!(low, expected_low, "bucket {i}");
            assert!(high >= low);
            assert_eq!(index(low), i);
            assert_eq!(index(high), i);
            expected_low = high + 1;
        }
        assert_eq!(expected_low, CLAMP + 1);
    }

    #[test]
    fn relative_error_is_below_one_in_five_hundred() {
        for v in [
            1_000u64,
            1_023,
            1_024,
            1_025,
            12_345,
            999_999,
            123_456_789,
            CLAMP,
        ] {
            let (low, high) = bounds(index(v));
            assert!(low <= v && v <= high, "{v}");
            assert!((high - low) as f64 / low as f64 <= 1.0 / 512.0, "{v}");
        }
    }

    #[test]
    fn percentiles_of_a_uniform_range() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        assert_eq!(h.count(), 100_000);
        assert_eq!(h.max(), 100_000);
        for (q, exact) in [(0.5, 50_000u64), (0.99, 99_000), (0.999, 99_900)] {
            let got = h.quantile(q);
            // At or just above the exact value: the top of its bucket (within 1/512).
            assert!(got >= exact, "q={q}: {got} < {exact}");
            assert!(
                got as f64 <= exact as f64 * (1.0 + 1.0 / 512.0),
                "q={q}: {got}"
            );
        }
        assert_eq!(h.quantile(1.0), 100_000);
        assert_eq!(h.quantile(0.0), 1);
    }

    #[test]
    fn small_values_are_exact_and_outliers_show_in_the_tail() {
        let mut h = Histogram::default();
        for _ in 0..990 {
            h.record(100);
        }
        for _ in 0..10 {
            h.record(5_000_000);
        }
        assert_eq!(h.quantile(0.5), 100);
        assert_eq!(h.quantile(0.99), 100);
        let p999 = h.quantile(0.999);
        assert!((5_000_000..=5_000_000 + 5_000_000 / 512).contains(&p999));
        // Never above the largest value recorded.
        assert_eq!(p999, 5_000_000);
    }

    #[test]
    fn empty_and_merged_histograms() {
        let empty = Histogram::default();
        assert_eq!((empty.count(), empty.quantile(0.5), empty.max()), (0, 0, 0));
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record(10);
        b.record(30);
        b.record(u64::MAX);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.quantile(0.3), 10);
        assert_eq!(a.quantile(0.6), 30);
        assert_eq!(a.max(), CLAMP);
    }
}
