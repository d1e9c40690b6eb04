//! Subscription statistics and deletion.
//!
//! `stats` reads a queue subscription's quorum queue with a passive `queue.declare`, which
//! reports the messages ready for delivery. RabbitMQ reports unacked messages only through
//! its management API, so `in_flight` counts the unsettled deliveries handed out by this
//! process, and `backlog` (= `lag`) is ready + that in-flight count. A stream subscription
//! has no state in RabbitMQ (no consumer offsets over AMQP), so its stats are
//! `Unsupported`. Dead letters are not counted (`dead_lettered: None`).

use std::sync::atomic::Ordering;

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use switchboard_core::contract::{BusError, SubscriptionStats};
use switchboard_core::{SubscriptionName, TopicName};

use crate::connect::{BACKEND, Shared, lapin_error};
use crate::naming;

/// Backlog and in-flight counts of a queue subscription.
pub(crate) async fn stats(
    shared: &Shared,
    topic: &TopicName,
    subscription: &SubscriptionName,
) -> Result<SubscriptionStats, BusError> {
    shared.check_open()?;
    let queue = naming::queue(topic, subscription);
    let ch = shared.channel().await?;
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let declared = ch.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await;
    let _ = ch.close(200, "ok".into()).await;
    match declared.map_err(lapin_error) {
        Ok(q) => {
            let in_flight = shared.in_flight(&queue).load(Ordering::Relaxed);
            let backlog = u64::from(q.message_count()) + in_flight;
            Ok(SubscriptionStats { backlog, in_flight, lag: backlog, dead_lettered: None })
        }
        Err(BusError::NotFound(_))
            if shared.streams.lock().contains(&(topic.clone(), subscription.clone())) =>
        {
            Err(BusError::Unsupported { backend: BACKEND, feature: "stats of stream subscriptions" })
        }
        Err(BusError::NotFound(_)) => {
            Err(BusError::NotFound(format!("subscription {subscription} on topic {topic}")))
        }
        Err(e) => Err(e),
    }
}

/// Deletes a queue subscription's quorum queue; a missing one is fine.
pub(crate) async fn delete_subscription(
    shared: &Shared,
    topic: &TopicName,
    subscription: &SubscriptionName,
) -> Result<(), BusError> {
    shared.check_open()?;
    shared.streams.lock().remove(&(topic.clone(), subscription.clone()));
    let queue = naming::queue(topic, subscription);
    let ch = shared.channel().await?;
    let deleted = ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = ch.close(200, "ok".into()).await;
    match deleted.map_err(lapin_error) {
        Ok(_) | Err(BusError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
