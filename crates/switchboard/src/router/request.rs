//! What a handler receives and returns.

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::contract::{BoxError, BusError, DeliveryInfo};
use switchboard_core::{Message, NameError, TopicName};

/// A delivery as a handler sees it: the message, where it came from, which attempt this is.
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
}

impl Incoming {
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
    ///
    /// # Errors
    /// An invalid topic name.
    pub fn new(topic: &str, message: Message) -> Result<Outgoing, NameError> {
        Ok(Outgoing { topic: TopicName::new(topic)?, message })
    }
}

/// Why a handler did not finish a message; decides between retry and dead letter.
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
