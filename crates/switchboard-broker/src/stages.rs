//! Where a message's time goes inside the broker: one latency histogram per stage of its
//! path, recorded as it happens and read by whoever reports them (the server's `/metrics`,
//! the bench).
//!
//! The stages, in the order a message meets them:
//!
//! - [`Stage::Write`]: a publish call entered the topic → its batch was written to the
//!   partition's file (validation, deduplication, encoding, waiting for the append lock,
//!   the `write`);
//! - [`Stage::FsyncWait`]: written → durable (the group commit that covered it; only under
//!   fsync `always`);
//! - [`Stage::Wake`]: durable → a waiting consumer had it in hand (the wake-up of its task
//!   and its read); recorded only for messages a consumer takes while they are the newest of
//!   their partition, so a backlog being drained does not count as wake-up time;
//! - [`Stage::AckDurable`]: an ack reached the subscription → its journal entry was durable.
//!
//! Buckets are fixed (microseconds, about four per decade from 10 µs to 1 s) and counted with
//! relaxed atomics: recording costs a few nanoseconds and no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One stage of a message's path through the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// A publish entered the topic → its batch was written to the file.
    Write,
    /// Written → durable (the group commit's fsync).
    FsyncWait,
    /// Durable → a waiting consumer had the message.
    Wake,
    /// An ack arrived → its journal entry was durable.
    AckDurable,
}

impl Stage {
    /// Every stage, in path order.
    pub const ALL: [Stage; 4] = [Stage::Write, Stage::FsyncWait, Stage::Wake, Stage::AckDurable];

    /// Its label in metrics (`write`, `fsync_wait`, `wake`, `ack_durable`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Write => "write",
            Stage::FsyncWait => "fsync_wait",
            Stage::Wake => "wake",
            Stage::AckDurable => "ack_durable",
        }
    }

    /// Its histogram: the declaration order, which [`Stage::ALL`] follows.
    const fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds of the buckets, microseconds; a last bucket takes everything above.
pub const BUCKET_BOUNDS_US: [u64; 27] = [
    10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000,
    15_000, 20_000, 30_000, 50_000, 75_000, 100_000, 200_000, 500_000, 1_000_000,
];

const BUCKETS: usize = BUCKET_BOUNDS_US.len() + 1;

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

/// What one stage's histogram held when read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageSnapshot {
    /// The stage.
    pub stage: Stage,
    /// Counts per bucket (not cumulative), the last one above [`BUCKET_BOUNDS_US`]'s end.
    pub buckets: Vec<u64>,
    /// Sum of every recorded duration, nanoseconds.
    pub sum_ns: u64,
}

impl StageSnapshot {
    /// Recorded durations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), microseconds; `None` when
    /// nothing was recorded or it lies above the last bound.
    pub fn quantile_upper_us(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return BUCKET_BOUNDS_US.get(i).copied();
            }
        }
        None
    }
}

/// The broker's stage histograms. Cheap to share: one per broker.
#[derive(Default)]
pub(crate) struct StageLatencies {
    stages: [Histogram; Stage::ALL.len()],
}

impl std::fmt::Debug for StageLatencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageLatencies").finish_non_exhaustive()
    }
}

impl StageLatencies {
    /// Records that one message (or one batch) spent `took` in `stage`.
    pub(crate) fn record(&self, stage: Stage, took: Duration) {
        let h = &self.stages[stage.index()];
        let us = took.as_micros();
        let bucket = BUCKET_BOUNDS_US.partition_point(|&bound| u128::from(bound) < us);
        h.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        h.sum_ns.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Every stage's histogram as it is now.
    pub(crate) fn snapshot(&self) -> Vec<StageSnapshot> {
        Stage::ALL
            .iter()
            .map(|&stage| {
                let h = &self.stages[stage.index()];
                StageSnapshot {
                    stage,
                    buckets: h.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
                    sum_ns: h.sum_ns.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_the_bucket_of_their_upper_bound() {
        let s = StageLatencies::default();
        s.record(Stage::Write, Duration::from_micros(10));
        s.record(Stage::Write, Duration::from_micros(11));
        s.record(Stage::Write, Duration::from_millis(2));
        s.record(Stage::Write, Duration::from_secs(3));
        let write = &s.snapshot()[0];
        assert_eq!(write.stage, Stage::Write);
        assert_eq!(write.count(), 4);
        assert_eq!(write.buckets[0], 1, "10 µs is in the ≤ 10 µs bucket");
        assert_eq!(write.buckets[1], 1, "11 µs is in the ≤ 20 µs bucket");
        assert_eq!(write.buckets[13], 1, "2 ms is in the ≤ 2 ms bucket");
        assert_eq!(write.buckets[BUCKETS - 1], 1, "3 s is above the last bound");
        assert_eq!(write.sum_ns, 10_000 + 11_000 + 2_000_000 + 3_000_000_000);
        assert_eq!(write.quantile_upper_us(0.5), Some(20));
        assert_eq!(write.quantile_upper_us(0.75), Some(2_000));
        assert_eq!(write.quantile_upper_us(1.0), None);
        assert!(s.snapshot()[1..].iter().all(|other| other.count() == 0), "other stages untouched");
    }
}
