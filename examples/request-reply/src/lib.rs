//! # Request/reply over gRPC with Switchboard's resilience helpers
//!
//! Two services:
//!
//! - **inventory** ([`inventory`]): a gRPC server (`inventory.v1.Inventory/Reserve`, see
//!   `proto/`) behind [`IncomingContextLayer`](switchboard_sync::IncomingContextLayer), so
//!   its handlers run in the caller's trace and deadline;
//! - **order** ([`order`], [`order_api`]): takes orders over HTTP (`POST /orders`) and reserves their stock
//!   by calling the inventory through a [`switchboard_sync::grpc_channel`] under a
//!   [`CallPolicy`](switchboard_sync::CallPolicy): per-attempt timeout, retries of
//!   `UNAVAILABLE` with backoff and a retry budget, a circuit breaker, and the caller's
//!   deadline and `traceparent` passed on.
//!
//! Run them with the `request-reply` binary (`request-reply inventory`, then
//! `request-reply order`); the tests (`tests/it`) run both in-process, with an inventory
//! that fails, stalls or is absent on purpose.

pub mod inventory;
pub mod order;
pub mod order_api;
pub mod proto;
