//! Integration tests against the RabbitMQ at 127.0.0.1:5672 (guest/guest). Every test uses
//! topics with a random suffix, so tests run in parallel, and removes what it declared.
#![allow(clippy::unwrap_used)]

mod dead_letters;
mod errors;
mod queue;
mod reconnect;
mod roundtrip;
mod stream;

#[allow(unused_imports)] use switchboard_amqp::wd::Wd;
use std::time::Duration;

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use switchboard_amqp::AmqpBackend;
use switchboard_core::contract::{Backend, Delivery, PublishOptions, Publisher, Subscription};
use switchboard_core::{Message, SubscriptionName, TopicName};

pub(crate) const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub(crate) async fn bus() -> AmqpBackend {
    AmqpBackend::connect(URL).wd(concat!(file!(), ":", line!())).await.expect("RabbitMQ must run at 127.0.0.1:5672 (rabbitmq-server -detached)")
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
    bus.publish(topic, messages, &PublishOptions::default()).wd(concat!(file!(), ":", line!())).await.unwrap();
}

/// The next delivery, failing the test after `secs` seconds.
pub(crate) async fn next(s: &mut Subscription) -> Delivery {
    next_within(s, Duration::from_secs(10)).wd(concat!(file!(), ":", line!())).await.expect("no delivery within 10 s")
}

pub(crate) async fn next_within(s: &mut Subscription, d: Duration) -> Option<Delivery> {
    match tokio::time::timeout(d, s.next()).wd(concat!(file!(), ":", line!())).await {
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
        let _ = bus.delete_subscription(t, &sub(s)).wd(concat!(file!(), ":", line!())).await;
    }
    let conn = lapin::Connection::connect(URL, lapin::ConnectionProperties::default()).wd(concat!(file!(), ":", line!())).await.unwrap();
    let ch = conn.create_channel().wd(concat!(file!(), ":", line!())).await.unwrap();
    let dead_letter_topics: Vec<String> = subs.iter().map(|(t, s)| format!("{t}.{s}.dlq")).collect();
    let names = topics.iter().map(|t| t.to_string()).chain(dead_letter_topics);
    for t in names {
        let _ = ch.queue_delete(format!("sb.s.{t}").into(), QueueDeleteOptions::default()).wd(concat!(file!(), ":", line!())).await;
        let _ = ch.exchange_delete(format!("sb.t.{t}").into(), ExchangeDeleteOptions::default()).wd(concat!(file!(), ":", line!())).await;
    }
    let _ = conn.close(200, "ok".into()).wd(concat!(file!(), ":", line!())).await;
    let _ = bus.close().wd(concat!(file!(), ":", line!())).await;
}
