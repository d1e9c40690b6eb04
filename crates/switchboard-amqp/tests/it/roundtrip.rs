//! Publishing: attributes survive, options the backend lacks are refused.

use std::time::Duration;

use switchboard_core::backend::{Backend, Publisher, Subscriber};
use switchboard_core::contract::{BusError, Capability, PublishOptions, SubscriptionSpec, TopicSpec};
use switchboard_core::{Message, Timestamp};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attribute_and_extension_round_trips() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("rt");
    bus.ensure_topic(&t, &TopicSpec::default()).await.unwrap();
    bus.ensure_topic(&t, &TopicSpec::default()).await.unwrap();
    let mut s = bus.subscribe(&t, SubscriptionSpec::queue(sub("w"))).await.unwrap();
    let mut m = Message::new("/shop/orders", "com.example.order.created", &b"\x00\x01binary\xff"[..])
        .with_id("i".repeat(300))
        .with_subject("order-7")
        .with_content_type("application/octet-stream")
        .with_key("customer-7")
        .with_extension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .with_extension("tracestate", "congo=t61rcWkgMzE")
        .with_extension("custom1", "ünïcødé value");
    m.time = Some("2026-11-26T10:00:00.123456Z".into());
    m.dataschema = Some("https://example.com/schemas/order".into());
    let plain = msg(2);
    publish(&bus, &t, vec![m.clone(), plain.clone()]).await;
    let d = next(&mut s, WAIT).await;
    assert_eq!(d.message(), &m);
    assert_eq!(d.info().attempt, 1);
    assert_eq!(d.info().partition, 0);
    assert_eq!(d.info().topic, t);
    let published = d.info().published_at.expect("published_at");
    assert!(published > Timestamp(1_700_000_000_000));
    d.ack().await.unwrap();
    let d = next(&mut s, WAIT).await;
    assert_eq!(d.message(), &plain);
    d.ack().await.unwrap();
    s.close().await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_publishes_send_nothing() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("refuse");
    let mut s = bus.subscribe(&t, SubscriptionSpec::queue(sub("w"))).await.unwrap();
    let later = PublishOptions::default().with_deliver_at(Timestamp(u64::MAX / 2));
    let e = bus.publish(&t, vec![msg(1)], &later).await.unwrap_err();
    assert!(matches!(e, BusError::Unsupported { feature: "delayed_delivery", .. }), "{e:?}");
    let e = bus.publish(&t, vec![msg(1), msg(2).with_id("")], &PublishOptions::default()).await.unwrap_err();
    assert!(matches!(e, BusError::InvalidMessage(_)), "{e:?}");
    assert!(next_within(&mut s, Duration::from_millis(300)).await.is_none());
    assert!(!bus.capabilities().contains(Capability::DelayedDelivery));
    s.close().await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).await;
}

#[tokio::test]
async fn works_on_a_current_thread_runtime() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("ct");
    let mut s = bus.subscribe(&t, SubscriptionSpec::queue(sub("w"))).await.unwrap();
    publish(&bus, &t, vec![msg(1)]).await;
    bus.flush().await.unwrap();
    let d = next(&mut s, WAIT).await;
    assert_eq!(body(&d), "1");
    d.ack().await.unwrap();
    s.close().await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).await;
}
