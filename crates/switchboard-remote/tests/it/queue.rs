//! Queue subscriptions: ack, nack, attempts, delays, extension, lease expiry, dead letters
//! and back-pressure.

use std::time::{Duration, Instant};

use switchboard_core::backend::Subscriber;
use switchboard_core::contract::{BusError, DeadLetterReason, Nack, SubscriptionSpec, dead_letter_ext};

use crate::util::{connect, num, publish};
use switchboard_testkit::{TestServer, WAIT, next, nothing_for, sub, topic};

const LEASE: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_nack_and_attempts() {
    let srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("work");
    let mut s = bus.subscribe(&t, SubscriptionSpec::queue(sub("workers"))).await.unwrap();
    publish(&bus, &t, [1, 2]).await;

    let d1 = next(&mut s, WAIT).await;
    let d2 = next(&mut s, WAIT).await;
    assert_eq!((num(&d1), num(&d2)), (1, 2));
    assert_eq!(d1.info().attempt, 1);
    d1.nack(Nack::now().with_error("not yet")).await.unwrap();
    d2.ack().await.unwrap();

    let again = next(&mut s, WAIT).await;
    assert_eq!((num(&again), again.info().attempt), (1, 2));
    again.ack().await.unwrap();
    nothing_for(&mut s, Duration::from_millis(200)).await;

    let stats = bus.stats(&t, &sub("workers")).await.unwrap();
    assert_eq!((stats.backlog, stats.in_flight, stats.dead_lettered), (0, 0, Some(0)));
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_with_delay_comes_back_later() {
    let srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("delayed");
    let mut s = bus.subscribe(&t, SubscriptionSpec::queue(sub("q"))).await.unwrap();
    publish(&bus, &t, [1]).await;
    let d = next(&mut s, WAIT).await;
    let nacked = Instant::now();
    d.nack(Nack::after(Duration::from_millis(500))).await.unwrap();
    nothing_for(&mut s, Duration::from_millis(300)).await;
    let d = next(&mut s, WAIT).await;
    assert!(nacked.elapsed() >= Duration::from_millis(450), "{:?}", nacked.elapsed());
    assert_eq!(d.info().attempt, 2);
    d.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_redelivers_and_the_old_delivery_is_lost() {
    let srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("leases");
    let mut s = bus.subscribe(&t, SubscriptionSpec::queue(sub("q")).with_lease(LEASE)).await.unwrap();
    publish(&bus, &t, [1]).await;
    let held = next(&mut s, WAIT).await;
    let again = next(&mut s, WAIT).await;
    assert_eq!((num(&again), again.info().attempt), (1, 2));
    let e = held.ack().await.unwrap_err();
    assert!(matches!(e, BusError::LeaseLost { .. }), "{e:?}");
    again.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_keeps_the_lease() {
    let srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("slow");
    let mut s = bus.subscribe(&t, SubscriptionSpec::queue(sub("q")).with_lease(LEASE)).await.unwrap();
    publish(&bus, &t, [1]).await;
    let d = next(&mut s, WAIT).await;
    for _ in 0..3 {
        d.extend(Duration::from_millis(600)).await.unwrap();
        nothing_for(&mut s, Duration::from_millis(200)).await;
    }
    d.ack().await.unwrap();
    nothing_for(&mut s, LEASE * 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_delivery_comes_back_at_once() {
    let srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("dropped");
    // A long lease: only the abandon's nack can bring it back quickly.
    let mut s = bus.subscribe(&t, SubscriptionSpec::queue(sub("q"))).await.unwrap();
    publish(&bus, &t, [1]).await;
    drop(next(&mut s, WAIT).await);
    let d = tokio::time::timeout(Duration::from_secs(2), s.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(d.info().attempt, 2);
    d.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_up_deliveries_are_dead_lettered_with_metadata() {
    let srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("payments");
    let spec = SubscriptionSpec::queue(sub("charge")).with_max_deliveries(Some(2));
    let mut s = bus.subscribe(&t, spec).await.unwrap();
    publish(&bus, &t, [1]).await;
    for attempt in 1..=2 {
        let d = next(&mut s, WAIT).await;
        assert_eq!(d.info().attempt, attempt);
        d.nack(Nack::now().with_error("card declined")).await.unwrap();
    }
    nothing_for(&mut s, Duration::from_millis(200)).await;

    let dlq = topic("payments.charge.dlq");
    let mut dead = bus.subscribe(&dlq, SubscriptionSpec::stream(sub("inspect"))).await.unwrap();
    let d = next(&mut dead, WAIT).await;
    assert_eq!(num(&d), 1);
    let ext = &d.message().extensions;
    assert_eq!(ext[dead_letter_ext::REASON], DeadLetterReason::Nacked.as_str());
    assert_eq!(ext[dead_letter_ext::TOPIC], "payments");
    assert_eq!(ext[dead_letter_ext::SUBSCRIPTION], "charge");
    assert_eq!(ext[dead_letter_ext::ATTEMPTS], "2");
    assert_eq!(ext[dead_letter_ext::ERROR], "card declined");
    assert_eq!((ext[dead_letter_ext::PARTITION].as_str(), ext[dead_letter_ext::OFFSET].as_str()), ("0", "0"));
    d.ack().await.unwrap();
    let stats = bus.stats(&t, &sub("charge")).await.unwrap();
    assert_eq!((stats.backlog, stats.dead_lettered), (0, Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_prefetch_deliveries_are_unsettled() {
    let srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("flood");
    let mut s = bus.subscribe(&t, SubscriptionSpec::queue(sub("q")).with_prefetch(3)).await.unwrap();
    publish(&bus, &t, 0..20).await;

    let mut seen = Vec::new();
    let mut held = Vec::new();
    for _ in 0..3 {
        let d = next(&mut s, WAIT).await;
        seen.push(num(&d));
        held.push(d);
    }
    nothing_for(&mut s, Duration::from_millis(300)).await;
    let stats = bus.stats(&t, &sub("q")).await.unwrap();
    assert_eq!(stats.in_flight, 3);

    // Each settle lets exactly one more through.
    held.remove(0).ack().await.unwrap();
    let d = next(&mut s, WAIT).await;
    seen.push(num(&d));
    held.push(d);
    nothing_for(&mut s, Duration::from_millis(200)).await;

    // Settle everything as it comes: all 20 arrive, each once.
    for d in held.drain(..) {
        d.ack().await.unwrap();
    }
    while seen.len() < 20 {
        let d = next(&mut s, WAIT).await;
        seen.push(num(&d));
        d.ack().await.unwrap();
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    nothing_for(&mut s, Duration::from_millis(100)).await;
}
