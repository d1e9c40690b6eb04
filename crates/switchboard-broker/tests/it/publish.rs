//! Publishing: attributes round trip, partitioning, batches, idempotency, durability.

use std::time::Duration;

use switchboard_broker::{Durability, FsyncPolicy, PublishOptions, SubscriptionConfig, TopicConfig};
use switchboard_core::Message;

use crate::util::*;

#[tokio::test]
async fn every_cloudevents_attribute_round_trips() {
    let env = Env::new().await;
    env.broker.create_topic(&topic("t"), TopicConfig::default()).await.unwrap();
    env.broker.create_subscription(&topic("t"), &sub("s"), SubscriptionConfig::stream()).await.unwrap();
    let mut m = Message::new("/src", "com.example.thing", vec![0u8, 1, 2, 255])
        .with_subject("thing/1")
        .with_content_type("application/octet-stream")
        .with_key("k")
        .with_extension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .with_extension("tracestate", "vendor=1");
    m.time = Some("2026-11-26T10:00:00.5Z".into());
    m.dataschema = Some("https://example.com/schema".into());
    env.broker.publish(&topic("t"), m.clone()).await.unwrap();
    let c = env.broker.stream_consumer(&topic("t"), &sub("s")).unwrap();
    let got = c.receive(1, Duration::ZERO).await.unwrap();
    assert_eq!(got[0].message, m);
}

#[tokio::test]
async fn keys_pick_a_stable_partition_and_keyless_messages_spread() {
    let mut env = Env::new().await;
    env.broker
        .create_topic(&topic("t"), TopicConfig { partitions: 8, ..TopicConfig::default() })
        .await
        .unwrap();
    let p1 = env.broker.publish(&topic("t"), msg(0).with_key("customer-42")).await.unwrap().partition;
    env.crash_and_restart().await;
    let p2 = env.broker.publish(&topic("t"), msg(1).with_key("customer-42")).await.unwrap().partition;
    assert_eq!(p1, p2, "same key, same partition, across restarts");
    let mut used = std::collections::BTreeSet::new();
    for i in 2..18 {
        used.insert(env.broker.publish(&topic("t"), msg(i)).await.unwrap().partition);
    }
    assert_eq!(used.len(), 8, "round robin reaches every partition");
}

#[tokio::test]
async fn a_repeated_id_is_stored_once_even_after_a_restart_but_not_after_the_window() {
    let mut env = Env::new().await;
    let config = TopicConfig { partitions: 4, dedup_window_ms: 60_000, ..TopicConfig::default() };
    env.broker.create_topic(&topic("t"), config).await.unwrap();
    let first = env.broker.publish(&topic("t"), msg(1)).await.unwrap();
    let again = env.broker.publish(&topic("t"), msg(1)).await.unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!((again.partition, again.offset), (first.partition, first.offset));
    env.crash_and_restart().await;
    assert!(env.broker.publish(&topic("t"), msg(1)).await.unwrap().duplicate, "window rebuilt at open");
    let batch =
        env.broker.publish_batch(&topic("t"), vec![msg(2), msg(2), msg(1)], PublishOptions::default()).await;
    let batch = batch.unwrap();
    assert_eq!(batch.iter().map(|r| r.duplicate).collect::<Vec<_>>(), [false, true, true]);
    let total: u64 =
        env.broker.topic_info(&topic("t")).unwrap().partitions.iter().map(|p| p.end_offset).sum();
    assert_eq!(total, 2);
    env.advance(Duration::from_secs(61));
    assert!(!env.broker.publish(&topic("t"), msg(1)).await.unwrap().duplicate);
}

