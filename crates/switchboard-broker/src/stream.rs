//! The state of a stream subscription, with no I/O: committed offsets per partition, the
//! members of the group, which partitions each owns and how far each has read.
//!
//! Partition `p` belongs to the `p mod n`-th member in id order, so assignment is a pure
//! function of the member set; it is recomputed whenever a member joins or leaves, and a
//! partition that changes hands resumes from its committed offset (at-least-once).

use std::collections::{BTreeMap, HashMap};

use crate::journal::{Entry, PartitionSnapshot, Snapshot};
use crate::queue::MemberId;

#[derive(Debug, Default)]
pub(crate) struct StreamState {
    /// (next offset to read, sequence number of the commit that set it)
    pub(crate) committed: Vec<(u64, u64)>,
    seq: u64,
    members: BTreeMap<MemberId, HashMap<u32, u64>>,
    pub(crate) generation: u64,
}

impl StreamState {
    pub(crate) fn new(starts: &[u64]) -> StreamState {
        StreamState { committed: starts.iter().map(|&s| (s, 0)).collect(), ..Default::default() }
    }

    pub(crate) fn apply(&mut self, e: &Entry) {
        match e {
            Entry::Committed { partition, offset, seq } => {
                if let Some(c) = self.committed.get_mut(*partition as usize)
                    && *seq > c.1
                {
                    *c = (*offset, *seq);
                }
                self.seq = self.seq.max(*seq);
            }
            Entry::Snapshot(s) => {
                for (c, p) in self.committed.iter_mut().zip(&s.partitions) {
                    if p.seq > c.1 {
                        *c = (p.floor, p.seq);
                    }
                    self.seq = self.seq.max(p.seq);
                }
            }
            _ => {}
        }
    }

    pub(crate) fn snapshot(&self) -> Entry {
        let partitions = self
            .committed
            .iter()
            .map(|&(floor, seq)| PartitionSnapshot { floor, seq, ..Default::default() })
            .collect();
        Entry::Snapshot(Snapshot { partitions, dead_lettered: 0 })
    }

    pub(crate) fn join(&mut self, member: MemberId) {
        self.members.insert(member, HashMap::new());
        self.rebalance();
    }

    pub(crate) fn leave(&mut self, member: MemberId) {
        if self.members.remove(&member).is_some() {
            self.rebalance();
        }
    }

    fn rebalance(&mut self) {
        self.generation += 1;
        let ids: Vec<MemberId> = self.members.keys().copied().collect();
        if ids.is_empty() {
            return;
        }
        let mut owner_of = HashMap::new();
        for p in 0..self.committed.len() as u32 {
            owner_of.insert(p, ids[p as usize % ids.len()]);
        }
        for (id, positions) in self.members.iter_mut() {
            positions.retain(|p, _| owner_of.get(p) == Some(id));
            for (&p, owner) in &owner_of {
                if owner == id {
                    positions.entry(p).or_insert(self.committed[p as usize].0);
                }
            }
        }
    }

    /// The partitions a member owns, ascending.
    pub(crate) fn assigned(&self, member: MemberId) -> Vec<u32> {
        let mut v: Vec<u32> =
            self.members.get(&member).map(|m| m.keys().copied().collect()).unwrap_or_default();
        v.sort_unstable();
        v
    }

    pub(crate) fn position(&self, member: MemberId, partition: u32) -> Option<u64> {
        self.members.get(&member)?.get(&partition).copied()
    }

    pub(crate) fn set_position(&mut self, member: MemberId, partition: u32, to: u64) {
        if let Some(p) = self.members.get_mut(&member).and_then(|m| m.get_mut(&partition)) {
            *p = to;
        }
    }

    /// Commits `offset` as the next offset to read; a member may only commit what it owns.
    pub(crate) fn commit(&mut self, member: Option<MemberId>, partition: u32, offset: u64) -> Option<Entry> {
        if let Some(m) = member
            && self.position(m, partition).is_none()
        {
            return None;
        }
        self.seq += 1;
        self.committed[partition as usize] = (offset, self.seq);
        Some(Entry::Committed { partition, offset, seq: self.seq })
    }

    /// Moves the committed offset and the owner's read position of `partition` to `offset`.
    pub(crate) fn seek(&mut self, partition: u32, offset: u64) -> Entry {
        for positions in self.members.values_mut() {
            if let Some(p) = positions.get_mut(&partition) {
                *p = offset;
            }
        }
        self.seq += 1;
        self.committed[partition as usize] = (offset, self.seq);
        Entry::Committed { partition, offset, seq: self.seq }
    }

    /// Retention moved a partition's start past what this subscription had read.
    pub(crate) fn clamp(&mut self, partition: u32, start: u64) {
        for positions in self.members.values_mut() {
            if let Some(p) = positions.get_mut(&partition) {
                *p = (*p).max(start);
            }
        }
        if let Some(c) = self.committed.get_mut(partition as usize) {
            c.0 = c.0.max(start);
        }
    }

    pub(crate) fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Messages read by members but not yet committed.
    pub(crate) fn in_flight(&self) -> u64 {
        self.members
            .values()
            .flat_map(|m| m.iter())
            .map(|(p, pos)| pos.saturating_sub(self.committed[*p as usize].0))
            .sum()
    }
}
