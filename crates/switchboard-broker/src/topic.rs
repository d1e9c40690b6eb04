//! A topic: its partitions (one storage log each), publish with idempotency and
//! partitioning, and the subscriptions on it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use switchboard_core::{Message, SharedClock, SubscriptionName, Timestamp, TopicName};
use switchboard_storage::{Durability, Log, LogConfig, Storage};
use tokio::sync::Notify;

use crate::codec;
use crate::config::TopicConfig;
use crate::dedup::{DedupWindow, Seen};
use crate::error::{BrokerError, Result};
use crate::partitioner::partition_for_key;
use crate::stages::{Stage, StageLatencies};
use crate::subscription::Subscription;

/// What a publish returned for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishReceipt {
    /// The partition the message is in.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// When the broker appended it.
    pub timestamp: Timestamp,
    /// Which durability held when the publish returned (fsynced or only written).
    pub durability: Durability,
    /// True if the id was already published within the dedup window: nothing new was
    /// stored, and `partition`/`offset` name the first copy.
    pub duplicate: bool,
}

/// Per-message publish options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// Queue subscriptions hold the message back until this time.
    pub deliver_at: Option<Timestamp>,
}

pub(crate) struct Topic {
    pub(crate) name: TopicName,
    pub(crate) config: TopicConfig,
    pub(crate) dir: PathBuf,
    pub(crate) partitions: Vec<Log>,
    round_robin: AtomicU32,
    dedup: Mutex<DedupWindow>,
    dedup_settled: Notify,
    /// Woken after every append, for long-polling receivers.
    pub(crate) appended: Notify,
    /// Successful publish calls so far: lets a reader wait for "anything after what I saw".
    pub(crate) publishes: std::sync::atomic::AtomicU64,
    pub(crate) subscriptions: RwLock<BTreeMap<SubscriptionName, Arc<Subscription>>>,
    clock: SharedClock,
    /// The broker's stage histograms.
    pub(crate) stages: Arc<StageLatencies>,
    /// Per partition, the newest durable batch and when it became durable: a delivery from
    /// it counts toward [`Stage::Wake`].
    newest: Vec<Mutex<Option<NewestBatch>>>,
}

/// Offsets `from..to` of one partition became durable `at`.
#[derive(Clone, Copy)]
struct NewestBatch {
    from: u64,
    to: u64,
    at: std::time::Instant,
}

pub(crate) fn log_config(config: &TopicConfig) -> LogConfig {
    LogConfig {
        fsync: config.fsync,
        segment_max_bytes: config.segment_bytes,
        segment_max_age_ms: config.segment_ms,
        ..LogConfig::default()
    }
}

/// Ids a publish has marked pending in the dedup window. If the publish is dropped before it
/// settles them (its caller went away mid-write), they are released here, so later publishes
/// of those ids do not wait forever.
struct Reserved<'a> {
    topic: &'a Topic,
    ids: Vec<String>,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let mut d = self.topic.dedup.lock();
        for id in &self.ids {
            d.finish(id, None);
        }
        drop(d);
        self.topic.dedup_settled.notify_waiters();
    }
}

/// One message of a publish call, ready to store.
pub(crate) struct Outgoing {
    pub(crate) message: Message,
    pub(crate) deliver_at: Option<Timestamp>,
}

