//! The router: subscriptions bound to handlers, each handler a tower `Service` wrapped in
//! the middleware of [`crate::layers`].
//!
//! For every delivery the router calls the route's service with an [`Incoming`]; on `Ok` it
//! publishes the returned [`Outgoing`] messages and then acks (so an output is never lost:
//! a crash in between redelivers the input, and message ids make the republish
//! idempotent where the backend dedups); on `Err` it nacks with a backoff delay, and the
//! broker dead-letters the message once it has used up its deliveries.
//!
//! ```no_run
//! # async fn run() -> Result<(), switchboard::BusError> {
//! use switchboard::{Bus, Handled, Incoming, Message, Outgoing, Router};
//! use switchboard::{SubscriptionName, SubscriptionSpec, TopicName};
//!
//! let bus = Bus::connect("embedded:").await?;
//! let handler = tower::service_fn(|msg: Incoming| async move {
//!     let shipped = Message::new("/shipping", "order.shipped", msg.message.data.clone());
//!     Handled::Ok(vec![Outgoing::new(TopicName::from_static("shipments"), shipped)])
//! });
//! let spec = SubscriptionSpec::queue(SubscriptionName::from_static("shipping"));
//! let router = Router::new(bus).route("ship-orders", TopicName::from_static("orders"), spec, handler).start().await?;
//! // … later, on SIGTERM:
//! router.shutdown().await?;
//! # Ok(()) }
//! ```

mod request;
mod run;

pub use request::{Handled, HandlerError, Incoming, Outgoing};
pub use run::{RouteService, Router, RunningRouter};
