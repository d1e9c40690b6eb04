use std::time::Duration;

use switchboard_core::TopicName;
use switchboard_core::backend::{Publisher, Subscriber};
use switchboard_core::contract::{Nack, PublishOptions, SubscriptionSpec, dead_letter_ext as ext};

use crate::*;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn nacking_the_last_attempt_dead_letters_with_metadata() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("dlnack");
    let dlq = TopicName::new(format!("{t}.dn.dlq")).unwrap();
    let mut sub = bus.subscribe(&t, queue("dn").with_max_deliveries(Some(2))).await.unwrap();
    let original = msg("poison")
        .with_extension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    bus.publish(&t, vec![msg("fine"), original.clone()], &PublishOptions::default()).await.unwrap();
    next(&mut sub, WAIT).await.ack().await.unwrap();
    let d = next(&mut sub, WAIT).await;
    assert_eq!(d.info().attempt, 1);
    d.nack(Nack::now().with_error("first")).await.unwrap();
    let d = next(&mut sub, WAIT).await;
    assert_eq!(d.info().attempt, 2);
    d.nack(Nack::now().with_error("boom\nat line 2")).await.unwrap();
    nothing_for(&mut sub, Duration::from_millis(700)).await;

    let mut dead = bus.subscribe(&dlq, SubscriptionSpec::stream(name("inspect"))).await.unwrap();
    let d = next(&mut dead, WAIT).await;
    let m = d.message();
    let x = |k: &str| m.extensions.get(k).map(String::as_str);
    assert_eq!(x(ext::REASON), Some("nacked"));
    assert_eq!(x(ext::TOPIC), Some(t.as_str()));
    assert_eq!(x(ext::SUBSCRIPTION), Some("dn"));
    assert_eq!(x(ext::ATTEMPTS), Some("2"));
    assert_eq!(x(ext::ERROR), Some("boom at line 2"));
    assert_eq!(x(ext::PARTITION), Some("0"));
    assert_eq!(x(ext::OFFSET), Some("2"));
    let mut stripped = m.clone();
    stripped.extensions.retain(|k, _| !ext::ALL.contains(&k.as_str()));
    assert_eq!(stripped, original, "the dead letter keeps every original attribute");
    d.ack().await.unwrap();
    nothing_for(&mut dead, Duration::from_millis(300)).await;
    let st = bus.stats(&t, &name("dn")).await.unwrap();
    assert_eq!((st.backlog, st.in_flight), (0, 0), "{st:?}");
    cleanup(&bus, &[&t, &dlq]).await;
}

#[tokio::test]
async fn a_lease_running_out_on_the_last_attempt_dead_letters() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("dllease");
    let dlq = topic("dllease-target");
    let spec = queue("dl")
        .with_lease(Duration::from_millis(400))
        .with_max_deliveries(Some(2))
        .with_dead_letter_topic(dlq.clone());
    let mut sub = bus.subscribe(&t, spec).await.unwrap();
    bus.publish(&t, vec![msg("stuck")], &PublishOptions::default()).await.unwrap();
    let first = next(&mut sub, WAIT).await;
    assert_eq!(first.info().attempt, 1);
    let second = next(&mut sub, WAIT).await;
    assert_eq!(second.info().attempt, 2);
    // The second lease runs out too: the message goes to the dead-letter topic instead of
    // coming back.
    nothing_for(&mut sub, Duration::from_millis(1500)).await;
    let mut dead = bus.subscribe(&dlq, SubscriptionSpec::stream(name("inspect"))).await.unwrap();
    let d = next(&mut dead, WAIT).await;
    let x = |k: &str| d.message().extensions.get(k).cloned();
    assert_eq!(x(ext::REASON).as_deref(), Some("lease expired"));
    assert_eq!(x(ext::ATTEMPTS).as_deref(), Some("2"));
    assert_eq!(x(ext::ERROR), None);
    assert_eq!(x(ext::OFFSET).as_deref(), Some("1"));
    assert_eq!(d.message().data, "stuck");
    d.ack().await.unwrap();
    drop((first, second));
    nothing_for(&mut sub, Duration::from_millis(500)).await;
    cleanup(&bus, &[&t, &dlq]).await;
}
