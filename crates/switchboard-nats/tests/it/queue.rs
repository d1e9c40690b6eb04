use std::collections::HashSet;
use std::time::{Duration, Instant};

use switchboard_core::backend::{Backend, Publisher, Subscriber};
use switchboard_core::contract::{BusError, LeaseLostCause, Nack, PublishOptions, Resource};

use crate::*;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn competing_members_share_the_messages() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("compete");
    let spec = queue("workers").with_prefetch(1);
    let subs = [bus.subscribe(&t, spec.clone()).await.unwrap(), bus.subscribe(&t, spec).await.unwrap()];
    let n = 20;
    let msgs: Vec<_> = (0..n).map(|i| msg(format!("m{i}"))).collect();
    let ids: HashSet<String> = msgs.iter().map(|m| m.id.clone()).collect();
    bus.publish(&t, msgs, &PublishOptions::default()).await.unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (member, mut sub) in subs.into_iter().enumerate() {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
                tokio::time::sleep(Duration::from_millis(20)).await;
                tx.send((member, d.message().id.clone())).unwrap();
                d.ack().await.unwrap();
            }
        }));
    }
    drop(tx);
    let mut seen = Vec::new();
    while let Some(x) = rx.recv().await {
        seen.push(x);
    }
    let got: HashSet<String> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(seen.len(), n, "each message once: {seen:?}");
    assert_eq!(got, ids);
    for member in 0..2 {
        assert!(seen.iter().any(|(m, _)| *m == member), "member {member} got nothing: {seen:?}");
    }
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn nacked_messages_come_back_with_growing_attempts() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("nack");
    let mut sub = bus.subscribe(&t, queue("n")).await.unwrap();
    bus.publish(&t, vec![msg("again")], &PublishOptions::default()).await.unwrap();
    for attempt in 1..=3 {
        let d = next(&mut sub, WAIT).await;
        assert_eq!(d.info().attempt, attempt);
        assert_eq!(d.info().offset, 1);
        d.nack(Nack::now()).await.unwrap();
    }
    let d = next(&mut sub, WAIT).await;
    assert_eq!(d.info().attempt, 4);
    d.ack().await.unwrap();
    nothing_for(&mut sub, Duration::from_millis(500)).await;
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn a_nack_delay_holds_the_message_back() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("delay");
    let mut sub = bus.subscribe(&t, queue("d")).await.unwrap();
    bus.publish(&t, vec![msg("later")], &PublishOptions::default()).await.unwrap();
    let d = next(&mut sub, WAIT).await;
    let nacked = Instant::now();
    d.nack(Nack::after(Duration::from_millis(800))).await.unwrap();
    let d = next(&mut sub, WAIT).await;
    let waited = nacked.elapsed();
    assert!(waited >= Duration::from_millis(700), "redelivered after {waited:?}");
    assert_eq!(d.info().attempt, 2);
    d.ack().await.unwrap();
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn an_expired_lease_redelivers() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("lease");
    let lease = Duration::from_millis(500);
    let mut sub = bus.subscribe(&t, queue("l").with_lease(lease)).await.unwrap();
    bus.publish(&t, vec![msg("slow")], &PublishOptions::default()).await.unwrap();
    let held = next(&mut sub, WAIT).await;
    let got = Instant::now();
    let again = next(&mut sub, WAIT).await;
    assert!(got.elapsed() >= Duration::from_millis(400), "after {:?}", got.elapsed());
    assert_eq!((again.info().offset, again.info().attempt), (1, 2));
    again.ack().await.unwrap();
    let err = held.ack().await.unwrap_err();
    assert!(matches!(err, BusError::LeaseLost { cause: LeaseLostCause::Expired, .. }), "{err:?}");
    nothing_for(&mut sub, Duration::from_millis(800)).await;
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn an_abandoned_delivery_comes_back_at_once() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("abandon");
    let mut sub = bus.subscribe(&t, queue("a")).await.unwrap();
    bus.publish(&t, vec![msg("dropped")], &PublishOptions::default()).await.unwrap();
    let d = next(&mut sub, WAIT).await;
    let dropped = Instant::now();
    drop(d);
    let d = next(&mut sub, Duration::from_secs(3)).await;
    assert!(dropped.elapsed() < Duration::from_secs(3), "the 30 s lease did not have to run out");
    assert_eq!(d.info().attempt, 2);
    d.ack().await.unwrap();
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn extending_keeps_the_lease_beyond_its_length() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("extend");
    let mut sub = bus.subscribe(&t, queue("x").with_lease(Duration::from_millis(600))).await.unwrap();
    bus.publish(&t, vec![msg("long job")], &PublishOptions::default()).await.unwrap();
    let d = next(&mut sub, WAIT).await;
    d.extend(Duration::from_millis(1800)).await.unwrap();
    nothing_for(&mut sub, Duration::from_millis(1500)).await;
    d.ack().await.unwrap();
    nothing_for(&mut sub, Duration::from_millis(900)).await;
    let err = next_extend_error(&bus, &t).await;
    assert!(matches!(err, BusError::InvalidArgument(_)), "{err:?}");
    cleanup(&bus, &[&t]).await;
}

