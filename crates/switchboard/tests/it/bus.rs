use std::time::Duration;

use switchboard::{Bus, BusError, Message, SubscriptionSpec};

use crate::util::bus;
use switchboard_testkit::{WAIT, next, sub, topic};

#[tokio::test]
async fn invalid_urls_and_missing_backends_are_clear_errors() {
    for url in ["", "nope", "kafka+x://h", "embedded:/tmp/x?y=1"] {
        match Bus::connect(url).await {
            Err(BusError::InvalidUrl { reason, .. }) => assert!(!reason.is_empty()),
            other => panic!("{url}: expected InvalidUrl, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn connections_to_one_directory_share_one_broker() {
    let (a, dir) = bus().await;
    let b = Bus::connect(&format!("embedded:{}", dir.path().display())).await.expect("second connect");
    a.publish(&topic("shared"), Message::new("/t", "t", "x")).await.expect("publish");
    let mut s = b.subscribe(&topic("shared"), SubscriptionSpec::queue(sub("s"))).await.expect("subscribe");
    let d = next(&mut s, WAIT).await;
    assert_eq!(&d.message().data[..], b"x");
    d.ack().await.expect("ack");
}

#[tokio::test]
async fn publish_carries_the_callers_trace() {
    use opentelemetry::context::FutureExt as _;
    use opentelemetry::trace::TraceContextExt as _;
    let (bus, _dir) = bus().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = switchboard::trace::parse_traceparent(&format!("00-{trace_id}-00f067aa0ba902b7-01"), None)
        .expect("valid traceparent");
    let cx = opentelemetry::Context::new().with_remote_span_context(parent);
    // Whether or not a tracer provider is installed (another test in this binary installs
    // one), the message must join the caller's trace.
    bus.publish(&topic("traced"), Message::new("/t", "t", "x")).with_context(cx).await.expect("publish");
    let mut s = bus.subscribe(&topic("traced"), SubscriptionSpec::stream(sub("s"))).await.expect("subscribe");
    let d = next(&mut s, WAIT).await;
    let tp = d.message().extensions.get("traceparent").expect("a traceparent");
    assert!(tp.starts_with(&format!("00-{trace_id}-")), "{tp}");
    d.ack().await.expect("ack");
}

#[tokio::test]
async fn invalid_names_are_refused_before_anything_is_sent() {
    let (bus, _dir) = bus().await;
    let err = BusError::from(switchboard::TopicName::new("bad/name").expect_err("invalid topic"));
    assert!(matches!(err, BusError::InvalidName(_)), "{err}");
    let bad = Message::new("/t", "t", "x").with_extension("Bad-Name", "v");
    let err = bus.publish(&topic("ok"), bad).await.expect_err("invalid extension");
    assert!(matches!(err, BusError::InvalidMessage(_)), "{err}");
}

#[tokio::test]
async fn a_router_handler_answers_a_request_with_incoming_reply() {
    use switchboard::{Handled, Incoming, Router, SubscriptionName, SubscriptionSpec};
    let (bus, _dir) = crate::util::bus().await;
    let prices = switchboard_testkit::unique_topic("prices");
    let quote = tower::service_fn(|request: Incoming| async move {
        let answer = Message::new(
            "/pricing",
            "price.quoted",
            format!("{}: 42", String::from_utf8_lossy(&request.message.data)),
        );
        Handled::Ok(vec![request.reply(answer).map_err(|e| switchboard::HandlerError::Permanent(e.into()))?])
    });
    let router = Router::new(bus.clone())
        .route(
            "quote",
            prices.clone(),
            SubscriptionSpec::queue(SubscriptionName::from_static("pricing")),
            quote,
        )
        .start()
        .await
        .expect("router");
    let reply = bus
        .request(&prices, Message::new("/shop", "price.requested", "sku-1"), Duration::from_secs(10))
        .await
        .expect("a reply");
    assert_eq!(reply.data, "sku-1: 42".as_bytes());
    router.shutdown().await.expect("shutdown");

    // A request that asks for no reply gets a clear error from `reply`, not a publish to nowhere.
    let info = switchboard::DeliveryInfo::new(prices.clone(), switchboard_testkit::sub("pricing"), 0, 0);
    let plain = Incoming::new(Message::new("/shop", "price.requested", "x"), info, "quote");
    assert!(matches!(
        plain.reply(Message::new("/p", "t", "y")),
        Err(switchboard::BusError::InvalidArgument(_))
    ));
}
