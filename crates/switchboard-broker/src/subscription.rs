//! A subscription: its state machine (queue or stream), its journal, and the glue that
//! reads messages from the topic's partitions for it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use switchboard_core::{SharedClock, SubscriptionName, Timestamp, TopicName};
use switchboard_storage::{Log, Record, Storage, StorageError};
use tokio::sync::Notify;

use crate::codec::{self, StoredMessage};
use crate::config::{SubscriptionConfig, SubscriptionMode};
use crate::delivery::{BrokerDelivery, PartitionStats, SeekTo, SubscriptionStats};
use crate::error::{BrokerError, Result};
use crate::journal::{self, Entry};
use crate::queue::{Admit, DeadLetter, Incoming, MemberId, Pos, QueueState, Rules, SettleError};
use crate::receipt::Receipt;
use crate::stream::StreamState;
use crate::topic::{Topic, log_config};

/// Largest read from a partition in one go.
const READ_BYTES: usize = 1 << 20;
/// Longest lease extension one call may ask for.
pub(crate) const MAX_LEASE_EXTENSION: Duration = Duration::from_secs(12 * 3600);
/// Longest nack delay.
pub(crate) const MAX_NACK_DELAY: Duration = Duration::from_secs(14 * 24 * 3600);

/// What is persisted in `subscription.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SubscriptionMeta {
    pub(crate) config: SubscriptionConfig,
    /// The offset each partition started at when the subscription was created.
    pub(crate) starts: Vec<u64>,
}

enum State {
    Queue(Box<QueueState>),
    Stream(StreamState),
}

pub(crate) struct Subscription {
    pub(crate) name: SubscriptionName,
    pub(crate) topic: TopicName,
    pub(crate) config: SubscriptionConfig,
    pub(crate) dir: PathBuf,
    journal: Log,
    state: Mutex<State>,
    /// Woken when messages may have become available without a publish (nack, expiry,
    /// rebalance, ack releasing a key).
    pub(crate) changed: Notify,
    next_member: AtomicU64,
    next_lease: AtomicU64,
    rotate: AtomicU32,
    journal_size_after_compaction: AtomicU64,
    clock: SharedClock,
    stages: Arc<crate::stages::StageLatencies>,
}

fn settle_error(e: SettleError, r: &Receipt) -> BrokerError {
    match e {
        SettleError::Unknown => BrokerError::UnknownReceipt(r.to_string()),
        SettleError::Expired => BrokerError::LeaseExpired(r.to_string()),
    }
}

impl Subscription {
    pub(crate) fn open(
        storage: &Arc<dyn Storage>,
        dir: PathBuf,
        topic: &Topic,
        name: SubscriptionName,
        meta: SubscriptionMeta,
        clock: SharedClock,
    ) -> Result<Subscription> {
        let mut log_cfg = log_config(&topic.config);
        log_cfg.segment_max_bytes = 64 * 1024 * 1024;
        let journal = Log::open(storage.clone(), dir.join("journal"), log_cfg, clock.clone())?;
        let mut starts = meta.starts.clone();
        starts.resize(topic.partition_count() as usize, 0);
        let mut state = match meta.config.mode {
            SubscriptionMode::Queue => State::Queue(Box::new(QueueState::new(&starts))),
            SubscriptionMode::Stream => State::Stream(StreamState::new(&starts)),
        };
        let mut at = journal.start_offset();
        let mut last_write = Timestamp::ZERO;
        loop {
            let records = journal.read(at, 1024, 4 << 20)?;
            let Some(last) = records.last() else { break };
            at = last.offset + 1;
            last_write = last_write.max(last.timestamp);
            for r in records {
                let entries = journal::decode(r.payload).map_err(|e| BrokerError::CorruptState {
                    path: dir.join("journal").display().to_string(),
                    reason: e.to_string(),
                })?;
                for e in &entries {
                    match &mut state {
                        State::Queue(q) => q.apply(e),
                        State::Stream(s) => s.apply(e),
                    }
                }
            }
        }
        let size = journal.size_bytes();
        Ok(Subscription {
            name,
            topic: topic.name.clone(),
            config: meta.config,
            dir,
            journal,
            state: Mutex::new(state),
            changed: Notify::new(),
            next_member: AtomicU64::new(1),
            // Lease numbers start from the clock (2^20 per millisecond), and after the last
            // journal write even if the clock stepped back, so that a receipt issued before a
            // restart never matches a lease issued after it.
            next_lease: AtomicU64::new(
                clock.now().max(Timestamp(last_write.0 + 1)).0.saturating_mul(1 << 20),
            ),
            rotate: AtomicU32::new(0),
            journal_size_after_compaction: AtomicU64::new(size),
            clock,
            stages: topic.stages.clone(),
        })
    }

