use std::time::Duration;

use switchboard_core::backend::{Backend, Publisher, Subscriber};
use switchboard_core::contract::{BusError, PublishOptions, TopicSpec};
use switchboard_core::{Message, Timestamp};

use crate::*;

#[tokio::test]
async fn every_attribute_and_extension_round_trips() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("roundtrip");
    let mut m = Message::new("/shop/orders", "com.example.order.created", &b"{\"id\":1}\x00\xff"[..])
        .with_id("order-1")
        .with_subject("  spaced subject % é ")
        .with_content_type("application/json")
        .with_key("customer-7")
        .with_extension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .with_extension("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        .with_extension("x1", "a: b\u{2028}c");
    m.time = Some("2026-11-26T10:00:00.123456789+01:00".into());
    m.dataschema = Some("https://example.com/schemas/order.json".into());
    let before = std::time::SystemTime::now();
    bus.publish(&t, vec![m.clone()], &PublishOptions::default()).await.unwrap();
    bus.flush().await.unwrap();

    let mut sub = bus.subscribe(&t, queue("rt")).await.unwrap();
    let d = next(&mut sub, Duration::from_secs(5)).await;
    assert_eq!(d.message(), &m);
    let info = d.info().clone();
    assert_eq!((info.partition, info.offset, info.attempt), (0, 1, 1));
    assert_eq!(info.topic, t);
    let published = info.published_at.expect("published_at");
    let since = published.duration_since(Timestamp::from_system_time(before));
    assert!(since < Duration::from_secs(5), "{published:?}");
    d.ack().await.unwrap();
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn a_repeated_id_is_stored_once() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("dedup");
    let m = msg("once").with_id("same-id");
    bus.publish(&t, vec![m.clone(), m.clone()], &PublishOptions::default()).await.unwrap();
    bus.publish(&t, vec![m.clone(), msg("other")], &PublishOptions::default()).await.unwrap();
    let mut sub = bus.subscribe(&t, queue("d")).await.unwrap();
    let first = next(&mut sub, Duration::from_secs(5)).await;
    assert_eq!(first.message().id, "same-id");
    let second = next(&mut sub, Duration::from_secs(5)).await;
    assert_eq!(second.message().data, "other");
    assert_eq!(second.info().offset, 2, "the repeats took no sequence numbers");
    first.ack().await.unwrap();
    second.ack().await.unwrap();
    nothing_for(&mut sub, Duration::from_millis(500)).await;
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_sent() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("refuse");
    let later = PublishOptions::default().with_deliver_at(Timestamp(u64::MAX / 2));
    let err = bus.publish(&t, vec![msg("x")], &later).await.unwrap_err();
    assert!(matches!(err, BusError::Unsupported { feature: "delayed_delivery", .. }), "{err:?}");
    let err = bus.publish(&t, vec![msg("x").with_id("")], &PublishOptions::default()).await.unwrap_err();
    assert!(matches!(err, BusError::InvalidMessage(_)), "{err:?}");
    let err = bus.ensure_topic(&t, &TopicSpec::default().with_partitions(0)).await.unwrap_err();
    assert!(matches!(err, BusError::InvalidArgument(_)), "{err:?}");
    let err = bus.subscribe(&t, queue("k").with_ordered_by_key(true)).await.unwrap_err();
    assert!(matches!(err, BusError::Unsupported { feature: "per_key_order", .. }), "{err:?}");
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn ensure_topic_is_idempotent_and_publish_recreates_a_deleted_stream() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("ensure");
    bus.ensure_topic(&t, &TopicSpec::default()).await.unwrap();
    bus.ensure_topic(&t, &TopicSpec::default()).await.unwrap();
    // Another client with a fresh cache finds the existing stream fine.
    let other = crate::bus().await;
    other.ensure_topic(&t, &TopicSpec::default()).await.unwrap();
    cleanup(&bus, &[&t]).await;
    bus.publish(&t, vec![msg("again")], &PublishOptions::default()).await.unwrap();
    let mut sub = bus.subscribe(&t, queue("e")).await.unwrap();
    next(&mut sub, Duration::from_secs(5)).await.ack().await.unwrap();
    cleanup(&bus, &[&t]).await;
}
