//! Integration tests against the RabbitMQ at 127.0.0.1:5672 (guest/guest). Every test uses
//! topics with a random suffix, so tests run in parallel, and removes what it declared.
#![allow(clippy::unwrap_used)]

mod dead_letters;
mod errors;
mod queue;
mod reconnect;
mod roundtrip;
mod stream;

use std::time::Duration;

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use switchboard_amqp::AmqpBackend;
use switchboard_core::backend::{Backend, Publisher};
use switchboard_core::contract::{Delivery, PublishOptions, Subscription};
use switchboard_core::{Message, SubscriptionName, TopicName};

pub(crate) const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub(crate) async fn bus() -> AmqpBackend {
    AmqpBackend::connect(URL).await.expect("RabbitMQ must run at 127.0.0.1:5672 (rabbitmq-server -detached)")
}

pub(crate) fn unique(prefix: &str) -> TopicName {
    TopicName::new(format!("{prefix}.{:016x}", rand::random::<u64>())).unwrap()
}

pub(crate) fn sub(name: &str) -> SubscriptionName {
    SubscriptionName::new(name).unwrap()
}

pub(crate) fn msg(i: usize) -> Message {
    Message::new("/tests", "test.event", format!("m{i}")).with_id(format!("id-{i}"))
}

pub(crate) async fn publish(bus: &AmqpBackend, topic: &TopicName, messages: Vec<Message>) {
    bus.publish(topic, messages, &PublishOptions::default()).await.unwrap();
}

/// The next delivery, failing the test after `secs` seconds.
pub(crate) async fn next(s: &mut Subscription) -> Delivery {
    next_within(s, Duration::from_secs(10)).await.expect("no delivery within 10 s")
}

pub(crate) async fn next_within(s: &mut Subscription, d: Duration) -> Option<Delivery> {
    match tokio::time::timeout(d, s.next()).await {
        Ok(Some(r)) => Some(r.unwrap()),
        Ok(None) => panic!("subscription ended"),
        Err(_) => None,
    }
}

pub(crate) fn body(d: &Delivery) -> String {
    String::from_utf8(d.message().data.to_vec()).unwrap()
}

/// Deletes the exchanges and streams of `topics` and the queues (and default dead-letter
/// topics) of `(topic, subscription)`.
pub(crate) async fn cleanup(bus: &AmqpBackend, topics: &[&TopicName], subs: &[(&TopicName, &str)]) {
    for (t, s) in subs {
        let _ = bus.delete_subscription(t, &sub(s)).await;
    }
    // Bounded like the backend's own requests: a cleanup must not hang a test.
    let bounded = Duration::from_secs(10);
    let conn = tokio::time::timeout(
        bounded,
        lapin::Connection::connect(URL, lapin::ConnectionProperties::default()),
    )
    .await
    .unwrap()
    .unwrap();
    let ch = tokio::time::timeout(bounded, conn.create_channel()).await.unwrap().unwrap();
    let dead_letter_topics: Vec<String> = subs.iter().map(|(t, s)| format!("{t}.{s}.dlq")).collect();
    let names = topics.iter().map(|t| t.to_string()).chain(dead_letter_topics);
    for t in names {
        let q = ch.queue_delete(format!("sb.s.{t}").into(), QueueDeleteOptions::default());
        let _ = tokio::time::timeout(bounded, q).await;
        let x = ch.exchange_delete(format!("sb.t.{t}").into(), ExchangeDeleteOptions::default());
        let _ = tokio::time::timeout(bounded, x).await;
    }
    let _ = tokio::time::timeout(bounded, ch.close(200, "ok".into())).await;
    let _ = tokio::time::timeout(bounded, conn.close(200, "ok".into())).await;
    let _ = bus.close().await;
}
