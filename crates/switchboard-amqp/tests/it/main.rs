//! Integration tests against the RabbitMQ at 127.0.0.1:5672 (guest/guest; see
//! `switchboard_testkit::Service::RabbitMq`), skipped when it is not running (failed in CI).
//! Every test uses topics with a random suffix, so tests run in parallel, and removes what it
//! declared.
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
use switchboard_core::TopicName;
use switchboard_core::backend::Backend;
pub(crate) use switchboard_testkit::{
    WAIT, body, msg, next, next_within, publish, rabbitmq_url, require_service, sub, unique_topic,
};

/// A backend on the test RabbitMQ (tests call `require_service!(RabbitMq)` first).
pub(crate) async fn bus() -> AmqpBackend {
    let url = rabbitmq_url();
    AmqpBackend::connect(&url).await.unwrap_or_else(|e| panic!("RabbitMQ at {url}: {e}"))
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
        lapin::Connection::connect(&rabbitmq_url(), lapin::ConnectionProperties::default()),
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
