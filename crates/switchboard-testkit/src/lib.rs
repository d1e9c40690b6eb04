//! Test helpers shared by the workspace's test suites (a dev-dependency only; not published).
//!
//! - names and messages: [`topic`], [`sub`], [`unique`], [`unique_topic`], [`msg`], [`body`];
//! - bounded waits on a [`Subscription`](switchboard_core::contract::Subscription): [`next`],
//!   [`next_within`], [`nothing_for`], and [`eventually`] for any condition;
//! - [`publish`] with default options;
//! - crash tests: [`Child`] runs one test of this binary as a child process to SIGKILL;
//! - external services: [`require`] and [`require_service!`] make a test that needs RabbitMQ,
//!   NATS, PostgreSQL, `nats-server` or Python skip with one line on stderr when the service
//!   is missing, and fail when the `CI` environment variable is set;
//! - with the `server` feature, `TestServer`: `switchboard serve` in-process on loopback ports,
//!   in a temporary data directory, restartable on the same ports and data.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//! use switchboard_testkit::{eventually, msg, topic};
//!
//! assert_eq!(topic("orders").as_str(), "orders");
//! assert_eq!(msg(7).id, "id-7");
//! eventually("one is one", Duration::from_secs(1), async || 1 == 1).await;
//! # }
//! ```
//!
//! A test on RabbitMQ starts with `switchboard_testkit::require_service!(RabbitMq);`.

mod child;
mod names;
#[cfg(feature = "postgres")]
pub mod pg;
#[cfg(feature = "server")]
mod server;
mod services;
mod wait;

pub use child::Child;
pub use names::{body, msg, sub, topic, unique, unique_topic};
#[cfg(feature = "server")]
pub use server::{
    ADMIN_TOKEN, ORDERS_ADMIN_TOKEN, ORDERS_TOKEN, TestServer, self_signed, test_config, test_tokens,
};
pub use services::{Found, Missing, Service, ci_is_set, find, nats_url, postgres_url, rabbitmq_url, require};
pub use wait::{WAIT, eventually, next, next_within, nothing_for, publish};
