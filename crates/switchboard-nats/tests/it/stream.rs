use std::time::Duration;

use switchboard_core::backend::{Backend, Publisher, Subscriber};
use switchboard_core::contract::{BusError, Nack, PublishOptions, Resource, Start, SubscriptionSpec};

use crate::*;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn stream_subscriptions_replay_from_the_start_and_resume() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("replay");
    bus.publish(&t, (1..=5).map(msg).collect(), &PublishOptions::default()).await.unwrap();

    let mut a = bus.subscribe(&t, SubscriptionSpec::stream(name("a"))).await.unwrap();
    for offset in 1..=5 {
        let d = next(&mut a, WAIT).await;
        assert_eq!((d.info().offset, d.message().data.as_ref()), (offset, offset.to_string().as_bytes()));
        d.ack().await.unwrap();
    }
    a.close().await.unwrap();

    // A new subscription starting at the earliest message sees everything again.
    let mut b = bus.subscribe(&t, SubscriptionSpec::stream(name("b"))).await.unwrap();
    for offset in 1..=5 {
        let d = next(&mut b, WAIT).await;
        assert_eq!(d.info().offset, offset);
        d.ack().await.unwrap();
    }
    // One starting at the latest sees only what comes after it.
    let mut c =
        bus.subscribe(&t, SubscriptionSpec::stream(name("c")).with_start(Start::Latest)).await.unwrap();
    nothing_for(&mut c, Duration::from_millis(300)).await;
    bus.publish(&t, vec![msg("6")], &PublishOptions::default()).await.unwrap();
    let d = next(&mut c, WAIT).await;
    assert_eq!(d.info().offset, 6);
    d.ack().await.unwrap();

    // The first one resumes after its last ack.
    let mut a = bus.subscribe(&t, SubscriptionSpec::stream(name("a"))).await.unwrap();
    let d = next(&mut a, WAIT).await;
    assert_eq!(d.info().offset, 6);
    d.ack().await.unwrap();
    nothing_for(&mut a, Duration::from_millis(300)).await;
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn stream_order_holds_across_many_messages() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("order");
    let mut s = bus.subscribe(&t, SubscriptionSpec::stream(name("o"))).await.unwrap();
    for chunk in 0..4 {
        let batch = (0..50).map(|i| msg(chunk * 50 + i)).collect();
        bus.publish(&t, batch, &PublishOptions::default()).await.unwrap();
    }
    for i in 0..200u64 {
        let d = next(&mut s, WAIT).await;
        assert_eq!(d.info().offset, i + 1);
        assert_eq!(d.message().data, i.to_string());
        d.ack().await.unwrap();
    }
    cleanup(&bus, &[&t]).await;
}

/// Publishes messages with bodies `from..to` (offsets `from + 1..to + 1` on a fresh topic).
async fn publish_range(
    bus: &switchboard_nats::NatsBackend,
    t: &switchboard_core::TopicName,
    from: u64,
    to: u64,
) {
    bus.publish(t, (from..to).map(msg).collect(), &PublishOptions::default()).await.unwrap();
}

#[tokio::test]
async fn reopening_on_a_new_connection_resumes_at_the_commit_in_order() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("resume");
    let mut s = bus.subscribe(&t, stream("r")).await.unwrap();
    publish_range(&bus, &t, 0, 20).await;
    let mut unsettled = Vec::new();
    for offset in 1..=8u64 {
        let d = next(&mut s, WAIT).await;
        assert_eq!(d.info().offset, offset);
        if offset <= 3 { d.ack().await.unwrap() } else { unsettled.push(d) }
    }
    s.close().await.unwrap();
    drop(unsettled);
    bus.close().await.unwrap();

    let other = switchboard_nats::NatsBackend::connect(&nats_url()).await.unwrap();
    let mut s = other.subscribe(&t, stream("r")).await.unwrap();
    for offset in 4..=20u64 {
        let d = next(&mut s, WAIT).await;
        assert_eq!((d.info().offset, d.info().attempt), (offset, 1), "after reopening");
        d.ack().await.unwrap();
    }
    nothing_for(&mut s, Duration::from_millis(300)).await;
    s.close().await.unwrap();
    // Everything is committed now: a third reader has nothing to read.
    let mut s = other.subscribe(&t, stream("r")).await.unwrap();
    nothing_for(&mut s, Duration::from_millis(300)).await;
    cleanup(&other, &[&t]).await;
}

