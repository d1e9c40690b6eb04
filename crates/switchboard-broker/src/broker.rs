//! The broker: the registry of topics and subscriptions, their persistence, the background
//! ticker, dead-lettering and redrive, and the async API everything else uses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use switchboard_core::backend::DeadLetterStamp;
use switchboard_core::{Message, SharedClock, SubscriptionName, SystemClock, TopicName};
use switchboard_storage::{FileStorage, Retention, Storage};

use crate::config::{
    BrokerConfig, RetentionConfig, StartPosition, SubscriptionConfig, SubscriptionMode, TopicConfig,
};
use crate::consumer::{QueueConsumer, StreamConsumer, receive_waiting};
use crate::delivery::{Delivery, LogRecord, SeekTo, SubscriptionStats};
use crate::error::{BrokerError, Result};
use crate::receipt::Receipt;
use crate::subscription::{Subscription, SubscriptionMeta, read_one};
use crate::topic::{Outgoing, PublishOptions, PublishReceipt, Topic};

/// The queue subscription every dead-letter topic gets, which redrive reads from.
pub const REDRIVE_SUBSCRIPTION: &str = "redrive";

/// Extension attributes added to a dead letter.
pub use switchboard_core::contract::dead_letter_ext;

/// One partition of a topic as the broker sees it now.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionInfo {
    /// The partition.
    pub partition: u32,
    /// First retained offset.
    pub start_offset: u64,
    /// One past the newest offset.
    pub end_offset: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
}

/// A topic and its subscriptions.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicInfo {
    /// The topic.
    pub name: TopicName,
    /// Its settings.
    pub config: TopicConfig,
    /// Its partitions.
    pub partitions: Vec<PartitionInfo>,
    /// Its subscriptions and their settings.
    pub subscriptions: Vec<(SubscriptionName, SubscriptionConfig)>,
}

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
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("root", &self.inner.root).finish_non_exhaustive()
    }
}