    /// The journal's size on disk, bytes: what opening the subscription replays.
    pub(crate) fn journal_bytes(&self) -> u64 {
        self.journal.size_bytes()
    }

    pub(crate) fn wrong_mode(&self, expected: SubscriptionMode) -> BrokerError {
        BrokerError::WrongMode {
            subscription: self.name.clone(),
            actual: self.config.mode.as_str(),
            expected: expected.as_str(),
        }
    }

    async fn journal(&self, entries: &[Entry]) -> Result<()> {
        if !entries.is_empty() {
            self.journal.append(&[journal::encode(entries)]).await?;
        }
        Ok(())
    }

    /// Adds a consumer; in stream mode the group rebalances.
    pub(crate) fn join(&self) -> MemberId {
        let id = self.next_member.fetch_add(1, Ordering::Relaxed);
        match &mut *self.state.lock() {
            State::Stream(s) => s.join(id),
            State::Queue(q) => q.member_joined(id),
        }
        self.changed.notify_waiters();
        id
    }

    /// Removes a consumer; in stream mode the group rebalances. Queue leases of the member
    /// run out on their own.
    pub(crate) fn leave(&self, member: MemberId) {
        match &mut *self.state.lock() {
            State::Stream(s) => s.leave(member),
            State::Queue(q) => q.member_left(member),
        }
        self.changed.notify_waiters();
    }

    fn max_deliveries(&self) -> Option<u32> {
        self.config.max_deliveries
    }

