//! [`Bus`]: the handle a service holds — publish, subscribe, and the backend's capabilities.

use std::sync::Arc;

use switchboard_core::backend::Backend;
use switchboard_core::contract::{
    BusError, Capabilities, PublishOptions, Subscription, SubscriptionSpec, SubscriptionStats, TopicSpec,
};
use switchboard_core::{Message, SubscriptionName, Timestamp, TopicName};

/// A connection to a messaging backend, chosen by URL. Cheap to clone; clones share the
/// connection.
///
/// Topics and subscriptions are named by [`TopicName`] and [`SubscriptionName`] everywhere
/// in the SDK, checked once where they are made (`TopicName::new(s)?` for a name from
/// outside, `TopicName::from_static("orders")` for one in the source).
#[derive(Clone)]
pub struct Bus {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("backend", &self.backend.name()).finish()
    }
}

impl Bus {
    /// Connects to the backend `url` names (see the table in the crate docs): `embedded:`,
    /// `embedded:<dir>`, `switchboard://host:port`, `amqp://…`, `nats://…`.
    ///
    /// # Errors
    /// [`BusError::InvalidUrl`], [`BusError::BackendNotEnabled`] for a backend this build
    /// leaves out, [`BusError::Unreachable`] when the broker does not answer.
    pub async fn connect(url: &str) -> Result<Bus, BusError> {
        Ok(Bus { backend: crate::connect::connect(url).await? })
    }

    /// Wraps a backend built by hand.
    pub fn from_backend(backend: Arc<dyn Backend>) -> Bus {
        Bus { backend }
    }

    /// The backend, for the contract's full surface.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// What the backend supports.
    pub fn capabilities(&self) -> Capabilities {
        self.backend.capabilities()
    }

    /// Publishes one message and waits for the broker's confirmation.
    ///
    /// # Errors
    /// See [`Publisher::publish`](switchboard_core::backend::Publisher::publish).
    pub async fn publish(&self, topic: &TopicName, message: Message) -> Result<(), BusError> {
        self.send(topic, vec![message], &PublishOptions::default()).await
    }

    /// Publishes messages in order as one batch.
    ///
    /// # Errors
    /// See [`Publisher::publish`](switchboard_core::backend::Publisher::publish).
    pub async fn publish_all(&self, topic: &TopicName, messages: Vec<Message>) -> Result<(), BusError> {
        self.send(topic, messages, &PublishOptions::default()).await
    }

    /// Publishes a message that queue subscriptions receive at `deliver_at`.
    ///
    /// # Errors
    /// [`BusError::Unsupported`] without
    /// [`Capability::DelayedDelivery`](switchboard_core::contract::Capability::DelayedDelivery);
    /// otherwise as [`Bus::publish`].
    pub async fn publish_at(
        &self,
        topic: &TopicName,
        message: Message,
        deliver_at: Timestamp,
    ) -> Result<(), BusError> {
        let options = PublishOptions::default().with_deliver_at(deliver_at);
        self.send(topic, vec![message], &options).await
    }

    /// Publishes under a producer span (`send <topic>`) whose context each message carries
    /// in `traceparent`, unless it already has one.
    async fn send(
        &self,
        topic: &TopicName,
        messages: Vec<Message>,
        options: &PublishOptions,
    ) -> Result<(), BusError> {
        use opentelemetry::trace::{Status, TraceContextExt};
        let (cx, messages) = crate::trace::start_send(self.backend.name(), topic, messages);
        let result = self.backend.publish(topic, messages, options).await;
        let span = cx.span();
        match &result {
            Ok(()) => span.set_status(Status::Ok),
            Err(e) => span.set_status(Status::error(e.to_string())),
        }
        span.end();
        result
    }

    /// Creates a topic with `partitions` partitions if it does not exist.
    ///
    /// # Errors
    /// A bad name or spec, or a backend error.
    pub async fn create_topic(&self, topic: &TopicName, partitions: u32) -> Result<(), BusError> {
        self.backend.ensure_topic(topic, &TopicSpec::default().with_partitions(partitions)).await
    }

    /// Opens a subscription (creating it, and the topic, if needed).
    ///
    /// # Errors
    /// See [`Subscriber::subscribe`](switchboard_core::backend::Subscriber::subscribe).
    pub async fn subscribe(
        &self,
        topic: &TopicName,
        spec: SubscriptionSpec,
    ) -> Result<Subscription, BusError> {
        self.backend.subscribe(topic, spec).await
    }

    /// Backlog, in-flight and lag of a subscription.
    ///
    /// # Errors
    /// See [`Subscriber::stats`](switchboard_core::backend::Subscriber::stats).
    pub async fn stats(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
    ) -> Result<SubscriptionStats, BusError> {
        self.backend.stats(topic, subscription).await
    }

    /// Waits for every publish in progress to be confirmed.
    ///
    /// # Errors
    /// A backend error from the flush.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.backend.flush().await
    }

    /// Flushes and closes the connection; open subscriptions end.
    ///
    /// # Errors
    /// A backend error while flushing.
    pub async fn close(&self) -> Result<(), BusError> {
        self.backend.close().await
    }
}
