//! Which offset a stream consumer may commit.
//!
//! A commit of offset N tells the server "everything before N is done", so acks that arrive
//! out of order cannot each be committed: only the highest offset below which every delivery
//! is acked. A delivery that is nacked or dropped stays unacked and holds the commit point
//! back; it is read again when the subscription is next opened (streams have no per-message
//! redelivery).

use std::collections::BTreeSet;

/// One partition of one consume stream.
#[derive(Debug, Default)]
pub(crate) struct PartitionOffsets {
    /// Delivered and not acked.
    unacked: BTreeSet<u64>,
    /// The highest offset delivered.
    highest: Option<u64>,
    /// The last commit sent (the next offset to read); before the first, the first offset
    /// delivered.
    committed: u64,
}

impl PartitionOffsets {
    /// Records a delivery.
    pub(crate) fn delivered(&mut self, offset: u64) {
        if self.highest.is_none() {
            // The stream started here: everything before is committed already.
            self.committed = self.committed.max(offset);
        }
        self.unacked.insert(offset);
        self.highest = Some(self.highest.map_or(offset, |h| h.max(offset)));
    }

    /// Records the ack of `offset`; returns the offset to commit if the commit point moved.
    pub(crate) fn acked(&mut self, offset: u64) -> Option<u64> {
        self.unacked.remove(&offset);
        let point = match self.unacked.first() {
            Some(&first) => first,
            None => self.highest?.saturating_add(1),
        };
        (point > self.committed).then(|| {
            self.committed = point;
            point
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_acks_commit_the_contiguous_prefix() {
        let mut p = PartitionOffsets::default();
        for o in 10..15 {
            p.delivered(o);
        }
        assert_eq!(p.acked(12), None, "10 and 11 are still open");
        assert_eq!(p.acked(10), Some(11));
        assert_eq!(p.acked(11), Some(13));
        assert_eq!(p.acked(14), None, "13 is still open");
        assert_eq!(p.acked(13), Some(15));
        assert_eq!(p.acked(13), None, "a repeated ack commits nothing new");
    }

    #[test]
    fn a_nacked_offset_holds_the_commit_back() {
        let mut p = PartitionOffsets::default();
        p.delivered(0);
        p.delivered(1);
        // 0 is nacked: never acked.
        assert_eq!(p.acked(1), None);
        p.delivered(2);
        assert_eq!(p.acked(2), None);
    }
}
