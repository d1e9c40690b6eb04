//! Queue subscriptions: competing consumers, nacks, leases, abandon, close, stats.

#[allow(unused_imports)] use switchboard_amqp::wd::Wd;
use std::collections::HashSet;
use std::time::{Duration, Instant};

use switchboard_core::contract::{Backend, BusError, Nack, Subscriber, SubscriptionSpec};

use crate::*;

fn spec(name: &str) -> SubscriptionSpec {
    SubscriptionSpec::queue(sub(name)).max_deliveries(None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_split_the_messages() {
    let bus = bus().wd(concat!(file!(), ":", line!())).await;
    let t = unique("compete");
    let s1 = bus.subscribe(&t, spec("w").prefetch(1)).wd(concat!(file!(), ":", line!())).await.unwrap();
    let s2 = bus.subscribe(&t, spec("w").prefetch(1)).wd(concat!(file!(), ":", line!())).await.unwrap();
    publish(&bus, &t, (0..20).map(msg).collect()).wd(concat!(file!(), ":", line!())).await;
    let consume = |mut s: switchboard_core::contract::Subscription| async move {
        let mut got = Vec::new();
        while let Some(d) = next_within(&mut s, Duration::from_millis(700)).wd(concat!(file!(), ":", line!())).await {
            got.push(body(&d));
            tokio::time::sleep(Duration::from_millis(5)).wd(concat!(file!(), ":", line!())).await;
            d.ack().wd(concat!(file!(), ":", line!())).await.unwrap();
        }
        s.close().wd(concat!(file!(), ":", line!())).await.unwrap();
        got
    };
    let (a, b) = tokio::join!(tokio::spawn(consume(s1)), tokio::spawn(consume(s2)));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(!a.is_empty() && !b.is_empty(), "a={a:?} b={b:?}");
    let all: HashSet<String> = a.iter().chain(&b).cloned().collect();
    assert_eq!(all.len(), 20);
    assert_eq!(a.len() + b.len(), 20, "no duplicates");
    cleanup(&bus, &[&t], &[(&t, "w")]).wd(concat!(file!(), ":", line!())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_redelivers_with_the_next_attempt() {
    let bus = bus().wd(concat!(file!(), ":", line!())).await;
    let t = unique("nack");
    let mut s = bus.subscribe(&t, spec("w")).wd(concat!(file!(), ":", line!())).await.unwrap();
    publish(&bus, &t, vec![msg(1)]).wd(concat!(file!(), ":", line!())).await;
    for attempt in 1..=3 {
        let d = next(&mut s).wd(concat!(file!(), ":", line!())).await;
        assert_eq!(d.info().attempt, attempt);
        assert_eq!(body(&d), "m1");
        if attempt < 3 {
            d.nack(Nack::now().with_error("boom")).wd(concat!(file!(), ":", line!())).await.unwrap();
        } else {
            d.ack().wd(concat!(file!(), ":", line!())).await.unwrap();
        }
    }
    assert!(next_within(&mut s, Duration::from_millis(300)).wd(concat!(file!(), ":", line!())).await.is_none());
    s.close().wd(concat!(file!(), ":", line!())).await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).wd(concat!(file!(), ":", line!())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_with_delay_redelivers_after_the_delay() {
    let bus = bus().wd(concat!(file!(), ":", line!())).await;
    let t = unique("delay");
    let mut s = bus.subscribe(&t, spec("w")).wd(concat!(file!(), ":", line!())).await.unwrap();
    assert!(bus.capabilities().nack_delay);
    publish(&bus, &t, vec![msg(1), msg(2)]).wd(concat!(file!(), ":", line!())).await;
    let d = next(&mut s).wd(concat!(file!(), ":", line!())).await;
    assert_eq!(body(&d), "m1");
    let nacked = Instant::now();
    d.nack(Nack::after(Duration::from_millis(600))).wd(concat!(file!(), ":", line!())).await.unwrap();
    // The other message is not held up by the delayed one.
    let d = next(&mut s).wd(concat!(file!(), ":", line!())).await;
    assert_eq!(body(&d), "m2");
    d.ack().wd(concat!(file!(), ":", line!())).await.unwrap();
    let d = next(&mut s).wd(concat!(file!(), ":", line!())).await;
    assert!(nacked.elapsed() >= Duration::from_millis(600), "{:?}", nacked.elapsed());
    assert_eq!((body(&d).as_str(), d.info().attempt), ("m1", 2));
    d.ack().wd(concat!(file!(), ":", line!())).await.unwrap();
    s.close().wd(concat!(file!(), ":", line!())).await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).wd(concat!(file!(), ":", line!())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_redelivers_and_the_late_ack_is_refused() {
    let bus = bus().wd(concat!(file!(), ":", line!())).await;
    let t = unique("lease");
    let mut s = bus.subscribe(&t, spec("w").lease(Duration::from_millis(300))).wd(concat!(file!(), ":", line!())).await.unwrap();
    publish(&bus, &t, vec![msg(1)]).wd(concat!(file!(), ":", line!())).await;
    let first = next(&mut s).wd(concat!(file!(), ":", line!())).await;
    let started = Instant::now();
    let again = next(&mut s).wd(concat!(file!(), ":", line!())).await;
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    assert_eq!((body(&again).as_str(), again.info().attempt), ("m1", 2));
    assert!(matches!(first.ack().wd(concat!(file!(), ":", line!())).await, Err(BusError::LeaseLost(_))));
    again.ack().wd(concat!(file!(), ":", line!())).await.unwrap();
    assert!(next_within(&mut s, Duration::from_millis(500)).wd(concat!(file!(), ":", line!())).await.is_none());
    s.close().wd(concat!(file!(), ":", line!())).await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).wd(concat!(file!(), ":", line!())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_keeps_the_lease() {
    let bus = bus().wd(concat!(file!(), ":", line!())).await;
    let t = unique("extend");
    let mut s = bus.subscribe(&t, spec("w").lease(Duration::from_millis(300))).wd(concat!(file!(), ":", line!())).await.unwrap();
    assert!(bus.capabilities().lease_extension);
    publish(&bus, &t, vec![msg(1)]).wd(concat!(file!(), ":", line!())).await;
    let d = next(&mut s).wd(concat!(file!(), ":", line!())).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).wd(concat!(file!(), ":", line!())).await;
        d.extend(Duration::from_millis(300)).wd(concat!(file!(), ":", line!())).await.unwrap();
    }
    assert!(next_within(&mut s, Duration::from_millis(100)).wd(concat!(file!(), ":", line!())).await.is_none());
    d.ack().wd(concat!(file!(), ":", line!())).await.unwrap();
    assert!(next_within(&mut s, Duration::from_millis(500)).wd(concat!(file!(), ":", line!())).await.is_none());
    s.close().wd(concat!(file!(), ":", line!())).await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).wd(concat!(file!(), ":", line!())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_delivery_comes_back() {
    let bus = bus().wd(concat!(file!(), ":", line!())).await;
    let t = unique("abandon");
    let mut s = bus.subscribe(&t, spec("w")).wd(concat!(file!(), ":", line!())).await.unwrap();
    publish(&bus, &t, vec![msg(1)]).wd(concat!(file!(), ":", line!())).await;
    drop(next(&mut s).wd(concat!(file!(), ":", line!())).await);
    let started = Instant::now();
    let d = next(&mut s).wd(concat!(file!(), ":", line!())).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!((body(&d).as_str(), d.info().attempt), ("m1", 2));
    d.ack().wd(concat!(file!(), ":", line!())).await.unwrap();
    s.close().wd(concat!(file!(), ":", line!())).await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).wd(concat!(file!(), ":", line!())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_requeues_unsettled_deliveries() {
    let bus = bus().wd(concat!(file!(), ":", line!())).await;
    let t = unique("closeq");
    let mut s = bus.subscribe(&t, spec("w")).wd(concat!(file!(), ":", line!())).await.unwrap();
    publish(&bus, &t, vec![msg(1)]).wd(concat!(file!(), ":", line!())).await;
    let held = next(&mut s).wd(concat!(file!(), ":", line!())).await;
    s.close().wd(concat!(file!(), ":", line!())).await.unwrap();
    assert!(matches!(held.ack().wd(concat!(file!(), ":", line!())).await, Err(BusError::LeaseLost(_))));
    let mut s = bus.subscribe(&t, spec("w")).wd(concat!(file!(), ":", line!())).await.unwrap();
    let d = next(&mut s).wd(concat!(file!(), ":", line!())).await;
    assert_eq!(body(&d), "m1");
    d.ack().wd(concat!(file!(), ":", line!())).await.unwrap();
    s.close().wd(concat!(file!(), ":", line!())).await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).wd(concat!(file!(), ":", line!())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_backlog_and_in_flight() {
    let bus = bus().wd(concat!(file!(), ":", line!())).await;
    let t = unique("stats");
    let mut s = bus.subscribe(&t, spec("w").prefetch(1)).wd(concat!(file!(), ":", line!())).await.unwrap();
    publish(&bus, &t, (0..3).map(msg).collect()).wd(concat!(file!(), ":", line!())).await;
    let held = next(&mut s).wd(concat!(file!(), ":", line!())).await;
    tokio::time::sleep(Duration::from_millis(200)).wd(concat!(file!(), ":", line!())).await;
    let st = bus.stats(&t, &sub("w")).wd(concat!(file!(), ":", line!())).await.unwrap();
    assert_eq!((st.backlog, st.in_flight), (3, 1), "{st:?}");
    held.ack().wd(concat!(file!(), ":", line!())).await.unwrap();
    let e = bus.stats(&t, &sub("nope")).wd(concat!(file!(), ":", line!())).await.unwrap_err();
    assert!(matches!(e, BusError::NotFound(_)), "{e:?}");
    s.close().wd(concat!(file!(), ":", line!())).await.unwrap();
    bus.delete_subscription(&t, &sub("w")).wd(concat!(file!(), ":", line!())).await.unwrap();
    bus.delete_subscription(&t, &sub("w")).wd(concat!(file!(), ":", line!())).await.unwrap();
    assert!(matches!(bus.stats(&t, &sub("w")).wd(concat!(file!(), ":", line!())).await, Err(BusError::NotFound(_))));
    cleanup(&bus, &[&t], &[]).wd(concat!(file!(), ":", line!())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_settings_for_an_existing_subscription_conflict() {
    let bus = bus().wd(concat!(file!(), ":", line!())).await;
    let t = unique("conflict");
    let s = bus.subscribe(&t, SubscriptionSpec::queue(sub("w")).max_deliveries(Some(3))).wd(concat!(file!(), ":", line!())).await.unwrap();
    let e = bus.subscribe(&t, SubscriptionSpec::queue(sub("w")).max_deliveries(Some(5))).wd(concat!(file!(), ":", line!())).await.unwrap_err();
    assert!(matches!(e, BusError::Conflict(_)), "{e:?}");
    let e = bus.subscribe(&t, spec("x").ordered_by_key(true)).wd(concat!(file!(), ":", line!())).await.unwrap_err();
    assert!(matches!(e, BusError::Unsupported { .. }), "{e:?}");
    s.close().wd(concat!(file!(), ":", line!())).await.unwrap();
    let dlq = switchboard_core::TopicName::new(format!("{t}.w.dlq")).unwrap();
    cleanup(&bus, &[&t, &dlq], &[(&t, "w")]).wd(concat!(file!(), ":", line!())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_deliveries_buffered_for_the_caller() {
    let bus = bus().wd(concat!(file!(), ":", line!())).await;
    let t = unique("statsbuf");
    let mut s = bus.subscribe(&t, spec("w").prefetch(4)).wd(concat!(file!(), ":", line!())).await.unwrap();
    publish(&bus, &t, (0..10).map(msg).collect()).wd(concat!(file!(), ":", line!())).await;
    // RabbitMQ pushes 4 to this process at once; none is handed out yet, and they still count.
    let name = sub("w");
    let stats = || bus.stats(&t, &name);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut st = stats().wd(concat!(file!(), ":", line!())).await.unwrap();
    while (st.backlog, st.in_flight) != (10, 4) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).wd(concat!(file!(), ":", line!())).await;
        st = stats().wd(concat!(file!(), ":", line!())).await.unwrap();
    }
    assert_eq!((st.backlog, st.in_flight, st.lag), (10, 4, 10), "{st:?}");
    for _ in 0..3 {
        next(&mut s).wd(concat!(file!(), ":", line!())).await.ack().wd(concat!(file!(), ":", line!())).await.unwrap();
    }
    let held = next(&mut s).wd(concat!(file!(), ":", line!())).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut st = stats().wd(concat!(file!(), ":", line!())).await.unwrap();
    while (st.backlog, st.in_flight) != (7, 4) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).wd(concat!(file!(), ":", line!())).await;
        st = stats().wd(concat!(file!(), ":", line!())).await.unwrap();
    }
    assert_eq!((st.backlog, st.in_flight), (7, 4), "1 held + 3 buffered: {st:?}");
    held.ack().wd(concat!(file!(), ":", line!())).await.unwrap();
    while let Some(d) = next_within(&mut s, Duration::from_millis(500)).wd(concat!(file!(), ":", line!())).await {
        d.ack().wd(concat!(file!(), ":", line!())).await.unwrap();
    }
    let st = stats().wd(concat!(file!(), ":", line!())).await.unwrap();
    assert_eq!((st.backlog, st.in_flight), (0, 0), "{st:?}");
    s.close().wd(concat!(file!(), ":", line!())).await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "w")]).wd(concat!(file!(), ":", line!())).await;
}
