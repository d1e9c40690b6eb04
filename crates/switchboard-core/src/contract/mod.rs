//! The backend contract: what every messaging backend (the embedded broker, `switchboard
//! serve`, RabbitMQ, NATS JetStream, later Kafka) implements, and what services program
//! against.
//!
//! It is deliberately small, in the spirit of Watermill's two interfaces:
//!
//! - a publisher puts messages on a topic;
//! - a subscriber opens a [`Subscription`] on a topic, in [`Mode::Queue`] (competing
//!   consumers, per-message ack) or [`Mode::Stream`] (every message in order, replayable);
//! - each [`Delivery`] is settled exactly once: [`Delivery::ack`] and [`Delivery::nack`] take
//!   it by value, so settling twice does not compile, and dropping it unsettled hands it back
//!   to the backend for redelivery;
//! - [`Capabilities`] say what a backend supports, so callers (and the conformance suite) can
//!   check before relying on a feature instead of discovering it in production.
//!
//! This module is what a service programs against. What a backend implements (the
//! [`Publisher`](crate::backend::Publisher) and [`Subscriber`](crate::backend::Subscriber)
//! traits, the settle and delivery-source halves, the shared commit and dead-letter rules)
//! is in [`crate::backend`], so the two audiences do not share one namespace.

pub(crate) mod backend;
mod capabilities;
pub(crate) mod commit_point;
pub(crate) mod dead_letter;
pub(crate) mod delivery;
pub(crate) mod error;
pub(crate) mod subscription;

pub use backend::{PublishOptions, TopicSpec};
pub use capabilities::{Capabilities, Capability};
pub use dead_letter::{DeadLetterReason, dead_letter_ext, default_dead_letter_topic};
pub use delivery::{Delivery, DeliveryInfo, Nack, Settled};
pub use error::{BoxError, BusError, LeaseLostCause, Resource};
pub use subscription::{Mode, Start, Subscription, SubscriptionSpec, SubscriptionStats};
