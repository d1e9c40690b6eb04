use std::time::Duration;

use switchboard_core::contract::{PublishOptions, Publisher, Start, Subscriber, SubscriptionSpec};

use crate::*;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn stream_subscriptions_replay_from_the_start_and_resume() {
    let bus = bus().await;
    let t = topic("replay");
    bus.publish(&t, (1..=5).map(|i| msg(&i.to_string())).collect(), &PublishOptions::default())
        .await
        .unwrap();

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
    let mut c = bus.subscribe(&t, SubscriptionSpec::stream(name("c")).start(Start::Latest)).await.unwrap();
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
    let bus = bus().await;
    let t = topic("order");
    let mut s = bus.subscribe(&t, SubscriptionSpec::stream(name("o"))).await.unwrap();
    for chunk in 0..4 {
        let batch = (0..50).map(|i| msg(&(chunk * 50 + i).to_string())).collect();
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
