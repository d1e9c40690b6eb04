//! Integration tests against the NATS server at 127.0.0.1:4222 (JetStream enabled). Every
//! test uses its own topics (random suffix) so they run in parallel, and deletes its streams.

#![allow(clippy::unwrap_used)]

mod connect;
mod dead_letter;
mod publish;
mod queue;
mod restart;
mod stream;

use std::time::Duration;

use switchboard_core::contract::{Delivery, Subscription, SubscriptionSpec};
use switchboard_core::{Message, SubscriptionName, TopicName};
use switchboard_nats::NatsBackend;

/// The shared test server.
pub const URL: &str = "nats://127.0.0.1:4222";

/// A backend on the shared test server.
pub async fn bus() -> NatsBackend {
    NatsBackend::connect(URL).await.expect("a NATS server with JetStream at 127.0.0.1:4222")
}

/// A fresh topic name: `it.<what>.<random>`.
pub fn topic(what: &str) -> TopicName {
    TopicName::new(format!("it.{what}.{:016x}", rand::random::<u64>())).unwrap()
}

/// A subscription name.
pub fn name(s: &str) -> SubscriptionName {
    SubscriptionName::new(s).unwrap()
}

/// A stream spec with defaults (starts at the earliest message).
pub fn stream(s: &str) -> SubscriptionSpec {
    SubscriptionSpec::stream(name(s))
}

/// A queue spec with defaults.
pub fn queue(s: &str) -> SubscriptionSpec {
    SubscriptionSpec::queue(name(s))
}

/// A message with `body` as data.
pub fn msg(body: &str) -> Message {
    Message::new("/it", "it.event", body.to_owned())
}

/// The next delivery, failing the test after `within`.
pub async fn next(sub: &mut Subscription, within: Duration) -> Delivery {
    tokio::time::timeout(within, sub.next())
        .await
        .expect("no delivery in time")
        .expect("subscription ended")
        .expect("subscription error")
}

/// Asserts nothing is delivered for `d`.
pub async fn nothing_for(sub: &mut Subscription, d: Duration) {
    if let Ok(got) = tokio::time::timeout(d, sub.next()).await {
        panic!("expected nothing, got {got:?}");
    }
}

/// Deletes the streams of `topics` and of the topics named after them (their default
/// dead-letter topics `<topic>.<subscription>.dlq`), and the stream cursors of `topics`.
pub async fn cleanup(bus: &NatsBackend, topics: &[&TopicName]) {
    use futures::StreamExt;
    let js = async_nats::jetstream::new(bus.client().clone());
    if let Ok(cursors) = js.get_stream_no_info("KV_SB_CURSORS").await {
        for t in topics {
            let escaped = NatsBackend::stream_name(t).trim_start_matches("SB_").to_owned();
            let _ = cursors.purge().filter(format!("$KV.SB_CURSORS.{escaped}.>")).await;
        }
    }
    let prefixes: Vec<String> = topics.iter().map(|t| NatsBackend::stream_name(t)).collect();
    let mut doomed = Vec::new();
    let mut names = js.stream_names();
    while let Some(Ok(n)) = names.next().await {
        if prefixes.iter().any(|p| n == *p || n.starts_with(&format!("{p}_D"))) {
            doomed.push(n);
        }
    }
    for n in doomed {
        let _ = js.delete_stream(n).await;
    }
}
