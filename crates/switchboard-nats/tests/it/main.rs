//! Integration tests against the NATS server at 127.0.0.1:4222 (JetStream enabled; see
//! `switchboard_testkit::Service::Nats`), skipped when it is not running (failed in CI); the
//! restart tests start private `nats-server`s instead. Every test uses its own topics (random
//! suffix) so they run in parallel, and deletes its streams.

#![allow(clippy::unwrap_used)]

mod connect;
mod dead_letter;
mod publish;
mod queue;
mod restart;
mod stream;

use switchboard_core::TopicName;
use switchboard_core::contract::SubscriptionSpec;
use switchboard_nats::NatsBackend;
/// A subscription name (`sub` is these tests' name for a subscription).
pub use switchboard_testkit::sub as name;
pub use switchboard_testkit::{msg, nats_url, next, nothing_for, require_service, unique_topic};

/// A backend on the shared test server (tests call `require_service!(Nats)` first).
pub async fn bus() -> NatsBackend {
    let url = nats_url();
    NatsBackend::connect(&url).await.unwrap_or_else(|e| panic!("a NATS server with JetStream at {url}: {e}"))
}

/// A fresh topic name: `it.<what>-<random>`.
pub fn topic(what: &str) -> TopicName {
    unique_topic(&format!("it.{what}"))
}

/// A stream spec with defaults (starts at the earliest message).
pub fn stream(s: &str) -> SubscriptionSpec {
    SubscriptionSpec::stream(name(s))
}

/// A queue spec with defaults.
pub fn queue(s: &str) -> SubscriptionSpec {
    SubscriptionSpec::queue(name(s))
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
