//! What queries return: topics, partitions, subscriptions with their counts and rates,
//! messages read from the log, publish receipts. Doc comments here are the schema's
//! descriptions.

use async_graphql::{ComplexObject, Context, Enum, Object, SimpleObject};
use base64::Engine as _;
use switchboard_broker::{
    self as broker, Broker, BrokerError, LogRecord, SubscriptionConfig, TopicConfig, TopicInfo,
};
use switchboard_core::{SubscriptionName, TopicName};

use super::access::{check, check_inspect, state};
use super::error::{GqlResult, bad_input, subscription_name};
use crate::auth::Action;

/// Most messages one `messages` field returns.
const MAX_READ: usize = 1000;

pub(super) struct Topic(pub(super) TopicInfo);

/// A topic: a partitioned, retained log that every subscription reads in full.
#[Object]
impl Topic {
    /// The topic's name.
    async fn name(&self) -> &str {
        self.0.name.as_str()
    }

    /// Settings fixed when the topic was created.
    async fn config(&self) -> TopicSettings {
        TopicSettings::from(&self.0.config)
    }

    /// Each partition's offsets and size, as of this query.
    async fn partitions(&self) -> Vec<Partition> {
        self.0
            .partitions
            .iter()
            .map(|p| Partition {
                partition: p.partition,
                start_offset: p.start_offset,
                end_offset: p.end_offset,
                size_bytes: p.size_bytes,
            })
            .collect()
    }

    /// Messages per second published to this topic through the server's APIs, averaged over
    /// the last minute.
    async fn publish_rate(&self, ctx: &Context<'_>) -> async_graphql::Result<f64> {
        Ok(state(ctx)?.metrics.rate_per_second(self.0.name.as_str(), ""))
    }

    /// The topic's subscriptions, by name. Needs permission to consume from or administer
    /// the topic.
    async fn subscriptions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<TopicSubscription>> {
        check_inspect(ctx, &self.0.name)?;
        Ok(self
            .0
            .subscriptions
            .iter()
            .map(|(name, config)| TopicSubscription::new(self.0.name.clone(), name.clone(), config.clone()))
            .collect())
    }

    /// One subscription. Needs permission to consume from or administer the topic.
    async fn subscription(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> async_graphql::Result<TopicSubscription> {
        check_inspect(ctx, &self.0.name)?;
        let name = subscription_name(&name)?;
        TopicSubscription::load(&state(ctx)?.broker, self.0.name.clone(), name)
    }

    /// Up to `limit` messages of one partition, oldest first, starting at `offset` (default:
    /// the oldest retained message). Reading moves no subscription. Needs permission to
    /// consume from the topic.
    async fn messages(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 0)] partition: u32,
        offset: Option<u64>,
        #[graphql(default = 20)] limit: usize,
    ) -> async_graphql::Result<Vec<Message>> {
        check(ctx, Action::Consume, &self.0.name)?;
        if limit > MAX_READ {
            return Err(bad_input(format!(
                "limit is {limit}; at most {MAX_READ} messages can be read at once"
            )));
        }
        let broker = &state(ctx)?.broker;
        let from = match offset {
            Some(o) => o,
            None => broker
                .topic_info(&self.0.name)
                .gql()?
                .partitions
                .get(partition as usize)
                .map_or(0, |p| p.start_offset),
        };
        Ok(broker.read(&self.0.name, partition, from, limit).gql()?.into_iter().map(Message).collect())
    }
}

/// One partition of a topic.
#[derive(SimpleObject)]
pub(super) struct Partition {
    /// The partition number, from 0.
    partition: u32,
    /// Offset of the oldest retained message.
    start_offset: u64,
    /// One past the newest offset: where the next message goes.
    end_offset: u64,
    /// Bytes on disk.
    size_bytes: u64,
}

