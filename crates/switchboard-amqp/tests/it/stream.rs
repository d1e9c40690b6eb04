//! Stream subscriptions: replay from the start, start at the end, redelivery after a nack,
//! resuming at the committed offset, one mode per subscription name.

use std::time::Duration;

use switchboard_core::contract::Subscription;

use switchboard_core::backend::{Backend, Subscriber};
use switchboard_core::contract::{
    BusError, LeaseLostCause, Nack, Resource, Start, SubscriptionSpec, TopicSpec,
};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stream_subscription_replays_from_the_start() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("replay");
    bus.ensure_topic(&t, &TopicSpec::default()).await.unwrap();
    publish(&bus, &t, (0..5).map(msg)).await;
    for name in ["first", "second"] {
        let mut s = bus.subscribe(&t, SubscriptionSpec::stream(sub(name))).await.unwrap();
        let mut offsets = Vec::new();
        for i in 0..5 {
            let d = next(&mut s, WAIT).await;
            assert_eq!(body(&d), i.to_string());
            offsets.push(d.info().offset);
            d.ack().await.unwrap();
        }
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
        assert!(matches!(bus.stats(&t, &sub(name)).await, Err(BusError::Unsupported { .. })));
        s.close().await.unwrap();
    }
    cleanup(&bus, &[&t], &[(&t, "first"), (&t, "second")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_skips_older_messages_and_a_nack_redelivers() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("latest");
    publish(&bus, &t, vec![msg(0)]).await;
    let mut s =
        bus.subscribe(&t, SubscriptionSpec::stream(sub("tail")).with_start(Start::Latest)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(&bus, &t, vec![msg(1), msg(2)]).await;
    let d = next(&mut s, WAIT).await;
    assert_eq!((body(&d).as_str(), d.info().attempt), ("1", 1));
    let offset = d.info().offset;
    d.nack(Nack::now()).await.unwrap();
    let d = next(&mut s, WAIT).await;
    assert_eq!((body(&d).as_str(), d.info().attempt, d.info().offset), ("1", 2, offset));
    d.ack().await.unwrap();
    let d = next(&mut s, WAIT).await;
    assert_eq!(body(&d), "2");
    d.ack().await.unwrap();
    s.close().await.unwrap();
    cleanup(&bus, &[&t], &[(&t, "tail")]).await;
}

/// Reads `n` deliveries, checking their bodies are `m<from>`, `m<from+1>`, ….
async fn read_from(s: &mut Subscription, from: usize, n: usize) -> Vec<switchboard_core::contract::Delivery> {
    let mut got = Vec::new();
    for i in from..from + n {
        let d = next(s, WAIT).await;
        assert_eq!(body(&d), i.to_string());
        got.push(d);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_stream_subscription_resumes_at_the_commit_point() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("resume");
    bus.ensure_topic(&t, &TopicSpec::default()).await.unwrap();
    publish(&bus, &t, (0..20).map(msg)).await;
    let spec = SubscriptionSpec::stream(sub("log"));
    let mut s = bus.subscribe(&t, spec.clone()).await.unwrap();
    let mut held = Vec::new();
    for (i, d) in read_from(&mut s, 0, 8).await.into_iter().enumerate() {
        // 5 and 7 stay unsettled: the commit point stops at 5 although 6 is acked.
        if i == 5 || i == 7 {
            held.push(d);
        } else {
            d.ack().await.unwrap();
        }
    }
    s.close().await.unwrap();
    for d in held {
        let e = d.ack().await.unwrap_err();
        assert!(
            matches!(e, BusError::LeaseLost { cause: LeaseLostCause::SubscriptionClosed, .. }),
            "acks after close are not committed: {e:?}"
        );
    }

    // Reopened on the same connection: resumes at the commit point.
    let mut s = bus.subscribe(&t, spec.clone()).await.unwrap();
    for d in read_from(&mut s, 5, 5).await {
        d.ack().await.unwrap();
    }
    s.close().await.unwrap();

    // Reopened on a new connection: resumes where the last one left off, reads on, and sees
    // what is published later.
    let other = super::bus().await;
    let mut s = other.subscribe(&t, spec.clone()).await.unwrap();
    for d in read_from(&mut s, 10, 10).await {
        d.ack().await.unwrap();
    }
    publish(&other, &t, vec![msg(20)]).await;
    read_from(&mut s, 20, 1).await.pop().unwrap().ack().await.unwrap();
    assert!(next_within(&mut s, Duration::from_millis(300)).await.is_none());
    s.close().await.unwrap();
    assert!(matches!(other.stats(&t, &sub("log")).await, Err(BusError::Unsupported { .. })));

    // Deleting the subscription deletes its commit point: it starts over at `start`.
    other.delete_subscription(&t, &sub("log")).await.unwrap();
    let e = other.stats(&t, &sub("log")).await.unwrap_err();
    assert!(
        matches!(&e, BusError::NotFound { resource } if *resource == Resource::subscription(&t, &sub("log"))),
        "{e:?}"
    );
    let mut s = other.subscribe(&t, spec).await.unwrap();
    read_from(&mut s, 0, 1).await;
    s.close().await.unwrap();
    let _ = other.close().await;
    cleanup(&bus, &[&t], &[(&t, "log")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_backend_commits_stream_acks() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("resumeclose");
    bus.ensure_topic(&t, &TopicSpec::default()).await.unwrap();
    publish(&bus, &t, (0..6).map(msg)).await;
    let spec = SubscriptionSpec::stream(sub("log"));
    let mut s = bus.subscribe(&t, spec.clone()).await.unwrap();
    for d in read_from(&mut s, 0, 3).await {
        d.ack().await.unwrap();
    }
    // The subscription is never closed itself: closing the backend writes its commit point.
    bus.close().await.unwrap();
    drop(s);
    let other = super::bus().await;
    let mut s = other.subscribe(&t, spec).await.unwrap();
    for d in read_from(&mut s, 3, 3).await {
        d.ack().await.unwrap();
    }
    s.close().await.unwrap();
    cleanup(&other, &[&t], &[(&t, "log")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_belongs_to_one_mode() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("modes");
    // The reason a Conflict about subscription `name` on `t` gives.
    let conflict = |r: Result<Subscription, BusError>, name: &str| match r {
        Err(BusError::Conflict { resource, reason }) => {
            assert_eq!(resource, Resource::subscription(&t, &sub(name)));
            reason
        }
        other => panic!("expected Conflict, got {:?}", other.map(|_| "a subscription")),
    };
    // A queue subscription's name cannot be opened as a stream, while open or not.
    let q = bus.subscribe(&t, SubscriptionSpec::queue(sub("q"))).await.unwrap();
    let m = conflict(bus.subscribe(&t, SubscriptionSpec::stream(sub("q"))).await, "q");
    assert!(m.contains("queue subscription"), "{m}");
    q.close().await.unwrap();
    conflict(bus.subscribe(&t, SubscriptionSpec::stream(sub("q"))).await, "q");
    // A stream subscription's name cannot be opened as a queue, while open or not, on any
    // connection.
    let s = bus.subscribe(&t, SubscriptionSpec::stream(sub("s"))).await.unwrap();
    let m = conflict(bus.subscribe(&t, SubscriptionSpec::queue(sub("s"))).await, "s");
    assert!(m.contains("stream subscription"), "{m}");
    s.close().await.unwrap();
    let other = super::bus().await;
    conflict(other.subscribe(&t, SubscriptionSpec::queue(sub("s"))).await, "s");
    // The same name on another topic is another subscription; the connection still works.
    let elsewhere = unique_topic("modes-other");
    let s = other.subscribe(&elsewhere, SubscriptionSpec::queue(sub("s"))).await.unwrap();
    s.close().await.unwrap();
    // Once deleted, the name is free for the other mode.
    bus.delete_subscription(&t, &sub("s")).await.unwrap();
    let q = bus.subscribe(&t, SubscriptionSpec::queue(sub("s"))).await.unwrap();
    q.close().await.unwrap();
    cleanup(&other, &[&elsewhere], &[(&elsewhere, "s")]).await;
    cleanup(&bus, &[&t], &[(&t, "q"), (&t, "s")]).await;
}
