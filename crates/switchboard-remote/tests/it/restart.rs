//! The server restarts under a running subscription: the subscription keeps going, nothing
//! acked comes back, and every published message arrives.

use std::collections::BTreeSet;
use std::time::Duration;

use switchboard_core::backend::{Backend, Subscriber};
use switchboard_core::contract::{BusError, SubscriptionSpec};

use crate::util::{connect, num, publish};
use switchboard_testkit::{TestServer, WAIT, next, nothing_for, sub, topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_subscription_survives_a_server_restart() {
    let mut srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("jobs");
    let spec = SubscriptionSpec::queue(sub("runner")).with_lease(Duration::from_millis(300)).with_prefetch(4);
    let mut s = bus.subscribe(&t, spec).await.unwrap();
    publish(&bus, &t, 0..10).await;

    let mut acked = BTreeSet::new();
    for _ in 0..5 {
        let d = next(&mut s, WAIT).await;
        acked.insert(num(&d));
        d.ack().await.unwrap();
    }
    let held = next(&mut s, WAIT).await;
    let acked_before = acked.clone();

    srv.restart().await;
    // The delivery's stream is gone, and so is its lease.
    assert!(matches!(held.ack().await, Err(BusError::LeaseLost { .. })));
    publish(&bus, &t, 10..20).await;

    let done = tokio::time::timeout(WAIT * 2, async {
        while acked.len() < 20 {
            let d = next(&mut s, WAIT).await;
            let n = num(&d);
            assert!(!acked_before.contains(&n), "{n} was acked before the restart and came back");
            d.ack().await.unwrap();
            acked.insert(n);
        }
    })
    .await;
    assert!(done.is_ok(), "only {acked:?} arrived");
    nothing_for(&mut s, Duration::from_millis(500)).await;
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_subscription_resumes_from_its_commit_after_a_restart() {
    let mut srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("events");
    let mut s = bus.subscribe(&t, SubscriptionSpec::stream(sub("projection"))).await.unwrap();
    publish(&bus, &t, 0..10).await;
    for n in 0..6 {
        let d = next(&mut s, WAIT).await;
        assert_eq!(num(&d), n);
        d.ack().await.unwrap();
    }

    srv.stop().await;
    // While the server is down the subscription waits; it does not end.
    nothing_for(&mut s, Duration::from_millis(700)).await;
    srv.start_again().await;
    publish(&bus, &t, 10..12).await;

    // Offsets 0..6 were committed: the rest arrives, in order, from 6.
    let mut got = Vec::new();
    while got.len() < 6 {
        let d = next(&mut s, WAIT).await;
        got.push(num(&d));
        d.ack().await.unwrap();
    }
    assert_eq!(got, vec![6, 7, 8, 9, 10, 11]);
    nothing_for(&mut s, Duration::from_millis(300)).await;
    bus.close().await.unwrap();
    // Closing the backend ends its subscriptions.
    assert!(tokio::time::timeout(WAIT, s.next()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_deleted_while_disconnected_ends_with_an_error() {
    let mut srv = TestServer::start().await;
    let bus = connect(&srv).await;
    let t = topic("gone");
    let mut s = bus.subscribe(&t, SubscriptionSpec::queue(sub("q"))).await.unwrap();
    bus.delete_subscription(&t, &sub("q")).await.unwrap();
    // The open stream does not notice the deletion; reopening it after the restart does.
    srv.restart().await;
    let got = tokio::time::timeout(WAIT, s.next()).await.expect("an answer in time");
    assert!(matches!(got, Some(Err(BusError::NotFound { .. }))), "{got:?}");
    assert!(s.next().await.is_none());
}
