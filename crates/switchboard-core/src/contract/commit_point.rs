//! Turning per-message acks of a stream subscription into in-order offset commits, for every
//! backend that keeps a stream cursor.
//!
//! A stream commit means "everything before this offset is done", but handlers settle in any
//! order. So a partition's commit point only moves up to its lowest delivery still
//! unsettled: acking offset 7 while 5 is pending commits nothing past 5.

use std::collections::BTreeMap;

/// The unsettled deliveries of one partition of a stream subscription, and its commit point.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitPoint {
    /// Offsets handed out and not yet acked, with how many deliveries of each are open (a
    /// reconnect can hand an offset out again while the first delivery is still held).
    pending: BTreeMap<u64, u32>,
    /// One past the highest offset handed out (before any: the committed offset, if known).
    next: Option<u64>,
    /// The last commit point reported.
    committed: Option<u64>,
    /// Nothing is stored for this partition yet: report the first point computed.
    unstored: bool,
}

impl CommitPoint {
    /// A partition whose committed offset is not known: the first delivery is taken as the
    /// commit point (a reader starts at or past it, so nothing below needs committing).
    pub fn new() -> CommitPoint {
        CommitPoint::default()
    }

    /// A partition for which nothing is stored yet (a backend keeping the position itself):
    /// the first point computed is reported, even the first delivery's own offset, so that
    /// the position is stored before anything is acked past it.
    pub fn unstored() -> CommitPoint {
        CommitPoint { unstored: true, ..CommitPoint::default() }
    }

    /// A partition committed up to `next` (the next offset to read).
    pub fn resuming_at(next: u64) -> CommitPoint {
        CommitPoint { pending: BTreeMap::new(), next: Some(next), committed: Some(next), unstored: false }
    }

    /// Records a delivery handed out (or read ahead).
    pub fn delivered(&mut self, offset: u64) {
        if self.committed.is_none() && !self.unstored {
            self.committed = Some(offset);
        }
        *self.pending.entry(offset).or_default() += 1;
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// Records the ack of one delivery of `offset`; returns the new commit point if it moved.
    pub fn acked(&mut self, offset: u64) -> Option<u64> {
        if let Some(open) = self.pending.get_mut(&offset) {
            *open -= 1;
            if *open == 0 {
                self.pending.remove(&offset);
            }
        }
        let point = self.resume_at()?;
        self.committed.is_none_or(|c| point > c).then(|| {
            self.committed = Some(point);
            point
        })
    }

    /// Where a reader should resume: the lowest unsettled offset, else one past the highest
    /// handed out, else the committed offset; `None` when nothing is known yet.
    pub fn resume_at(&self) -> Option<u64> {
        self.pending.keys().next().copied().or(self.next)
    }

    /// The last commit point reported, if any.
    pub fn committed(&self) -> Option<u64> {
        self.committed
    }

    /// Deliveries handed out and not yet acked.
    pub fn pending(&self) -> usize {
        self.pending.values().map(|&n| n as usize).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_point_waits_for_the_lowest_pending_offset() {
        let mut c = CommitPoint::new();
        for o in 5..=7 {
            c.delivered(o);
        }
        assert_eq!(c.acked(7), None, "5 and 6 are still open");
        assert_eq!(c.acked(5), Some(6));
        assert_eq!(c.acked(6), Some(8));
        assert_eq!(c.acked(6), None, "a repeated ack commits nothing new");
        assert_eq!((c.pending(), c.resume_at()), (0, Some(8)));
    }

    #[test]
    fn a_resumed_partition_starts_at_its_commit_and_skips_gaps() {
        let mut c = CommitPoint::resuming_at(10);
        assert_eq!((c.resume_at(), c.committed()), (Some(10), Some(10)));
        c.delivered(10);
        c.delivered(12); // 11 was deleted from the log
        assert_eq!(c.acked(12), None, "10 is still unsettled");
        assert_eq!(c.acked(10), Some(13));
    }

    #[test]
    fn an_offset_handed_out_twice_stays_pending_until_both_are_acked() {
        let mut c = CommitPoint::new();
        c.delivered(0);
        c.delivered(0);
        c.delivered(1);
        assert_eq!(c.acked(1), None);
        assert_eq!(c.acked(0), None, "the second delivery of 0 is open");
        assert_eq!(c.acked(0), Some(2));
    }

    #[test]
    fn an_unstored_partition_reports_its_first_point_even_below_an_ack() {
        let mut c = CommitPoint::unstored();
        c.delivered(0);
        c.delivered(1);
        assert_eq!(c.acked(1), Some(0), "0 is open: store the position at 0");
        assert_eq!(c.acked(0), Some(2));
    }

    #[test]
    fn an_offset_never_acked_holds_the_commit_back() {
        let mut c = CommitPoint::new();
        c.delivered(0);
        c.delivered(1);
        c.delivered(2);
        assert_eq!(c.acked(1), None);
        assert_eq!(c.acked(2), None);
        assert_eq!(c.resume_at(), Some(0));
    }
}
