//! [`Bus`]: the handle a service holds — publish, subscribe, and the backend's capabilities.

use std::sync::Arc;

use switchboard_core::contract::{
    Backend, BusError, Capabilities, PublishOptions, Subscription, SubscriptionSpec, SubscriptionStats,
    TopicSpec,
};
use switchboard_core::{Message, SubscriptionName, Timestamp, TopicName};

/// A connection to a messaging backend, chosen by URL. Cheap to clone; clones share the
/// connection.
#[derive(Clone)]
pub struct Bus {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("backend", &self.backend.name()).finish()
    }
}

fn topic(name: &str) -> Result<TopicName, BusError> {
    Ok(TopicName::new(name)?)
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
    /// See [`Publisher::publish`](switchboard_core::contract::Publisher::publish).
    pub async fn publish(&self, topic_name: &str, message: Message) -> Result<(), BusError> {
        self.send(&topic(topic_name)?, vec![message], &PublishOptions::default()).await
    }

    /// Publishes messages in order as one batch.
    ///
    /// # Errors
    /// See [`Publisher::publish`](switchboard_core::contract::Publisher::publish).
    pub async fn publish_all(&self, topic_name: &str, messages: Vec<Message>) -> Result<(), BusError> {
        self.send(&topic(topic_name)?, messages, &PublishOptions::default()).await
    }

    /// Publishes a message that queue subscriptions receive at `deliver_at`.
    ///
    /// # Errors
    /// [`BusError::Unsupported`] without
    /// [`Capabilities::delayed_delivery`]; otherwise as [`Bus::publish`].
    pub async fn publish_at(
        &self,
        topic_name: &str,
        message: Message,
        deliver_at: Timestamp,
    ) -> Result<(), BusError> {
        let options = PublishOptions { deliver_at: Some(deliver_at) };
        self.send(&topic(topic_name)?, vec![message], &options).await
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
    pub async fn create_topic(&self, topic_name: &str, partitions: u32) -> Result<(), BusError> {
        self.backend.ensure_topic(&topic(topic_name)?, &TopicSpec { partitions }).await
    }

    /// Opens a subscription (creating it, and the topic, if needed).
    ///
    /// # Errors
    /// See [`Subscriber::subscribe`](switchboard_core::contract::Subscriber::subscribe).
    pub async fn subscribe(
        &self,
        topic_name: &str,
        spec: SubscriptionSpec,
    ) -> Result<Subscription, BusError> {
        self.backend.subscribe(&topic(topic_name)?, spec).await
    }

    /// Backlog, in-flight and lag of a subscription.
    ///
    /// # Errors
    /// See [`Subscriber::stats`](switchboard_core::contract::Subscriber::stats).
    pub async fn stats(&self, topic_name: &str, subscription: &str) -> Result<SubscriptionStats, BusError> {
        self.backend.stats(&topic(topic_name)?, &SubscriptionName::new(subscription)?).await
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
