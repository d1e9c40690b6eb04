//! Dead letters after `max_deliveries`, by nack and by lease expiry, with their metadata.

use std::time::Duration;

use switchboard_core::TopicName;
use switchboard_core::backend::Subscriber;
use switchboard_core::contract::{Nack, SubscriptionSpec, dead_letter_ext as ext};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_nack_dead_letters_with_metadata() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("dlnack");
    let dlq = TopicName::new(format!("{t}.w.dlq")).unwrap();
    let spec = SubscriptionSpec::queue(sub("w")).with_max_deliveries(Some(2));
    let mut s = bus.subscribe(&t, spec).await.unwrap();
    let mut dead = bus.subscribe(&dlq, SubscriptionSpec::queue(sub("audit"))).await.unwrap();
    let original =
        msg(1).with_extension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    publish(&bus, &t, vec![original.clone()]).await;
    for attempt in 1..=2 {
        let d = next(&mut s, WAIT).await;
        assert_eq!(d.info().attempt, attempt);
        d.nack(Nack::now().with_error(format!("boom {attempt}"))).await.unwrap();
    }
    let d = next(&mut dead, WAIT).await;
    let e = &d.message().extensions;
    assert_eq!(e[ext::REASON], "nacked");
    assert_eq!(e[ext::TOPIC], t.as_str());
    assert_eq!(e[ext::SUBSCRIPTION], "w");
    assert_eq!(e[ext::ATTEMPTS], "2");
    assert_eq!(e[ext::ERROR], "boom 2");
    assert_eq!(d.message().id, original.id);
    assert_eq!(d.message().data, original.data);
    assert_eq!(e["traceparent"], original.extensions["traceparent"]);
    d.ack().await.unwrap();
    assert!(next_within(&mut s, Duration::from_millis(300)).await.is_none(), "gone from the source");
    s.close().await.unwrap();
    dead.close().await.unwrap();
    cleanup(&bus, &[&t, &dlq], &[(&t, "w"), (&dlq, "audit")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_expired_lease_dead_letters_to_a_custom_topic() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("dllease");
    let dlq = unique_topic("dllease-dead");
    let spec = SubscriptionSpec::queue(sub("w"))
        .with_max_deliveries(Some(2))
        .with_lease(Duration::from_millis(300))
        .with_dead_letter_topic(dlq.clone());
    let mut s = bus.subscribe(&t, spec).await.unwrap();
    let mut dead = bus.subscribe(&dlq, SubscriptionSpec::queue(sub("audit"))).await.unwrap();
    publish(&bus, &t, vec![msg(1)]).await;
    let first = next(&mut s, WAIT).await;
    let second = next(&mut s, WAIT).await;
    assert_eq!(second.info().attempt, 2);
    let d = next(&mut dead, WAIT).await;
    let e = &d.message().extensions;
    assert_eq!(e[ext::REASON], "lease expired");
    assert_eq!(e[ext::TOPIC], t.as_str());
    assert_eq!(e[ext::SUBSCRIPTION], "w");
    assert_eq!(e[ext::ATTEMPTS], "2");
    assert!(!e.contains_key(ext::ERROR));
    d.ack().await.unwrap();
    drop((first, second));
    assert!(next_within(&mut s, Duration::from_millis(500)).await.is_none(), "not handed out again");
    s.close().await.unwrap();
    dead.close().await.unwrap();
    cleanup(&bus, &[&t, &dlq], &[(&t, "w"), (&dlq, "audit")]).await;
}
