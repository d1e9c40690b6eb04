//! Stream subscriptions: replay from the start, commits (in order, even when acks are not),
//! and resuming from the committed offset after reopening.

use std::time::Duration;

use switchboard_core::backend::{Backend, Subscriber};
use switchboard_core::contract::{Nack, Start, SubscriptionSpec, TopicSpec};

use crate::util::{connect, num, publish};
use switchboard_testkit::{TestServer, WAIT, next, nothing_for, sub, topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_commit_and_resume() {
    let srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("audit");
    publish(&bus, &t, 0..5).await;
    let spec = SubscriptionSpec::stream(sub("archive"));

    let mut s = bus.subscribe(&t, spec.clone()).await.unwrap();
    let mut ds = Vec::new();
    for n in 0..5 {
        let d = next(&mut s, WAIT).await;
        assert_eq!((num(&d), d.info().offset, d.info().attempt), (n, u64::from(n), 1));
        ds.push(d);
    }
    let mut ds = ds.into_iter();
    let (d0, d1, d2, d3, d4) = (ds.next(), ds.next(), ds.next(), ds.next(), ds.next());
    // Out of order: 4 is acked before 3, so only up to 3 can be committed.
    d4.unwrap().ack().await.unwrap();
    d1.unwrap().ack().await.unwrap();
    d0.unwrap().ack().await.unwrap();
    d2.unwrap().ack().await.unwrap();
    // 3 is nacked: a stream does not redeliver it now, but it stays uncommitted.
    d3.unwrap().nack(Nack::now()).await.unwrap();
    nothing_for(&mut s, Duration::from_millis(200)).await;
    let stats = bus.stats(&t, &sub("archive")).await.unwrap();
    assert_eq!((stats.backlog, stats.dead_lettered), (2, None), "offsets 0..3 are committed");
    s.close().await.unwrap();

    // Reopened: resumes at the committed offset, 3 (and 4, whose ack was not committed).
    let mut s = bus.subscribe(&t, spec.clone()).await.unwrap();
    for n in [3, 4] {
        let d = next(&mut s, WAIT).await;
        assert_eq!(num(&d), n);
        d.ack().await.unwrap();
    }
    publish(&bus, &t, [5, 6]).await;
    for n in [5, 6] {
        let d = next(&mut s, WAIT).await;
        assert_eq!(num(&d), n);
        d.ack().await.unwrap();
    }
    s.close().await.unwrap();
    let mut s = bus.subscribe(&t, spec).await.unwrap();
    nothing_for(&mut s, Duration::from_millis(300)).await;

    // Another subscription starting at the latest message sees only new ones.
    let mut tail =
        bus.subscribe(&t, SubscriptionSpec::stream(sub("tail")).with_start(Start::Latest)).await.unwrap();
    nothing_for(&mut tail, Duration::from_millis(200)).await;
    publish(&bus, &t, [7]).await;
    assert_eq!(num(&next(&mut tail, WAIT).await), 7);
    assert_eq!(num(&next(&mut s, WAIT).await), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_commit_independently() {
    let srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("keyed");
    bus.ensure_topic(&t, &TopicSpec::default().with_partitions(3)).await.unwrap();
    let messages = (0..30).map(|n| switchboard_testkit::msg(n).with_key(format!("k{}", n % 7))).collect();
    switchboard_core::backend::Publisher::publish(&bus, &t, messages, &Default::default()).await.unwrap();
    let spec = SubscriptionSpec::stream(sub("all"));
    let mut s = bus.subscribe(&t, spec.clone()).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..30 {
        let d = next(&mut s, WAIT).await;
        seen.push(num(&d));
        d.ack().await.unwrap();
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..30).collect::<Vec<_>>());
    let stats = bus.stats(&t, &sub("all")).await.unwrap();
    assert_eq!(stats.backlog, 0);
    s.close().await.unwrap();
    let mut s = bus.subscribe(&t, spec).await.unwrap();
    nothing_for(&mut s, Duration::from_millis(300)).await;
}