/// A topic's settings.
#[derive(SimpleObject)]
#[graphql(name = "TopicConfig")]
pub(super) struct TopicSettings {
    /// Number of partitions.
    partitions: u32,
    /// When an append counts as durable.
    fsync: FsyncPolicy,
    /// With `INTERVAL`: the least time between two fsyncs, in milliseconds.
    fsync_interval_ms: Option<u64>,
    /// When old messages are deleted.
    retention: Retention,
    /// Largest message accepted (data plus attributes), in bytes.
    max_message_bytes: usize,
    /// A message id seen again within this many milliseconds is not stored twice (0: off).
    dedup_window_ms: u64,
    /// Most message ids remembered for deduplication.
    dedup_max_entries: usize,
    /// A segment file is rolled at this size, in bytes.
    segment_bytes: u64,
    /// A segment file is rolled at this age, in milliseconds.
    segment_ms: u64,
}

impl From<&TopicConfig> for TopicSettings {
    fn from(c: &TopicConfig) -> Self {
        let (fsync, fsync_interval_ms) = match c.fsync {
            broker::FsyncPolicy::Always => (FsyncPolicy::Always, None),
            broker::FsyncPolicy::Interval { ms } => (FsyncPolicy::Interval, Some(ms)),
            broker::FsyncPolicy::Never => (FsyncPolicy::Never, None),
        };
        TopicSettings {
            partitions: c.partitions,
            fsync,
            fsync_interval_ms,
            retention: Retention {
                max_age_ms: c.retention.max_age_ms,
                max_bytes: c.retention.max_bytes,
                until_acked: c.retention.until_acked,
            },
            max_message_bytes: c.max_message_bytes,
            dedup_window_ms: c.dedup_window_ms,
            dedup_max_entries: c.dedup_max_entries,
            segment_bytes: c.segment_bytes,
            segment_ms: c.segment_ms,
        }
    }
}

/// When a topic's old messages are deleted.
#[derive(SimpleObject)]
pub(super) struct Retention {
    /// Messages older than this many milliseconds are deleted (by whole segments).
    max_age_ms: Option<u64>,
    /// The oldest segments are deleted while a partition is larger than this many bytes.
    max_bytes: Option<u64>,
    /// No message some queue subscription has not acked is ever deleted.
    until_acked: bool,
}

/// When an append counts as durable.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub(super) enum FsyncPolicy {
    /// After an fsync covering it (concurrent publishes share fsyncs).
    Always,
    /// After the write; fsyncs run in the background every `fsyncIntervalMs`.
    Interval,
    /// After the write; fsyncs only when segments roll and at shutdown.
    Never,
}

/// How a subscription hands out messages.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "switchboard_broker::SubscriptionMode")]
pub(super) enum SubscriptionMode {
    /// Ordered per partition; members split the partitions; offsets are committed.
    Stream,
    /// Any member may get any message; each is acked, nacked or redelivered.
    Queue,
}

/// An end of a topic's retained messages.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "switchboard_broker::StartPosition")]
pub(super) enum StartPosition {
    /// The oldest retained message.
    Earliest,
    /// Past the newest message: only what is published from now on.
    Latest,
}

/// Which guarantee held when a publish returned.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "switchboard_broker::Durability")]
pub(super) enum Durability {
    /// The message was fsynced.
    Fsynced,
    /// The message was written but may not survive a power loss (fsync policy `INTERVAL`
    /// or `NEVER`, or a duplicate whose first copy's durability is not known).
    Written,
}

pub(super) struct TopicSubscription {
    topic: TopicName,
    name: SubscriptionName,
    config: SubscriptionConfig,
}

impl TopicSubscription {
    pub(super) fn new(topic: TopicName, name: SubscriptionName, config: SubscriptionConfig) -> Self {
        TopicSubscription { topic, name, config }
    }

    /// The subscription as the broker has it now.
    pub(super) fn load(
        broker: &Broker,
        topic: TopicName,
        name: SubscriptionName,
    ) -> async_graphql::Result<TopicSubscription> {
        let config = broker
            .topic_info(&topic)
            .gql()?
            .subscriptions
            .into_iter()
            .find_map(|(n, c)| (n == name).then_some(c))
            .ok_or_else(|| BrokerError::SubscriptionNotFound {
                topic: topic.clone(),
                subscription: name.clone(),
            })
            .gql()?;
        Ok(TopicSubscription { topic, name, config })
    }
}

