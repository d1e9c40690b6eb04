//! # switchboard-remote
//!
//! The `switchboard://` backend of the Switchboard SDK: the backend contract
//! ([`switchboard_core::contract`]) over the gRPC API of `switchboard serve`, so a service
//! moves from the embedded broker to a shared server by changing its URL.
//!
//! - **Connect**: `switchboard://host:port` (plaintext HTTP/2) or `switchboards://host:port`
//!   (TLS with rustls; `?ca=<path>` for a private CA). The token comes from `?token=…` or
//!   `SWITCHBOARD_TOKEN` and travels as `authorization: Bearer …`.
//! - **Publish**: one `Publish` call per batch; topics are created on first use.
//! - **Subscribe**: `CreateSubscription`, then a `Consume` stream with `prefetch` credits; a
//!   settled delivery gives its credit back, so at most `prefetch` deliveries are unsettled.
//!   Acks, nacks, extensions and commits travel on the same stream and wait for the server's
//!   answer.
//! - **Survive restarts**: a broken stream is reopened with backoff; the server kept the
//!   subscription's state, so unsettled messages come again and streams resume from their
//!   committed offsets. Settling a delivery of the broken stream returns
//!   [`BusError::LeaseLost`](switchboard_core::contract::BusError::LeaseLost). The server's
//!   standard health service says when it begins a graceful shutdown; consume streams then
//!   leave at once instead of holding the shutdown back for its grace period.
//!
//! ```no_run
//! use switchboard_core::contract::{PublishOptions, SubscriptionSpec};
//! use switchboard_core::backend::{Publisher, Subscriber};
//! use switchboard_core::{Message, SubscriptionName, TopicName};
//! use switchboard_remote::RemoteBackend;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = RemoteBackend::connect("switchboard://127.0.0.1:50051").await?;
//! let orders = TopicName::new("orders")?;
//! bus.publish(&orders, vec![Message::new("/shop", "order.created", "{}")], &PublishOptions::default())
//!     .await?;
//! let mut sub = bus.subscribe(&orders, SubscriptionSpec::queue(SubscriptionName::new("billing")?)).await?;
//! while let Some(delivery) = sub.next().await {
//!     delivery?.ack().await?;
//! }
//! # Ok(())
//! # }
//! ```

mod backend;
mod coalesce;
mod connection;
mod consume;
mod convert;
mod error;
mod health;
mod publish;
mod session;
mod settle;
mod url;

pub use backend::RemoteBackend;
