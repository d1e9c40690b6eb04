//! The state machine of a queue subscription, with no I/O.
//!
//! Per partition it keeps a *floor* (every offset below is done: acked or dead-lettered), the
//! done offsets above the floor, delivery counts, and nack delays; across partitions it keeps
//! the leases in flight, messages ready for redelivery, messages scheduled for later, and —
//! for ordered-by-key subscriptions — a queue per key so that at most one message of a key is
//! out at a time. The glue in `subscription.rs` reads records from the log and journals the
//! changes this module makes.

use std::collections::{BTreeSet, HashMap, VecDeque};

use switchboard_core::Timestamp;
use switchboard_core::contract::DeadLetterReason;

use crate::journal::{Entry, PartitionSnapshot, Snapshot};

/// (partition, offset)
pub(crate) type Pos = (u32, u64);

/// Identifies one consumer (member) of a subscription.
pub(crate) type MemberId = u64;

#[derive(Clone, Debug)]
pub(crate) struct Lease {
    pub(crate) id: u64,
    pub(crate) member: MemberId,
    pub(crate) expires_at: Timestamp,
    pub(crate) attempt: u32,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct PartitionState {
    pub(crate) floor: u64,
    pub(crate) done: BTreeSet<u64>,
    pub(crate) next_fetch: u64,
    pub(crate) attempts: HashMap<u64, u32>,
    pub(crate) delays: HashMap<u64, Timestamp>,
}

impl PartitionState {
    fn is_done(&self, o: u64) -> bool {
        o < self.floor || self.done.contains(&o)
    }

    fn mark_done(&mut self, o: u64) {
        if o >= self.floor {
            self.done.insert(o);
        }
        self.attempts.remove(&o);
        self.delays.remove(&o);
        while self.done.remove(&self.floor) {
            self.floor += 1;
        }
        self.next_fetch = self.next_fetch.max(self.floor);
    }

    /// Messages below `start` were deleted by retention: they count as done.
    fn clamp_to(&mut self, start: u64) {
        if self.floor < start {
            self.floor = start;
            self.done = self.done.split_off(&start);
            self.attempts.retain(|o, _| *o >= start);
            self.delays.retain(|o, _| *o >= start);
            while self.done.remove(&self.floor) {
                self.floor += 1;
            }
        }
        self.next_fetch = self.next_fetch.max(self.floor);
    }
}

/// Why a message is on its way to the dead-letter topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    pub(crate) pos: Pos,
    pub(crate) reason: DeadLetterReason,
    pub(crate) attempts: u32,
    pub(crate) last_error: Option<String>,
}

/// What the scheduler needs to know of a message read from the log.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Incoming<'a> {
    /// Hold it back until then.
    pub(crate) deliver_at: Option<Timestamp>,
    /// Its partition key.
    pub(crate) key: Option<&'a str>,
    /// A redriven message meant for another subscription.
    pub(crate) foreign: bool,
}

/// The subscription settings the scheduler applies.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Rules {
    pub(crate) ordered: bool,
    pub(crate) max_deliveries: Option<u32>,
}

/// What the glue should do with a freshly read message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    Deliver,
    /// Already done, for another subscription, or held (scheduled / behind its key).
    Skip,
}

/// Result of settling a receipt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SettleError {
    Unknown,
    Expired,
}

#[derive(Debug, Default)]
pub(crate) struct QueueState {
    pub(crate) parts: Vec<PartitionState>,
    pub(crate) inflight: HashMap<Pos, Lease>,
    /// Acks whose journal entry is being written: done once it is durable, leased again if
    /// the write fails (so a failed ack never lets a message go).
    settling: HashMap<Pos, Lease>,
    expiry: BTreeSet<(Timestamp, Pos)>,
    pub(crate) ready: BTreeSet<Pos>,
    scheduled: BTreeSet<(Timestamp, Pos)>,
    /// Ordered by key: the outstanding offsets of each key, oldest first; the head is the one
    /// that may be out.
    key_queues: HashMap<String, VecDeque<Pos>>,
    keys: HashMap<Pos, String>,
    pub(crate) dead_letters: VecDeque<DeadLetter>,
    dead_lettering: BTreeSet<Pos>,
    pub(crate) dead_lettered: u64,
    /// Deliveries each member holds; a member that left is dropped once it holds none, so
    /// one-off consumers (a REST receive each) do not accumulate.
    member_inflight: HashMap<MemberId, usize>,
    /// Members attached now.
    members: std::collections::HashSet<MemberId>,
}

