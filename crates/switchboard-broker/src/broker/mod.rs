//! The broker: the handle every edge uses ([`Broker`]), opening it, and the data plane
//! (publish, consume, settle, read, stats).
//!
//! The rest of the broker lives in files by concern, because each has its own rules:
//!
//! - `catalog`: topics and subscriptions (create, delete, list) and their metadata files,
//!   written atomically and read back at open;
//! - `maintenance`: the ticker and one round of background work (lease expiry, interval
//!   fsyncs, retention, journal compaction);
//! - `dead_letter`: moving messages to dead-letter topics, and redrive back.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use switchboard_core::{Message, SharedClock, SubscriptionName, SystemClock, TopicName};
use switchboard_storage::{FileStorage, Storage};

use crate::config::{BrokerConfig, SubscriptionMode};
use crate::consumer::{QueueConsumer, StreamConsumer, receive_waiting};
use crate::delivery::{BrokerDelivery, LogRecord, SeekTo, SubscriptionStats};
use crate::error::{BrokerError, Result};
use crate::receipt::Receipt;
use crate::subscription::Subscription;
use crate::topic::{Outgoing, PublishOptions, PublishReceipt, Topic};

use self::catalog::{open_topic, topics_dir};
use self::maintenance::run_ticker;
use crate::stages::StageLatencies;

mod catalog;
mod dead_letter;
mod maintenance;

pub use self::catalog::{PartitionInfo, TopicInfo};
pub use self::dead_letter::{REDRIVE_SUBSCRIPTION, dead_letter_ext};

/// The embedded broker. Cheap to clone; all clones share one broker.
///
/// ```
/// use std::time::Duration;
/// use switchboard_broker::{Broker, SubscriptionConfig, TopicConfig};
/// use switchboard_core::{Message, SubscriptionName, TopicName};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
/// let dir = tempfile::tempdir()?;
/// let broker = Broker::open(dir.path()).await?;
/// let orders = TopicName::new("orders")?;
/// broker.create_topic(&orders, TopicConfig::default()).await?;
/// let billing = SubscriptionName::new("billing")?;
/// broker.create_subscription(&orders, &billing, SubscriptionConfig::queue()).await?;
///
/// broker.publish(&orders, Message::new("/shop", "order.created", "{}")).await?;
/// let consumer = broker.queue_consumer(&orders, &billing)?;
/// let got = consumer.receive(10, Duration::from_secs(1)).await?;
/// consumer.ack(got[0].receipt.as_ref().unwrap()).await?;
/// assert_eq!(broker.stats(&orders, &billing)?.backlog, 0);
/// # broker.close().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Arc<dyn Storage>,
    root: PathBuf,
    clock: SharedClock,
    config: BrokerConfig,
    topics: RwLock<HashMap<TopicName, Arc<Topic>>>,
    /// Serialises creating and deleting topics and subscriptions.
    admin: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Held for the broker's life when it opened a real data directory.
    dir_lock: Mutex<Option<crate::dir_lock::DataDirLock>>,
    /// Where messages spend their time, shared by every topic and subscription.
    stages: Arc<StageLatencies>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("root", &self.inner.root).finish_non_exhaustive()
    }
}

