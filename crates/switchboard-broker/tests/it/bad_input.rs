//! Bad input gets a typed error and changes nothing.

use std::time::Duration;

use switchboard_broker::{
    BrokerConfig, BrokerError, DEFAULT_MAX_MESSAGE_BYTES, PublishOptions, Receipt, SubscriptionConfig,
    TopicConfig,
};
use switchboard_core::{Message, MessageError, NameError, SubscriptionName, TopicName};

use crate::util::*;

/// Everything observable about topic `t`, to show an error changed nothing.
fn state(env: &Env) -> String {
    let info = env.broker.topic_info(&topic("t")).unwrap();
    let stats: Vec<_> =
        info.subscriptions.iter().map(|(s, _)| env.broker.stats(&topic("t"), s).unwrap()).collect();
    format!("{:?}{:?}{:?}", info.partitions, info.subscriptions, stats)
}

async fn setup() -> Env {
    let env = Env::new().await;
    env.broker.create_topic(&topic("t"), TopicConfig::default()).await.unwrap();
    env.broker.create_subscription(&topic("t"), &sub("q"), SubscriptionConfig::queue()).await.unwrap();
    env.broker.create_subscription(&topic("t"), &sub("s"), SubscriptionConfig::stream()).await.unwrap();
    env.broker.publish(&topic("t"), msg(0)).await.unwrap();
    env
}

#[test]
fn invalid_names_are_rejected_with_the_rule_they_break() {
    assert!(matches!(TopicName::new(""), Err(NameError::Empty { .. })));
    assert!(matches!(TopicName::new("a".repeat(201)), Err(NameError::TooLong { .. })));
    assert!(matches!(TopicName::new("../etc/passwd"), Err(NameError::InvalidCharacter { found: '/', .. })));
    assert!(matches!(SubscriptionName::new("x\u{7}"), Err(NameError::InvalidCharacter { .. })));
    assert!(matches!(SubscriptionName::new(".."), Err(NameError::BadStart { .. })));
    // Names arriving as JSON (configuration, metadata) are validated the same way.
    assert!(serde_json::from_str::<TopicName>("\"a/b\"").is_err());
}

#[tokio::test]
async fn oversize_messages_are_rejected_at_the_default_and_a_configured_limit() {
    let env = setup().await;
    let before = state(&env);
    let big = Message::new("/s", "t", vec![0u8; DEFAULT_MAX_MESSAGE_BYTES]);
    let err = env.broker.publish(&topic("t"), big).await.unwrap_err();
    assert!(matches!(err, BrokerError::InvalidMessage(MessageError::TooLarge { .. })), "{err}");
    assert!(err.to_string().contains("limit is 1048576 bytes"), "{err}");
    env.broker
        .create_topic(&topic("small"), TopicConfig { max_message_bytes: 100, ..TopicConfig::default() })
        .await
        .unwrap();
    let err = env.broker.publish(&topic("small"), Message::new("/s", "t", vec![0u8; 100])).await.unwrap_err();
    assert!(matches!(err, BrokerError::InvalidMessage(MessageError::TooLarge { max: 100, .. })));
    // One bad message fails the whole batch before anything is stored.
    let batch = vec![msg(1), Message::new("/s", "t", vec![0u8; DEFAULT_MAX_MESSAGE_BYTES])];
    assert!(env.broker.publish_batch(&topic("t"), batch, PublishOptions::default()).await.is_err());
    assert_eq!(state(&env), before);
}

#[tokio::test]
async fn invalid_messages_are_rejected() {
    let env = setup().await;
    let before = state(&env);
    let err = env.broker.publish(&topic("t"), msg(1).with_id("")).await.unwrap_err();
    assert!(matches!(err, BrokerError::InvalidMessage(MessageError::Missing("id"))));
    let err = env.broker.publish(&topic("t"), msg(1).with_extension("Bad-Name", "x")).await.unwrap_err();
    assert!(matches!(err, BrokerError::InvalidMessage(MessageError::ExtensionName(_))));
    assert_eq!(state(&env), before);
}