async fn next_extend_error(bus: &switchboard_nats::NatsBackend, t: &switchboard_core::TopicName) -> BusError {
    let mut sub = bus.subscribe(t, queue("x2")).await.unwrap();
    let d = next(&mut sub, WAIT).await;
    let err = d.extend(Duration::ZERO).await.unwrap_err();
    d.ack().await.unwrap();
    err
}

#[tokio::test]
async fn stats_count_backlog_in_flight_and_lag() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("stats");
    let s = name("st");
    let mut sub = bus.subscribe(&t, queue("st").with_prefetch(1)).await.unwrap();
    bus.publish(&t, vec![msg("1"), msg("2"), msg("3")], &PublishOptions::default()).await.unwrap();
    let d = next(&mut sub, WAIT).await;
    let st = bus.stats(&t, &s).await.unwrap();
    assert_eq!((st.backlog, st.in_flight, st.lag), (3, 1, 3), "{st:?}");
    d.ack().await.unwrap();
    let d = next(&mut sub, WAIT).await;
    d.ack().await.unwrap();
    let st = bus.stats(&t, &s).await.unwrap();
    assert_eq!(st.lag, 1, "{st:?}");
    assert!(st.backlog <= 1, "{st:?}");
    let err = bus.stats(&t, &name("nobody")).await.unwrap_err();
    assert!(
        matches!(&err, BusError::NotFound { resource } if *resource == Resource::subscription(&t, &name("nobody"))),
        "{err:?}"
    );
    let missing = topic("missing");
    let err = bus.stats(&missing, &s).await.unwrap_err();
    assert!(
        matches!(&err, BusError::NotFound { resource } if *resource == Resource::subscription(&missing, &s)),
        "{err:?}"
    );
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn joining_with_other_settings_is_a_conflict() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("conflict");
    let _a = bus.subscribe(&t, queue("c").with_lease(Duration::from_secs(1))).await.unwrap();
    let _b = bus.subscribe(&t, queue("c").with_lease(Duration::from_secs(1)).with_prefetch(3)).await.unwrap();
    let conflict = Resource::subscription(&t, &name("c"));
    let err = bus.subscribe(&t, queue("c").with_lease(Duration::from_secs(2))).await.unwrap_err();
    assert!(matches!(&err, BusError::Conflict { resource, .. } if *resource == conflict), "{err:?}");
    let err = bus.subscribe(&t, SubscriptionSpec::stream(name("c"))).await.unwrap_err();
    assert!(matches!(&err, BusError::Conflict { resource, .. } if *resource == conflict), "{err:?}");
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn deleting_a_subscription_is_idempotent() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("delete");
    let s = name("gone");
    let sub = bus.subscribe(&t, queue("gone")).await.unwrap();
    sub.close().await.unwrap();
    bus.delete_subscription(&t, &s).await.unwrap();
    bus.delete_subscription(&t, &s).await.unwrap();
    bus.delete_subscription(&topic("never"), &s).await.unwrap();
    let err = bus.stats(&t, &s).await.unwrap_err();
    assert!(
        matches!(&err, BusError::NotFound { resource } if *resource == Resource::subscription(&t, &s)),
        "{err:?}"
    );
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn closing_a_subscription_hands_back_buffered_messages() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("closesub");
    let mut a = bus.subscribe(&t, queue("cs").with_prefetch(10)).await.unwrap();
    bus.publish(&t, (0..5).map(msg).collect(), &PublishOptions::default()).await.unwrap();
    let first = next(&mut a, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.close().await.unwrap();
    // Settling after close still works.
    first.ack().await.unwrap();
    let mut b = bus.subscribe(&t, queue("cs")).await.unwrap();
    let mut offsets = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(2), b.next()).await {
        offsets.push(d.info().offset);
        d.ack().await.unwrap();
    }
    offsets.sort();
    assert_eq!(offsets, [2, 3, 4, 5]);
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn a_subscription_ends_with_not_found_when_its_topic_is_deleted() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("vanish");
    let mut sub = bus.subscribe(&t, queue("v")).await.unwrap();
    cleanup(&bus, &[&t]).await;
    match tokio::time::timeout(Duration::from_secs(8), sub.next()).await.expect("ends in time") {
        Some(Err(BusError::NotFound { resource })) => {
            assert_eq!(resource, Resource::subscription(&t, &name("v")));
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}
