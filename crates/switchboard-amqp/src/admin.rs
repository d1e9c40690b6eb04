//! Subscription statistics and deletion.
//!
//! `stats` reads a queue subscription's quorum queue with a passive `queue.declare`, which
//! reports the messages ready for delivery. RabbitMQ reports unacked messages only through
//! its management API, so `in_flight` counts every delivery this process received from
//! RabbitMQ and has not settled: those handed to the caller and those buffered for it (the
//! prefetch RabbitMQ already pushed). `backlog` (= `lag`) is ready + that in-flight count.
//! Messages delivered to other processes and not yet settled there are in neither count:
//! without the management API they are invisible, so with consumers in several processes
//! the backlog is too low by what the others hold. A stream subscription's stats are
//! `Unsupported` (its offset store proves it exists, but RabbitMQ 3.10 does not tell the
//! stream's last offset over AMQP). Dead letters are not counted (`dead_lettered: None`).
//!
//! `delete_subscription` deletes the quorum queue of a queue subscription and the offset
//! store of a stream subscription (see `offsets.rs`).

use std::sync::atomic::Ordering;

use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use switchboard_core::contract::{BusError, SubscriptionStats};
use switchboard_core::{SubscriptionName, TopicName};

use crate::connect::{BACKEND, Shared, bounded, close_channel};
use crate::{naming, offsets};

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
    let declared =
        bounded("declaring a queue", ch.queue_declare(queue.as_str().into(), passive, FieldTable::default()))
            .await;
    close_channel(&ch).await;
    match declared {
        Ok(q) => {
            let in_flight = shared.in_flight(&queue).load(Ordering::Relaxed);
            let backlog = u64::from(q.message_count()) + in_flight;
            Ok(SubscriptionStats::new(backlog, in_flight, backlog))
        }
        Err(BusError::NotFound { .. }) => {
            if offsets::exists(shared, &naming::offsets(topic, subscription)).await? {
                Err(BusError::Unsupported { backend: BACKEND, feature: "stats of stream subscriptions" })
            } else {
                Err(BusError::subscription_not_found(topic, subscription))
            }
        }
        Err(e) => Err(e),
    }
}

/// Deletes a topic's stream and exchange; missing ones are fine. Queue subscriptions' queues
/// stay (RabbitMQ drops their bindings) until their subscriptions are deleted.
pub(crate) async fn delete_topic(shared: &Shared, topic: &TopicName) -> Result<(), BusError> {
    shared.check_open()?;
    shared.ensured.lock().remove(topic);
    let ch = shared.channel().await?;
    let stream = bounded(
        "deleting a topic's stream",
        ch.queue_delete(naming::stream(topic).as_str().into(), QueueDeleteOptions::default()),
    )
    .await;
    close_channel(&ch).await;
    match stream {
        Ok(_) | Err(BusError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    let ch = shared.channel().await?;
    let exchange = bounded(
        "deleting a topic's exchange",
        ch.exchange_delete(naming::exchange(topic).as_str().into(), ExchangeDeleteOptions::default()),
    )
    .await;
    close_channel(&ch).await;
    match exchange {
        Ok(_) | Err(BusError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes a subscription's quorum queue and offset store; missing ones are fine.
pub(crate) async fn delete_subscription(
    shared: &Shared,
    topic: &TopicName,
    subscription: &SubscriptionName,
) -> Result<(), BusError> {
    shared.check_open()?;
    for queue in [naming::queue(topic, subscription), naming::offsets(topic, subscription)] {
        let ch = shared.channel().await?;
        let deleted = bounded(
            "deleting a queue",
            ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()),
        )
        .await;
        close_channel(&ch).await;
        match deleted {
            Ok(_) | Err(BusError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
