//! The broker's errors: one enum, each variant with the context a caller needs to act.

use switchboard_core::{MessageError, NameError, SubscriptionName, TopicName};
use switchboard_storage::StorageError;

/// What can go wrong in a broker operation.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A topic or subscription name breaks the naming rules.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// A message breaks the message rules (attributes, size).
    #[error("invalid message: {0}")]
    InvalidMessage(#[from] MessageError),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An argument of a call is out of range (a lease extension, a nack delay).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No topic of that name.
    #[error("topic {0} does not exist")]
    TopicNotFound(TopicName),
    /// The topic exists with a different configuration.
    #[error("topic {0} already exists with a different configuration")]
    TopicExists(TopicName),
    /// No subscription of that name on the topic.
    #[error("subscription {subscription} does not exist on topic {topic}")]
    SubscriptionNotFound {
        /// The topic.
        topic: TopicName,
        /// The subscription asked for.
        subscription: SubscriptionName,
    },
    /// The subscription exists with a different configuration.
    #[error("subscription {subscription} already exists on topic {topic} with a different configuration")]
    SubscriptionExists {
        /// The topic.
        topic: TopicName,
        /// The subscription.
        subscription: SubscriptionName,
    },
    /// The operation needs the other subscription mode.
    #[error(
        "subscription {subscription} is a {actual} subscription; this operation needs a {expected} subscription"
    )]
    WrongMode {
        /// The subscription.
        subscription: SubscriptionName,
        /// Its mode.
        actual: &'static str,
        /// The mode the operation needs.
        expected: &'static str,
    },
    /// A partition number beyond the topic's partitions.
    #[error("topic {topic} has {partitions} partitions; partition {partition} does not exist")]
    PartitionNotFound {
        /// The topic.
        topic: TopicName,
        /// The partition asked for.
        partition: u32,
        /// How many the topic has.
        partitions: u32,
    },
    /// A receipt that does not parse, or names no delivery this subscription holds.
    #[error(
        "receipt {0} is unknown: it was never issued, is already acked, or belongs to another subscription"
    )]
    UnknownReceipt(String),
    /// The lease behind the receipt ran out; the message has been or will be delivered again.
    #[error("the lease of receipt {0} has expired; the message will be delivered again under a new receipt")]
    LeaseExpired(String),
    /// A stream consumer committed or read a partition that is not assigned to it.
    #[error("partition {partition} is not assigned to this consumer (the group rebalanced)")]
    NotAssigned {
        /// The partition.
        partition: u32,
    },
    /// An offset outside what the partition holds.
    #[error("offset {offset} is outside partition {partition}'s retained range {start}..{end}")]
    OffsetOutOfRange {
        /// The partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// First retained offset.
        start: u64,
        /// One past the last offset.
        end: u64,
    },
    /// A batch holds more messages than allowed.
    #[error("batch holds {len} messages; the limit is {max}")]
    BatchTooLarge {
        /// Messages in the batch.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The disk is full: nothing of this request was stored.
    #[error("no space left on the broker's disk: {0}")]
    NoSpace(#[source] StorageError),
    /// A storage failure; nothing of this request is acknowledged.
    #[error("storage failure: {0}")]
    Storage(#[source] StorageError),
    /// Another process has the data directory open.
    #[error("data directory {0} is in use by another switchboard process")]
    DataDirInUse(String),
    /// The broker is shutting down or was closed.
    #[error("the broker is closed")]
    Closed,
    /// Persisted state could not be read back.
    #[error("persisted state at {path} is unreadable: {reason}")]
    CorruptState {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl From<StorageError> for BrokerError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NoSpace { .. } => BrokerError::NoSpace(e),
            other => BrokerError::Storage(other),
        }
    }
}

/// Shorthand for broker results.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
