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

/// A fact about an order for another service's log: `body` as JSON, with the id `id` (derived
/// from what it records, so publishing it again is a duplicate), the order's stream as its
/// subject and the order as its partition key (one order's facts stay in order).
pub(crate) fn order_fact(
    source: &str,
    ty: &str,
    id: String,
    order: &str,
    body: &serde_json::Value,
) -> switchboard::Message {
    switchboard::Message::new(source, ty, body.to_string())
        .with_id(id)
        .with_subject(format!("order-{order}"))
        .with_key(order.to_owned())
        .with_content_type("application/json")
}

/// Wall-clock milliseconds since the epoch: what the services stamp their rows with.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