#[tokio::test]
async fn the_window_rebuilt_at_open_holds_exactly_the_newest_ids_up_to_its_cap() {
    let mut env = Env::new().await;
    // Three partitions, a cap of 10 ids: the newest 10 of 40 survive a restart, wherever
    // they were stored, and the 30 before them are forgotten, as without the restart.
    let config = TopicConfig { partitions: 3, dedup_max_entries: 10, ..TopicConfig::default() };
    env.broker.create_topic(&topic("t"), config).await.unwrap();
    for i in 0..40 {
        env.broker.publish(&topic("t"), msg(i)).await.unwrap();
        env.advance(Duration::from_millis(1));
    }
    env.crash_and_restart().await;
    for i in 30..40 {
        assert!(
            env.broker.publish(&topic("t"), msg(i)).await.unwrap().duplicate,
            "id {i} is among the newest"
        );
    }
    for i in [0, 15, 29] {
        assert!(
            !env.broker.publish(&topic("t"), msg(i)).await.unwrap().duplicate,
            "id {i} was beyond the cap"
        );
    }
}

#[tokio::test]
async fn concurrent_publishes_of_one_id_store_it_once() {
    let env = Env::new().await;
    env.broker
        .create_topic(&topic("t"), TopicConfig { partitions: 3, ..TopicConfig::default() })
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let b = env.broker.clone();
            tokio::spawn(async move { b.publish(&topic("t"), msg(7)).await.unwrap() })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        stored += usize::from(!t.await.unwrap().duplicate);
    }
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn the_receipt_says_which_durability_held() {
    let env = Env::new().await;
    for (name, fsync, want) in [
        ("always", FsyncPolicy::Always, Durability::Fsynced),
        ("never", FsyncPolicy::Never, Durability::Written),
        ("interval", FsyncPolicy::Interval { ms: 5 }, Durability::Written),
    ] {
        env.broker.create_topic(&topic(name), TopicConfig { fsync, ..TopicConfig::default() }).await.unwrap();
        assert_eq!(env.broker.publish(&topic(name), msg(0)).await.unwrap().durability, want, "{name}");
    }
}

#[tokio::test]
async fn a_batch_for_one_partition_is_all_or_nothing() {
    let env = Env::new().await;
    env.broker.create_topic(&topic("t"), TopicConfig::default()).await.unwrap();
    let batch = |from: usize| (from..from + 50).map(msg).collect::<Vec<_>>();
    env.storage.tear_next_write(700);
    assert!(env.broker.publish_batch(&topic("t"), batch(0), PublishOptions::default()).await.is_err());
    assert_eq!(env.broker.topic_info(&topic("t")).unwrap().partitions[0].end_offset, 0);
    let ok = env.broker.publish_batch(&topic("t"), batch(0), PublishOptions::default()).await.unwrap();
    assert_eq!(ok.last().unwrap().offset, 49, "the failed batch left no trace; its ids are not taken");
}

#[tokio::test]
async fn topics_and_subscriptions_survive_restart_and_delete_removes_them() {
    let mut env = Env::new().await;
    env.broker
        .create_topic(&topic("t"), TopicConfig { partitions: 2, ..TopicConfig::default() })
        .await
        .unwrap();
    env.broker.create_subscription(&topic("t"), &sub("s"), SubscriptionConfig::stream()).await.unwrap();
    env.crash_and_restart().await;
    let info = env.broker.topic_info(&topic("t")).unwrap();
    assert_eq!(info.partitions.len(), 2);
    assert_eq!(info.subscriptions.len(), 1);
    env.broker.delete_topic(&topic("t")).await.unwrap();
    env.crash_and_restart().await;
    assert!(env.broker.topic_info(&topic("t")).is_err());
    assert!(env.storage.paths().iter().all(|p| !p.starts_with("/data/topics/t/")));
}

#[tokio::test]
async fn a_publish_whose_caller_gives_up_midway_does_not_block_its_id() {
    let env = Env::new().await;
    env.broker.create_topic(&topic("t"), TopicConfig::default()).await.unwrap();
    // The caller stops waiting while the first publish waits for its (slow) fsync.
    env.storage.set_sync_delay(Duration::from_millis(50));
    let first = tokio::time::timeout(Duration::from_millis(5), env.broker.publish(&topic("t"), msg(1))).await;
    assert!(first.is_err(), "the first publish was still waiting when its caller gave up");
    env.storage.set_sync_delay(Duration::ZERO);
    let again = tokio::time::timeout(Duration::from_secs(10), env.broker.publish(&topic("t"), msg(1))).await;
    assert!(again.expect("the id is not stuck pending").is_ok());
}
