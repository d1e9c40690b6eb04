//! The catalog: creating, deleting and listing topics and subscriptions, and their
//! metadata (`topic.json`, `subscription.json`), which is written atomically and *last*, so
//! that a directory without it was never completely created and is cleared at the next open.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchboard_core::{SharedClock, SubscriptionName, TopicName};
use switchboard_storage::Storage;

use super::Broker;
use super::dead_letter::REDRIVE_SUBSCRIPTION;
use crate::config::{RetentionConfig, StartPosition, SubscriptionConfig, TopicConfig};
use crate::error::{BrokerError, Result};
use crate::subscription::{Subscription, SubscriptionMeta};
use crate::topic::Topic;

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

pub(super) fn topics_dir(root: &Path) -> PathBuf {
    root.join("topics")
}

impl Broker {
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
        let topic = Topic::open(
            storage,
            dir.clone(),
            name.clone(),
            config.clone(),
            self.inner.clock.clone(),
            self.inner.stages.clone(),
        )?;
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
pub(super) fn open_topic(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    clock: &SharedClock,
    stages: &Arc<crate::stages::StageLatencies>,
) -> Result<Option<Topic>> {
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
    let topic = Topic::open(storage, dir.to_owned(), name, config, clock.clone(), stages.clone())?;
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
            let started = std::time::Instant::now();
            let sub = Subscription::open(storage, sdir.clone(), &topic, sname.clone(), meta, clock.clone())?;
            tracing::debug!(
                topic = %topic.name,
                subscription = %sname,
                ms = started.elapsed().as_secs_f64() * 1e3,
                journal_bytes = sub.journal_bytes(),
                "Subscription opened."
            );
            topic.subscriptions.write().insert(sname, Arc::new(sub));
        }
    }
    Ok(Some(topic))
}
