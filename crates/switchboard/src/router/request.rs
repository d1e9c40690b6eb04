//! What a handler receives and returns.

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::contract::{BoxError, BusError, DeliveryInfo};
use switchboard_core::{Message, TopicName};

/// A delivery as a handler sees it: the message, where it came from, which attempt this is.
///
/// The router builds it; tests of a handler or a layer build one with [`Incoming::new`].
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct Incoming {
    /// The message as published.
    pub message: Message,
    /// Topic, subscription, partition, offset, attempt.
    pub info: DeliveryInfo,
    /// The route's name (used in metrics, spans and dead-letter metadata).
    pub handler: Arc<str>,
    /// The subscription's delivery limit, so layers can tell the last attempt.
    pub max_deliveries: Option<u32>,
    /// Where a rejected (poison) message goes.
    pub dead_letter_topic: TopicName,
    /// The backend it came through (`embedded`, `amqp`, …), the `messaging.system` of spans.
    pub system: &'static str,
}

impl Incoming {
    /// A delivery of `message` for handler `handler`, with no delivery limit, dead letters
    /// to `<topic>.<subscription>.dlq` and `messaging.system = embedded`; the `with_*`
    /// methods set the rest.
    ///
    /// # Panics
    /// When the default dead-letter topic name would be too long (topic and subscription
    /// names near the length limit): set one with [`Incoming::with_dead_letter_topic`].
    pub fn new(message: Message, info: DeliveryInfo, handler: impl Into<Arc<str>>) -> Incoming {
        let dead_letter_topic =
            switchboard_core::contract::default_dead_letter_topic(&info.topic, &info.subscription)
                .unwrap_or_else(|e| panic!("{e}; set a dead-letter topic"));
        Incoming {
            message,
            info,
            handler: handler.into(),
            max_deliveries: None,
            dead_letter_topic,
            system: "embedded",
        }
    }

    /// `message` as the reply to this request (to the topic its `replyto` names, with its
    /// correlation id): return it from the handler and the router publishes it.
    ///
    /// # Errors
    /// [`BusError::InvalidArgument`](switchboard_core::contract::BusError::InvalidArgument)
    /// when the message asked for no reply.
    pub fn reply(&self, message: Message) -> Result<super::Outgoing, switchboard_core::contract::BusError> {
        let (topic, reply) = crate::request::reply_to(&self.message, message)?;
        Ok(super::Outgoing::new(topic, reply))
    }

    /// Sets the subscription's delivery limit.
    #[must_use]
    pub fn with_max_deliveries(mut self, max: Option<u32>) -> Incoming {
        self.max_deliveries = max;
        self
    }

    /// Sets where a rejected message goes.
    #[must_use]
    pub fn with_dead_letter_topic(mut self, topic: TopicName) -> Incoming {
        self.dead_letter_topic = topic;
        self
    }

    /// Sets the backend's name.
    #[must_use]
    pub fn with_system(mut self, system: &'static str) -> Incoming {
        self.system = system;
        self
    }

    /// True when a failure of this attempt dead-letters the message instead of retrying.
    pub fn is_last_attempt(&self) -> bool {
        self.max_deliveries.is_some_and(|max| self.info.attempt >= max)
    }
}

/// A message a handler wants published once it succeeds (pipe and filter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Where to publish it.
    pub topic: TopicName,
    /// The message.
    pub message: Message,
}

impl Outgoing {
    /// A message for `topic`.
    pub fn new(topic: TopicName, message: Message) -> Outgoing {
        Outgoing { topic, message }
    }
}

/// Why a handler did not finish a message; decides between retry and dead letter.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A failure that may pass (a dependency is down): retried with backoff.
    #[error("{0}")]
    Transient(#[source] BoxError),
    /// The message can never be processed (malformed, violates an invariant): dead-lettered
    /// at once with `dlreason = rejected`.
    #[error("rejected: {0}")]
    Permanent(#[source] BoxError),
    /// The handler took longer than its timeout; retried.
    #[error("the handler did not finish within {0:?}")]
    Timeout(Duration),
    /// The handler panicked; the panic was caught and the message is retried.
    #[error("the handler panicked: {0}")]
    Panicked(String),
    /// The circuit breaker is open after repeated failures; retried once it may close.
    #[error("the circuit breaker is open; next trial in {0:?}")]
    CircuitOpen(Duration),
    /// Publishing the handler's output failed; the input is retried.
    #[error("publishing the handler's output failed: {0}")]
    Publish(#[source] BusError),
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn transient(e: impl Into<BoxError>) -> HandlerError {
        HandlerError::Transient(e.into())
    }

    /// A message that will never succeed.
    pub fn permanent(e: impl Into<BoxError>) -> HandlerError {
        HandlerError::Permanent(e.into())
    }

    /// True for errors retrying cannot fix.
    pub fn is_permanent(&self) -> bool {
        matches!(self, HandlerError::Permanent(_))
    }

    /// Which errors an in-process retry may fix: transient failures and timeouts. Not
    /// rejections (a poison message stays poison), not panics (likely a bug that repeats),
    /// not an open circuit (retrying is what it prevents), not a failed publish of the
    /// output (the router's redelivery retries that, with the input).
    pub fn is_retryable(&self) -> bool {
        matches!(self, HandlerError::Transient(_) | HandlerError::Timeout(_))
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            HandlerError::Transient(_) => "transient",
            HandlerError::Permanent(_) => "permanent",
            HandlerError::Timeout(_) => "timeout",
            HandlerError::Panicked(_) => "panic",
            HandlerError::CircuitOpen(_) => "circuit_open",
            HandlerError::Publish(_) => "publish",
        }
    }
}

/// What a handler returns: the messages to publish (possibly none).
pub type Handled = Result<Vec<Outgoing>, HandlerError>;