/// A subscription: a named cursor on a topic that receives every message of it.
#[Object]
impl TopicSubscription {
    /// The subscription's name.
    async fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The topic it reads.
    async fn topic(&self) -> &str {
        self.topic.as_str()
    }

    /// Stream or queue.
    async fn mode(&self) -> SubscriptionMode {
        self.config.mode.into()
    }

    /// Settings fixed when the subscription was created.
    async fn config(&self) -> SubscriptionSettings {
        let c = &self.config;
        SubscriptionSettings {
            mode: c.mode.into(),
            start: c.start.into(),
            lease_ms: c.lease_ms,
            max_deliveries: c.max_deliveries,
            dead_letter_topic: c.dead_letter_topic.as_ref().map(ToString::to_string),
            ordered_by_key: c.ordered_by_key,
            max_in_flight_per_consumer: c.max_in_flight_per_consumer,
        }
    }

    /// Backlog, in-flight, lag, scheduled and dead-letter counts, as of this query.
    async fn stats(&self, ctx: &Context<'_>) -> async_graphql::Result<SubscriptionStats> {
        let s = state(ctx)?.broker.stats(&self.topic, &self.name).gql()?;
        Ok(SubscriptionStats {
            backlog: s.backlog,
            in_flight: s.in_flight,
            lag: s.lag,
            scheduled: s.scheduled,
            dead_lettered: s.dead_lettered,
            consumers: s.consumers,
            partitions: s
                .partitions
                .into_iter()
                .map(|p| PartitionStats {
                    partition: p.partition,
                    start_offset: p.start_offset,
                    end_offset: p.end_offset,
                    floor: p.floor,
                    backlog: p.backlog,
                })
                .collect(),
        })
    }

    /// Messages per second delivered through this subscription by the server's APIs,
    /// averaged over the last minute.
    async fn delivery_rate(&self, ctx: &Context<'_>) -> async_graphql::Result<f64> {
        Ok(state(ctx)?.metrics.rate_per_second(self.topic.as_str(), self.name.as_str()))
    }
}

/// A subscription's settings.
#[derive(SimpleObject)]
#[graphql(name = "SubscriptionConfig")]
pub(super) struct SubscriptionSettings {
    /// Stream or queue.
    mode: SubscriptionMode,
    /// Where reading started when the subscription was created.
    start: StartPosition,
    /// Queue: how long a delivery is leased before it is redelivered, in milliseconds.
    lease_ms: u64,
    /// Queue: deliveries of one message before it is dead-lettered; null retries forever.
    max_deliveries: Option<u32>,
    /// Queue: where dead letters go.
    dead_letter_topic: Option<String>,
    /// Queue: at most one message in flight per partition key.
    ordered_by_key: bool,
    /// Queue: default bound on the messages one consumer holds unacked.
    max_in_flight_per_consumer: usize,
}

/// Counts of a subscription.
#[derive(SimpleObject)]
pub(super) struct SubscriptionStats {
    /// Messages not yet acked (queue) or committed (stream).
    backlog: u64,
    /// Queue: deliveries whose lease is running. Stream: messages read but not committed.
    in_flight: u64,
    /// End offset minus the oldest unfinished offset, summed over partitions.
    lag: u64,
    /// Queue: messages held back by a nack delay or a `deliverAt` time.
    scheduled: u64,
    /// Queue: messages moved to the dead-letter topic so far.
    dead_lettered: u64,
    /// Consumers attached now.
    consumers: usize,
    /// The same per partition.
    partitions: Vec<PartitionStats>,
}

/// Counts of one partition of a subscription.
#[derive(SimpleObject)]
pub(super) struct PartitionStats {
    /// The partition.
    partition: u32,
    /// Offset of the oldest retained message.
    start_offset: u64,
    /// One past the newest offset.
    end_offset: u64,
    /// Queue: every offset below is acked or dead-lettered. Stream: the committed offset.
    floor: u64,
    /// Messages not yet acked or committed.
    backlog: u64,
}

