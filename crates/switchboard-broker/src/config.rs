//! Typed, defaulted configuration of the broker, its topics and subscriptions.

use serde::{Deserialize, Serialize};
use switchboard_core::TopicName;
use switchboard_storage::FsyncPolicy;

use crate::error::{BrokerError, Result};

/// Default largest message, in bytes (data plus attributes).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Broker-wide settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrokerConfig {
    /// Largest batch accepted by `publish_batch`, in messages.
    pub max_batch_messages: usize,
    /// How often the background ticker runs retention, lease expiry, interval fsyncs and
    /// journal compaction, in milliseconds; 0 runs no ticker (the owner calls
    /// [`Broker::tick`](crate::Broker::tick) itself, as deterministic tests do).
    pub tick_ms: u64,
    /// Compact a subscription's state journal once it holds this many bytes.
    pub journal_compact_bytes: u64,
    /// Largest message any publish accepts, whatever a topic allows (a server-wide limit).
    pub max_message_bytes: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_batch_messages: 10_000,
            tick_ms: 50,
            journal_compact_bytes: 8 * 1024 * 1024,
            max_message_bytes: 64 * 1024 * 1024,
        }
    }
}

/// When a topic's segments are deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// Delete segments whose newest message is older than this.
    pub max_age_ms: Option<u64>,
    /// Delete the oldest segments while the partition is larger than this.
    pub max_bytes: Option<u64>,
    /// Never delete a message some queue subscription has not acked. With no age or size
    /// limit, segments are deleted as soon as every queue subscription has acked them
    /// (a pure queue); with limits, the limits apply only to acked data.
    pub until_acked: bool,
}

/// A topic's settings, fixed at creation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicConfig {
    /// Number of partitions (1 to 1024).
    pub partitions: u32,
    /// When an append counts as durable.
    pub fsync: FsyncPolicy,
    /// When old data is deleted.
    pub retention: RetentionConfig,
    /// Largest message accepted, in bytes.
    pub max_message_bytes: usize,
    /// A repeated message id within this window is not stored twice (0 disables).
    pub dedup_window_ms: u64,
    /// Upper bound on ids remembered for deduplication (the window ends earlier if reached).
    pub dedup_max_entries: usize,
    /// Roll a segment at this size.
    pub segment_bytes: u64,
    /// Roll a segment at this age.
    pub segment_ms: u64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            fsync: FsyncPolicy::Always,
            retention: RetentionConfig {
                max_age_ms: Some(7 * 24 * 3_600_000),
                max_bytes: None,
                until_acked: true,
            },
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            dedup_window_ms: 5 * 60_000,
            dedup_max_entries: 1_000_000,
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: 24 * 3_600_000,
        }
    }
}

impl TopicConfig {
    /// Checks every value is in range.
    ///
    /// # Errors
    /// [`BrokerError::InvalidConfig`] naming the value.
    pub fn validate(&self) -> Result<()> {
        if !(1..=1024).contains(&self.partitions) {
            return Err(BrokerError::InvalidConfig(format!(
                "partitions must be between 1 and 1024, not {}",
                self.partitions
            )));
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > 64 * 1024 * 1024 {
            return Err(BrokerError::InvalidConfig(format!(
                "max_message_bytes must be between 1 and 64 MiB, not {}",
                self.max_message_bytes
            )));
        }
        if self.segment_bytes < 4096 {
            return Err(BrokerError::InvalidConfig("segment_bytes must be at least 4096".into()));
        }
        if let FsyncPolicy::Interval { ms: 0 } = self.fsync {
            return Err(BrokerError::InvalidConfig("fsync interval must be at least 1 ms".into()));
        }
        Ok(())
    }
}

/// How a subscription hands out messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionMode {
    /// Ordered per partition; members split the partitions; offsets are committed.
    Stream,
    /// Any member may get any message; each message is acked, nacked or redelivered.
    Queue,
}

impl SubscriptionMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SubscriptionMode::Stream => "stream",
            SubscriptionMode::Queue => "queue",
        }
    }
}

/// Where a new subscription starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// The oldest retained message.
    Earliest,
    /// Only messages published after the subscription is created.
    Latest,
}

/// A subscription's settings, fixed at creation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscriptionConfig {
    /// Stream or queue.
    pub mode: SubscriptionMode,
    /// Where reading starts.
    pub start: StartPosition,
    /// Queue: how long a delivery is leased before it is redelivered.
    pub lease_ms: u64,
    /// Queue: deliveries of one message before it is dead-lettered; `None` retries forever
    /// and creates no dead-letter topic.
    pub max_deliveries: Option<u32>,
    /// Queue: where dead letters go; defaults to `<topic>.<subscription>.dlq`.
    pub dead_letter_topic: Option<TopicName>,
    /// Queue: at most one message in flight per partition key.
    pub ordered_by_key: bool,
    /// Queue: default bound on in-flight messages per consumer.
    pub max_in_flight_per_consumer: usize,
}

impl Default for SubscriptionConfig {
    fn default() -> Self {
        SubscriptionConfig {
            mode: SubscriptionMode::Queue,
            start: StartPosition::Earliest,
            lease_ms: 30_000,
            max_deliveries: Some(10),
            dead_letter_topic: None,
            ordered_by_key: false,
            max_in_flight_per_consumer: 1000,
        }
    }
}

impl SubscriptionConfig {
    /// A queue subscription with defaults.
    pub fn queue() -> Self {
        SubscriptionConfig::default()
    }

    /// A stream subscription with defaults.
    pub fn stream() -> Self {
        SubscriptionConfig { mode: SubscriptionMode::Stream, ..SubscriptionConfig::default() }
    }

    /// The dead-letter topic a subscription named `name` on `topic` with these settings uses:
    /// the one configured, or `<topic>.<name>.dlq`; `None` for streams and for queues that
    /// retry forever. Callers that authorize subscription creation check this topic too,
    /// since the broker creates it and writes to it.
    ///
    /// # Errors
    /// [`BrokerError::InvalidConfig`] if the default name is not a valid topic name, or the
    /// topic would be its own dead-letter topic.
    pub fn dead_letter_topic_for(
        &self,
        topic: &TopicName,
        name: &switchboard_core::SubscriptionName,
    ) -> Result<Option<TopicName>> {
        if self.mode != SubscriptionMode::Queue || self.max_deliveries.is_none() {
            return Ok(None);
        }
        let dlq = match &self.dead_letter_topic {
            Some(d) => d.clone(),
            None => switchboard_core::contract::default_dead_letter_topic(topic, name).map_err(|e| {
                BrokerError::InvalidConfig(format!(
                    "the default dead-letter topic name is invalid ({e}); set dead_letter_topic"
                ))
            })?,
        };
        if dlq == *topic {
            return Err(BrokerError::InvalidConfig("a topic cannot be its own dead-letter topic".into()));
        }
        Ok(Some(dlq))
    }

    /// Checks every value is in range.
    ///
    /// # Errors
    /// [`BrokerError::InvalidConfig`] naming the value.
    pub fn validate(&self) -> Result<()> {
        if self.lease_ms == 0 {
            return Err(BrokerError::InvalidConfig("lease_ms must be at least 1".into()));
        }
        if self.max_deliveries == Some(0) {
            return Err(BrokerError::InvalidConfig("max_deliveries must be at least 1".into()));
        }
        if self.max_in_flight_per_consumer == 0 {
            return Err(BrokerError::InvalidConfig("max_in_flight_per_consumer must be at least 1".into()));
        }
        Ok(())
    }
}
