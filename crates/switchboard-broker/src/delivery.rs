//! What consumers receive and what they can read about a subscription.

use switchboard_core::{Message, SubscriptionName, Timestamp, TopicName};

use crate::config::SubscriptionMode;
use crate::receipt::Receipt;

/// One message handed to a consumer of the broker. (Named apart from the SDK contract's
/// `switchboard_core::contract::Delivery`, which the embedded backend builds from it.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerDelivery {
    /// The topic it was published to.
    pub topic: TopicName,
    /// The subscription it was delivered through.
    pub subscription: SubscriptionName,
    /// Its partition.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// When the broker appended it.
    pub published_at: Timestamp,
    /// 1 for the first delivery, 2 for the first redelivery, … (always 1 in stream mode).
    pub attempt: u32,
    /// Queue mode: the handle to ack, nack or extend this delivery.
    pub receipt: Option<Receipt>,
    /// Queue mode: when the lease runs out and the message is delivered again.
    pub lease_expires_at: Option<Timestamp>,
    /// The message as published.
    pub message: Message,
}

/// Where to move a stream subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekTo {
    /// Every partition to its oldest retained message.
    Earliest,
    /// Every partition past its newest message.
    Latest,
    /// Every partition to the first message appended at or after this time.
    Time(Timestamp),
    /// One partition to one offset.
    Offset {
        /// The partition.
        partition: u32,
        /// The next offset to read.
        offset: u64,
    },
}

/// Counts for one partition of a subscription.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionStats {
    /// The partition.
    pub partition: u32,
    /// First retained offset.
    pub start_offset: u64,
    /// One past the newest offset.
    pub end_offset: u64,
    /// Queue: every offset below is acked or dead-lettered. Stream: the committed offset.
    pub floor: u64,
    /// Messages not yet acked (queue) or not yet committed (stream).
    pub backlog: u64,
}

/// Counts for a subscription, readable at any time.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SubscriptionStats {
    /// The subscription's mode.
    pub mode: SubscriptionMode,
    /// Messages not yet acked (queue) or committed (stream), over all partitions.
    pub backlog: u64,
    /// Queue: deliveries whose lease is running. Stream: messages read but not committed.
    pub in_flight: u64,
    /// Distance from the oldest unfinished message to the newest: end offset minus floor,
    /// summed over partitions.
    pub lag: u64,
    /// Queue: messages held for a delay or a `deliver_at` time.
    pub scheduled: u64,
    /// Queue: messages moved to the dead-letter topic so far.
    pub dead_lettered: u64,
    /// Consumers currently attached.
    pub consumers: usize,
    /// Per partition.
    pub partitions: Vec<PartitionStats>,
}

/// A message as stored in a partition, read without any subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// The topic.
    pub topic: TopicName,
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// When the broker appended it.
    pub published_at: Timestamp,
    /// The message as published.
    pub message: Message,
}
