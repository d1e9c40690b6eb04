use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use switchboard::layers::Middleware;
use switchboard::router::{Handled, HandlerError, Incoming, Outgoing, Router};
use switchboard::{Bus, Message, SubscriptionSpec, dead_letter_ext as ext};

use tower::Layer;

use crate::util::bus;
use switchboard_testkit::{WAIT, eventually, next, sub, topic};

fn quick() -> Middleware {
    Middleware::default()
        .with_timeout(Some(Duration::from_millis(300)))
        .with_retry(None)
        .with_circuit_breaker(None)
}

fn spec(name: &str) -> SubscriptionSpec {
    SubscriptionSpec::queue(sub(name)).with_max_deliveries(Some(3)).with_prefetch(8)
}

async fn backlog(bus: &Bus, t: &str, s: &str) -> u64 {
    bus.stats(&topic(t), &sub(s)).await.map(|s| s.backlog).unwrap_or(u64::MAX)
}

#[tokio::test]
async fn handler_output_is_published_then_the_input_acked() {
    let (bus, _dir) = bus().await;
    let handler = tower::service_fn(|msg: Incoming| async move {
        let out = Message::new("/shipping", "order.shipped", msg.message.data.clone())
            .with_extension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        Handled::Ok(vec![Outgoing::new(topic("shipments"), out)])
    });
    let router = Router::new(bus.clone())
        .route("ship", topic("orders"), spec("shipping"), quick().layer(handler))
        .start()
        .await
        .expect("start");
    let mut shipments =
        bus.subscribe(&topic("shipments"), SubscriptionSpec::stream(sub("audit"))).await.expect("sub");
    let order = Message::new("/orders", "order.created", "order-1");
    let order_id = order.id.clone();
    bus.publish(&topic("orders"), order).await.expect("publish");
    let d = next(&mut shipments, WAIT).await;
    assert_eq!(&d.message().data[..], b"order-1");
    assert_eq!(d.message().extensions["correlationid"], order_id, "correlation id is the input's id");
    assert_eq!(d.message().extensions["causationid"], order_id);
    d.ack().await.expect("ack");
    eventually("the order acked", WAIT, async || backlog(&bus, "orders", "shipping").await == 0).await;
    router.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_panicking_handler_is_retried_and_the_service_lives_on() {
    let (bus, _dir) = bus().await;
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let handler = tower::service_fn(move |msg: Incoming| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            if msg.info.attempt == 1 {
                panic!("boom on the first attempt");
            }
            Handled::Ok(vec![])
        }
    });
    let router = Router::new(bus.clone())
        .with_redelivery_backoff(switchboard::layers::Backoff {
            initial: Duration::from_millis(10),
            ..Default::default()
        })
        .route("panicky", topic("p"), spec("s"), quick().layer(handler))
        .start()
        .await
        .expect("start");
    bus.publish(&topic("p"), Message::new("/t", "t", "x")).await.expect("publish");
    eventually("the retried message acked", WAIT, async || backlog(&bus, "p", "s").await == 0).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one panic, one success");
    router.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_handler_past_its_timeout_is_retried() {
    let (bus, _dir) = bus().await;
    // The first attempt never finishes on its own: only the timeout layer ends it, and the
    // subscription's 30 s lease is far beyond the 10 s the test waits, so without the
    // timeout the message is never acked in time.
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let handler = tower::service_fn(move |msg: Incoming| {
        a.fetch_add(1, Ordering::SeqCst);
        async move {
            if msg.info.attempt == 1 {
                std::future::pending::<()>().await;
            }
            Handled::Ok(vec![])
        }
    });
    let router = Router::new(bus.clone())
        .with_redelivery_backoff(switchboard::layers::Backoff {
            initial: Duration::from_millis(10),
            ..Default::default()
        })
        .route("slow", topic("slow"), spec("s"), quick().layer(handler))
        .start()
        .await
        .expect("start");
    bus.publish(&topic("slow"), Message::new("/t", "t", "x")).await.expect("publish");
    eventually("the message acked on its second attempt", WAIT, async || {
        backlog(&bus, "slow", "s").await == 0
    })
    .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "the timed-out attempt, then the successful one");
    router.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_rejected_message_is_dead_lettered_at_once_with_metadata() {
    let (bus, _dir) = bus().await;
    let handler = tower::service_fn(|_: Incoming| async move {
        Handled::Err(HandlerError::permanent("amount is negative"))
    });
    let router = Router::new(bus.clone())
        .route("validate", topic("payments"), spec("billing"), quick().layer(handler))
        .start()
        .await
        .expect("start");
    let mut dlq = bus
        .subscribe(&topic("payments.billing.dlq"), SubscriptionSpec::stream(sub("inspect")))
        .await
        .expect("dlq subscription");
    bus.publish(&topic("payments"), Message::new("/t", "payment", "-5")).await.expect("publish");
    let d = next(&mut dlq, WAIT).await;
    let e = &d.message().extensions;
    assert_eq!(e[ext::REASON], "rejected");
    assert_eq!(e[ext::TOPIC], "payments");
    assert_eq!(e[ext::SUBSCRIPTION], "billing");
    assert_eq!(e[ext::HANDLER], "validate");
    assert_eq!(e[ext::ATTEMPTS], "1", "dead-lettered on the first attempt");
    assert!(e[ext::ERROR].contains("amount is negative"), "{}", e[ext::ERROR]);
    d.ack().await.expect("ack");
    eventually("the original acked", WAIT, async || backlog(&bus, "payments", "billing").await == 0).await;
    router.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn transient_failures_use_up_deliveries_then_the_broker_dead_letters() {
    let (bus, _dir) = bus().await;
    let handler =
        tower::service_fn(|_: Incoming| async move { Handled::Err(HandlerError::transient("db down")) });
    let router = Router::new(bus.clone())
        .with_redelivery_backoff(switchboard::layers::Backoff {
            initial: Duration::from_millis(10),
            ..Default::default()
        })
        .route("store", topic("writes"), spec("db"), quick().layer(handler))
        .start()
        .await
        .expect("start");
    let mut dlq = bus
        .subscribe(&topic("writes.db.dlq"), SubscriptionSpec::stream(sub("inspect")))
        .await
        .expect("dlq subscription");
    bus.publish(&topic("writes"), Message::new("/t", "t", "x")).await.expect("publish");
    let d = next(&mut dlq, WAIT).await;
    let e = &d.message().extensions;
    assert_eq!(e[ext::REASON], "nacked");
    assert_eq!(e[ext::ATTEMPTS], "3");
    assert!(e[ext::ERROR].contains("db down"), "{}", e[ext::ERROR]);
    d.ack().await.expect("ack");
    router.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn shutdown_finishes_handlers_in_flight_before_returning() {
    let (bus, _dir) = bus().await;
    let started = Arc::new(tokio::sync::Notify::new());
    let s = started.clone();
    let handler = tower::service_fn(move |_: Incoming| {
        let s = s.clone();
        async move {
            s.notify_one();
            tokio::time::sleep(Duration::from_millis(200)).await;
            Handled::Ok(vec![])
        }
    });
    let router = Router::new(bus.clone())
        .route("slow", topic("drain"), spec("s"), handler)
        .start()
        .await
        .expect("start");
    bus.publish(&topic("drain"), Message::new("/t", "t", "x")).await.expect("publish");
    started.notified().await;
    router.shutdown().await.expect("shutdown");
    assert_eq!(backlog(&bus, "drain", "s").await, 0, "the in-flight message was finished and acked");
}

#[tokio::test]
async fn a_stream_route_dead_letters_rejections_to_its_configured_topic() {
    let (bus, _dir) = bus().await;
    let handler =
        tower::service_fn(|_: Incoming| async move { Handled::Err(HandlerError::permanent("bad")) });
    let spec = SubscriptionSpec::stream(sub("audit"))
        .with_dead_letter_topic(switchboard::TopicName::new("audit-rejects").expect("name"));
    let router = Router::new(bus.clone())
        .route("audit", topic("events"), spec, quick().layer(handler))
        .start()
        .await
        .expect("start");
    let mut rejects = bus
        .subscribe(&topic("audit-rejects"), SubscriptionSpec::stream(sub("inspect")))
        .await
        .expect("subscribe");
    bus.publish(&topic("events"), Message::new("/t", "t", "x")).await.expect("publish");
    let d = next(&mut rejects, WAIT).await;
    assert_eq!(d.message().extensions[ext::HANDLER], "audit");
    d.ack().await.expect("ack");
    router.shutdown().await.expect("shutdown");
    let loops = Router::new(bus.clone())
        .route(
            "loop",
            topic("events"),
            SubscriptionSpec::stream(sub("x"))
                .with_dead_letter_topic(switchboard::TopicName::new("events").expect("name")),
            tower::service_fn(|_: Incoming| async { Handled::Ok(vec![]) }),
        )
        .start()
        .await;
    assert!(
        matches!(loops, Err(switchboard::BusError::InvalidArgument(_))),
        "a topic as its own dead-letter topic is refused at start"
    );
}
