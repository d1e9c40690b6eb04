//! A fixed-size latency histogram: log-spaced buckets from 10 µs to about 150 s, each 25 %
//! wider than the last. Fixed size keeps an edge's memory known in advance (the graph holds
//! thousands of them in several windows), and merging two windows is adding arrays. A
//! quantile is read by interpolating inside its bucket, so its error is well under a bucket's
//! 25 % width.

/// Buckets in a histogram.
pub const BUCKETS: usize = 74;
/// The lower bound of bucket 0, in microseconds; anything faster lands there.
const FLOOR_US: f64 = 10.0;
/// How much wider each bucket is than the one before.
const GROWTH: f64 = 1.25;

/// Counts of latencies by bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    counts: [u32; BUCKETS],
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: [0; BUCKETS], total: 0 }
    }
}

fn lower_bound_us(bucket: usize) -> f64 {
    FLOOR_US * GROWTH.powi(bucket as i32)
}

fn bucket_of(micros: f64) -> usize {
    if micros <= FLOOR_US {
        return 0;
    }
    let i = ((micros / FLOOR_US).ln() / GROWTH.ln()).floor();
    (i as usize).min(BUCKETS - 1)
}

impl Histogram {
    /// Records one latency, in seconds (negative values count as zero).
    pub fn record(&mut self, seconds: f64) {
        let b = bucket_of(seconds.max(0.0) * 1e6);
        self.counts[b] = self.counts[b].saturating_add(1);
        self.total += 1;
    }

    /// How many latencies it holds.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
    }

    /// The `q` quantile (0 to 1) in seconds; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.total as f64).max(1.0);
        let mut seen = 0.0;
        for (i, &c) in self.counts.iter().enumerate() {
            let c = f64::from(c);
            if c > 0.0 && seen + c >= rank {
                let (lo, hi) = (lower_bound_us(i), lower_bound_us(i + 1));
                // The middle of the bucket's share of the rank, so a lone value reads as the
                // bucket's middle rather than its edge.
                let within = ((rank - seen - 0.5) / c).clamp(0.0, 1.0);
                let lo = if i == 0 { 0.0 } else { lo };
                return Some((lo + (hi - lo) * within) / 1e6);
            }
            seen += c;
        }
        Some(lower_bound_us(BUCKETS) / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_empty_histogram_has_no_quantiles() {
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn the_range_reaches_past_a_minute() {
        assert!(lower_bound_us(BUCKETS) / 1e6 > 100.0);
    }

    proptest! {
        /// A quantile read from the histogram is within a bucket's width of the exact one.
        #[test]
        fn quantiles_are_within_a_bucket_of_the_exact_value(
            mut values in prop::collection::vec(0.00002f64..60.0, 1..400),
            q in 0.01f64..1.0,
        ) {
            let mut h = Histogram::default();
            values.iter().for_each(|v| h.record(*v));
            values.sort_by(f64::total_cmp);
            let exact = values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
            let got = h.quantile(q).unwrap();
            prop_assert!(got <= exact * GROWTH * 1.0001 && got >= exact / GROWTH / 1.0001, "q{q}: {got} vs {exact}");
        }

        #[test]
        fn merging_is_adding(a in prop::collection::vec(0.0f64..10.0, 0..50), b in prop::collection::vec(0.0f64..10.0, 0..50)) {
            let (mut ha, mut hb, mut both) = (Histogram::default(), Histogram::default(), Histogram::default());
            a.iter().for_each(|v| { ha.record(*v); both.record(*v) });
            b.iter().for_each(|v| { hb.record(*v); both.record(*v) });
            ha.merge(&hb);
            prop_assert_eq!(ha, both);
        }
    }
}
