//! # switchboard-broker
//!
//! The embedded broker: topics that are **both a queue and a log**.
//!
//! A topic is a set of partitions, each an append-only log on disk
//! ([`switchboard_storage::Log`]). Every subscription on a topic receives every message —
//! fan-out without copying data — in one of two modes:
//!
//! - **stream** ([`StreamConsumer`]): ordered per partition; members of one subscription split
//!   the partitions between them and rebalance when members come and go; offsets are
//!   committed; [`Broker::seek`] moves to the earliest, latest, an offset or a time.
//! - **queue** ([`QueueConsumer`]): any member gets any message under a lease; ack, nack with
//!   a delay, extend; an expired lease redelivers; after `max_deliveries` the message goes to
//!   a dead-letter topic with metadata, from where [`Broker::redrive`] brings it back;
//!   optional order by key (one message per key in flight); a per-consumer in-flight bound.
//!
//! Publishing ([`Broker::publish`], [`Broker::publish_batch`]) returns once the message is
//! durable under the topic's fsync policy (`always` by default, with group commit), is
//! idempotent by message id within a dedup window, and can delay delivery
//! ([`PublishOptions::deliver_at`]). Subscription state (offsets, acks, attempt counts,
//! delays) lives in a per-subscription journal, so an ack that returned `Ok` survives a crash.
//!
//! Time comes from an injected [`Clock`](switchboard_core::Clock) and all I/O goes through a
//! [`Storage`](switchboard_storage::Storage), so tests expire leases without sleeping and
//! inject disk faults. See [`Broker`] for an example.

mod broker;
mod codec;
mod config;
mod consumer;
mod dedup;
mod delivery;
mod dir_lock;
mod error;
mod journal;
mod partitioner;
mod queue;
mod receipt;
mod stages;
mod stream;
mod subscription;
mod topic;

pub use broker::{Broker, PartitionInfo, REDRIVE_SUBSCRIPTION, TopicInfo, dead_letter_ext};
pub use config::{
    BrokerConfig, DEFAULT_MAX_MESSAGE_BYTES, RetentionConfig, StartPosition, SubscriptionConfig,
    SubscriptionMode, TopicConfig,
};
pub use consumer::{QueueConsumer, StreamConsumer};
pub use delivery::{BrokerDelivery, LogRecord, PartitionStats, SeekTo, SubscriptionStats};
pub use dir_lock::{DataDirLock, lock_data_dir};
pub use error::{BrokerError, Result};
pub use receipt::Receipt;
pub use stages::{BUCKET_BOUNDS_US, Stage, StageSnapshot};
pub use switchboard_storage::{Durability, FsyncPolicy};
pub use topic::{PublishOptions, PublishReceipt};
