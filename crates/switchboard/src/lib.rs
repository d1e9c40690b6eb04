//! # switchboard
//!
//! The SDK services embed to talk to each other through a broker. The same service code
//! runs on the in-process broker, on `switchboard serve`, on RabbitMQ or on NATS JetStream:
//! the backend is chosen by the URL given to [`Bus::connect`].
//!
//! ```
//! # async fn run() -> Result<(), switchboard::BusError> {
//! use switchboard::{Bus, Message, SubscriptionName, SubscriptionSpec};
//!
//! let bus = Bus::connect("embedded:").await?;
//! bus.publish("orders", Message::new("/shop", "order.created", "{\"id\":1}")).await?;
//!
//! let spec = SubscriptionSpec::queue(SubscriptionName::new("billing")?);
//! let mut sub = bus.subscribe("orders", spec).await?;
//! if let Some(delivery) = sub.next().await {
//!     let delivery = delivery?;
//!     println!("{}", delivery.message().ty);
//!     delivery.ack().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! - [`Bus`]: connect by URL, publish, subscribe.
//! - The contract ([`Publisher`], [`Subscriber`], [`Delivery`], [`Capabilities`]), re-exported
//!   from `switchboard-core`, for code that works on any backend.

pub mod backoff;
mod bus;
mod connect;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod layers;
pub mod router;
pub mod trace;

pub use bus::Bus;
pub use switchboard_core::contract::*;
pub use switchboard_core::{Message, SubscriptionName, Timestamp, TopicName};