impl QueueState {
    pub(crate) fn new(starts: &[u64]) -> QueueState {
        let parts = starts
            .iter()
            .map(|&s| PartitionState { floor: s, next_fetch: s, ..Default::default() })
            .collect();
        QueueState { parts, ..Default::default() }
    }

    /// Replays one journal entry (merge semantics, see `journal.rs`).
    pub(crate) fn apply(&mut self, e: &Entry) {
        match e {
            Entry::Delivered { partition, offset, attempt } => {
                if let Some(p) = self.parts.get_mut(*partition as usize)
                    && !p.is_done(*offset)
                {
                    let a = p.attempts.entry(*offset).or_insert(0);
                    *a = (*a).max(*attempt);
                }
            }
            Entry::Acked { partition, offset } => {
                if let Some(p) = self.parts.get_mut(*partition as usize) {
                    p.mark_done(*offset);
                }
            }
            Entry::DeadLettered { partition, offset } => {
                if let Some(p) = self.parts.get_mut(*partition as usize) {
                    if !p.is_done(*offset) {
                        self.dead_lettered += 1;
                    }
                    p.mark_done(*offset);
                }
            }
            Entry::Delayed { partition, offset, not_before } => {
                if let Some(p) = self.parts.get_mut(*partition as usize)
                    && !p.is_done(*offset)
                {
                    let d = p.delays.entry(*offset).or_insert(*not_before);
                    *d = (*d).max(*not_before);
                }
            }
            Entry::Committed { .. } => {}
            Entry::Snapshot(s) => {
                self.dead_lettered = s.dead_lettered;
                for (i, ps) in s.partitions.iter().enumerate() {
                    let Some(p) = self.parts.get_mut(i) else { continue };
                    if ps.floor > p.floor {
                        p.clamp_to(ps.floor);
                    }
                    for &o in &ps.done {
                        p.mark_done(o);
                    }
                    for &(o, a) in &ps.attempts {
                        if !p.is_done(o) {
                            let e = p.attempts.entry(o).or_insert(0);
                            *e = (*e).max(a);
                        }
                    }
                    for &(o, t) in &ps.delays {
                        if !p.is_done(o) {
                            let e = p.delays.entry(o).or_insert(t);
                            *e = (*e).max(t);
                        }
                    }
                }
            }
        }
    }