pub(super) struct Message(pub(super) LogRecord);

/// A message as stored in a partition: its place in the log and its CloudEvents attributes
/// and data.
#[Object]
impl Message {
    /// The topic.
    async fn topic(&self) -> &str {
        self.0.topic.as_str()
    }

    /// Its partition.
    async fn partition(&self) -> u32 {
        self.0.partition
    }

    /// Its offset in the partition.
    async fn offset(&self) -> u64 {
        self.0.offset
    }

    /// When the broker appended it (RFC 3339, UTC).
    async fn published_at(&self) -> String {
        self.0.published_at.to_rfc3339()
    }

    /// CloudEvents `id`: unique per source; the idempotency key of publish.
    async fn id(&self) -> &str {
        &self.0.message.id
    }

    /// CloudEvents `source`: the context in which the event happened.
    async fn source(&self) -> &str {
        &self.0.message.source
    }

    /// CloudEvents `type`, e.g. `com.example.order.created`.
    #[graphql(name = "type")]
    async fn ty(&self) -> &str {
        &self.0.message.ty
    }

    /// CloudEvents `specversion` (1.0).
    async fn specversion(&self) -> &str {
        &self.0.message.specversion
    }

    /// CloudEvents `subject`.
    async fn subject(&self) -> Option<&str> {
        self.0.message.subject.as_deref()
    }

    /// CloudEvents `time`: when the event happened, as the publisher gave it.
    async fn time(&self) -> Option<&str> {
        self.0.message.time.as_deref()
    }

    /// Media type of the data.
    async fn datacontenttype(&self) -> Option<&str> {
        self.0.message.datacontenttype.as_deref()
    }

    /// Schema the data adheres to.
    async fn dataschema(&self) -> Option<&str> {
        self.0.message.dataschema.as_deref()
    }

    /// The partition key (extension `partitionkey`), if any.
    async fn partition_key(&self) -> Option<&str> {
        self.0.message.partition_key()
    }

    /// Extension attributes (`traceparent`, `partitionkey`, dead-letter metadata, …), by name.
    async fn extensions(&self) -> Vec<Attribute> {
        let ext = &self.0.message.extensions;
        ext.iter().map(|(name, value)| Attribute { name: name.clone(), value: value.clone() }).collect()
    }

    /// The data as text; bytes that are not UTF-8 show as U+FFFD (use `dataBase64` for
    /// binary data).
    async fn data(&self) -> String {
        String::from_utf8_lossy(&self.0.message.data).into_owned()
    }

    /// The data, base64-encoded (standard alphabet, padded).
    async fn data_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.0.message.data)
    }

    /// Size of the data in bytes.
    async fn data_size(&self) -> usize {
        self.0.message.data.len()
    }
}

/// An extension attribute of a message.
#[derive(SimpleObject)]
pub(super) struct Attribute {
    /// Its name: lowercase ASCII letters and digits.
    pub(super) name: String,
    /// Its value.
    pub(super) value: String,
}

/// Where a published message was stored.
#[derive(SimpleObject)]
#[graphql(complex)]
pub(super) struct PublishReceipt {
    /// The message id (generated when the event gave none).
    pub(super) id: String,
    /// The partition it went to.
    pub(super) partition: u32,
    /// Its offset there.
    pub(super) offset: u64,
    /// Which guarantee held when the publish returned.
    pub(super) durability: Durability,
    /// True if the id was already published within the topic's dedup window: nothing new
    /// was stored, and `partition` and `offset` name the first copy.
    pub(super) duplicate: bool,
    #[graphql(skip)]
    pub(super) timestamp: switchboard_core::Timestamp,
}

#[ComplexObject]
impl PublishReceipt {
    /// When the broker appended it (RFC 3339, UTC).
    async fn published_at(&self) -> String {
        self.timestamp.to_rfc3339()
    }
}