impl Broker {
    /// Opens (or creates) a broker in directory `dir` on the real filesystem, with the system
    /// clock and default settings, holding the directory's lock (see
    /// [`lock_data_dir`](crate::lock_data_dir)).
    ///
    /// # Errors
    /// The directory cannot be used or is in use by another process, or persisted state is
    /// unreadable.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<Broker> {
        let dir = dir.into();
        let lock = crate::dir_lock::lock_data_dir(&dir)?;
        let broker = Broker::open_with(
            Arc::new(FileStorage::new()),
            dir,
            Arc::new(SystemClock),
            BrokerConfig::default(),
        )
        .await?;
        *broker.inner.dir_lock.lock() = Some(lock);
        Ok(broker)
    }

    /// Opens a broker on any [`Storage`] with any clock: the entry point for tests that
    /// inject faults or move time by hand.
    ///
    /// # Errors
    /// The directory cannot be used, or persisted state is unreadable.
    pub async fn open_with(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
        clock: SharedClock,
        config: BrokerConfig,
    ) -> Result<Broker> {
        let root = dir.into();
        let io = |e: std::io::Error| {
            BrokerError::Storage(switchboard_storage::StorageError::Io {
                op: "open broker directory",
                path: root.clone(),
                source: e,
            })
        };
        storage.create_dir_all(&topics_dir(&root)).map_err(io)?;
        let started = std::time::Instant::now();
        let mut topics = HashMap::new();
        let stages = Arc::new(StageLatencies::default());
        for tdir in storage.list_dir(&topics_dir(&root)).map_err(io)? {
            if let Some(topic) = open_topic(&storage, &tdir, &clock, &stages)? {
                topics.insert(topic.name.clone(), Arc::new(topic));
            }
        }
        let inner = Arc::new(Inner {
            storage,
            root,
            clock,
            config,
            topics: RwLock::new(topics),
            admin: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            ticker: Mutex::new(None),
            dir_lock: Mutex::new(None),
            stages,
        });
        if inner.config.tick_ms > 0 {
            let weak = Arc::downgrade(&inner);
            *inner.ticker.lock() =
                Some(tokio::spawn(run_ticker(weak, Duration::from_millis(inner.config.tick_ms))));
        }
        tracing::info!(
            dir = %inner.root.display(),
            topics = inner.topics.read().len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "Broker opened."
        );
        Ok(Broker { inner })
    }

    /// The broker's clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) { Err(BrokerError::Closed) } else { Ok(()) }
    }

    fn topic(&self, name: &TopicName) -> Result<Arc<Topic>> {
        self.check_open()?;
        self.inner.topics.read().get(name).cloned().ok_or_else(|| BrokerError::TopicNotFound(name.clone()))
    }

    fn subscription(
        &self,
        topic: &TopicName,
        name: &SubscriptionName,
    ) -> Result<(Arc<Topic>, Arc<Subscription>)> {
        let t = self.topic(topic)?;
        let s = t.subscriptions.read().get(name).cloned().ok_or_else(|| {
            BrokerError::SubscriptionNotFound { topic: topic.clone(), subscription: name.clone() }
        })?;
        Ok((t, s))
    }

    fn subscription_in_mode(
        &self,
        topic: &TopicName,
        name: &SubscriptionName,
        mode: SubscriptionMode,
    ) -> Result<(Arc<Topic>, Arc<Subscription>)> {
        let (t, s) = self.subscription(topic, name)?;
        if s.config.mode != mode {
            return Err(s.wrong_mode(mode));
        }
        Ok((t, s))
    }

    /// Publishes one message; returns once it is durable under the topic's fsync policy.
    ///
    /// # Errors
    /// Unknown topic, invalid or oversize message, full disk, storage failure. On error the
    /// message is not acknowledged (it may or may not be stored; publish again with the same
    /// id and deduplication makes that safe).
    pub async fn publish(&self, topic: &TopicName, message: Message) -> Result<PublishReceipt> {
        self.publish_with(topic, message, PublishOptions::default()).await
    }

    /// Publishes one message with options (e.g. delayed delivery).
    ///
    /// # Errors
    /// As for [`publish`](Self::publish).
    pub async fn publish_with(
        &self,
        topic: &TopicName,
        message: Message,
        options: PublishOptions,
    ) -> Result<PublishReceipt> {
        let mut r = self.publish_batch(topic, vec![message], options).await?;
        r.pop().ok_or(BrokerError::Closed)
    }

    /// Publishes a batch: messages that land in one partition are stored atomically (all or
    /// none); receipts come back in the batch's order.
    ///
    /// # Errors
    /// As for [`publish`](Self::publish), plus [`BrokerError::BatchTooLarge`]. Every message
    /// is validated before anything is stored.
    pub async fn publish_batch(
        &self,
        topic: &TopicName,
        messages: Vec<Message>,
        options: PublishOptions,
    ) -> Result<Vec<PublishReceipt>> {
        let t = self.topic(topic)?;
        if messages.len() > self.inner.config.max_batch_messages {
            return Err(BrokerError::BatchTooLarge {
                len: messages.len(),
                max: self.inner.config.max_batch_messages,
            });
        }
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let batch = messages
            .into_iter()
            .map(|message| Outgoing { message, deliver_at: options.deliver_at })
            .collect();
        // The server-wide limit caps every topic's own.
        let max_bytes = self.inner.config.max_message_bytes.min(t.config.max_message_bytes);
        t.publish(batch, None, true, max_bytes).await
    }

    /// A competing consumer of a queue subscription.
    ///
    /// # Errors
    /// Unknown topic or subscription, or a stream subscription.
    pub fn queue_consumer(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
    ) -> Result<QueueConsumer> {
        let (t, s) = self.subscription_in_mode(topic, subscription, SubscriptionMode::Queue)?;
        let member = s.join();
        let max_in_flight = s.config.max_in_flight_per_consumer;
        Ok(QueueConsumer { clock: self.inner.clock.clone(), topic: t, sub: s, member, max_in_flight })
    }

    /// Joins a stream subscription's group.
    ///
    /// # Errors
    /// Unknown topic or subscription, or a queue subscription.
    pub fn stream_consumer(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
    ) -> Result<StreamConsumer> {
        let (t, s) = self.subscription_in_mode(topic, subscription, SubscriptionMode::Stream)?;
        let member = s.join();
        Ok(StreamConsumer { clock: self.inner.clock.clone(), topic: t, sub: s, member })
    }

    /// Acks deliveries by receipt without a consumer handle (REST, CLI).
    ///
    /// # Errors
    /// Unknown topic/subscription or storage; per-receipt errors inside.
    pub async fn ack(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
        receipts: &[Receipt],
    ) -> Result<Vec<Result<()>>> {
        let (_, s) = self.subscription(topic, subscription)?;
        s.ack(receipts).await
    }

    /// Nacks a delivery by receipt without a consumer handle.
    ///
    /// # Errors
    /// Unknown topic/subscription/receipt, expired lease, or storage.
    pub async fn nack(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
        receipt: &Receipt,
        delay: Duration,
        error: Option<String>,
    ) -> Result<()> {
        let (_, s) = self.subscription(topic, subscription)?;
        s.nack(receipt, delay, error).await
    }

    /// Extends a delivery's lease by receipt without a consumer handle.
    ///
    /// # Errors
    /// Unknown topic/subscription/receipt or expired lease.
    pub fn extend(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
        receipt: &Receipt,
        by: Duration,
    ) -> Result<switchboard_core::Timestamp> {
        let (_, s) = self.subscription(topic, subscription)?;
        s.extend(receipt, by)
    }

    /// Receives from a queue subscription as an anonymous one-off consumer (long polling
    /// over REST); the in-flight bound is the subscription's per-consumer bound.
    ///
    /// # Errors
    /// Unknown topic/subscription, a stream subscription, or storage.
    pub async fn receive(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<BrokerDelivery>> {
        let consumer = self.queue_consumer(topic, subscription)?;
        let max = max.min(consumer.max_in_flight);
        receive_waiting(
            &self.inner.clock,
            &consumer.topic,
            &consumer.sub,
            consumer.member,
            max,
            usize::MAX,
            wait,
        )
        .await
    }

    /// Commits an offset of a stream subscription from outside the group (admin).
    ///
    /// # Errors
    /// Unknown names, a queue subscription, an out-of-range offset, or storage.
    pub async fn commit(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
        partition: u32,
        offset: u64,
    ) -> Result<()> {
        let (t, s) = self.subscription(topic, subscription)?;
        s.commit(&t, None, partition, offset).await
    }

    /// Moves a stream subscription to the earliest, latest, a time or an offset.
    ///
    /// # Errors
    /// Unknown names, a queue subscription, an out-of-range offset, or storage.
    pub async fn seek(&self, topic: &TopicName, subscription: &SubscriptionName, to: SeekTo) -> Result<()> {
        let (t, s) = self.subscription(topic, subscription)?;
        s.seek(&t, to).await
    }

    /// Reads up to `max` messages of one partition from offset `from`, outside any
    /// subscription (inspection, dead-letter listing, live tail). Redriven copies meant for
    /// one subscription are skipped.
    ///
    /// # Errors
    /// Unknown topic or partition, an offset below the retained range, or storage.
    pub fn read(&self, topic: &TopicName, partition: u32, from: u64, max: usize) -> Result<Vec<LogRecord>> {
        let t = self.topic(topic)?;
        let log = t.log(partition)?;
        let mut at = from;
        let mut out = Vec::new();
        // Redriven copies are skipped here, not left to the caller: an empty answer means
        // nothing readable up to the end, never "only hidden records in this window".
        while out.is_empty() {
            let records = log.read(at, max, 4 << 20).map_err(|e| match e {
                switchboard_storage::StorageError::OffsetOutOfRange { requested, start, end } => {
                    BrokerError::OffsetOutOfRange { partition, offset: requested, start, end }
                }
                other => other.into(),
            })?;
            let Some(last) = records.last().map(|r| r.offset) else { break };
            at = last + 1;
            out.extend(records.into_iter().filter_map(|r| match crate::codec::decode(r.payload) {
                Ok(stored) if stored.target.is_none() => Some(LogRecord {
                    topic: topic.clone(),
                    partition,
                    offset: r.offset,
                    published_at: r.timestamp,
                    message: stored.message,
                }),
                _ => None,
            }));
        }
        Ok(out)
    }

    /// Where messages have spent their time inside this broker so far, per stage (see
    /// [`Stage`](crate::Stage)).
    pub fn stage_latencies(&self) -> Vec<crate::StageSnapshot> {
        self.inner.stages.snapshot()
    }

    /// A counter of successful publishes to `topic`. Read it before reading the topic, then
    /// pass it to [`wait_for_publish`](Self::wait_for_publish): a publish that lands between
    /// the read and the wait is not missed.
    ///
    /// # Errors
    /// Unknown topic.
    pub fn publish_count(&self, topic: &TopicName) -> Result<u64> {
        Ok(self.topic(topic)?.publishes.load(Ordering::Acquire))
    }

    /// Waits until `topic` has had a publish beyond `seen` (a [`publish_count`](Self::publish_count))
    /// or `timeout` passes (for live tails and long-polling reads).
    ///
    /// # Errors
    /// Unknown topic.
    pub async fn wait_for_publish(&self, topic: &TopicName, seen: u64, timeout: Duration) -> Result<()> {
        let t = self.topic(topic)?;
        let waited = tokio::time::timeout(timeout, async {
            loop {
                let notified = t.appended.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if t.publishes.load(Ordering::Acquire) > seen {
                    return;
                }
                notified.await;
            }
        });
        let _ = waited.await;
        Ok(())
    }

    /// Backlog, in-flight, lag and dead-letter counts of a subscription.
    ///
    /// # Errors
    /// Unknown topic or subscription.
    pub fn stats(&self, topic: &TopicName, subscription: &SubscriptionName) -> Result<SubscriptionStats> {
        let (t, s) = self.subscription(topic, subscription)?;
        s.tick();
        Ok(s.stats(&t))
    }

    /// Stops the ticker and makes everything written durable. Further calls fail with
    /// [`BrokerError::Closed`].
    ///
    /// # Errors
    /// A final fsync failed.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(h) = self.inner.ticker.lock().take() {
            h.abort();
        }
        let topics: Vec<Arc<Topic>> = self.inner.topics.read().values().cloned().collect();
        for t in topics {
            for log in &t.partitions {
                log.sync().await?;
            }
            let subs: Vec<Arc<Subscription>> = t.subscriptions.read().values().cloned().collect();
            for s in subs {
                s.sync().await?;
            }
        }
        // Everything is durable: another process may have the directory now.
        self.inner.dir_lock.lock().take();
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(h) = self.ticker.get_mut().take() {
            h.abort();
        }
    }
}
