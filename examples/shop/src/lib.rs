//! # shop
//!
//! The reference system of the article that started Switchboard: an order service (public
//! REST, event-sourced orders on the `orders` log), and — being built — inventory, payment,
//! email and shipping, talking synchronously and through the broker.
//!
//! What is here so far: the catalog and the order service (aggregate, REST API with
//! `Idempotency-Key`, the order list projection).

pub mod catalog;
pub mod order;