fn topics_dir(root: &Path) -> PathBuf {
    root.join("topics")
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
        let mut topics = HashMap::new();
        for tdir in storage.list_dir(&topics_dir(&root)).map_err(io)? {
            if let Some(topic) = open_topic(&storage, &tdir, &clock)? {
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
        });
        if inner.config.tick_ms > 0 {
            let weak = Arc::downgrade(&inner);
            *inner.ticker.lock() =
                Some(tokio::spawn(run_ticker(weak, Duration::from_millis(inner.config.tick_ms))));
        }
        tracing::info!(dir = %inner.root.display(), topics = inner.topics.read().len(), "Broker opened.");
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

    /// Creates a topic. Creating it again with the same settings is a no-op.
    ///
    /// # Errors
    /// Invalid settings, [`BrokerError::TopicExists`] with other settings, or storage.
    pub async fn create_topic(&self, name: &TopicName, config: TopicConfig) -> Result<TopicInfo> {
        self.check_open()?;
        config.validate()?;
        let _admin = self.inner.admin.lock().await;
        self.create_topic_locked(name, config)?;
        self.topic_info(name)
    }

    fn create_topic_locked(&self, name: &TopicName, config: TopicConfig) -> Result<Arc<Topic>> {
        if let Some(t) = self.inner.topics.read().get(name) {
            return if t.config == config {
                Ok(t.clone())
            } else {
                Err(BrokerError::TopicExists(name.clone()))
            };
        }
        let dir = topics_dir(&self.inner.root).join(name.as_str());
        let storage = &self.inner.storage;
        // A directory left by an interrupted create or delete holds nothing acknowledged.
        if storage.exists(&dir) {
            storage.remove_dir_all(&dir).map_err(|e| io_error("clear topic directory", &dir, e))?;
        }
        let topic =
            Topic::open(storage, dir.clone(), name.clone(), config.clone(), self.inner.clock.clone())?;
        // topic.json is written last: a topic directory without it was never created.
        write_json(storage, &dir.join("topic.json"), &config)?;
        let topic = Arc::new(topic);
        self.inner.topics.write().insert(name.clone(), topic.clone());
        tracing::info!(topic = %name, partitions = config.partitions, "Created topic.");
        Ok(topic)
    }

    /// Deletes a topic, its subscriptions and its data.
    ///
    /// # Errors
    /// [`BrokerError::TopicNotFound`] or storage.
    pub async fn delete_topic(&self, name: &TopicName) -> Result<()> {
        self.check_open()?;
        let _admin = self.inner.admin.lock().await;
        let topic =
            self.inner.topics.write().remove(name).ok_or_else(|| BrokerError::TopicNotFound(name.clone()))?;
        let marker = topic.dir.join("topic.json");
        self.inner.storage.remove_file(&marker).map_err(|e| io_error("delete topic", &marker, e))?;
        self.inner.storage.remove_dir_all(&topic.dir).map_err(|e| io_error("delete topic", &topic.dir, e))?;
        tracing::info!(topic = %name, "Deleted topic.");
        Ok(())
    }

    /// Every topic, sorted by name.
    pub fn topics(&self) -> Vec<TopicInfo> {
        let mut names: Vec<TopicName> = self.inner.topics.read().keys().cloned().collect();
        names.sort();
        names.iter().filter_map(|n| self.topic_info(n).ok()).collect()
    }

    /// One topic.
    ///
    /// # Errors
    /// [`BrokerError::TopicNotFound`].
    pub fn topic_info(&self, name: &TopicName) -> Result<TopicInfo> {
        let t = self.topic(name)?;
        let partitions = t
            .partitions
            .iter()
            .enumerate()
            .map(|(p, log)| PartitionInfo {
                partition: p as u32,
                start_offset: log.start_offset(),
                end_offset: log.end_offset(),
                size_bytes: log.size_bytes(),
            })
            .collect();
        let subscriptions =
            t.subscriptions.read().iter().map(|(n, s)| (n.clone(), s.config.clone())).collect();
        Ok(TopicInfo { name: name.clone(), config: t.config.clone(), partitions, subscriptions })
    }

    /// Creates a subscription. A queue subscription with `max_deliveries` also gets its
    /// dead-letter topic (created if missing, with a `redrive` queue subscription). Creating
    /// it again with the same settings is a no-op.
    ///
    /// # Errors
    /// Unknown topic, invalid settings, [`BrokerError::SubscriptionExists`], or storage.
    pub async fn create_subscription(
        &self,
        topic: &TopicName,
        name: &SubscriptionName,
        config: SubscriptionConfig,
    ) -> Result<()> {
        config.validate()?;
        let t = self.topic(topic)?;
        let _admin = self.inner.admin.lock().await;
        let mut config = config;
        config.dead_letter_topic = config.dead_letter_topic_for(topic, name)?;
        if let Some(existing) = t.subscriptions.read().get(name) {
            return if existing.config == config {
                Ok(())
            } else {
                Err(BrokerError::SubscriptionExists { topic: topic.clone(), subscription: name.clone() })
            };
        }
        if let Some(dlq) = &config.dead_letter_topic {
            let dconf = TopicConfig {
                partitions: 1,
                fsync: t.config.fsync,
                retention: RetentionConfig {
                    max_age_ms: Some(14 * 24 * 3_600_000),
                    max_bytes: None,
                    until_acked: true,
                },
                max_message_bytes: t.config.max_message_bytes + 64 * 1024,
                ..TopicConfig::default()
            };
            let existing = self.inner.topics.read().get(dlq).cloned();
            let dt = match existing {
                Some(existing) => existing,
                None => self.create_topic_locked(dlq, dconf)?,
            };
            let redrive = SubscriptionName::new(REDRIVE_SUBSCRIPTION)?;
            if !dt.subscriptions.read().contains_key(&redrive) {
                let rconf = SubscriptionConfig { max_deliveries: None, ..SubscriptionConfig::queue() };
                self.create_subscription_locked(&dt, &redrive, rconf)?;
            }
        }
        self.create_subscription_locked(&t, name, config)
    }

    fn create_subscription_locked(
        &self,
        t: &Arc<Topic>,
        name: &SubscriptionName,
        config: SubscriptionConfig,
    ) -> Result<()> {
        let starts = t
            .partitions
            .iter()
            .map(|l| match config.start {
                StartPosition::Earliest => l.start_offset(),
                StartPosition::Latest => l.end_offset(),
            })
            .collect();
        let dir = t.dir.join("subs").join(name.as_str());
        let storage = &self.inner.storage;
        if storage.exists(&dir) {
            storage.remove_dir_all(&dir).map_err(|e| io_error("clear subscription directory", &dir, e))?;
        }
        let meta = SubscriptionMeta { config, starts };
        let sub = Subscription::open(
            storage,
            dir.clone(),
            t,
            name.clone(),
            meta.clone(),
            self.inner.clock.clone(),
        )?;
        write_json(storage, &dir.join("subscription.json"), &meta)?;
        t.subscriptions.write().insert(name.clone(), Arc::new(sub));
        tracing::info!(topic = %t.name, subscription = %name, mode = meta.config.mode.as_str(), "Created subscription.");
        Ok(())
    }

    /// Deletes a subscription and its state (not its dead-letter topic).
    ///
    /// # Errors
    /// Unknown topic or subscription, or storage.
    pub async fn delete_subscription(&self, topic: &TopicName, name: &SubscriptionName) -> Result<()> {
        let (t, s) = self.subscription(topic, name)?;
        let _admin = self.inner.admin.lock().await;
        t.subscriptions.write().remove(name);
        let marker = s.dir.join("subscription.json");
        self.inner.storage.remove_file(&marker).map_err(|e| io_error("delete subscription", &marker, e))?;
        self.inner.storage.remove_dir_all(&s.dir).map_err(|e| io_error("delete subscription", &s.dir, e))?;
        Ok(())
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
    ) -> Result<Vec<Delivery>> {
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

    /// Moves up to `max` dead letters of `subscription` back: each is published again to the
    /// source topic for that subscription only (other subscriptions do not see it again).
    /// Returns how many moved.
    ///
    /// # Errors
    /// Unknown names, a subscription without a dead-letter topic, or storage.
    pub async fn redrive(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
        max: usize,
    ) -> Result<usize> {
        let (t, s) = self.subscription(topic, subscription)?;
        let dlq = s.config.dead_letter_topic.clone().ok_or_else(|| {
            BrokerError::InvalidConfig(format!("subscription {subscription} has no dead-letter topic"))
        })?;
        let redrive = SubscriptionName::new(REDRIVE_SUBSCRIPTION)?;
        let (dt, ds) = self.subscription(&dlq, &redrive)?;
        let member = ds.join();
        let mut moved = 0;
        let mut others = Vec::new();
        let result: Result<()> = async {
            while moved < max {
                let batch = ds.receive(&dt, member, (max - moved).min(256), usize::MAX)?;
                if batch.is_empty() {
                    break;
                }
                for d in batch {
                    let Some(receipt) = d.receipt else { continue };
                    let ext = &d.message.extensions;
                    let mine = ext.get(dead_letter_ext::TOPIC).map(String::as_str) == Some(topic.as_str())
                        && ext.get(dead_letter_ext::SUBSCRIPTION).map(String::as_str)
                            == Some(subscription.as_str());
                    if !mine || moved >= max {
                        others.push(receipt);
                        continue;
                    }
                    let mut message = d.message;
                    for k in dead_letter_ext::ALL {
                        message.extensions.remove(k);
                    }
                    t.publish(
                        vec![Outgoing { message, deliver_at: None }],
                        Some(subscription),
                        false,
                        t.config.max_message_bytes,
                    )
                    .await?;
                    ds.ack(&[receipt]).await?.remove(0)?;
                    moved += 1;
                }
            }
            Ok(())
        }
        .await;
        for r in others {
            let _ = ds.nack(&r, Duration::ZERO, None).await;
        }
        ds.leave(member);
        result?;
        s.changed.notify_waiters();
        Ok(moved)
    }

    /// Runs one round of background work now: lease expiry, dead-lettering, interval fsyncs,
    /// retention and journal compaction. The ticker calls this every `tick_ms`; tests that
    /// drive a manual clock call it directly.
    ///
    /// # Errors
    /// The first storage failure met (the round still visits every topic).
    pub async fn tick(&self) -> Result<()> {
        self.check_open()?;
        let topics: Vec<Arc<Topic>> = self.inner.topics.read().values().cloned().collect();
        let mut first_error = None;
        for t in topics {
            for log in &t.partitions {
                log.sync_if_due();
            }
            let subs: Vec<Arc<Subscription>> = t.subscriptions.read().values().cloned().collect();
            for s in &subs {
                s.sync_if_due();
                s.tick();
                if let Err(e) = self.process_dead_letters(&t, s).await {
                    first_error.get_or_insert(e);
                }
                if let Err(e) = s.compact_if_needed(self.inner.config.journal_compact_bytes).await {
                    first_error.get_or_insert(e);
                }
            }
            if let Err(e) = apply_retention(&t, &subs) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn process_dead_letters(&self, t: &Topic, s: &Subscription) -> Result<()> {
        let pending = s.take_dead_letters();
        if pending.is_empty() {
            return Ok(());
        }
        let Some(dlq_name) = s.config.dead_letter_topic.clone() else { return Ok(()) };
        let mut pending = pending.into_iter();
        while let Some(dl) = pending.next() {
            let outcome: Result<()> = async {
                let Some((_, stored)) = read_one(t, dl.pos)? else {
                    s.forget(dl.pos);
                    return Ok(());
                };
                let dlq = self.topic(&dlq_name)?;
                let mut message = stored.message;
                DeadLetterStamp {
                    reason: dl.reason,
                    topic: &t.name,
                    subscription: &s.name,
                    attempts: dl.attempts,
                    partition: dl.pos.0,
                    offset: dl.pos.1,
                    error: dl.last_error.as_deref(),
                    handler: None,
                }
                .stamp(&mut message);
                // The dead letter is stored before the source lets go of the message: a crash
                // in between gives a duplicate dead letter, never a lost one.
                dlq.publish(vec![Outgoing { message, deliver_at: None }], None, false, dlq.config.max_message_bytes).await?;
                s.dead_letter_stored(dl.pos).await?;
                tracing::warn!(topic = %t.name, subscription = %s.name, partition = dl.pos.0, offset = dl.pos.1,
                    attempts = dl.attempts, reason = dl.reason.as_str(), "Dead-lettered a message.");
                Ok(())
            }
            .await;
            if let Err(e) = outcome {
                s.return_dead_letter(dl);
                for rest in pending {
                    s.return_dead_letter(rest);
                }
                return Err(e);
            }
        }
        Ok(())
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

async fn run_ticker(inner: Weak<Inner>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let broker = Broker { inner };
        if let Err(e) = broker.tick().await {
            tracing::warn!(error = %e, "Background broker work failed; it will be retried.");
        }
    }
}

fn apply_retention(t: &Topic, subs: &[Arc<Subscription>]) -> Result<()> {
    let r = &t.config.retention;
    let floors: Vec<Vec<u64>> = subs.iter().filter_map(|s| s.queue_floors()).collect();
    for (p, log) in t.partitions.iter().enumerate() {
        let min_floor = floors.iter().filter_map(|f| f.get(p).copied()).min();
        let keep_from = if r.until_acked { min_floor } else { None };
        if r.max_age_ms.is_none() && r.max_bytes.is_none() {
            if let Some(f) = keep_from {
                log.delete_segments_before(f)?;
            }
        } else {
            log.apply_retention(&Retention { max_age_ms: r.max_age_ms, max_bytes: r.max_bytes }, keep_from)?;
        }
    }
    Ok(())
}

/// An error of the broker's own files (metadata, directories). A full disk is
/// [`BrokerError::NoSpace`] here too, as it is for appends, so the edges answer 507 /
/// RESOURCE_EXHAUSTED rather than an internal error.
fn io_error(op: &'static str, path: &Path, source: std::io::Error) -> BrokerError {
    use switchboard_storage::StorageError;
    if source.kind() == std::io::ErrorKind::StorageFull {
        return BrokerError::from(StorageError::NoSpace { path: path.to_owned() });
    }
    BrokerError::from(StorageError::Io { op, path: path.to_owned(), source })
}

fn write_json<T: serde::Serialize>(storage: &Arc<dyn Storage>, path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
    storage.write_file_atomic(path, &bytes).map_err(|e| io_error("write metadata", path, e))
}

fn read_json<T: serde::de::DeserializeOwned>(storage: &Arc<dyn Storage>, path: &Path) -> Result<T> {
    let bytes = storage.read_file(path).map_err(|e| io_error("read metadata", path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| BrokerError::CorruptState { path: path.display().to_string(), reason: e.to_string() })
}

/// Opens a topic directory and its subscriptions; `None` (and the directory removed) if it
/// was never completely created.
fn open_topic(storage: &Arc<dyn Storage>, dir: &Path, clock: &SharedClock) -> Result<Option<Topic>> {
    let Some(name) = dir.file_name().and_then(|n| n.to_str()).and_then(|n| TopicName::new(n).ok()) else {
        tracing::warn!(dir = %dir.display(), "Ignored a directory that is not a topic.");
        return Ok(None);
    };
    let marker = dir.join("topic.json");
    if !storage.exists(&marker) {
        tracing::warn!(topic = %name, "Removed a topic directory whose creation never finished.");
        storage.remove_dir_all(dir).map_err(|e| io_error("remove incomplete topic", dir, e))?;
        return Ok(None);
    }
    let config: TopicConfig = read_json(storage, &marker)?;
    let topic = Topic::open(storage, dir.to_owned(), name, config, clock.clone())?;
    let subs_dir = dir.join("subs");
    if storage.exists(&subs_dir) {
        for sdir in storage.list_dir(&subs_dir).map_err(|e| io_error("list subscriptions", &subs_dir, e))? {
            let Some(sname) =
                sdir.file_name().and_then(|n| n.to_str()).and_then(|n| SubscriptionName::new(n).ok())
            else {
                continue;
            };
            let smarker = sdir.join("subscription.json");
            if !storage.exists(&smarker) {
                storage
                    .remove_dir_all(&sdir)
                    .map_err(|e| io_error("remove incomplete subscription", &sdir, e))?;
                continue;
            }
            let meta: SubscriptionMeta = read_json(storage, &smarker)?;
            let sub = Subscription::open(storage, sdir.clone(), &topic, sname.clone(), meta, clock.clone())?;
            topic.subscriptions.write().insert(sname, Arc::new(sub));
        }
    }
    Ok(Some(topic))
}
