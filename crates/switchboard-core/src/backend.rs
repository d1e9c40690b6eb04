//! The backend implementer's API: what a messaging backend (the embedded broker,
//! `switchboard serve`, RabbitMQ, NATS JetStream, Kafka) implements to plug into the SDK.
//!
//! A service author never needs this module: [`crate::contract`] has everything a service
//! programs against. A backend implements [`Backend`] (a [`Publisher`] and a [`Subscriber`]
//! with declared [`Capabilities`](crate::contract::Capabilities)), hands out deliveries made
//! with [`delivery`] over its own [`Settle`], and subscriptions made with [`subscription`]
//! over its own [`DeliverySource`]. The rules every backend must apply alike live here once:
//! [`CommitPoint`] (how acks move a stream's commit) and [`DeadLetterStamp`] (the metadata a
//! dead letter carries). The conformance suite (`switchboard-conformance`) proves a backend
//! keeps the contract.

use crate::contract::{Delivery, DeliveryInfo, Subscription, SubscriptionSpec};
use crate::{Message, TopicName};

pub use crate::contract::backend::{Backend, Publisher, Subscriber};
pub use crate::contract::commit_point::CommitPoint;
pub use crate::contract::dead_letter::{DeadLetterStamp, MAX_DEAD_LETTER_ERROR_CHARS};
pub use crate::contract::delivery::Settle;
pub use crate::contract::error::BoxError;
pub use crate::contract::subscription::DeliverySource;

/// A delivery of `message` that `settle` acks, nacks or extends. [`Delivery`] guarantees
/// that exactly one of `settle`'s `ack`, `nack` or `abandon` is called, once.
pub fn delivery(message: Message, info: DeliveryInfo, settle: Box<dyn Settle>) -> Delivery {
    Delivery::new(message, info, settle)
}

/// An open subscription whose deliveries come from `source`.
pub fn subscription(
    topic: TopicName,
    spec: SubscriptionSpec,
    source: Box<dyn DeliverySource>,
) -> Subscription {
    Subscription::new(topic, spec, source)
}
