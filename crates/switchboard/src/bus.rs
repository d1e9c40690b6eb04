//! [`Bus`]: the handle a service holds — publish, subscribe, and the backend's capabilities.

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::backend::Backend;
use switchboard_core::contract::{
    BusError, Capabilities, PublishOptions, Subscription, SubscriptionSpec, SubscriptionStats, TopicSpec,
};
use switchboard_core::{Message, SubscriptionName, Timestamp, TopicName};

use crate::request::{CORRELATION_ID, REPLY_TO, Replies};

/// A connection to a messaging backend, chosen by URL. Cheap to clone; clones share the
/// connection.
///
/// Topics and subscriptions are named by [`TopicName`] and [`SubscriptionName`] everywhere
/// in the SDK, checked once where they are made (`TopicName::new(s)?` for a name from
/// outside, `TopicName::from_static("orders")` for one in the source).
#[derive(Clone)]
pub struct Bus {
    backend: Arc<dyn Backend>,
    /// The reply topic of [`Bus::request`], opened on the first request.
    replies: Arc<tokio::sync::OnceCell<Replies>>,
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
        Ok(Bus::from_backend(crate::connect::connect(url).await?))
    }

    /// Wraps a backend built by hand.
    pub fn from_backend(backend: Arc<dyn Backend>) -> Bus {
        Bus { backend, replies: Arc::default() }
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

    /// Publishes `message` as a request to `topic` and waits up to `timeout` for the reply
    /// (see [`request`](crate::request) for how replies find their way back). The request's
    /// id is its correlation id; a responder answers with [`reply_to`](crate::request::reply_to).
    ///
    /// # Errors
    /// [`BusError::Timeout`] when no reply came in time (a reply that comes later is
    /// dropped); otherwise as [`Bus::publish`], or a failure to open the reply topic.
    pub async fn request(
        &self,
        topic: &TopicName,
        mut message: Message,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        let replies = self.replies.get_or_try_init(|| Replies::open(self.backend.clone())).await?;
        let correlation = message.id.clone();
        message.extensions.insert(REPLY_TO.to_owned(), replies.topic().to_string());
        message.extensions.insert(CORRELATION_ID.to_owned(), correlation.clone());
        let reply = replies.expect(correlation.clone());
        if let Err(e) = self.publish(topic, message).await {
            replies.forget(&correlation);
            return Err(e);
        }
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(BusError::Closed),
            Err(_) => {
                replies.forget(&correlation);
                Err(BusError::Timeout {
                    operation: format!("request {correlation} to {topic}"),
                    after: timeout,
                })
            }
        }
    }

    /// The reply topic of this client's requests, once it made one.
    pub fn reply_topic(&self) -> Option<&TopicName> {
        self.replies.get().map(Replies::topic)
    }

    /// Deletes the reply topic (if a request opened one), flushes and closes the
    /// connection; open subscriptions end.
    ///
    /// # Errors
    /// A backend error while flushing.
    pub async fn close(&self) -> Result<(), BusError> {
        if let Some(replies) = self.replies.get()
            && let Err(e) = replies.close().await
        {
            tracing::debug!(error = %e, "Could not delete the reply topic.");
        }
        self.backend.close().await
    }
}
