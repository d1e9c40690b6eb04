//! Publishing: every attribute survives the trip, topics are created on first use, errors
//! map to the contract.

use switchboard_core::backend::{Backend, Publisher, Subscriber};
use switchboard_core::contract::{BusError, PublishOptions, SubscriptionSpec, TopicSpec};
use switchboard_core::{Message, Timestamp};

use crate::util::connect;
use switchboard_testkit::{TestServer, WAIT, next, sub, topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attribute_and_extension_round_trips() {
    let srv = TestServer::start().await;
    let bus = connect(&srv).await;
    assert_eq!(bus.name(), "switchboard");
    assert_eq!(bus.capabilities(), switchboard_core::contract::Capabilities::ALL);
    let t = topic("roundtrip");

    let mut json = Message::new("/shop/orders", "order.created", r#"{"id":7}"#)
        .with_id("order-7")
        .with_subject("orders/7")
        .with_content_type("application/json")
        .with_key("customer-3")
        .with_extension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .with_extension("tracestate", "vendor=x")
        .with_extension("tenant", "acme");
    json.time = Some("2026-11-26T10:00:00.250Z".into());
    json.dataschema = Some("https://schemas.example/order.json".into());
    let binary =
        Message::new("/s", "blob", vec![0u8, 0xff, 0x10]).with_content_type("application/octet-stream");
    let mut proto = Message::new("/s", "proto", vec![8u8, 1]).with_content_type("application/protobuf");
    proto.dataschema = Some("type.googleapis.com/shop.Order".into());
    let empty = Message::new("/s", "empty", "");
    let sent = vec![json, binary, proto, empty];
    bus.publish(&t, sent.clone(), &PublishOptions::default()).await.unwrap();

    let mut s = bus.subscribe(&t, SubscriptionSpec::queue(sub("reader"))).await.unwrap();
    for (i, expected) in sent.iter().enumerate() {
        let d = next(&mut s, WAIT).await;
        assert_eq!(d.message(), expected);
        let info = d.info().clone();
        assert_eq!((info.topic, info.subscription.as_str()), (t.clone(), "reader"));
        assert_eq!((info.partition, info.offset, info.attempt), (0, i as u64, 1));
        let published = info.published_at.expect("the server says when it stored it");
        assert!(published > Timestamp(1_700_000_000_000));
        d.ack().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_errors() {
    let srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("parts");
    bus.ensure_topic(&t, &TopicSpec::default().with_partitions(4)).await.unwrap();
    // Existing: left as it is, whatever the spec.
    bus.ensure_topic(&t, &TopicSpec::default().with_partitions(1)).await.unwrap();

    // Bad messages fail before anything is sent.
    let bad = Message::new("/s", "t", "x").with_extension("Bad-Name", "x");
    let e = bus.publish(&t, vec![bad], &PublishOptions::default()).await.unwrap_err();
    assert!(matches!(e, BusError::InvalidMessage(_)), "{e:?}");
    let mut late = Message::new("/s", "t", "x");
    late.time = Some("yesterday".into());
    assert!(matches!(
        bus.publish(&t, vec![late], &PublishOptions::default()).await,
        Err(BusError::InvalidMessage(_))
    ));
    // Over the server's size limit: refused, not retryable.
    let big = Message::new("/s", "t", vec![0u8; 2 * 1024 * 1024]);
    let e = bus.publish(&t, vec![big], &PublishOptions::default()).await.unwrap_err();
    assert!(matches!(e, BusError::Backend { retryable: false, .. }), "{e:?}");
    // Nothing to publish is not an error.
    bus.publish(&t, vec![], &PublishOptions::default()).await.unwrap();

    // Unknown subscription: stats say NotFound; deleting it is fine.
    assert!(matches!(bus.stats(&t, &sub("nope")).await, Err(BusError::NotFound { .. })));
    bus.delete_subscription(&t, &sub("nope")).await.unwrap();

    // Same name, other settings: Conflict.
    bus.subscribe(&t, SubscriptionSpec::queue(sub("s"))).await.unwrap();
    let e = bus.subscribe(&t, SubscriptionSpec::stream(sub("s"))).await.unwrap_err();
    assert!(matches!(e, BusError::Conflict { .. }), "{e:?}");
    // A bad spec never reaches the server.
    let e = bus.subscribe(&t, SubscriptionSpec::queue(sub("p")).with_prefetch(0)).await.unwrap_err();
    assert!(matches!(e, BusError::InvalidArgument(_)), "{e:?}");

    bus.close().await.unwrap();
    assert!(matches!(
        bus.publish(&t, vec![Message::new("/s", "t", "x")], &PublishOptions::default()).await,
        Err(BusError::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_at_holds_messages_back() {
    let srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("later");
    let mut s = bus.subscribe(&t, SubscriptionSpec::queue(sub("q"))).await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let options = PublishOptions::default().with_deliver_at(Timestamp(now + 600));
    let started = std::time::Instant::now();
    bus.publish(&t, vec![Message::new("/s", "t", "x")], &options).await.unwrap();
    let d = next(&mut s, WAIT).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(400), "{:?}", started.elapsed());
    d.ack().await.unwrap();
}
