//! Queue subscriptions: competing consumers, nacks, leases, abandon, close, stats.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use switchboard_core::backend::{Backend, Subscriber};
use switchboard_core::contract::{BusError, Capability, LeaseLostCause, Nack, Resource, SubscriptionSpec};

use crate::*;

fn spec(name: &str) -> SubscriptionSpec {
    SubscriptionSpec::queue(sub(name)).with_max_deliveries(None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_split_the_messages() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("compete");
    let s1 = bus.subscribe(&t, spec("w").with_prefetch(1)).await.unwrap();
    let s2 = bus.subscribe(&t, spec("w").with_prefetch(1)).await.unwrap();
    publish(&bus, &t, (0..20).map(msg)).await;
    let consume = |mut s: switchboard_core::contract::Subscription| async move {
        let mut got = Vec::new();
        while let Some(d) = next_within(&mut s, Duration::from_millis(700)).await {
            got.push(body(&d));
            tokio::time::sleep(Duration::from_millis(5)).await;
            d.ack().await.unwrap();
        }
        s.close().await.unwrap();
        got
    };
    let (a, b) = tokio::join!(tokio::spawn(consume(s1)), tokio::spawn(consume(s2)));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(!a.is_empty() && !b.is_empty(), "a={a:?} b={b:?}");
    let all: HashSet<String> = a.iter().chain(&b).cloned().collect();
    assert_eq!(all.len(), 20);
    assert_eq!(a.len() + b.len(), 20, "no duplicates");
    cleanup(&bus, &[&t], &[(&t, "w")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_redelivers_with_the_next_attempt() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("nack");
    let mut s = bus.subscribe(&t, spec("w")).await.unwrap();
    publish(&bus, &t, vec![msg(1)]).await;
    for attempt in 1..=3 {
        let d = next(&mut s, WAIT).await;
        assert_eq!(d.info().attempt, attempt);
        assert_eq!(body(&d), "1");
        if attempt < 3 {
            d.nack(Nack::now().with_error("boom")).await.unwrap();
        } else {
            d.ack().await.unwrap();
        }
    }
    assert!(next_within(&mut s, Duration::from_millis(300)).await.is_none());
    s.close().await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_with_delay_redelivers_after_the_delay() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("delay");
    let mut s = bus.subscribe(&t, spec("w")).await.unwrap();
    assert!(bus.capabilities().contains(Capability::NackDelay));
    publish(&bus, &t, vec![msg(1), msg(2)]).await;
    let d = next(&mut s, WAIT).await;
    assert_eq!(body(&d), "1");
    let nacked = Instant::now();
    d.nack(Nack::after(Duration::from_millis(600))).await.unwrap();
    // The other message is not held up by the delayed one.
    let d = next(&mut s, WAIT).await;
    assert_eq!(body(&d), "2");
    d.ack().await.unwrap();
    let d = next(&mut s, WAIT).await;
    assert!(nacked.elapsed() >= Duration::from_millis(600), "{:?}", nacked.elapsed());
    assert_eq!((body(&d).as_str(), d.info().attempt), ("1", 2));
    d.ack().await.unwrap();
    s.close().await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_redelivers_and_the_late_ack_is_refused() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("lease");
    let mut s = bus.subscribe(&t, spec("w").with_lease(Duration::from_millis(300))).await.unwrap();
    publish(&bus, &t, vec![msg(1)]).await;
    let first = next(&mut s, WAIT).await;
    let started = Instant::now();
    let again = next(&mut s, WAIT).await;
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    assert_eq!((body(&again).as_str(), again.info().attempt), ("1", 2));
    let e = first.ack().await.unwrap_err();
    assert!(matches!(e, BusError::LeaseLost { cause: LeaseLostCause::Expired, .. }), "{e:?}");
    again.ack().await.unwrap();
    assert!(next_within(&mut s, Duration::from_millis(500)).await.is_none());
    s.close().await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_keeps_the_lease() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("extend");
    let mut s = bus.subscribe(&t, spec("w").with_lease(Duration::from_millis(300))).await.unwrap();
    assert!(bus.capabilities().contains(Capability::LeaseExtension));
    publish(&bus, &t, vec![msg(1)]).await;
    let d = next(&mut s, WAIT).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        d.extend(Duration::from_millis(300)).await.unwrap();
    }
    assert!(next_within(&mut s, Duration::from_millis(100)).await.is_none());
    d.ack().await.unwrap();
    assert!(next_within(&mut s, Duration::from_millis(500)).await.is_none());
    s.close().await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_delivery_comes_back() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("abandon");
    let mut s = bus.subscribe(&t, spec("w")).await.unwrap();
    publish(&bus, &t, vec![msg(1)]).await;
    drop(next(&mut s, WAIT).await);
    let started = Instant::now();
    let d = next(&mut s, WAIT).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!((body(&d).as_str(), d.info().attempt), ("1", 2));
    d.ack().await.unwrap();
    s.close().await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_requeues_unsettled_deliveries() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("closeq");
    let mut s = bus.subscribe(&t, spec("w")).await.unwrap();
    publish(&bus, &t, vec![msg(1)]).await;
    let held = next(&mut s, WAIT).await;
    s.close().await.unwrap();
    let e = held.ack().await.unwrap_err();
    assert!(matches!(e, BusError::LeaseLost { cause: LeaseLostCause::SubscriptionClosed, .. }), "{e:?}");
    let mut s = bus.subscribe(&t, spec("w")).await.unwrap();
    let d = next(&mut s, WAIT).await;
    assert_eq!(body(&d), "1");
    d.ack().await.unwrap();
    s.close().await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_backlog_and_in_flight() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("stats");
    let mut s = bus.subscribe(&t, spec("w").with_prefetch(1)).await.unwrap();
    publish(&bus, &t, (0..3).map(msg)).await;
    let held = next(&mut s, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = bus.stats(&t, &sub("w")).await.unwrap();
    assert_eq!((st.backlog, st.in_flight), (3, 1), "{st:?}");
    held.ack().await.unwrap();
    let e = bus.stats(&t, &sub("nope")).await.unwrap_err();
    assert!(
        matches!(&e, BusError::NotFound { resource } if *resource == Resource::subscription(&t, &sub("nope"))),
        "{e:?}"
    );
    s.close().await.unwrap();
    bus.delete_subscription(&t, &sub("w")).await.unwrap();
    bus.delete_subscription(&t, &sub("w")).await.unwrap();
    let e = bus.stats(&t, &sub("w")).await.unwrap_err();
    assert!(
        matches!(&e, BusError::NotFound { resource } if *resource == Resource::subscription(&t, &sub("w"))),
        "{e:?}"
    );
    cleanup(&bus, &[&t], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_settings_for_an_existing_subscription_conflict() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("conflict");
    let s = bus.subscribe(&t, SubscriptionSpec::queue(sub("w")).with_max_deliveries(Some(3))).await.unwrap();
    let e =
        bus.subscribe(&t, SubscriptionSpec::queue(sub("w")).with_max_deliveries(Some(5))).await.unwrap_err();
    assert!(
        matches!(&e, BusError::Conflict { resource, .. } if *resource == Resource::subscription(&t, &sub("w"))),
        "{e:?}"
    );
    let e = bus.subscribe(&t, spec("x").with_ordered_by_key(true)).await.unwrap_err();
    assert!(matches!(e, BusError::Unsupported { .. }), "{e:?}");
    s.close().await.unwrap();
    let dlq = switchboard_core::TopicName::new(format!("{t}.w.dlq")).unwrap();
    cleanup(&bus, &[&t, &dlq], &[(&t, "w")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_deliveries_buffered_for_the_caller() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("statsbuf");
    let mut s = bus.subscribe(&t, spec("w").with_prefetch(4)).await.unwrap();
    publish(&bus, &t, (0..10).map(msg)).await;
    // RabbitMQ pushes 4 to this process at once; none is handed out yet, and they still count.
    let name = sub("w");
    let stats = || bus.stats(&t, &name);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut st = stats().await.unwrap();
    while (st.backlog, st.in_flight) != (10, 4) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        st = stats().await.unwrap();
    }
    assert_eq!((st.backlog, st.in_flight, st.lag), (10, 4, 10), "{st:?}");
    for _ in 0..3 {
        next(&mut s, WAIT).await.ack().await.unwrap();
    }
    let held = next(&mut s, WAIT).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut st = stats().await.unwrap();
    while (st.backlog, st.in_flight) != (7, 4) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        st = stats().await.unwrap();
    }
    assert_eq!((st.backlog, st.in_flight), (7, 4), "1 held + 3 buffered: {st:?}");
    held.ack().await.unwrap();
    while let Some(d) = next_within(&mut s, Duration::from_millis(500)).await {
        d.ack().await.unwrap();
    }
    let st = stats().await.unwrap();
    assert_eq!((st.backlog, st.in_flight), (0, 0), "{st:?}");
    s.close().await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).await;
}
