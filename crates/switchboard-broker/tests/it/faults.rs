//! Disk faults through the in-memory storage: nothing acknowledged is lost, nothing
//! half-written is served.

use std::path::PathBuf;
use std::time::Duration;

use switchboard_broker::{BrokerError, RetentionConfig, SubscriptionConfig, TopicConfig};

use crate::util::*;

async fn setup(env: &Env) {
    env.broker.create_topic(&topic("t"), TopicConfig::default()).await.unwrap();
    env.broker.create_subscription(&topic("t"), &sub("q"), SubscriptionConfig::queue()).await.unwrap();
    env.broker.create_subscription(&topic("t"), &sub("s"), SubscriptionConfig::stream()).await.unwrap();
}

fn segment(env: &Env) -> PathBuf {
    env.storage
        .paths()
        .into_iter()
        .find(|p| p.starts_with("/data/topics/t/p0") && p.extension().is_some_and(|e| e == "log"))
        .expect("partition segment")
}

async fn bodies_in_log(env: &Env) -> Vec<String> {
    let c = env.broker.stream_consumer(&topic("t"), &sub("s")).unwrap();
    let mut out = Vec::new();
    loop {
        let got = c.receive(100, Duration::ZERO).await.unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got.iter().map(body));
    }
}

#[tokio::test]
async fn a_failed_fsync_fails_the_publish_and_its_message_is_never_served() {
    let mut env = Env::new().await;
    setup(&env).await;
    env.broker.publish(&topic("t"), msg(0)).await.unwrap();
    env.storage.fail_next_sync();
    let err = env.broker.publish(&topic("t"), msg(1)).await.unwrap_err();
    assert!(matches!(err, BrokerError::Storage(_)), "{err}");
    env.broker.publish(&topic("t"), msg(2)).await.unwrap();
    assert_eq!(bodies_in_log(&env).await, ["0", "2"]);
    env.power_cut_and_restart().await;
    assert_eq!(bodies_in_log(&env).await, ["0", "2"]);
}

#[tokio::test]
async fn a_full_disk_rejects_publishes_clearly_keeps_what_was_acknowledged_and_recovers() {
    let env = Env::new().await;
    setup(&env).await;
    for i in 0..5 {
        env.broker.publish(&topic("t"), msg(i)).await.unwrap();
    }
    env.storage.set_capacity(Some(env.storage.total_bytes() + 100));
    let mut failures = 0;
    for i in 5..20 {
        match env.broker.publish(&topic("t"), msg(i).with_extension("pad", "x".repeat(200))).await {
            Err(BrokerError::NoSpace(e)) => {
                failures += 1;
                assert!(e.to_string().contains("no space left"), "{e}");
            }
            other => panic!("expected NoSpace, got {other:?}"),
        }
    }
    assert_eq!(failures, 15);
    assert_eq!(bodies_in_log(&env).await.len(), 5, "everything acknowledged stays readable");
    env.storage.set_capacity(None);
    env.broker.publish(&topic("t"), msg(99)).await.unwrap();
    let q = env.broker.queue_consumer(&topic("t"), &sub("q")).unwrap();
    assert_eq!(env.drain(&q).await.len(), 6);
}

#[tokio::test]
async fn acks_fail_cleanly_on_a_full_disk() {
    let env = Env::new().await;
    setup(&env).await;
    env.broker.publish(&topic("t"), msg(0)).await.unwrap();
    let q = env.broker.queue_consumer(&topic("t"), &sub("q")).unwrap();
    let got = env.drain(&q).await;
    env.storage.set_capacity(Some(env.storage.total_bytes()));
    assert!(matches!(q.ack(&got[0].receipt.unwrap()).await, Err(BrokerError::NoSpace(_))));
    env.storage.set_capacity(None);
}

/// Found by switchboard-campaign's disk-full run: metadata writes (`topic.json`,
/// `subscription.json`) on a full disk were a generic storage failure (HTTP 500 / INTERNAL)
/// instead of the no-space error appends give (507 / RESOURCE_EXHAUSTED).
#[tokio::test]
async fn creating_topics_and_subscriptions_on_a_full_disk_fails_as_no_space_and_leaves_nothing_behind() {
    let env = Env::new().await;
    setup(&env).await;
    env.storage.set_capacity(Some(env.storage.total_bytes()));
    let err = env.broker.create_topic(&topic("late"), TopicConfig::default()).await.unwrap_err();
    assert!(matches!(err, BrokerError::NoSpace(_)), "{err:?}");
    assert!(err.to_string().contains("no space left"), "{err}");
    let err = env
        .broker
        .create_subscription(&topic("t"), &sub("late"), SubscriptionConfig::queue())
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::NoSpace(_)), "{err:?}");
    env.storage.set_capacity(None);
    env.broker.create_topic(&topic("late"), TopicConfig::default()).await.unwrap();
    env.broker.create_subscription(&topic("t"), &sub("late"), SubscriptionConfig::queue()).await.unwrap();
    env.broker.publish(&topic("late"), msg(0)).await.unwrap();
}

