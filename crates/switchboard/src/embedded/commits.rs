//! Turns per-message acks of a stream subscription into in-order offset commits.
//!
//! A stream commit means "everything before this offset is done", but handlers settle in
//! any order. So a partition's commit point only moves up to its lowest delivery still
//! unsettled: acking offset 7 while 5 is pending commits nothing past 5.

use std::collections::{BTreeSet, HashMap};

#[derive(Default)]
struct PartitionCursor {
    pending: BTreeSet<u64>,
    next_after_seen: u64,
    committed: u64,
}

/// The unsettled deliveries of one stream member, per partition.
#[derive(Default)]
pub(crate) struct CommitTracker {
    partitions: HashMap<u32, PartitionCursor>,
}

impl CommitTracker {
    /// Records a delivery handed to the caller.
    pub(crate) fn delivered(&mut self, partition: u32, offset: u64) {
        // A member's first delivery of a partition is at or past the committed offset, so
        // nothing below it needs committing.
        let c = self
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionCursor { committed: offset, ..PartitionCursor::default() });
        c.pending.insert(offset);
        c.next_after_seen = c.next_after_seen.max(offset + 1);
    }

    /// Records an ack; returns the offset to commit if the commit point moved.
    pub(crate) fn acked(&mut self, partition: u32, offset: u64) -> Option<u64> {
        let c = self.partitions.get_mut(&partition)?;
        c.pending.remove(&offset);
        let point = c.pending.first().copied().unwrap_or(c.next_after_seen);
        (point > c.committed).then(|| {
            c.committed = point;
            point
        })
    }

    /// Unsettled deliveries over all partitions.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.partitions.values().map(|c| c.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_point_waits_for_the_lowest_pending_offset() {
        let mut t = CommitTracker::default();
        for o in 5..=7 {
            t.delivered(0, o);
        }
        assert_eq!(t.acked(0, 7), None);
        assert_eq!(t.acked(0, 5), Some(6));
        assert_eq!(t.acked(0, 6), Some(8));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn partitions_commit_independently() {
        let mut t = CommitTracker::default();
        t.delivered(0, 1);
        t.delivered(1, 9);
        assert_eq!(t.acked(1, 9), Some(10));
        assert_eq!(t.pending(), 1);
    }
}
