//! What mutations take, and its conversion to the broker's types. Every field left out
//! keeps the server's default; conversion fails with `BAD_USER_INPUT` before anything is
//! changed.

use std::collections::BTreeMap;

use async_graphql::{InputObject, MaybeUndefined, OneofObject};
use base64::Engine as _;
use bytes::Bytes;
use switchboard_broker::{self as broker, SeekTo, SubscriptionConfig, TopicConfig};
use switchboard_core::{EXT_PARTITION_KEY, Message, SPEC_VERSION, Timestamp, new_message_id};

use super::error::{bad_input, topic_name};
use super::types::{FsyncPolicy, StartPosition};

/// A topic's settings; each one left out takes the server's default.
#[derive(InputObject, Default)]
pub(super) struct TopicConfigInput {
    /// When an append counts as durable.
    fsync: Option<FsyncPolicy>,
    /// With `INTERVAL` (implied when only this is given): the least time between two
    /// fsyncs, in milliseconds.
    fsync_interval_ms: Option<u64>,
    /// When old messages are deleted.
    retention: Option<RetentionInput>,
    /// Largest message accepted (data plus attributes), in bytes.
    max_message_bytes: Option<usize>,
    /// A message id seen again within this many milliseconds is not stored twice (0: off).
    dedup_window_ms: Option<u64>,
    /// Most message ids remembered for deduplication.
    dedup_max_entries: Option<usize>,
    /// Roll a segment file at this size, in bytes (at least 4096).
    segment_bytes: Option<u64>,
    /// Roll a segment file at this age, in milliseconds.
    segment_ms: Option<u64>,
}

/// When a topic's old messages are deleted; null removes a limit, leaving a field out keeps
/// the default.
#[derive(InputObject, Default)]
pub(super) struct RetentionInput {
    /// Delete messages older than this many milliseconds.
    max_age_ms: MaybeUndefined<u64>,
    /// Delete the oldest segments while a partition is larger than this many bytes.
    max_bytes: MaybeUndefined<u64>,
    /// Never delete a message some queue subscription has not acked.
    until_acked: Option<bool>,
}

impl TopicConfigInput {
    /// `defaults` with this input's values applied (the broker validates ranges).
    pub(super) fn apply(
        self,
        partitions: Option<u32>,
        defaults: &TopicConfig,
    ) -> async_graphql::Result<TopicConfig> {
        let mut c = defaults.clone();
        if let Some(p) = partitions {
            c.partitions = p;
        }
        c.fsync = match (self.fsync, self.fsync_interval_ms) {
            (None, None) => c.fsync,
            (Some(FsyncPolicy::Always), None) => broker::FsyncPolicy::Always,
            (Some(FsyncPolicy::Never), None) => broker::FsyncPolicy::Never,
            (Some(FsyncPolicy::Interval) | None, Some(ms)) => broker::FsyncPolicy::Interval { ms },
            (Some(FsyncPolicy::Interval), None) => {
                return Err(bad_input("fsync INTERVAL needs fsyncIntervalMs"));
            }
            (Some(_), Some(_)) => return Err(bad_input("fsyncIntervalMs only goes with fsync INTERVAL")),
        };
        if let Some(r) = self.retention {
            r.max_age_ms.update_to(&mut c.retention.max_age_ms);
            r.max_bytes.update_to(&mut c.retention.max_bytes);
            if let Some(u) = r.until_acked {
                c.retention.until_acked = u;
            }
        }
        let set = |value: Option<u64>, field: &mut u64| *field = value.unwrap_or(*field);
        set(self.dedup_window_ms, &mut c.dedup_window_ms);
        set(self.segment_bytes, &mut c.segment_bytes);
        set(self.segment_ms, &mut c.segment_ms);
        c.max_message_bytes = self.max_message_bytes.unwrap_or(c.max_message_bytes);
        c.dedup_max_entries = self.dedup_max_entries.unwrap_or(c.dedup_max_entries);
        Ok(c)
    }
}

/// A subscription's settings; each one left out takes the default.
#[derive(InputObject, Default)]
pub(super) struct SubscriptionConfigInput {
    /// Where reading starts (default `EARLIEST`).
    start: Option<StartPosition>,
    /// Queue: how long a delivery is leased before it is redelivered, in milliseconds
    /// (default 30000).
    lease_ms: Option<u64>,
    /// Queue: deliveries of one message before it is dead-lettered (default 10); null
    /// retries forever and creates no dead-letter topic.
    max_deliveries: MaybeUndefined<u32>,
    /// Queue: where dead letters go (default `<topic>.<subscription>.dlq`).
    dead_letter_topic: Option<String>,
    /// Queue: at most one message in flight per partition key (default false).
    ordered_by_key: Option<bool>,
    /// Queue: default bound on the messages one consumer holds unacked (default 1000).
    max_in_flight_per_consumer: Option<usize>,
}

