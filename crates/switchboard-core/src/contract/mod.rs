//! The backend contract: what every messaging backend (the embedded broker, `switchboard
//! serve`, RabbitMQ, NATS JetStream, later Kafka) implements, and what services program
//! against.
//!
//! It is deliberately small, in the spirit of Watermill's two interfaces:
//!
//! - a [`Publisher`] puts messages on a topic;
//! - a [`Subscriber`] opens a [`Subscription`] on a topic, in [`Mode::Queue`] (competing
//!   consumers, per-message ack) or [`Mode::Stream`] (every message in order, replayable);
//! - each [`Delivery`] is settled exactly once: [`Delivery::ack`] and [`Delivery::nack`] take
//!   it by value, so settling twice does not compile, and dropping it unsettled hands it back
//!   to the backend for redelivery;
//! - [`Capabilities`] say what a backend supports, so callers (and the conformance suite) can
//!   check before relying on a feature instead of discovering it in production.

mod backend;
mod capabilities;
mod commit_point;
mod dead_letter;
mod delivery;
mod error;
mod subscription;

pub use backend::{Backend, PublishOptions, Publisher, Subscriber, TopicSpec};
pub use capabilities::Capabilities;
pub use commit_point::CommitPoint;
pub use dead_letter::{
    DeadLetter, DeadLetterReason, MAX_DEAD_LETTER_ERROR_CHARS, dead_letter_ext, default_dead_letter_topic,
};
pub use delivery::{Delivery, DeliveryInfo, Nack, Settle, Settled};
pub use error::{BoxError, BusError};
pub use subscription::{DeliverySource, Mode, Start, Subscription, SubscriptionSpec, SubscriptionStats};