#[tokio::test]
async fn unknown_topics_and_subscriptions() {
    let env = setup().await;
    let before = state(&env);
    let err = env.broker.publish(&topic("nope"), msg(1)).await.unwrap_err();
    assert!(matches!(&err, BrokerError::TopicNotFound(t) if t.as_str() == "nope"), "{err}");
    assert_eq!(err.to_string(), "topic nope does not exist");
    assert!(matches!(
        env.broker.queue_consumer(&topic("t"), &sub("nope")),
        Err(BrokerError::SubscriptionNotFound { .. })
    ));
    assert!(matches!(env.broker.stats(&topic("nope"), &sub("q")), Err(BrokerError::TopicNotFound(_))));
    assert!(matches!(
        env.broker.create_subscription(&topic("nope"), &sub("x"), SubscriptionConfig::queue()).await,
        Err(BrokerError::TopicNotFound(_))
    ));
    assert!(matches!(env.broker.delete_topic(&topic("nope")).await, Err(BrokerError::TopicNotFound(_))));
    assert_eq!(state(&env), before);
}

#[tokio::test]
async fn unknown_receipts_and_double_acks() {
    let env = setup().await;
    let c = env.broker.queue_consumer(&topic("t"), &sub("q")).unwrap();
    let got = c.receive(1, Duration::ZERO).await.unwrap();
    let r = got[0].receipt.unwrap();
    let forged = Receipt { lease: r.lease + 1000, ..r };
    assert!(matches!(c.ack(&forged).await, Err(BrokerError::UnknownReceipt(_))));
    let nowhere = Receipt { partition: 7, ..r };
    assert!(matches!(c.ack(&nowhere).await, Err(BrokerError::UnknownReceipt(_))));
    assert!(matches!("garbage".parse::<Receipt>(), Err(BrokerError::UnknownReceipt(_))));
    assert_eq!(env.broker.stats(&topic("t"), &sub("q")).unwrap().in_flight, 1, "forged acks changed nothing");
    c.ack(&r).await.unwrap();
    let before = state(&env);
    let err = c.ack(&r).await.unwrap_err();
    assert!(matches!(err, BrokerError::UnknownReceipt(_)), "{err}");
    assert!(matches!(c.nack(&r, Duration::ZERO, None).await, Err(BrokerError::UnknownReceipt(_))));
    assert!(matches!(c.extend(&r, Duration::from_secs(1)), Err(BrokerError::UnknownReceipt(_))));
    assert_eq!(state(&env), before);
    env.advance(Duration::from_secs(3600));
    assert!(c.receive(1, Duration::ZERO).await.unwrap().is_empty(), "a double ack did not resurrect it");
}

#[tokio::test]
async fn an_expired_lease_cannot_be_acked_nacked_or_extended() {
    let env = setup().await;
    let c = env.broker.queue_consumer(&topic("t"), &sub("q")).unwrap();
    let r = c.receive(1, Duration::ZERO).await.unwrap()[0].receipt.unwrap();
    env.advance(Duration::from_secs(31));
    assert!(matches!(c.extend(&r, Duration::from_secs(60)), Err(BrokerError::LeaseExpired(_))));
    assert!(matches!(c.nack(&r, Duration::ZERO, None).await, Err(BrokerError::LeaseExpired(_))));
    assert!(matches!(c.ack(&r).await, Err(BrokerError::LeaseExpired(_))));
    assert_eq!(c.receive(1, Duration::ZERO).await.unwrap()[0].attempt, 2);
}

#[tokio::test]
async fn invalid_configuration_and_conflicting_recreation() {
    let env = setup().await;
    let before = state(&env);
    for bad in [
        TopicConfig { partitions: 0, ..TopicConfig::default() },
        TopicConfig { partitions: 5000, ..TopicConfig::default() },
        TopicConfig { max_message_bytes: 0, ..TopicConfig::default() },
    ] {
        assert!(matches!(
            env.broker.create_topic(&topic("x"), bad).await,
            Err(BrokerError::InvalidConfig(_))
        ));
    }
    assert!(env.broker.topic_info(&topic("x")).is_err());
    let other = TopicConfig { partitions: 3, ..TopicConfig::default() };
    assert!(matches!(env.broker.create_topic(&topic("t"), other).await, Err(BrokerError::TopicExists(_))));
    env.broker.create_topic(&topic("t"), TopicConfig::default()).await.expect("same settings: no-op");
    let bad_sub = SubscriptionConfig { max_deliveries: Some(0), ..SubscriptionConfig::queue() };
    assert!(matches!(
        env.broker.create_subscription(&topic("t"), &sub("z"), bad_sub).await,
        Err(BrokerError::InvalidConfig(_))
    ));
    assert!(matches!(
        env.broker.create_subscription(&topic("t"), &sub("q"), SubscriptionConfig::stream()).await,
        Err(BrokerError::SubscriptionExists { .. })
    ));
    assert_eq!(state(&env), before);
}

