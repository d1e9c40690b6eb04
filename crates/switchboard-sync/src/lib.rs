//! # switchboard-sync
//!
//! A service's synchronous edges (gRPC and HTTP calls) with the resilience model of its
//! asynchronous ones (the `switchboard` handler middleware): a timeout per attempt, retries
//! with exponential backoff and jitter, a retry budget, a circuit breaker, and propagation
//! of the caller's deadline and trace context, so both kinds of edges are configured and
//! observed the same way.
//!
//! ## Tour
//!
//! - [`CallPolicy`]: the settings for one dependency, built from the policies the SDK's
//!   handler middleware uses too: [`RetryPolicy`](switchboard_policy::RetryPolicy),
//!   [`Backoff`](switchboard_policy::Backoff) and [`Breaker`](switchboard_policy::Breaker)
//!   (in `switchboard-policy`, which does not pull in the SDK), plus a retry budget.
//! - [`CallPolicy::call`]: runs any fallible async operation under the policy, with a client
//!   span per attempt; [`Retryable`] says which errors a retry may fix, [`CallError`] why a
//!   call failed.
//! - [`grpc_channel`]: a tonic channel for generated clients that sends `traceparent` and
//!   `grpc-timeout`; [`HttpClient`]: a `reqwest` client whose `send` applies the policy.
//! - [`deadline`]: the ambient deadline (a task-local) that bounds every call made while
//!   serving a request, and [`IncomingContextLayer`], the server layer (tonic or axum) that
//!   sets it, and the trace parent, from the incoming headers.
//! - [`propagation`]: the header formats.
//!
//! ## Example
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use switchboard_policy::BreakerConfig;
//! use switchboard_sync::{CallError, CallPolicy, HttpClient, HttpError};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // One policy per dependency: clones share its retry budget and breaker.
//! let policy = CallPolicy::default()
//!     .with_timeout(Duration::from_millis(500))
//!     .with_breaker(BreakerConfig::default());
//!
//! // gRPC: hand the channel to a generated client, and run each call under the policy.
//! let channel = switchboard_sync::grpc_channel("http://inventory:50051", &policy)?;
//! # let _ = channel;
//! // let mut client = InventoryClient::new(channel);
//! // let reply = policy.call(Operation::grpc("inventory.v1.Inventory", "Reserve"), |_| {
//! //     let mut client = client.clone();
//! //     async move { client.reserve(request).await }
//! // }).await?;
//!
//! // HTTP: `send` applies the policy itself.
//! let http = HttpClient::new(policy.clone())?;
//! match http.send(http.get("http://pricing/prices/42")).await {
//!     Ok(response) => println!("{}", response.text().await?),
//!     Err(e @ CallError::CircuitOpen { .. }) => println!("pricing is down, using defaults: {e}"),
//!     Err(e) => return Err(e.into()),
//! }
//! # let _: Option<HttpError> = None;
//! # Ok(()) }
//! ```

mod call;
pub mod deadline;
mod error;
mod grpc;
mod http_client;
mod operation;
mod policy;
pub mod propagation;
mod server;

pub use deadline::{remaining, with_deadline};
pub use error::{AttemptError, CallError, Retryable};
pub use grpc::{GrpcChannel, grpc_channel, grpc_channel_from_endpoint};
pub use http_client::{HttpClient, HttpError};
pub use operation::Operation;
pub use policy::CallPolicy;
pub use propagation::REQUEST_TIMEOUT_HEADER;
pub use server::{IncomingContext, IncomingContextLayer};
/// The retry budget type of [`CallPolicy::budget`].
pub use tower::retry::budget::TpsBudget;