    /// Hands out up to `max` messages to `member`.
    pub(crate) fn receive(
        &self,
        topic: &Topic,
        member: MemberId,
        max: usize,
        max_in_flight: usize,
    ) -> Result<Vec<BrokerDelivery>> {
        let now = self.clock.now();
        let mut out = Vec::new();
        let mut entries = Vec::new();
        {
            let mut guard = self.state.lock();
            match &mut *guard {
                State::Queue(q) => {
                    let room = max_in_flight.saturating_sub(q.in_flight_of(member));
                    self.fill_queue(q, topic, member, max.min(room), now, &mut out, &mut entries)?;
                }
                State::Stream(s) => self.fill_stream(s, topic, member, max, &mut out)?,
            }
        }
        // Delivery counts are written before the messages are handed out, so attempts survive
        // a process crash; they are not waited on for an fsync (the next group commit, at the
        // latest the ack's, covers them), so a power cut may lose the last few counts. If the
        // write fails, the leases simply run out and redeliver.
        if !entries.is_empty() {
            self.journal.append_unsynced(&[journal::encode(&entries)])?;
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn fill_queue(
        &self,
        q: &mut QueueState,
        topic: &Topic,
        member: MemberId,
        want: usize,
        now: Timestamp,
        out: &mut Vec<BrokerDelivery>,
        entries: &mut Vec<Entry>,
    ) -> Result<()> {
        q.tick(now, self.max_deliveries());
        // Redeliveries first: they are older than anything new.
        while out.len() < want {
            let Some(pos) = q.pop_ready() else { break };
            match read_one(topic, pos) {
                Ok(Some((record, stored))) => {
                    if q.exhausted(pos, self.max_deliveries()) {
                        continue;
                    }
                    if let Some(at) = stored.deliver_at.filter(|at| *at > now) {
                        q.schedule(pos, at);
                        continue;
                    }
                    self.lease_into(q, pos, record, stored, member, now, out, entries);
                }
                Ok(None) => q.forget(pos),
                Err(e) => {
                    q.ready.insert(pos);
                    return Err(e);
                }
            }
        }
        let n = topic.partition_count();
        let first = self.rotate.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            if out.len() >= want {
                break;
            }
            let p = (first.wrapping_add(k)) % n;
            let log = &topic.partitions[p as usize];
            let start = log.start_offset();
            if q.parts[p as usize].next_fetch < start {
                q.clamp(p, start);
            }
            while out.len() < want {
                let from = q.parts[p as usize].next_fetch;
                let records = log.read(from, (want - out.len()).max(64), READ_BYTES)?;
                if records.is_empty() {
                    break;
                }
                for record in records {
                    if out.len() >= want {
                        break;
                    }
                    let pos = (p, record.offset);
                    let stored = match codec::decode(record.payload.clone()) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!(topic = %self.topic, partition = p, offset = record.offset, error = %e, "Skipped a stored message that does not decode.");
                            q.admit_new(
                                pos,
                                now,
                                Incoming { foreign: true, ..Incoming::default() },
                                Rules::default(),
                            );
                            continue;
                        }
                    };
                    let incoming = Incoming {
                        deliver_at: stored.deliver_at,
                        key: stored.message.partition_key(),
                        foreign: stored.target.as_ref().is_some_and(|t| *t != self.name),
                    };
                    let rules =
                        Rules { ordered: self.config.ordered_by_key, max_deliveries: self.max_deliveries() };
                    let admit = q.admit_new(pos, now, incoming, rules);
                    if admit == Admit::Deliver {
                        self.lease_into(q, pos, record, stored, member, now, out, entries);
                    }
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn lease_into(
        &self,
        q: &mut QueueState,
        pos: Pos,
        record: Record,
        stored: StoredMessage,
        member: MemberId,
        now: Timestamp,
        out: &mut Vec<BrokerDelivery>,
        entries: &mut Vec<Entry>,
    ) {
        let lease = self.next_lease.fetch_add(1, Ordering::Relaxed);
        let expires = now.saturating_add(Duration::from_millis(self.config.lease_ms));
        let attempt = q.lease(pos, member, lease, expires);
        entries.push(Entry::Delivered { partition: pos.0, offset: pos.1, attempt });
        out.push(BrokerDelivery {
            topic: self.topic.clone(),
            subscription: self.name.clone(),
            partition: pos.0,
            offset: pos.1,
            published_at: record.timestamp,
            attempt,
            receipt: Some(Receipt { partition: pos.0, offset: pos.1, lease }),
            lease_expires_at: Some(expires),
            message: stored.message,
        });
    }

    fn fill_stream(
        &self,
        s: &mut StreamState,
        topic: &Topic,
        member: MemberId,
        max: usize,
        out: &mut Vec<BrokerDelivery>,
    ) -> Result<()> {
        let parts = s.assigned(member);
        if parts.is_empty() {
            return Ok(());
        }
        let first = self.rotate.fetch_add(1, Ordering::Relaxed) as usize;
        for k in 0..parts.len() {
            if out.len() >= max {
                break;
            }
            let p = parts[(first + k) % parts.len()];
            let log = &topic.partitions[p as usize];
            let Some(mut pos) = s.position(member, p) else { continue };
            let start = log.start_offset();
            if pos < start {
                s.clamp(p, start);
                pos = start;
            }
            let records = log.read(pos, max - out.len(), READ_BYTES)?;
            let Some(last) = records.last().map(|r| r.offset) else { continue };
            for record in records {
                match codec::decode(record.payload.clone()) {
                    // Redriven dead letters are meant for one queue subscription only.
                    Ok(stored) if stored.target.is_none() => out.push(BrokerDelivery {
                        topic: self.topic.clone(),
                        subscription: self.name.clone(),
                        partition: p,
                        offset: record.offset,
                        published_at: record.timestamp,
                        attempt: 1,
                        receipt: None,
                        lease_expires_at: None,
                        message: stored.message,
                    }),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(topic = %self.topic, partition = p, offset = record.offset, error = %e, "Skipped a stored message that does not decode.");
                    }
                }
            }
            s.set_position(member, p, last + 1);
        }
        Ok(())
    }

    fn with_queue<T>(&self, f: impl FnOnce(&mut QueueState) -> T) -> Result<T> {
        match &mut *self.state.lock() {
            State::Queue(q) => Ok(f(q)),
            State::Stream(_) => Err(self.wrong_mode(SubscriptionMode::Queue)),
        }
    }

    /// Acks each receipt. The outer error is a journal failure (none of the acks is then
    /// confirmed durable); inner errors are per receipt.
    pub(crate) async fn ack(self: &Arc<Self>, receipts: &[Receipt]) -> Result<Vec<Result<()>>> {
        let entered = std::time::Instant::now();
        let now = self.clock.now();
        let max = self.max_deliveries();
        let mut acked = Vec::with_capacity(receipts.len());
        let results = self.with_queue(|q| {
            receipts
                .iter()
                .map(|r| {
                    q.ack((r.partition, r.offset), r.lease, now, max).map_err(|e| settle_error(e, r))?;
                    acked.push((r.partition, r.offset));
                    Ok(())
                })
                .collect::<Vec<_>>()
        })?;
        if acked.is_empty() {
            return Ok(results);
        }
        // Claimed acks must end confirmed or restored even if the caller goes away (a client
        // disconnecting mid-ack), so the write and its outcome run in a task of their own.
        let sub = Arc::clone(self);
        let settle = tokio::spawn(async move {
            let entries: Vec<Entry> =
                acked.iter().map(|&(partition, offset)| Entry::Acked { partition, offset }).collect();
            let written = sub.journal(&entries).await;
            let _ = sub.with_queue(|q| {
                for &pos in &acked {
                    if written.is_ok() { q.confirm_ack(pos) } else { q.restore_ack(pos) }
                }
            });
            sub.changed.notify_waiters();
            written
        });
        settle.await.map_err(|_| BrokerError::Closed)??;
        self.stages.record(crate::stages::Stage::AckDurable, entered.elapsed());
        Ok(results)
    }

    /// Nacks a receipt: redeliver after `delay` (or dead-letter when deliveries are used up).
    pub(crate) async fn nack(&self, receipt: &Receipt, delay: Duration, error: Option<String>) -> Result<()> {
        if delay > MAX_NACK_DELAY {
            return Err(BrokerError::InvalidArgument(format!(
                "a nack delay may be at most {} s, not {} s",
                MAX_NACK_DELAY.as_secs(),
                delay.as_secs()
            )));
        }
        let now = self.clock.now();
        let until = (!delay.is_zero()).then(|| now.saturating_add(delay));
        let max = self.max_deliveries();
        let entry = self
            .with_queue(|q| {
                q.nack((receipt.partition, receipt.offset), receipt.lease, now, max, until, error)
            })?
            .map_err(|e| settle_error(e, receipt))?;
        if let Some(e) = entry {
            self.journal(&[e]).await?;
        }
        self.changed.notify_waiters();
        Ok(())
    }

    /// Extends a receipt's lease to `by` from now; returns the new expiry.
    pub(crate) fn extend(&self, receipt: &Receipt, by: Duration) -> Result<Timestamp> {
        // A lease that never runs out would keep a dead consumer's message forever.
        if by.is_zero() || by > MAX_LEASE_EXTENSION {
            return Err(BrokerError::InvalidArgument(format!(
                "a lease may be extended by 1 ms to {} s, not {} ms",
                MAX_LEASE_EXTENSION.as_secs(),
                by.as_millis()
            )));
        }
        let now = self.clock.now();
        let until = now.saturating_add(by);
        let max = self.max_deliveries();
        self.with_queue(|q| q.extend((receipt.partition, receipt.offset), receipt.lease, now, max, until))?
            .map_err(|e| settle_error(e, receipt))?;
        Ok(until)
    }

    /// Expires leases and releases due messages; returns when something next falls due.
    pub(crate) fn tick(&self) -> Option<Timestamp> {
        let now = self.clock.now();
        let max = self.max_deliveries();
        let (woke, due) = match &mut *self.state.lock() {
            State::Queue(q) => {
                let before = (q.ready.len(), q.dead_letters.len());
                q.tick(now, max);
                ((q.ready.len(), q.dead_letters.len()) != before, q.next_due())
            }
            State::Stream(_) => (false, None),
        };
        if woke {
            self.changed.notify_waiters();
        }
        due
    }

    /// When the next lease expiry or scheduled message falls due.
    pub(crate) fn next_due(&self) -> Option<Timestamp> {
        match &*self.state.lock() {
            State::Queue(q) => q.next_due(),
            State::Stream(_) => None,
        }
    }

    pub(crate) fn take_dead_letters(&self) -> Vec<DeadLetter> {
        match &mut *self.state.lock() {
            State::Queue(q) => q.dead_letters.drain(..).collect(),
            State::Stream(_) => Vec::new(),
        }
    }

    pub(crate) fn return_dead_letter(&self, dl: DeadLetter) {
        if let State::Queue(q) = &mut *self.state.lock() {
            q.dead_letters.push_back(dl);
        }
    }

    /// The dead letter is safely in the dead-letter topic: finish it here.
    pub(crate) async fn dead_letter_stored(&self, pos: Pos) -> Result<()> {
        self.with_queue(|q| q.dead_lettered(pos))?;
        self.journal(&[Entry::DeadLettered { partition: pos.0, offset: pos.1 }]).await?;
        self.changed.notify_waiters();
        Ok(())
    }

    /// The message of a dead letter is gone from the log (retention): drop it.
    pub(crate) fn forget(&self, pos: Pos) {
        let _ = self.with_queue(|q| q.forget(pos));
    }

    /// Stream: commits `offset` as the next to read in `partition`.
    pub(crate) async fn commit(
        &self,
        topic: &Topic,
        member: Option<MemberId>,
        partition: u32,
        offset: u64,
    ) -> Result<()> {
        let log = topic.log(partition)?;
        let (start, end) = (log.start_offset(), log.end_offset());
        if offset > end {
            return Err(BrokerError::OffsetOutOfRange { partition, offset, start, end });
        }
        let entry = match &mut *self.state.lock() {
            State::Stream(s) => {
                s.commit(member, partition, offset).ok_or(BrokerError::NotAssigned { partition })?
            }
            State::Queue(_) => return Err(self.wrong_mode(SubscriptionMode::Stream)),
        };
        self.journal(&[entry]).await
    }

    /// Stream: moves committed offsets and read positions.
    pub(crate) async fn seek(&self, topic: &Topic, to: SeekTo) -> Result<()> {
        if self.config.mode != SubscriptionMode::Stream {
            return Err(self.wrong_mode(SubscriptionMode::Stream));
        }
        let mut targets = Vec::new();
        match to {
            SeekTo::Offset { partition, offset } => {
                let log = topic.log(partition)?;
                let (start, end) = (log.start_offset(), log.end_offset());
                if offset < start || offset > end {
                    return Err(BrokerError::OffsetOutOfRange { partition, offset, start, end });
                }
                targets.push((partition, offset));
            }
            _ => {
                for (p, log) in topic.partitions.iter().enumerate() {
                    let offset = match to {
                        SeekTo::Earliest => log.start_offset(),
                        SeekTo::Latest => log.end_offset(),
                        SeekTo::Time(t) => log.offset_for_time(t)?,
                        SeekTo::Offset { .. } => unreachable!("handled above"),
                    };
                    targets.push((p as u32, offset));
                }
            }
        }
        let entries: Vec<Entry> = match &mut *self.state.lock() {
            State::Stream(s) => targets.into_iter().map(|(p, o)| s.seek(p, o)).collect(),
            State::Queue(_) => return Err(self.wrong_mode(SubscriptionMode::Stream)),
        };
        self.journal(&entries).await?;
        self.changed.notify_waiters();
        Ok(())
    }

    /// Queue: the floor of each partition (everything below is acked). `None` for streams.
    pub(crate) fn queue_floors(&self) -> Option<Vec<u64>> {
        match &*self.state.lock() {
            State::Queue(q) => Some(q.parts.iter().map(|p| p.floor).collect()),
            State::Stream(_) => None,
        }
    }

    /// Queue: deliveries a member holds.
    pub(crate) fn in_flight_of(&self, member: MemberId) -> usize {
        match &*self.state.lock() {
            State::Queue(q) => q.in_flight_of(member),
            State::Stream(_) => 0,
        }
    }

    /// Stream: the partitions a member owns.
    pub(crate) fn assignment(&self, member: MemberId) -> Vec<u32> {
        match &*self.state.lock() {
            State::Stream(s) => s.assigned(member),
            State::Queue(_) => Vec::new(),
        }
    }

    pub(crate) fn stats(&self, topic: &Topic) -> SubscriptionStats {
        let st = self.state.lock();
        let mut partitions = Vec::new();
        for (p, log) in topic.partitions.iter().enumerate() {
            let (start, end) = (log.start_offset(), log.end_offset());
            let (floor, backlog) = match &*st {
                State::Queue(q) => (q.parts[p].floor.max(start), q.backlog(p as u32, end)),
                State::Stream(s) => {
                    let c = s.committed[p].0.max(start);
                    (c, end.saturating_sub(c))
                }
            };
            partitions.push(PartitionStats {
                partition: p as u32,
                start_offset: start,
                end_offset: end,
                floor,
                backlog,
            });
        }
        let (in_flight, scheduled, dead_lettered, consumers) = match &*st {
            State::Queue(q) => {
                (q.in_flight() as u64, q.scheduled_len() as u64, q.dead_lettered, q.member_count())
            }
            State::Stream(s) => (s.in_flight(), 0, 0, s.member_count()),
        };
        SubscriptionStats {
            mode: self.config.mode,
            backlog: partitions.iter().map(|p| p.backlog).sum(),
            lag: partitions.iter().map(|p| p.end_offset - p.floor.min(p.end_offset)).sum(),
            in_flight,
            scheduled,
            dead_lettered,
            consumers,
            partitions,
        }
    }

    /// Writes a snapshot and drops the journal segments it replaces, once the journal has
    /// grown by `threshold` bytes since the last compaction.
    pub(crate) async fn compact_if_needed(&self, threshold: u64) -> Result<()> {
        if self.journal.size_bytes() < self.journal_size_after_compaction.load(Ordering::Relaxed) + threshold
        {
            return Ok(());
        }
        let snapshot = {
            let st = self.state.lock();
            self.journal.roll()?;
            match &*st {
                State::Queue(q) => q.snapshot(),
                State::Stream(s) => s.snapshot(),
            }
        };
        let appended = self.journal.append(&[journal::encode(&[snapshot])]).await?;
        self.journal.delete_segments_before(appended.base_offset)?;
        self.journal_size_after_compaction.store(self.journal.size_bytes(), Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn sync_if_due(&self) {
        self.journal.sync_if_due();
    }

    pub(crate) async fn sync(&self) -> Result<()> {
        Ok(self.journal.sync().await?)
    }
}

/// Reads the message at `pos`; `None` if retention already deleted it.
pub(crate) fn read_one(topic: &Topic, pos: Pos) -> Result<Option<(Record, StoredMessage)>> {
    let log = topic.log(pos.0)?;
    let record = match log.read(pos.1, 1, READ_BYTES) {
        Ok(mut v) if !v.is_empty() && v[0].offset == pos.1 => v.swap_remove(0),
        Ok(_) | Err(StorageError::OffsetOutOfRange { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match codec::decode(record.payload.clone()) {
        Ok(stored) => Ok(Some((record, stored))),
        Err(e) => {
            tracing::error!(topic = %topic.name, partition = pos.0, offset = pos.1, error = %e, "Dropped a stored message that does not decode.");
            Ok(None)
        }
    }
}
