use switchboard::{Bus, BusError, Message, SubscriptionSpec};

use crate::util::{bus, next, sub};

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
    a.publish("shared", Message::new("/t", "t", "x")).await.expect("publish");
    let mut s = b.subscribe("shared", SubscriptionSpec::queue(sub("s"))).await.expect("subscribe");
    let d = next(&mut s).await;
    assert_eq!(&d.message().data[..], b"x");
    d.ack().await.expect("ack");
}

#[tokio::test]
async fn publish_starts_a_trace_when_the_caller_has_none() {
    let (bus, _dir) = bus().await;
    bus.publish("traced", Message::new("/t", "t", "x")).await.expect("publish");
    let mut s = bus.subscribe("traced", SubscriptionSpec::stream(sub("s"))).await.expect("subscribe");
    let d = next(&mut s).await;
    // Without an OpenTelemetry SDK installed there is no span to inject: nothing is made up.
    let tp = d.message().extensions.get("traceparent");
    if let Some(tp) = tp {
        assert!(switchboard::trace::parse_traceparent(tp, None).is_some(), "{tp}");
    }
    d.ack().await.expect("ack");
}

#[tokio::test]
async fn invalid_names_are_refused_before_anything_is_sent() {
    let (bus, _dir) = bus().await;
    let err = bus.publish("bad/name", Message::new("/t", "t", "x")).await.expect_err("invalid topic");
    assert!(matches!(err, BusError::InvalidName(_)), "{err}");
    let bad = Message::new("/t", "t", "x").with_extension("Bad-Name", "v");
    let err = bus.publish("ok", bad).await.expect_err("invalid extension");
    assert!(matches!(err, BusError::InvalidMessage(_)), "{err}");
}