    /// The whole state as a journal snapshot. Leases in flight are not state: after a restart
    /// their messages are delivered again.
    pub(crate) fn snapshot(&self) -> Entry {
        let partitions = self
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| PartitionSnapshot {
                floor: p.floor,
                seq: 0,
                // An ack being journaled may sit in a segment this snapshot replaces.
                done: p
                    .done
                    .iter()
                    .copied()
                    .chain(self.settling.keys().filter(|s| s.0 as usize == i && s.1 >= p.floor).map(|s| s.1))
                    .collect(),
                attempts: p.attempts.iter().map(|(o, a)| (*o, *a)).collect(),
                delays: p.delays.iter().map(|(o, t)| (*o, *t)).collect(),
            })
            .collect();
        Entry::Snapshot(Snapshot { partitions, dead_lettered: self.dead_lettered })
    }

    /// Moves expired leases back to ready, or to the dead-letter queue when they have used
    /// up their deliveries; releases scheduled messages that are due.
    pub(crate) fn tick(&mut self, now: Timestamp, max_deliveries: Option<u32>) {
        while let Some(&(at, pos)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.expiry.pop_first();
            if let Some(lease) = self.inflight.remove(&pos) {
                self.release_member(lease.member);
                self.retry_or_dead_letter(
                    pos,
                    lease.attempt,
                    max_deliveries,
                    DeadLetterReason::LeaseExpired,
                    None,
                    None,
                );
            }
        }
        while let Some(&(at, pos)) = self.scheduled.first() {
            if at > now {
                break;
            }
            self.scheduled.pop_first();
            self.ready.insert(pos);
        }
    }

    /// The earliest time something scheduled or leased changes state.
    pub(crate) fn next_due(&self) -> Option<Timestamp> {
        let a = self.expiry.first().map(|x| x.0);
        let b = self.scheduled.first().map(|x| x.0);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn retry_or_dead_letter(
        &mut self,
        pos: Pos,
        attempt: u32,
        max_deliveries: Option<u32>,
        reason: DeadLetterReason,
        delay_until: Option<Timestamp>,
        last_error: Option<String>,
    ) {
        if max_deliveries.is_some_and(|m| attempt >= m) {
            self.dead_lettering.insert(pos);
            self.dead_letters.push_back(DeadLetter { pos, reason, attempts: attempt, last_error });
        } else if let Some(at) = delay_until {
            self.scheduled.insert((at, pos));
        } else {
            self.ready.insert(pos);
        }
    }

    fn release_member(&mut self, member: MemberId) {
        if let Some(n) = self.member_inflight.get_mut(&member) {
            *n = n.saturating_sub(1);
            if *n == 0 && !self.members.contains(&member) {
                self.member_inflight.remove(&member);
            }
        }
    }

    /// A consumer attached.
    pub(crate) fn member_joined(&mut self, member: MemberId) {
        self.members.insert(member);
    }

    /// A consumer detached; its leases run on until settled or expired.
    pub(crate) fn member_left(&mut self, member: MemberId) {
        self.members.remove(&member);
        if self.member_inflight.get(&member) == Some(&0) {
            self.member_inflight.remove(&member);
        }
    }

    /// Consumers attached now.
    pub(crate) fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Members with bookkeeping (attached, or departed with deliveries outstanding).
    #[cfg(test)]
    pub(crate) fn tracked_members(&self) -> usize {
        self.member_inflight.len().max(self.members.len())
    }

    /// Decides what to do with a message read from the log for the first time (or re-read
    /// after a restart).
    pub(crate) fn admit_new(&mut self, pos: Pos, now: Timestamp, msg: Incoming<'_>, rules: Rules) -> Admit {
        let Incoming { deliver_at, key, foreign } = msg;
        let Rules { ordered, max_deliveries } = rules;
        let p = &mut self.parts[pos.0 as usize];
        p.next_fetch = p.next_fetch.max(pos.1 + 1);
        if p.is_done(pos.1) {
            return Admit::Skip;
        }
        if foreign {
            p.mark_done(pos.1);
            return Admit::Skip;
        }
        let not_before = match (deliver_at, p.delays.get(&pos.1).copied()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let held_by_key = match (ordered, key) {
            (true, Some(k)) => {
                self.keys.insert(pos, k.to_owned());
                let q = self.key_queues.entry(k.to_owned()).or_default();
                q.push_back(pos);
                q.len() > 1
            }
            _ => false,
        };
        if held_by_key {
            return Admit::Skip;
        }
        if self.exhausted(pos, max_deliveries) {
            return Admit::Skip;
        }
        match not_before {
            Some(t) if t > now => {
                self.scheduled.insert((t, pos));
                Admit::Skip
            }
            _ => Admit::Deliver,
        }
    }

    /// A message that used up its deliveries before a restart (its last lease died with the
    /// process) goes to the dead-letter queue instead of out again. Returns true if so.
    pub(crate) fn exhausted(&mut self, pos: Pos, max_deliveries: Option<u32>) -> bool {
        let attempts = self.parts[pos.0 as usize].attempts.get(&pos.1).copied().unwrap_or(0);
        if max_deliveries.is_none_or(|m| attempts < m) {
            return false;
        }
        self.retry_or_dead_letter(pos, attempts, max_deliveries, DeadLetterReason::LeaseExpired, None, None);
        true
    }

    /// Holds a message until `at` (its `deliver_at` is still in the future).
    pub(crate) fn schedule(&mut self, pos: Pos, at: Timestamp) {
        self.scheduled.insert((at, pos));
    }

    /// Takes the next ready redelivery, if any.
    pub(crate) fn pop_ready(&mut self) -> Option<Pos> {
        self.ready.pop_first()
    }

    /// Records a delivery: a new lease; returns its attempt number.
    pub(crate) fn lease(&mut self, pos: Pos, member: MemberId, lease_id: u64, expires_at: Timestamp) -> u32 {
        let attempt = {
            let a = self.parts[pos.0 as usize].attempts.entry(pos.1).or_insert(0);
            *a += 1;
            *a
        };
        self.parts[pos.0 as usize].delays.remove(&pos.1);
        self.inflight.insert(pos, Lease { id: lease_id, member, expires_at, attempt });
        self.expiry.insert((expires_at, pos));
        *self.member_inflight.entry(member).or_insert(0) += 1;
        attempt
    }

    /// Finds the lease a receipt names, expiring it first if its time is up.
    fn take_lease(
        &mut self,
        pos: Pos,
        lease_id: u64,
        now: Timestamp,
        max: Option<u32>,
    ) -> Result<Lease, SettleError> {
        if self.settling.contains_key(&pos) {
            return Err(SettleError::Unknown);
        }
        let Some(lease) = self.inflight.get(&pos) else {
            let p = self.parts.get(pos.0 as usize).ok_or(SettleError::Unknown)?;
            // Waiting for redelivery (its lease ran out) versus never issued / already done.
            return if !p.is_done(pos.1) && p.attempts.contains_key(&pos.1) && pos.1 < p.next_fetch {
                Err(SettleError::Expired)
            } else {
                Err(SettleError::Unknown)
            };
        };
        if lease.id != lease_id {
            return Err(if lease_id < lease.id { SettleError::Expired } else { SettleError::Unknown });
        }
        if lease.expires_at <= now {
            self.tick(now, max);
            return Err(SettleError::Expired);
        }
        let lease = self.inflight.remove(&pos).ok_or(SettleError::Unknown)?;
        self.expiry.remove(&(lease.expires_at, pos));
        self.release_member(lease.member);
        Ok(lease)
    }

    /// Starts an ack: the lease is claimed; [`confirm_ack`](Self::confirm_ack) finishes it
    /// once its journal entry is durable, [`restore_ack`](Self::restore_ack) undoes it.
    pub(crate) fn ack(
        &mut self,
        pos: Pos,
        lease_id: u64,
        now: Timestamp,
        max: Option<u32>,
    ) -> Result<(), SettleError> {
        let lease = self.take_lease(pos, lease_id, now, max)?;
        self.settling.insert(pos, lease);
        Ok(())
    }

    /// The ack's journal entry is durable: the message is done.
    pub(crate) fn confirm_ack(&mut self, pos: Pos) {
        if self.settling.remove(&pos).is_some() {
            self.finish(pos);
        }
    }

    /// The ack's journal entry failed: the delivery is leased again, as before the ack.
    pub(crate) fn restore_ack(&mut self, pos: Pos) {
        if let Some(lease) = self.settling.remove(&pos) {
            self.expiry.insert((lease.expires_at, pos));
            *self.member_inflight.entry(lease.member).or_insert(0) += 1;
            self.inflight.insert(pos, lease);
        }
    }

    /// Leases running plus acks being journaled.
    pub(crate) fn in_flight(&self) -> usize {
        self.inflight.len() + self.settling.len()
    }

    /// Nacks: deliver again (after `delay_until`), or dead-letter if deliveries are used up.
    /// Returns the entry to journal, if any.
    pub(crate) fn nack(
        &mut self,
        pos: Pos,
        lease_id: u64,
        now: Timestamp,
        max: Option<u32>,
        delay_until: Option<Timestamp>,
        error: Option<String>,
    ) -> Result<Option<Entry>, SettleError> {
        let lease = self.take_lease(pos, lease_id, now, max)?;
        let delay_until = delay_until.filter(|t| *t > now);
        self.retry_or_dead_letter(pos, lease.attempt, max, DeadLetterReason::Nacked, delay_until, error);
        Ok(delay_until.and_then(|t| {
            if self.dead_lettering.contains(&pos) {
                return None;
            }
            self.parts[pos.0 as usize].delays.insert(pos.1, t);
            Some(Entry::Delayed { partition: pos.0, offset: pos.1, not_before: t })
        }))
    }

    /// Extends a lease to `until`.
    pub(crate) fn extend(
        &mut self,
        pos: Pos,
        lease_id: u64,
        now: Timestamp,
        max: Option<u32>,
        until: Timestamp,
    ) -> Result<(), SettleError> {
        let lease = self.take_lease(pos, lease_id, now, max)?;
        self.inflight.insert(pos, Lease { expires_at: until, ..lease.clone() });
        self.expiry.insert((until, pos));
        *self.member_inflight.entry(lease.member).or_insert(0) += 1;
        Ok(())
    }

    /// A dead letter has been stored in the dead-letter topic.
    pub(crate) fn dead_lettered(&mut self, pos: Pos) {
        self.dead_lettering.remove(&pos);
        self.dead_lettered += 1;
        self.finish(pos);
    }

    /// A message could not be read any more (deleted by retention): count it as done.
    pub(crate) fn forget(&mut self, pos: Pos) {
        self.dead_lettering.remove(&pos);
        self.finish(pos);
    }

    fn finish(&mut self, pos: Pos) {
        self.parts[pos.0 as usize].mark_done(pos.1);
        if let Some(k) = self.keys.remove(&pos)
            && let Some(q) = self.key_queues.get_mut(&k)
        {
            q.retain(|p| *p != pos);
            match q.front() {
                None => {
                    self.key_queues.remove(&k);
                }
                Some(&next) => {
                    // The next message of this key may go out now (unless it is delayed).
                    let nb = self.parts[next.0 as usize].delays.get(&next.1).copied();
                    match nb {
                        Some(t) => {
                            self.scheduled.insert((t, next));
                        }
                        None => {
                            self.ready.insert(next);
                        }
                    }
                }
            }
        }
    }

    /// Retention moved a partition's start: offsets below are gone.
    pub(crate) fn clamp(&mut self, partition: u32, start: u64) {
        if let Some(p) = self.parts.get_mut(partition as usize) {
            p.clamp_to(start);
        }
    }

    pub(crate) fn in_flight_of(&self, member: MemberId) -> usize {
        self.member_inflight.get(&member).copied().unwrap_or(0)
    }

    /// Messages not yet done in `partition`, given its end offset.
    pub(crate) fn backlog(&self, partition: u32, end: u64) -> u64 {
        let p = &self.parts[partition as usize];
        end.saturating_sub(p.floor).saturating_sub(p.done.range(..end).count() as u64)
    }

    pub(crate) fn scheduled_len(&self) -> usize {
        self.scheduled.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn departed_members_are_forgotten_once_their_deliveries_settle() {
        let now = Timestamp(1_000);
        let mut q = QueueState::new(&[0]);
        for member in 0..1000 {
            // A one-off consumer: joins, takes one message, leaves, and its ack comes later.
            q.member_joined(member);
            q.lease((0, member), member, member, Timestamp(60_000));
            q.member_left(member);
            assert!(q.ack((0, member), member, now, None).is_ok());
            q.confirm_ack((0, member));
        }
        q.member_joined(5_000);
        q.member_left(5_000);
        assert_eq!(q.tracked_members(), 0, "nothing kept for consumers that are gone");
        assert_eq!(q.parts[0].floor, 1000);
    }
}
