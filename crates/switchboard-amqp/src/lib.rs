//! # switchboard-amqp
//!
//! The RabbitMQ backend of the Switchboard SDK: [`AmqpBackend`] implements the backend
//! contract ([`Backend`], [`Publisher`], [`Subscriber`]) over AMQP 0-9-1 with `lapin`,
//! using only RabbitMQ 3.10 features.
//!
//! | contract | RabbitMQ |
//! | --- | --- |
//! | topic | durable fanout exchange `sb.t.<topic>`, with the stream `sb.s.<topic>` bound to it |
//! | publish | persistent messages under publisher confirms; CloudEvents binary mode (`cloudEvents:*` headers) |
//! | queue subscription | durable quorum queue per (topic, subscription), competing consumers, `basic.qos(prefetch)` |
//! | stream subscription | consumer on the topic's stream with `x-stream-offset` `first`/`next`, or the committed offset |
//! | stream commit | the next offset, in a per-subscription offset store (a classic queue holding one message) |
//! | attempt | `x-delivery-count + 1` (quorum queues) |
//! | lease, extend | client-side timer; expiry nacks with requeue |
//! | `start` | streams: `Earliest`/`Latest` for a new subscription; queues: ignored, a quorum queue begins at its creation |
//! | nack with delay | held unacked for the delay, then nacked with requeue |
//! | dead letters | published by the backend with `dl*` metadata (confirm, then ack); `x-delivery-limit` + DLX as backstop |
//!
//! Each module's docs say how and why: `naming` (injective names within 255 bytes),
//! `headers` (attribute mapping), `connect` (connection, reconnects, timeouts), `publish`,
//! `subscribe` (queues, streams, one mode per name), `offsets` (committed stream offsets),
//! `pump` (reading deliveries, surviving reconnects), `settle` (leases, delayed nacks, the
//! in-flight count), `dead_letter` and `admin` (stats, deletion).
//!
//! No call waits for RabbitMQ forever: every request is bounded (10 s for a request such as a
//! channel open, a declare, a publish's confirms or an ack; 5 s for closing) and a broker that
//! does not answer in time gives a retryable [`BusError::Backend`] (see `connect`).
//!
//! `Start` for queue subscriptions: a quorum queue only receives what is published after it
//! was created, so a new queue subscription never sees older messages, whatever its `start`
//! (`queue_replay` is false). Replaying a topic's history takes a stream subscription.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_core::contract::BusError> {
//! use switchboard_amqp::AmqpBackend;
//! use switchboard_core::backend::Backend;
//! let bus = AmqpBackend::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//! assert_eq!(bus.name(), "amqp");
//! # Ok(()) }
//! ```

use std::sync::Arc;

use switchboard_core::backend::{Backend, Publisher, Subscriber};
use switchboard_core::contract::{
    BusError, Capabilities, Capability, PublishOptions, Subscription, SubscriptionSpec, SubscriptionStats,
    TopicSpec,
};
use switchboard_core::{Message, SubscriptionName, TopicName};

mod admin;
mod connect;
mod dead_letter;
mod headers;
mod naming;
mod offsets;
mod publish;
mod pump;
mod settle;
mod subscribe;

use connect::{BACKEND, Shared};

/// A connection to RabbitMQ that publishes and subscribes per the backend contract.
///
/// Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct AmqpBackend {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AmqpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBackend").finish_non_exhaustive()
    }
}

impl AmqpBackend {
    /// Connects to RabbitMQ at `url`, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    ///
    /// # Errors
    /// [`BusError::InvalidUrl`] for a URL that cannot be used, [`BusError::Unreachable`]
    /// (naming `host:port`, never the credentials) when the broker cannot be reached.
    pub async fn connect(url: &str) -> Result<AmqpBackend, BusError> {
        Ok(AmqpBackend { shared: Shared::connect(url).await? })
    }

    /// What this backend supports, and why:
    ///
    /// - `queue`, `stream`: quorum queues and RabbitMQ streams;
    /// - `replay_from_start`: each topic has a stream from its creation on;
    /// - `queue_replay: false`: a queue subscription's quorum queue begins at its creation, so
    ///   `Start::Earliest` cannot give it older messages (use a stream subscription);
    /// - `per_key_order: false`: RabbitMQ has no per-key dispatch (single active consumer
    ///   would serialize the whole queue);
    /// - `delayed_delivery: false`: 3.10 has no delayed publish without a plugin;
    /// - `nack_delay`, `lease_extension`: done client-side (see `settle`);
    /// - `native_dead_letter: false`: the backend moves dead letters (RabbitMQ's DLX is only
    ///   a backstop), to add the metadata;
    /// - `dedup: false`: RabbitMQ does not deduplicate;
    /// - `persistence`: durable exchanges and queues, persistent messages, confirms;
    /// - `stream_groups: false`: RabbitMQ keeps no stream consumer offsets over AMQP, so the
    ///   backend keeps one commit point per subscription (see `offsets`), shared by its
    ///   members, which all read every message;
    /// - `stats`: queue subscriptions (ready from RabbitMQ, in-flight from this process:
    ///   deliveries received and not settled, buffered or handed out; unacked messages held by
    ///   other processes are invisible without the management API).
    pub const CAPABILITIES: Capabilities = Capabilities::NONE
        .with(Capability::Queue)
        .with(Capability::Stream)
        .with(Capability::ReplayFromStart)
        .with(Capability::NackDelay)
        .with(Capability::LeaseExtension)
        .with(Capability::Persistence)
        .with(Capability::Stats);
}

#[async_trait::async_trait]
impl Publisher for AmqpBackend {
    async fn publish(
        &self,
        topic: &TopicName,
        messages: Vec<Message>,
        options: &PublishOptions,
    ) -> Result<(), BusError> {
        publish::publish(&self.shared, topic, messages, options).await
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.shared.check_open()?;
        self.shared.flush().await
    }
}

#[async_trait::async_trait]
impl Subscriber for AmqpBackend {
    async fn subscribe(&self, topic: &TopicName, spec: SubscriptionSpec) -> Result<Subscription, BusError> {
        subscribe::subscribe(&self.shared, topic, spec).await
    }

    async fn stats(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
    ) -> Result<SubscriptionStats, BusError> {
        admin::stats(&self.shared, topic, subscription).await
    }
}

#[async_trait::async_trait]
impl Backend for AmqpBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        AmqpBackend::CAPABILITIES
    }

    async fn ensure_topic(&self, topic: &TopicName, spec: &TopicSpec) -> Result<(), BusError> {
        if spec.partitions == 0 {
            return Err(BusError::InvalidArgument("partitions must be at least 1".into()));
        }
        // RabbitMQ exchanges have no partitions: any count is served by one exchange.
        publish::ensure_topic(&self.shared, topic).await
    }

    async fn delete_topic(&self, topic: &TopicName) -> Result<(), BusError> {
        admin::delete_topic(&self.shared, topic).await
    }

    async fn delete_subscription(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
    ) -> Result<(), BusError> {
        admin::delete_subscription(&self.shared, topic, subscription).await
    }

    async fn close(&self) -> Result<(), BusError> {
        self.shared.close().await
    }
}