#[tokio::test]
async fn out_of_order_acks_hold_the_commit_back() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("holdback");
    let mut s = bus.subscribe(&t, stream("h")).await.unwrap();
    publish_range(&bus, &t, 0, 6).await;
    let mut ds: Vec<_> = Vec::new();
    for _ in 0..5 {
        ds.push(next(&mut s, WAIT).await);
    }
    // Ack 5, 4 and 2 (offsets), keep 1 and 3: nothing can be committed past 1.
    let d3 = ds.remove(2);
    let d1 = ds.remove(0);
    for d in ds.into_iter().rev() {
        d.ack().await.unwrap();
    }
    let st = bus.stats(&t, &name("h")).await.unwrap();
    assert_eq!((st.backlog, st.lag), (6, 6), "{st:?}");
    assert!(st.in_flight >= 2, "{st:?}");
    // Acking 1 commits up to 3 (still unsettled).
    d1.ack().await.unwrap();
    let st = bus.stats(&t, &name("h")).await.unwrap();
    assert_eq!(st.backlog, 4, "{st:?}");
    s.close().await.unwrap();
    drop(d3);
    let mut s = bus.subscribe(&t, stream("h")).await.unwrap();
    for offset in 3..=6u64 {
        let d = next(&mut s, WAIT).await;
        assert_eq!(d.info().offset, offset, "resumed from the lowest unacked");
        d.ack().await.unwrap();
    }
    nothing_for(&mut s, Duration::from_millis(300)).await;
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn nacked_messages_come_back_before_newer_ones_lowest_first() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("snack");
    let mut s = bus.subscribe(&t, stream("n")).await.unwrap();
    publish_range(&bus, &t, 0, 6).await;
    let mut ds: Vec<_> = Vec::new();
    for _ in 0..4 {
        ds.push(next(&mut s, WAIT).await);
    }
    let d4 = ds.pop().unwrap();
    let d3 = ds.pop().unwrap();
    let d2 = ds.pop().unwrap();
    ds.pop().unwrap().ack().await.unwrap();
    d3.nack(Nack::now()).await.unwrap();
    d2.nack(Nack::now()).await.unwrap();
    // 5 and 6 are already read (buffered), yet 2 and 3 come first.
    for offset in [2, 3] {
        let d = next(&mut s, WAIT).await;
        assert_eq!((d.info().offset, d.info().attempt), (offset, 2));
        d.ack().await.unwrap();
    }
    d4.ack().await.unwrap();
    let d5 = next(&mut s, WAIT).await;
    assert_eq!((d5.info().offset, d5.info().attempt), (5, 1));
    // A delayed nack lets later messages through meanwhile.
    let started = std::time::Instant::now();
    d5.nack(Nack::after(Duration::from_millis(400))).await.unwrap();
    let d6 = next(&mut s, WAIT).await;
    assert_eq!((d6.info().offset, d6.info().attempt), (6, 1));
    d6.ack().await.unwrap();
    let d5 = next(&mut s, WAIT).await;
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());
    assert_eq!((d5.info().offset, d5.info().attempt), (5, 2));
    // Leases do not apply to stream deliveries.
    d5.extend(Duration::from_secs(3600)).await.unwrap();
    d5.ack().await.unwrap();
    s.close().await.unwrap();
    let mut s = bus.subscribe(&t, stream("n")).await.unwrap();
    nothing_for(&mut s, Duration::from_millis(300)).await;
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn queue_and_stream_names_conflict_both_ways() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("modes");
    let conflict_on = |err: &BusError, s: &str| matches!(err, BusError::Conflict { resource, .. } if *resource == Resource::subscription(&t, &name(s)));
    let _q = bus.subscribe(&t, queue("q")).await.unwrap();
    let err = bus.subscribe(&t, stream("q")).await.unwrap_err();
    assert!(conflict_on(&err, "q"), "{err:?}");
    let s = bus.subscribe(&t, stream("s")).await.unwrap();
    let err = bus.subscribe(&t, queue("s")).await.unwrap_err();
    assert!(conflict_on(&err, "s"), "{err:?}");
    // Another connection sees the same.
    let other = switchboard_nats::NatsBackend::connect(&nats_url()).await.unwrap();
    let err = other.subscribe(&t, queue("s")).await.unwrap_err();
    assert!(conflict_on(&err, "s"), "{err:?}");
    // A stream subscription may be joined with another prefetch or start.
    other
        .subscribe(&t, stream("s").with_prefetch(3).with_start(Start::Latest))
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    s.close().await.unwrap();
    // Once deleted, the name is free for a queue.
    bus.delete_subscription(&t, &name("s")).await.unwrap();
    bus.delete_subscription(&t, &name("s")).await.unwrap();
    let err = bus.stats(&t, &name("s")).await.unwrap_err();
    assert!(
        matches!(&err, BusError::NotFound { resource } if *resource == Resource::subscription(&t, &name("s"))),
        "{err:?}"
    );
    bus.subscribe(&t, queue("s")).await.unwrap().close().await.unwrap();
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn a_deleted_stream_subscription_ends_its_reader_and_starts_over() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("sdelete");
    let mut s = bus.subscribe(&t, stream("d")).await.unwrap();
    publish_range(&bus, &t, 0, 3).await;
    let d = next(&mut s, WAIT).await;
    d.ack().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    bus.delete_subscription(&t, &name("d")).await.unwrap();
    // The next commit finds the cursor gone and ends the reader.
    next(&mut s, WAIT).await.ack().await.unwrap();
    let ended = async {
        loop {
            match s.next().await {
                Some(Ok(d)) => d.ack().await.unwrap(),
                other => return other,
            }
        }
    };
    match tokio::time::timeout(WAIT, ended).await.expect("ends in time") {
        Some(Err(BusError::NotFound { resource })) => {
            assert_eq!(resource, Resource::subscription(&t, &name("d")));
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    // Created again, it starts over at its start.
    let mut s = bus.subscribe(&t, stream("d")).await.unwrap();
    assert_eq!(next(&mut s, WAIT).await.info().offset, 1);
    cleanup(&bus, &[&t]).await;
}

#[tokio::test]
async fn a_stream_subscription_ends_with_not_found_when_its_topic_is_deleted() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("svanish");
    let mut s = bus.subscribe(&t, stream("v")).await.unwrap();
    cleanup(&bus, &[&t]).await;
    match tokio::time::timeout(Duration::from_secs(8), s.next()).await.expect("ends in time") {
        // The topic (its stream gone) or the subscription (its cursor gone with it).
        Some(Err(BusError::NotFound { resource })) => assert_eq!(resource.topic(), Some(&t), "{resource}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}