#[tokio::test]
async fn wrong_mode_and_oversize_batches() {
    let env = Env::with_config(BrokerConfig { max_batch_messages: 10, ..test_config() }).await;
    env.broker.create_topic(&topic("t"), TopicConfig::default()).await.unwrap();
    env.broker.create_subscription(&topic("t"), &sub("q"), SubscriptionConfig::queue()).await.unwrap();
    env.broker.create_subscription(&topic("t"), &sub("s"), SubscriptionConfig::stream()).await.unwrap();
    let before = state(&env);
    assert!(matches!(env.broker.stream_consumer(&topic("t"), &sub("q")), Err(BrokerError::WrongMode { .. })));
    assert!(matches!(env.broker.queue_consumer(&topic("t"), &sub("s")), Err(BrokerError::WrongMode { .. })));
    assert!(matches!(
        env.broker.seek(&topic("t"), &sub("q"), switchboard_broker::SeekTo::Earliest).await,
        Err(BrokerError::WrongMode { .. })
    ));
    let batch = (0..11).map(msg).collect();
    let err = env.broker.publish_batch(&topic("t"), batch, PublishOptions::default()).await.unwrap_err();
    assert!(matches!(err, BrokerError::BatchTooLarge { len: 11, max: 10 }));
    assert_eq!(state(&env), before);
}

#[tokio::test]
async fn the_broker_wide_message_limit_caps_every_topic() {
    let env = Env::with_config(BrokerConfig { max_message_bytes: 500, ..test_config() }).await;
    env.broker.create_topic(&topic("t"), TopicConfig::default()).await.unwrap();
    let err = env.broker.publish(&topic("t"), Message::new("/s", "t", vec![0u8; 600])).await.unwrap_err();
    assert!(matches!(err, BrokerError::InvalidMessage(MessageError::TooLarge { max: 500, .. })), "{err}");
    assert_eq!(env.broker.topic_info(&topic("t")).unwrap().partitions[0].end_offset, 0);
}

#[tokio::test]
async fn a_receipt_from_before_a_restart_never_settles_a_later_delivery_even_if_the_clock_steps_back() {
    let mut env = setup().await;
    let c = env.broker.queue_consumer(&topic("t"), &sub("q")).unwrap();
    let old = c.receive(1, Duration::ZERO).await.unwrap()[0].receipt.unwrap();
    drop(c);
    let before = env.clock_now_plus(Duration::ZERO);
    env.clock.set(switchboard_core::Timestamp(before.0 - 60_000)); // the wall clock stepped back
    env.crash_and_restart().await;
    let c = env.broker.queue_consumer(&topic("t"), &sub("q")).unwrap();
    let new = c.receive(1, Duration::ZERO).await.unwrap()[0].receipt.unwrap();
    assert!(new.lease > old.lease, "lease numbers keep growing: {} then {}", old.lease, new.lease);
    assert!(c.ack(&old).await.is_err(), "the stale receipt settles nothing");
    c.ack(&new).await.unwrap();
}

#[tokio::test]
async fn lease_extensions_and_nack_delays_are_bounded() {
    let env = setup().await;
    let c = env.broker.queue_consumer(&topic("t"), &sub("q")).unwrap();
    let r = c.receive(1, Duration::ZERO).await.unwrap()[0].receipt.unwrap();
    for by in [Duration::ZERO, Duration::from_secs(13 * 3600), Duration::MAX] {
        assert!(matches!(c.extend(&r, by), Err(BrokerError::InvalidArgument(_))), "{by:?}");
    }
    let err = c.nack(&r, Duration::from_secs(15 * 24 * 3600), None).await.unwrap_err();
    assert!(matches!(err, BrokerError::InvalidArgument(_)), "{err}");
    // Refused calls changed nothing: the receipt still works.
    c.extend(&r, Duration::from_secs(60)).unwrap();
    c.ack(&r).await.unwrap();
}
