//! # shop
//!
//! The reference system of the article that started Switchboard: an order service (public
//! REST, event-sourced orders on the `orders` log), and — being built — inventory, payment,
//! email and shipping, talking synchronously and through the broker.
//!
//! What is here so far: the catalog; the order service (event-sourced orders, a REST API
//! with `Idempotency-Key`, the order list projection, the checkout saga started from each
//! `order.created`); inventory (reserve/release over a queue, never overselling); payment
//! (charge/refund over a queue, through a simulated provider over HTTP).

pub mod catalog;
pub mod deployment;
pub mod email;
pub mod invariants;
pub mod inventory;
pub mod load;
pub mod order;
pub mod payment;
pub mod shipping;

/// Wall-clock milliseconds since the epoch: what the services stamp their rows with.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
