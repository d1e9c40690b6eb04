//! [`RemoteBackend`]: the backend contract over `switchboard serve`'s gRPC API.

use std::sync::Arc;

use switchboard_core::backend::{Backend, Publisher, Subscriber};
use switchboard_core::contract::{
    BusError, Capabilities, PublishOptions, Subscription, SubscriptionSpec, SubscriptionStats, TopicSpec,
};
use switchboard_core::{Message, SubscriptionName, TopicName};
use switchboard_proto::switchboard::v1 as api;
use tonic::Code;

use crate::coalesce::Coalescer;
use crate::connection::{self, Shared};
use crate::consume::Consumer;
use crate::convert;
use crate::error::{BACKEND, from_status};
use crate::publish::{self, InFlight, Topics};

/// The `switchboard://` backend: a client of `switchboard serve` over gRPC.
///
/// One HTTP/2 connection carries every call: publishes are unary `Publish` calls (one per
/// topic in flight, carrying every publish that queued meanwhile) and every subscription is a `Consume` stream with credit-based flow control that is
/// reopened after the server restarts. The server is the embedded broker, so every
/// capability is there ([`Capabilities::ALL`]).
///
/// Two details differ from the embedded backend:
///
/// - the subscription's `prefetch` is stored by the server as its per-consumer in-flight cap,
///   so members of one subscription must open it with the same prefetch (like every other
///   setting; otherwise [`BusError::Conflict`]);
/// - in stream mode an ack commits only the highest offset below which every delivery is
///   acked (out-of-order acks wait for the earlier ones), and a nack leaves its offset
///   uncommitted, so the message is read again when the subscription is next opened.
pub struct RemoteBackend {
    shared: Arc<Shared>,
    topics: Topics,
    in_flight: InFlight,
    coalescer: Coalescer,
}

impl std::fmt::Debug for RemoteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteBackend").field("endpoint", &self.shared.endpoint).finish_non_exhaustive()
    }
}

impl RemoteBackend {
    /// Connects to `switchboard://host:port` (plaintext HTTP/2) or `switchboards://host:port`
    /// (TLS; `?ca=<path>` trusts a private CA instead of the public roots). The bearer token
    /// comes from `?token=…` or else the `SWITCHBOARD_TOKEN` environment variable. Without a
    /// port, 50051.
    ///
    /// # Errors
    /// [`BusError::InvalidUrl`] for a URL it cannot use (the token is never shown);
    /// [`BusError::Unreachable`] when the server does not answer within a few seconds.
    pub async fn connect(url: &str) -> Result<RemoteBackend, BusError> {
        let mut target = crate::url::parse(url, std::env::var("SWITCHBOARD_TOKEN").ok())?;
        // Without `?service=`, the service is the one OpenTelemetry names (`OTEL_SERVICE_NAME`),
        // so the broker's map and the spans agree.
        if target.service.is_none() {
            target.service =
                std::env::var("OTEL_SERVICE_NAME").ok().and_then(|s| crate::url::service_value(&s));
        }
        let shared = connection::connect(target, url).await?;
        Ok(RemoteBackend {
            shared: Arc::new(shared),
            topics: Topics::default(),
            in_flight: InFlight::default(),
            coalescer: Coalescer::default(),
        })
    }

    /// `host:port` of the server.
    pub fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    fn status(&self, status: tonic::Status) -> BusError {
        from_status(status, &self.shared.endpoint)
    }
}

#[async_trait::async_trait]
impl Publisher for RemoteBackend {
    async fn publish(
        &self,
        topic: &TopicName,
        messages: Vec<Message>,
        options: &PublishOptions,
    ) -> Result<(), BusError> {
        publish::publish(
            &self.shared,
            &self.topics,
            &self.in_flight,
            &self.coalescer,
            topic,
            messages,
            options,
        )
        .await
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.in_flight.flush().await;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Subscriber for RemoteBackend {
    async fn subscribe(&self, topic: &TopicName, spec: SubscriptionSpec) -> Result<Subscription, BusError> {
        self.shared.check_open()?;
        spec.validate()?;
        spec.dead_letter_topic_for(topic)?;
        self.topics.ensure_default(&self.shared, topic).await?;
        let request = api::CreateSubscriptionRequest {
            topic: topic.to_string(),
            name: spec.name.to_string(),
            config: Some(convert::subscription_config(&spec)),
        };
        match self.shared.client().create_subscription(request).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {
                return Err(BusError::subscription_conflict(
                    topic,
                    &spec.name,
                    format!(
                        "mode, start, lease, max deliveries, dead-letter topic, ordering or prefetch ({})",
                        s.message()
                    ),
                ));
            }
            // A consume-only token may not create subscriptions; it may still join one that
            // exists, which opening the stream checks.
            Err(s) if s.code() == Code::PermissionDenied => {}
            Err(s) => return Err(self.status(s)),
        }
        let consumer = Consumer {
            shared: self.shared.clone(),
            topic: topic.clone(),
            subscription: spec.name.clone(),
            mode: spec.mode,
            prefetch: spec.prefetch,
        };
        let source = consumer.start().await?;
        Ok(switchboard_core::backend::subscription(topic.clone(), spec, Box::new(source)))
    }

    async fn stats(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
    ) -> Result<SubscriptionStats, BusError> {
        self.shared.check_open()?;
        let request = api::StatsRequest { topic: topic.to_string(), subscription: subscription.to_string() };
        match self.shared.client().stats(request).await {
            Ok(r) => Ok(convert::stats_from_proto(r.into_inner())),
            Err(s) => Err(self.status(s)),
        }
    }
}

#[async_trait::async_trait]
impl Backend for RemoteBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn ensure_topic(&self, topic: &TopicName, spec: &TopicSpec) -> Result<(), BusError> {
        self.shared.check_open()?;
        self.topics.ensure(&self.shared, topic, spec).await
    }

    async fn delete_topic(&self, topic: &TopicName) -> Result<(), BusError> {
        self.shared.check_open()?;
        self.topics.forget(topic);
        match self.shared.client().delete_topic(api::DeleteTopicRequest { name: topic.to_string() }).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(self.status(s)),
        }
    }

    async fn delete_subscription(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
    ) -> Result<(), BusError> {
        self.shared.check_open()?;
        let request =
            api::DeleteSubscriptionRequest { topic: topic.to_string(), name: subscription.to_string() };
        match self.shared.client().delete_subscription(request).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(self.status(s)),
        }
    }

    /// Waits for publishes in flight, then stops every subscription's stream. The connection
    /// closes once the last handle on it (this backend and its subscriptions) is dropped.
    async fn close(&self) -> Result<(), BusError> {
        self.in_flight.flush().await;
        self.shared.closed.send_replace(true);
        Ok(())
    }
}