impl SubscriptionConfigInput {
    /// The settings for a subscription in `mode` (the broker validates ranges).
    pub(super) fn into_config(
        self,
        mode: broker::SubscriptionMode,
    ) -> async_graphql::Result<SubscriptionConfig> {
        let mut c = SubscriptionConfig { mode, ..SubscriptionConfig::default() };
        if let Some(s) = self.start {
            c.start = s.into();
        }
        c.lease_ms = self.lease_ms.unwrap_or(c.lease_ms);
        self.max_deliveries.update_to(&mut c.max_deliveries);
        c.dead_letter_topic = self.dead_letter_topic.as_deref().map(topic_name).transpose()?;
        c.ordered_by_key = self.ordered_by_key.unwrap_or(c.ordered_by_key);
        c.max_in_flight_per_consumer =
            self.max_in_flight_per_consumer.unwrap_or(c.max_in_flight_per_consumer);
        Ok(c)
    }
}

/// An event to publish: CloudEvents attributes and data.
#[derive(InputObject)]
pub(super) struct EventInput {
    /// Unique per source; the idempotency key: an id published again within the topic's
    /// dedup window is not stored twice. Generated when left out.
    id: Option<String>,
    /// The context in which the event happened (a URI-reference).
    source: String,
    /// The kind of event, e.g. `com.example.order.created`.
    #[graphql(name = "type")]
    ty: String,
    /// Must be 1.0 when given.
    specversion: Option<String>,
    /// The subject of the event in the context of its source.
    subject: Option<String>,
    /// When the event happened, RFC 3339.
    time: Option<String>,
    /// Media type of the data, e.g. `application/json`.
    datacontenttype: Option<String>,
    /// Schema the data adheres to (URI).
    dataschema: Option<String>,
    /// Picks the partition and, with `orderedByKey`, the order (extension `partitionkey`).
    partition_key: Option<String>,
    /// Extension attributes such as `traceparent`.
    #[graphql(default)]
    extensions: Vec<AttributeInput>,
    /// The data as text (UTF-8). At most one of `data` and `dataBase64`.
    data: Option<String>,
    /// The data, base64-encoded (standard alphabet).
    data_base64: Option<String>,
}

/// An extension attribute.
#[derive(InputObject)]
pub(super) struct AttributeInput {
    /// Its name: 1 to 20 lowercase ASCII letters or digits.
    name: String,
    /// Its value.
    value: String,
}

impl EventInput {
    /// The message to publish. The broker validates attributes and size.
    pub(super) fn into_message(self) -> async_graphql::Result<Message> {
        let data = match (self.data, self.data_base64) {
            (Some(_), Some(_)) => return Err(bad_input("give data or dataBase64, not both")),
            (Some(text), None) => Bytes::from(text),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map(Bytes::from)
                .map_err(|e| bad_input(format!("dataBase64 is not valid base64: {e}")))?,
            (None, None) => Bytes::new(),
        };
        let mut extensions = BTreeMap::new();
        for a in self.extensions {
            if extensions.insert(a.name.clone(), a.value).is_some() {
                return Err(bad_input(format!("extension {:?} is given twice", a.name)));
            }
        }
        if let Some(key) = self.partition_key
            && extensions.insert(EXT_PARTITION_KEY.to_owned(), key).is_some()
        {
            return Err(bad_input("give partitionKey or the partitionkey extension, not both"));
        }
        Ok(Message {
            id: self.id.unwrap_or_else(new_message_id),
            source: self.source,
            ty: self.ty,
            specversion: self.specversion.unwrap_or_else(|| SPEC_VERSION.to_owned()),
            subject: self.subject,
            time: self.time,
            datacontenttype: self.datacontenttype,
            dataschema: self.dataschema,
            extensions,
            data,
        })
    }
}

/// Where to move a stream subscription: exactly one of the fields.
#[derive(OneofObject)]
pub(super) enum SeekTarget {
    /// Every partition to its oldest retained message, or past its newest.
    Position(StartPosition),
    /// Every partition to the first message appended at or after this RFC 3339 time.
    Time(String),
    /// One partition to one offset.
    Offset(PartitionOffset),
}

/// A place in one partition.
#[derive(InputObject)]
pub(super) struct PartitionOffset {
    /// The partition.
    partition: u32,
    /// The next offset to read.
    offset: u64,
}

impl SeekTarget {
    /// The broker's seek target.
    pub(super) fn into_seek(self) -> async_graphql::Result<SeekTo> {
        Ok(match self {
            SeekTarget::Position(StartPosition::Earliest) => SeekTo::Earliest,
            SeekTarget::Position(StartPosition::Latest) => SeekTo::Latest,
            SeekTarget::Time(t) => SeekTo::Time(Timestamp::parse_rfc3339(&t).ok_or_else(|| {
                bad_input(format!("{t:?} is not an RFC 3339 time such as 2026-11-26T10:00:00Z"))
            })?),
            SeekTarget::Offset(PartitionOffset { partition, offset }) => SeekTo::Offset { partition, offset },
        })
    }
}
