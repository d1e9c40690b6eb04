//! The publisher and subscriber traits, and the backend that is both.

use crate::{Message, SubscriptionName, Timestamp, TopicName};

use super::{BusError, Capabilities, Subscription, SubscriptionSpec, SubscriptionStats};

/// Settings of a topic created by the SDK. Backends map what they can and ignore the rest
/// (documented per backend).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    /// Partitions (backends without partitions use 1).
    pub partitions: u32,
}

impl Default for TopicSpec {
    fn default() -> Self {
        TopicSpec { partitions: 1 }
    }
}

impl TopicSpec {
    /// Sets the partitions.
    #[must_use]
    pub fn with_partitions(mut self, partitions: u32) -> TopicSpec {
        self.partitions = partitions;
        self
    }
}

/// Options of one publish call.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// Hold the messages back from queue subscriptions until this time (needs
    /// [`Capability::DelayedDelivery`](super::Capability::DelayedDelivery)).
    pub deliver_at: Option<Timestamp>,
}

impl PublishOptions {
    /// Holds the messages back from queue subscriptions until `at`.
    #[must_use]
    pub fn with_deliver_at(mut self, at: Timestamp) -> PublishOptions {
        self.deliver_at = Some(at);
        self
    }
}

/// Puts messages on topics.
#[async_trait::async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `messages` to `topic` in order, creating the topic with defaults if it does
    /// not exist. Returns once the broker has confirmed every message (under its durability
    /// setting). A message whose id was published within the dedup window is stored once
    /// where [`Capability::Dedup`](super::Capability::Dedup) holds.
    ///
    /// # Errors
    /// [`BusError::InvalidMessage`] before anything is sent; a retryable error when the
    /// broker did not confirm (the caller may publish again: ids make that safe where dedup
    /// holds).
    async fn publish(
        &self,
        topic: &TopicName,
        messages: Vec<Message>,
        options: &PublishOptions,
    ) -> Result<(), BusError>;

    /// Waits until every publish started before the call is confirmed or failed.
    ///
    /// # Errors
    /// A backend error from the flush.
    async fn flush(&self) -> Result<(), BusError>;
}

/// Opens subscriptions.
#[async_trait::async_trait]
pub trait Subscriber: Send + Sync + 'static {
    /// Opens (creating if needed) the subscription `spec.name` on `topic`, creating the
    /// topic with defaults if it does not exist.
    ///
    /// # Errors
    /// [`BusError::InvalidArgument`] for a bad spec, [`BusError::Unsupported`] for a
    /// feature the backend lacks, [`BusError::Conflict`] when the subscription exists with
    /// other settings.
    async fn subscribe(&self, topic: &TopicName, spec: SubscriptionSpec) -> Result<Subscription, BusError>;

    /// Backlog, in-flight and lag of a subscription.
    ///
    /// # Errors
    /// [`BusError::Unsupported`] without [`Capability::Stats`](super::Capability::Stats);
    /// [`BusError::NotFound`] for an unknown subscription.
    async fn stats(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
    ) -> Result<SubscriptionStats, BusError>;
}

/// A messaging backend: a publisher and subscriber with declared capabilities.
#[async_trait::async_trait]
pub trait Backend: Publisher + Subscriber {
    /// The backend's short name (`embedded`, `switchboard`, `amqp`, `nats`).
    fn name(&self) -> &'static str;

    /// What it supports.
    fn capabilities(&self) -> Capabilities;

    /// Creates `topic` if it does not exist (an existing topic is left as it is).
    ///
    /// # Errors
    /// [`BusError::InvalidArgument`] for a bad spec, or a backend error.
    async fn ensure_topic(&self, topic: &TopicName, spec: &TopicSpec) -> Result<(), BusError>;

    /// Deletes a topic and its messages (with the subscriptions the broker ties to it; on
    /// RabbitMQ a queue subscription's queue outlives its exchange until
    /// [`Backend::delete_subscription`]).
    ///
    /// # Errors
    /// A backend error; deleting a missing topic is not an error.
    async fn delete_topic(&self, topic: &TopicName) -> Result<(), BusError>;

    /// Deletes a subscription and what the backend keeps for it.
    ///
    /// # Errors
    /// A backend error; deleting a missing subscription is not an error.
    async fn delete_subscription(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
    ) -> Result<(), BusError>;

    /// Flushes publishers and closes connections. Open subscriptions end.
    ///
    /// # Errors
    /// A backend error while flushing; the connection is closed regardless.
    async fn close(&self) -> Result<(), BusError>;
}