impl Topic {
    pub(crate) fn open(
        storage: &Arc<dyn Storage>,
        dir: PathBuf,
        name: TopicName,
        config: TopicConfig,
        clock: SharedClock,
        stages: Arc<StageLatencies>,
    ) -> Result<Topic> {
        let started = std::time::Instant::now();
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            partitions.push(Log::open(
                storage.clone(),
                dir.join(format!("p{p}")),
                log_config(&config),
                clock.clone(),
            )?);
        }
        let logs_opened = started.elapsed();
        let mut dedup = DedupWindow::new(config.dedup_window_ms, config.dedup_max_entries);
        if dedup.enabled() {
            rebuild_dedup(&mut dedup, &partitions, clock.now(), config.dedup_window_ms)?;
        }
        // What opening costs, by part: the restart time that grows with retained data is here.
        tracing::debug!(
            topic = %name,
            logs_ms = logs_opened.as_secs_f64() * 1e3,
            dedup_ms = (started.elapsed() - logs_opened).as_secs_f64() * 1e3,
            dedup_ids = dedup.len(),
            "Topic opened."
        );
        Ok(Topic {
            name,
            dir,
            partitions,
            round_robin: AtomicU32::new(0),
            dedup: Mutex::new(dedup),
            dedup_settled: Notify::new(),
            appended: Notify::new(),
            publishes: std::sync::atomic::AtomicU64::new(0),
            subscriptions: RwLock::new(BTreeMap::new()),
            clock,
            stages,
            newest: (0..config.partitions).map(|_| Mutex::new(None)).collect(),
            config,
        })
    }

    pub(crate) fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    pub(crate) fn log(&self, partition: u32) -> Result<&Log> {
        self.partitions.get(partition as usize).ok_or(BrokerError::PartitionNotFound {
            topic: self.name.clone(),
            partition,
            partitions: self.partition_count(),
        })
    }

    fn choose_partition(&self, msg: &Message) -> u32 {
        match msg.partition_key() {
            Some(k) => partition_for_key(k, self.partition_count()),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % self.partition_count(),
        }
    }

    /// Validates, deduplicates, partitions and appends `batch`. Messages for one partition
    /// go in one storage batch, so they are stored all or none.
    pub(crate) async fn publish(
        &self,
        batch: Vec<Outgoing>,
        target: Option<&SubscriptionName>,
        dedup: bool,
        max_message_bytes: usize,
    ) -> Result<Vec<PublishReceipt>> {
        let entered = std::time::Instant::now();
        for o in &batch {
            o.message.validate(max_message_bytes)?;
        }
        let dedup = dedup && self.dedup.lock().enabled();
        let mut receipts: Vec<Option<PublishReceipt>> = vec![None; batch.len()];
        let mut copies_of: Vec<Option<usize>> = vec![None; batch.len()];
        let mut reserved = Reserved { topic: self, ids: Vec::new() };
        if dedup {
            self.reserve_ids(&batch, &mut receipts, &mut copies_of).await;
            reserved.ids = (0..batch.len())
                .filter(|&i| receipts[i].is_none() && copies_of[i].is_none())
                .map(|i| batch[i].message.id.clone())
                .collect();
        }
        let result = self.append_grouped(&batch, &mut receipts, &copies_of, target, entered).await;
        if dedup {
            let mut d = self.dedup.lock();
            for (i, o) in batch.iter().enumerate() {
                if copies_of[i].is_some() || receipts[i].is_some_and(|r| r.duplicate) {
                    continue;
                }
                let stored = match (&result, receipts[i]) {
                    (Ok(()), Some(r)) => {
                        Some(Seen { partition: r.partition, offset: r.offset, at: r.timestamp })
                    }
                    _ => None,
                };
                d.finish(&o.message.id, stored);
            }
            drop(d);
            reserved.ids.clear();
            self.dedup_settled.notify_waiters();
        }
        result?;
        self.publishes.fetch_add(1, Ordering::Release);
        self.appended.notify_waiters();
        receipts.into_iter().map(|r| r.ok_or(BrokerError::Closed)).collect()
    }

    /// Marks each new id as pending and fills in receipts for ids already stored. An id
    /// whose first publish is still in flight waits for it to settle.
    async fn reserve_ids(
        &self,
        batch: &[Outgoing],
        receipts: &mut [Option<PublishReceipt>],
        copies_of: &mut [Option<usize>],
    ) {
        loop {
            let settled = self.dedup_settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            {
                let mut d = self.dedup.lock();
                let now = self.clock.now();
                let busy = batch.iter().any(|o| d.is_pending(&o.message.id));
                if !busy {
                    let mut first_in_batch: std::collections::HashMap<&str, usize> = Default::default();
                    for (i, o) in batch.iter().enumerate() {
                        let id = o.message.id.as_str();
                        if let Some(seen) = d.lookup(id, now) {
                            receipts[i] = Some(duplicate_receipt(seen));
                        } else if let Some(&first) = first_in_batch.get(id) {
                            // Same id twice in one batch: the second copy is not stored.
                            copies_of[i] = Some(first);
                        } else {
                            first_in_batch.insert(id, i);
                            d.begin(id);
                        }
                    }
                    return;
                }
            }
            settled.await;
        }
    }

    async fn append_grouped(
        &self,
        batch: &[Outgoing],
        receipts: &mut [Option<PublishReceipt>],
        copies_of: &[Option<usize>],
        target: Option<&SubscriptionName>,
        entered: std::time::Instant,
    ) -> Result<()> {
        let mut groups: BTreeMap<u32, (Vec<usize>, Vec<Bytes>)> = BTreeMap::new();
        for (i, o) in batch.iter().enumerate() {
            if receipts[i].is_some() || copies_of[i].is_some() {
                continue;
            }
            let p = self.choose_partition(&o.message);
            let g = groups.entry(p).or_default();
            g.0.push(i);
            g.1.push(codec::encode(&o.message, o.deliver_at, target));
        }
        // One partition (every single publish) needs no join machinery.
        let results = if groups.len() == 1 {
            let (p, (_, records)) = groups.iter().next().expect("one group");
            vec![self.partitions[*p as usize].append(records).await]
        } else {
            let appends = groups.iter().map(|(p, (_, records))| self.partitions[*p as usize].append(records));
            futures::future::join_all(appends).await
        };
        let mut first_error = None;
        for ((p, (indexes, _)), res) in groups.iter().zip(results) {
            match res {
                Ok(a) => {
                    self.record_append(*p, &a, entered);
                    for (k, &i) in indexes.iter().enumerate() {
                        receipts[i] = Some(PublishReceipt {
                            partition: *p,
                            offset: a.base_offset + k as u64,
                            timestamp: a.timestamp,
                            durability: a.durability,
                            duplicate: false,
                        });
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(BrokerError::from(e));
                }
            }
        }
        // Duplicates inside the batch point at their first copy.
        for (i, first) in copies_of.iter().enumerate() {
            if let Some(first) = first {
                receipts[i] = receipts[*first].map(|f| PublishReceipt { duplicate: true, ..f });
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Topic {
    /// Records where an append's time went, and remembers it as its partition's newest.
    fn record_append(&self, partition: u32, a: &switchboard_storage::Appended, entered: std::time::Instant) {
        let now = std::time::Instant::now();
        self.stages.record(Stage::Write, a.written_at.saturating_duration_since(entered));
        if a.durability == Durability::Fsynced {
            self.stages.record(Stage::FsyncWait, now.saturating_duration_since(a.written_at));
        }
        let batch = NewestBatch { from: a.base_offset, to: a.base_offset + u64::from(a.count), at: now };
        if let Some(slot) = self.newest.get(partition as usize) {
            let mut newest = slot.lock();
            // Concurrent appends may finish out of order: keep the one furthest along.
            if newest.is_none_or(|n| n.to <= batch.from) {
                *newest = Some(batch);
            }
        }
    }

    /// Records the wake-up time of deliveries a waiting consumer just took, if the last of
    /// them is from its partition's newest durable batch.
    pub(crate) fn record_wake(&self, deliveries: &[crate::delivery::BrokerDelivery]) {
        let Some(last) = deliveries.last() else { return };
        let Some(slot) = self.newest.get(last.partition as usize) else { return };
        let newest = *slot.lock();
        if let Some(n) = newest
            && (n.from..n.to).contains(&last.offset)
        {
            self.stages.record(Stage::Wake, n.at.elapsed());
        }
    }
}

fn duplicate_receipt(seen: Seen) -> PublishReceipt {
    PublishReceipt {
        partition: seen.partition,
        offset: seen.offset,
        timestamp: seen.at,
        durability: Durability::Written,
        duplicate: true,
    }
}

/// Re-reads the ids published within the window, so deduplication survives a restart.
fn rebuild_dedup(d: &mut DedupWindow, partitions: &[Log], now: Timestamp, window_ms: u64) -> Result<()> {
    let since = Timestamp(now.0.saturating_sub(window_ms));
    let mut seen = Vec::new();
    for (p, log) in partitions.iter().enumerate() {
        // The window keeps the newest `max_entries` ids, and a partition's timestamps never go
        // down, so nothing older than a partition's last `max_entries` records can be kept:
        // a long log is not read back to the window's start.
        let newest = log.end_offset().saturating_sub(d.max_entries() as u64);
        let mut at = log.offset_for_time(since)?.max(log.start_offset()).max(newest);
        loop {
            let records = log.read(at, 4096, 4 << 20)?;
            let Some(last) = records.last() else { break };
            at = last.offset + 1;
            for r in records {
                if let Ok(id) = codec::decode_id(r.payload) {
                    seen.push((r.timestamp, id, p as u32, r.offset));
                }
            }
        }
    }
    seen.sort_by_key(|s| s.0);
    // Only the newest `max_entries` would stay: skip the rest instead of inserting and
    // evicting them.
    let keep_from = seen.len().saturating_sub(d.max_entries());
    d.reserve(seen.len() - keep_from);
    for (at, id, partition, offset) in seen.into_iter().skip(keep_from) {
        d.remember(id, Seen { partition, offset, at });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reserved_by_a_dropped_publish_are_released() {
        let storage: Arc<dyn Storage> = Arc::new(switchboard_storage::MemStorage::new());
        let clock: SharedClock = Arc::new(switchboard_core::ManualClock::default());
        let name = TopicName::new("t").unwrap();
        let stages = Arc::new(StageLatencies::default());
        let topic = Topic::open(&storage, "/t".into(), name, TopicConfig::default(), clock, stages).unwrap();
        topic.dedup.lock().begin("id-1");
        {
            // What a publish future holds while it writes; dropping the future drops this.
            let _reserved = Reserved { topic: &topic, ids: vec!["id-1".into()] };
        }
        assert!(!topic.dedup.lock().is_pending("id-1"), "a later publish of id-1 would wait forever");
        topic.dedup.lock().begin("id-2");
        drop(Reserved { topic: &topic, ids: Vec::new() });
        assert!(topic.dedup.lock().is_pending("id-2"), "a settled publish releases nothing");
    }
}
