//! # switchboard
//!
//! The SDK services embed to talk to each other through a broker. The same service code
//! runs on the in-process broker, on `switchboard serve`, on RabbitMQ or on NATS JetStream:
//! the backend is chosen by the URL given to [`Bus::connect`].
//!
//! ```
//! # async fn run() -> Result<(), switchboard::BusError> {
//! use switchboard::{Bus, Message, SubscriptionName, SubscriptionSpec, TopicName};
//!
//! let orders = TopicName::from_static("orders");
//! let bus = Bus::connect("embedded:").await?;
//! bus.publish(&orders, Message::new("/shop", "order.created", r#"{"id":1}"#)).await?;
//!
//! let mut sub = bus.subscribe(&orders, SubscriptionSpec::queue(SubscriptionName::from_static("billing"))).await?;
//! if let Some(delivery) = sub.next().await {
//!     let delivery = delivery?;
//!     assert_eq!(delivery.message().ty, "order.created");
//!     delivery.ack().await?;
//! }
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run()).unwrap();
//! ```
//!
//! ## Backends by URL
//!
//! | URL | backend | cargo feature |
//! |---|---|---|
//! | `embedded:` or `embedded:memory` | the process-wide in-memory broker | `embedded` (default) |
//! | `embedded:<dir>`, `embedded:///abs/dir` | the durable broker in `<dir>` (fsync before ack) | `embedded` (default) |
//! | `switchboard://host:port`, `switchboards://…` | `switchboard serve` over gRPC (TLS); `?token=…` | `remote` |
//! | `amqp://user:pass@host:port/vhost`, `amqps://…` | RabbitMQ 3.10+ | `amqp` |
//! | `nats://host:port` | NATS JetStream 2.9+ | `nats` |
//!
//! Other features: `sqlite` and `postgres` keep the SDK's state in a database: the
//! idempotent-consumer inbox's store, the transactional [`outbox`] and sagas. What each backend supports is declared as
//! [`Capabilities`] (`bus.capabilities().contains(Capability::Dedup)`); a feature a backend
//! lacks is refused with [`BusError::Unsupported`], never silently ignored.
//!
//! ## Handlers: the router and its middleware
//!
//! A handler is a tower `Service` from [`Incoming`] to the [`Outgoing`] messages it wants
//! published — usually a plain async function through `tower::service_fn`. The [`Router`]
//! binds it to a subscription, publishes its output and only then acks the input; a failure
//! nacks with backoff. [`Middleware`] is the standard stack as one tower `Layer` (tracing,
//! metrics, correlation ids, dead-lettering, inbox, per-key concurrency, circuit breaker,
//! retry, timeout, panic recovery); each piece is also its own layer in [`layers`].
//!
//! ```
//! # async fn run() -> Result<(), switchboard::BusError> {
//! use switchboard::{Bus, Handled, Incoming, Message, Middleware, Outgoing, Router};
//! use switchboard::{SubscriptionName, SubscriptionSpec, TopicName};
//! use tower::Layer;
//!
//! let bus = Bus::connect("embedded:").await?;
//! let ship = tower::service_fn(|order: Incoming| async move {
//!     let shipped = Message::new("/shipping", "order.shipped", order.message.data.clone());
//!     Handled::Ok(vec![Outgoing::new(TopicName::from_static("shipments"), shipped)])
//! });
//! let spec = SubscriptionSpec::queue(SubscriptionName::from_static("shipping"));
//! let router = Router::new(bus.clone())
//!     .route("ship", TopicName::from_static("orders"), spec, Middleware::default().layer(ship))
//!     .start()
//!     .await?;
//! router.shutdown().await?; // finishes the handlers in flight
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run()).unwrap();
//! ```
//!
//! ## Where things are
//!
//! - The crate root: what a service author uses — [`Bus`], messages and names, deliveries
//!   and subscriptions, [`Router`] and [`Middleware`], errors.
//! - [`layers`]: each middleware on its own, and the inbox stores.
//! - [`trace`]: W3C trace context on messages.
//! - [`backend`]: what a backend implements (the traits, the settle and delivery-source
//!   halves, the shared commit and dead-letter rules); a service never needs it.

mod bus;
mod connect;
#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod eventstore;
pub mod layers;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod outbox;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod projection;
pub mod request;
pub mod router;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod saga;
#[cfg(feature = "otlp")]
pub mod telemetry;
pub mod trace;

pub use bus::Bus;
pub use layers::Middleware;
pub use router::{Handled, HandlerError, Incoming, Outgoing, Router, RunningRouter};
pub use switchboard_core::contract::*;
pub use switchboard_core::{Message, MessageError, NameError, SubscriptionName, Timestamp, TopicName};

/// The backend implementer's API, re-exported from `switchboard-core`: see
/// [`switchboard_core::backend`].
pub mod backend {
    pub use switchboard_core::backend::*;
}
