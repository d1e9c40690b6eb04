//! Publishing: every attribute survives the trip, topics are created on first use, errors
//! map to the contract.

use switchboard_core::backend::{Backend, Publisher, Subscriber};
use switchboard_core::contract::{BusError, PublishOptions, SubscriptionSpec, TopicSpec};
use switchboard_core::{Message, Timestamp};

use switchboard_core::TopicName;
use switchboard_remote::RemoteBackend;

use crate::util::connect;
use switchboard_testkit::{TestServer, WAIT, msg, next, next_within, sub, topic};

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

/// How many `Publish` calls the server has answered.
fn publish_calls(srv: &TestServer) -> u64 {
    let state = srv.server().state();
    let text = state.metrics.render(&state.broker);
    text.lines()
        .find_map(|l| l.strip_prefix("switchboard_publish_latency_seconds_count{api=\"grpc\"} "))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

/// The bodies of everything one-partition `t` holds, in order (read until nothing more
/// comes for half a second).
async fn read_all(bus: &RemoteBackend, t: &TopicName) -> Vec<String> {
    let mut s = bus.subscribe(t, SubscriptionSpec::stream(sub("audit"))).await.unwrap();
    let mut bodies = Vec::new();
    while let Some(d) = next_within(&mut s, std::time::Duration::from_millis(500)).await {
        bodies.push(switchboard_testkit::body(&d));
        d.ack().await.unwrap();
    }
    bodies
}

fn batch_of(caller: usize, size: usize) -> Vec<Message> {
    (0..size).map(|i| msg(format!("{caller}:{i}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_share_one_call_and_keep_each_batch_whole() {
    let srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("shared");
    bus.ensure_topic(&t, &TopicSpec::default()).await.unwrap();
    let before = publish_calls(&srv);

    // Polled together on one task: the first goes out at once, the other 29 queue behind it
    // before it can be answered, so they leave as exactly one more call.
    let options = PublishOptions::default();
    let publishes = (0..30).map(|caller| bus.publish(&t, batch_of(caller, 5), &options));
    for result in futures::future::join_all(publishes).await {
        result.unwrap();
    }
    assert_eq!(publish_calls(&srv) - before, 2, "30 concurrent publishes, 2 calls");

    // Every caller's five messages are adjacent and in order.
    let bodies = read_all(&bus, &t).await;
    assert_eq!(bodies.len(), 30 * 5);
    for run in bodies.chunks(5) {
        let caller = run[0].split(':').next().unwrap();
        let expected: Vec<String> = (0..5).map(|i| format!("{caller}:{i}")).collect();
        assert_eq!(run, expected.as_slice());
    }
    // The first caller went first.
    assert_eq!(bodies[0], "0:0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_fails_only_the_publish_that_carried_it() {
    let srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("refused");
    bus.ensure_topic(&t, &TopicSpec::default()).await.unwrap();
    let options = PublishOptions::default();

    // Callers 1 and 2 share a call behind caller 0; caller 1's message is over the server's
    // size limit, so the server refuses that call as a whole.
    let oversized = vec![Message::new("/s", "t", vec![0u8; 2 * 1024 * 1024])];
    let results = futures::future::join_all([
        bus.publish(&t, batch_of(0, 2), &options),
        bus.publish(&t, oversized, &options),
        bus.publish(&t, batch_of(2, 2), &options),
    ])
    .await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(matches!(results[1], Err(BusError::Backend { retryable: false, .. })), "{:?}", results[1]);
    assert_eq!(read_all(&bus, &t).await, ["0:0", "0:1", "2:0", "2:1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_queued_behind_a_cancelled_one_still_complete() {
    let srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("cancelled");
    bus.ensure_topic(&t, &TopicSpec::default()).await.unwrap();
    let options = PublishOptions::default();

    let mut first = Box::pin(bus.publish(&t, batch_of(0, 1), &options));
    let mut second = Box::pin(bus.publish(&t, batch_of(1, 1), &options));
    // Poll each once: the first opens the call, the second queues behind it.
    tokio::select! { biased; r = &mut first => panic!("answered before the second queued: {r:?}"), () = std::future::ready(()) => {} }
    tokio::select! { biased; r = &mut second => panic!("answered while the first is out: {r:?}"), () = std::future::ready(()) => {} }
    // The caller of the first gives up: the queued publish must not wait for it.
    drop(first);
    tokio::time::timeout(WAIT, second).await.expect("the queued publish completes").unwrap();
    // And the topic takes publishes as before.
    bus.publish(&t, batch_of(2, 1), &options).await.unwrap();
    // The dropped publish may or may not have reached the server; the other two did, in order.
    let bodies = read_all(&bus, &t).await;
    let rest = bodies.strip_prefix(&["0:0".to_string()][..]).unwrap_or(&bodies);
    assert_eq!(rest, ["1:0", "2:0"], "{bodies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_and_immediate_publishes_do_not_share_a_call() {
    let srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("lanes");
    let mut s = bus.subscribe(&t, SubscriptionSpec::queue(sub("q"))).await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let later = PublishOptions::default().with_deliver_at(Timestamp(now + 60_000));
    let now_options = PublishOptions::default();
    let results = futures::future::join_all([
        bus.publish(&t, vec![msg("held-1")], &later),
        bus.publish(&t, vec![msg("now")], &now_options),
        bus.publish(&t, vec![msg("held-2")], &later),
    ])
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let d = next(&mut s, WAIT).await;
    assert_eq!(switchboard_testkit::body(&d), "now");
    d.ack().await.unwrap();
    assert!(next_within(&mut s, std::time::Duration::from_millis(300)).await.is_none(), "held back");
}