#[tokio::test]
async fn a_power_cut_under_always_loses_no_acknowledged_publish_or_ack() {
    let mut env = Env::new().await;
    setup(&env).await;
    for i in 0..50 {
        env.broker.publish(&topic("t"), msg(i)).await.unwrap();
    }
    let q = env.broker.queue_consumer(&topic("t"), &sub("q")).unwrap();
    let got = env.drain(&q).await;
    let acked: Vec<_> = got.iter().filter(|d| d.offset % 2 == 0).map(|d| d.receipt.unwrap()).collect();
    q.ack_many(&acked).await.unwrap().into_iter().for_each(|r| r.unwrap());
    drop(q);
    env.power_cut_and_restart().await;
    assert_eq!(bodies_in_log(&env).await.len(), 50);
    let q = env.broker.queue_consumer(&topic("t"), &sub("q")).unwrap();
    let again = env.drain(&q).await;
    assert_eq!(again.len(), 25);
    assert!(again.iter().all(|d| d.offset % 2 == 1 && d.attempt == 2));
}

/// Publishes three messages, damages the tail of the partition's segment with `damage`
/// (given the file and its length), and restarts.
async fn damage_tail_and_restart(damage: impl FnOnce(&Env, &PathBuf, u64)) -> Env {
    let mut env = Env::new().await;
    setup(&env).await;
    for i in 0..3 {
        env.broker.publish(&topic("t"), msg(i)).await.unwrap();
    }
    let seg = segment(&env);
    let len = env.storage.file_len(&seg).unwrap();
    damage(&env, &seg, len);
    env.crash_and_restart().await;
    env
}

#[tokio::test]
async fn a_torn_tail_is_cut_back_to_the_last_whole_batch() {
    let env = damage_tail_and_restart(|env, seg, len| env.storage.truncate_raw(seg, len - 5)).await;
    assert_eq!(bodies_in_log(&env).await, ["0", "1"]);
    let r = env.broker.publish(&topic("t"), msg(3)).await.unwrap();
    assert_eq!(r.offset, 2, "the next offset follows the last whole batch");
}

#[tokio::test]
async fn a_corrupt_tail_record_is_never_served() {
    let env = damage_tail_and_restart(|env, seg, len| env.storage.corrupt(seg, len - 3)).await;
    assert_eq!(bodies_in_log(&env).await, ["0", "1"]);
}

#[tokio::test]
async fn a_failed_ack_keeps_the_message_even_when_retention_runs() {
    let mut env = Env::new().await;
    let config = TopicConfig {
        segment_bytes: 4096,
        retention: RetentionConfig { max_age_ms: None, max_bytes: None, until_acked: true },
        ..TopicConfig::default()
    };
    env.broker.create_topic(&topic("r"), config).await.unwrap();
    env.broker.create_subscription(&topic("r"), &sub("q"), SubscriptionConfig::queue()).await.unwrap();
    for i in 0..100 {
        env.broker.publish(&topic("r"), msg(i)).await.unwrap();
    }
    let c = env.broker.queue_consumer(&topic("r"), &sub("q")).unwrap();
    let got = env.drain(&c).await;
    for d in &got[1..] {
        c.ack(&d.receipt.unwrap()).await.unwrap();
    }
    env.storage.fail_next_sync();
    assert!(c.ack(&got[0].receipt.unwrap()).await.is_err());
    env.broker.tick().await.unwrap();
    assert_eq!(env.broker.topic_info(&topic("r")).unwrap().partitions[0].start_offset, 0, "nothing deleted");
    let st = env.broker.stats(&topic("r"), &sub("q")).unwrap();
    assert_eq!((st.backlog, st.in_flight), (1, 1), "the failed ack left the delivery leased");
    // The same receipt can be acked once the disk works again.
    c.ack(&got[0].receipt.unwrap()).await.unwrap();
    drop(c);
    env.crash_and_restart().await;
    let c = env.broker.queue_consumer(&topic("r"), &sub("q")).unwrap();
    assert!(env.drain(&c).await.is_empty());
}
