//! Stream subscriptions: replay from the start, start at the end, redelivery after a nack.

use std::time::Duration;

use switchboard_core::contract::{Backend, BusError, Nack, Start, Subscriber, SubscriptionSpec, TopicSpec};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stream_subscription_replays_from_the_start() {
    let bus = bus().await;
    let t = unique("replay");
    bus.ensure_topic(&t, &TopicSpec::default()).await.unwrap();
    publish(&bus, &t, (0..5).map(msg).collect()).await;
    for name in ["first", "second"] {
        let mut s = bus.subscribe(&t, SubscriptionSpec::stream(sub(name))).await.unwrap();
        let mut offsets = Vec::new();
        for i in 0..5 {
            let d = next(&mut s).await;
            assert_eq!(body(&d), format!("m{i}"));
            offsets.push(d.info().offset);
            d.ack().await.unwrap();
        }
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
        assert!(matches!(bus.stats(&t, &sub(name)).await, Err(BusError::Unsupported { .. })));
        s.close().await.unwrap();
    }
    cleanup(&bus, &[&t], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_skips_older_messages_and_a_nack_redelivers() {
    let bus = bus().await;
    let t = unique("latest");
    publish(&bus, &t, vec![msg(0)]).await;
    let mut s = bus.subscribe(&t, SubscriptionSpec::stream(sub("tail")).start(Start::Latest)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(&bus, &t, vec![msg(1), msg(2)]).await;
    let d = next(&mut s).await;
    assert_eq!((body(&d).as_str(), d.info().attempt), ("m1", 1));
    let offset = d.info().offset;
    d.nack(Nack::now()).await.unwrap();
    let d = next(&mut s).await;
    assert_eq!((body(&d).as_str(), d.info().attempt, d.info().offset), ("m1", 2, offset));
    d.ack().await.unwrap();
    let d = next(&mut s).await;
    assert_eq!(body(&d), "m2");
    d.ack().await.unwrap();
    s.close().await.unwrap();
    cleanup(&bus, &[&t], &[]).await;
}
