//! Queue subscriptions: competing consumers, ack/nack/lease, dead letters, order by key,
//! flow control, and durable state across restarts.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use switchboard_broker::{
    BrokerError, PublishOptions, RetentionConfig, StartPosition, SubscriptionConfig, TopicConfig,
    dead_letter_ext,
};
use switchboard_core::Message;

use crate::util::*;

async fn setup(env: &Env, partitions: u32, sub_config: SubscriptionConfig) {
    env.broker
        .create_topic(&topic("jobs"), TopicConfig { partitions, ..TopicConfig::default() })
        .await
        .unwrap();
    env.broker.create_subscription(&topic("jobs"), &sub("workers"), sub_config).await.unwrap();
}

async fn publish_n(env: &Env, n: usize) {
    for i in 0..n {
        env.broker.publish(&topic("jobs"), msg(i)).await.unwrap();
    }
}

#[tokio::test]
async fn competing_consumers_split_the_messages_and_acks_remove_them() {
    let env = Env::new().await;
    setup(&env, 3, SubscriptionConfig::queue()).await;
    publish_n(&env, 30).await;
    let a = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    let b = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    let got_a = a.receive(12, Duration::ZERO).await.unwrap();
    let got_b = env.drain(&b).await;
    assert_eq!(got_a.len(), 12);
    assert_eq!(got_b.len(), 18);
    let ids: HashSet<_> = got_a.iter().chain(&got_b).map(|d| d.message.id.clone()).collect();
    assert_eq!(ids.len(), 30, "each message went to exactly one consumer");
    assert_eq!(env.broker.stats(&topic("jobs"), &sub("workers")).unwrap().in_flight, 30);
    a.ack_many(&receipts(&got_a)).await.unwrap().into_iter().for_each(|r| r.unwrap());
    b.ack_many(&receipts(&got_b)).await.unwrap().into_iter().for_each(|r| r.unwrap());
    let st = env.broker.stats(&topic("jobs"), &sub("workers")).unwrap();
    assert_eq!((st.backlog, st.in_flight, st.lag), (0, 0, 0));
    env.advance(Duration::from_secs(3600));
    assert!(env.drain(&a).await.is_empty(), "acked messages never come back");
}

#[tokio::test]
async fn nack_redelivers_now_or_after_its_delay() {
    let env = Env::new().await;
    setup(&env, 1, SubscriptionConfig::queue()).await;
    publish_n(&env, 2).await;
    let c = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    let got = env.drain(&c).await;
    c.nack(&got[0].receipt.unwrap(), Duration::ZERO, None).await.unwrap();
    c.nack(&got[1].receipt.unwrap(), Duration::from_secs(10), None).await.unwrap();
    let again = env.drain(&c).await;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].offset, again[0].attempt), (0, 2));
    assert_eq!(env.broker.stats(&topic("jobs"), &sub("workers")).unwrap().scheduled, 1);
    env.advance(Duration::from_secs(9));
    assert!(env.drain(&c).await.is_empty(), "not before its delay");
    env.advance(Duration::from_secs(1));
    let later = env.drain(&c).await;
    assert_eq!((later[0].offset, later[0].attempt), (1, 2));
}

#[tokio::test]
async fn an_expired_lease_redelivers_and_its_receipt_stops_working() {
    let env = Env::new().await;
    setup(&env, 1, SubscriptionConfig { lease_ms: 5_000, ..SubscriptionConfig::queue() }).await;
    publish_n(&env, 1).await;
    let dead = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    let first = env.drain(&dead).await;
    drop(dead); // the consumer "dies" holding the message
    let alive = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    assert!(env.drain(&alive).await.is_empty(), "still leased");
    env.advance(Duration::from_millis(5_000));
    let second = env.drain(&alive).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempt, 2);
    let stale = alive.ack(&first[0].receipt.unwrap()).await.unwrap_err();
    assert!(matches!(stale, BrokerError::LeaseExpired(_)), "{stale}");
    alive.ack(&second[0].receipt.unwrap()).await.unwrap();
}

#[tokio::test]
async fn extending_a_lease_keeps_the_message() {
    let env = Env::new().await;
    setup(&env, 1, SubscriptionConfig { lease_ms: 1_000, ..SubscriptionConfig::queue() }).await;
    publish_n(&env, 1).await;
    let c = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    let got = env.drain(&c).await;
    env.advance(Duration::from_millis(900));
    c.extend(&got[0].receipt.unwrap(), Duration::from_secs(60)).unwrap();
    env.advance(Duration::from_secs(30));
    assert!(env.drain(&c).await.is_empty());
    c.ack(&got[0].receipt.unwrap()).await.unwrap();
}

#[tokio::test]
async fn max_deliveries_dead_letters_with_metadata_and_redrive_brings_it_back_to_that_subscription_only() {
    let env = Env::new().await;
    setup(&env, 1, SubscriptionConfig { max_deliveries: Some(2), ..SubscriptionConfig::queue() }).await;
    env.broker.create_subscription(&topic("jobs"), &sub("audit"), SubscriptionConfig::queue()).await.unwrap();
    publish_n(&env, 1).await;
    let c = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    for attempt in 1..=2 {
        let got = env.drain(&c).await;
        assert_eq!(got[0].attempt, attempt);
        c.nack(&got[0].receipt.unwrap(), Duration::ZERO, Some(format!("boom {attempt}"))).await.unwrap();
    }
    env.broker.tick().await.unwrap();
    assert!(env.drain(&c).await.is_empty(), "dead-lettered, not redelivered");
    let st = env.broker.stats(&topic("jobs"), &sub("workers")).unwrap();
    assert_eq!((st.dead_lettered, st.backlog), (1, 0));

    let dlq = topic("jobs.workers.dlq");
    let dl = env.broker.queue_consumer(&dlq, &sub("redrive")).unwrap();
    let letters = env.drain(&dl).await;
    assert_eq!(letters.len(), 1);
    let ext = &letters[0].message.extensions;
    assert_eq!(ext[dead_letter_ext::REASON], "nacked");
    assert_eq!(ext[dead_letter_ext::TOPIC], "jobs");
    assert_eq!(ext[dead_letter_ext::SUBSCRIPTION], "workers");
    assert_eq!(ext[dead_letter_ext::ATTEMPTS], "2");
    assert_eq!(ext[dead_letter_ext::ERROR], "boom 2");
    assert_eq!(letters[0].message.id, "id-0");
    dl.nack(&letters[0].receipt.unwrap(), Duration::ZERO, None).await.unwrap();
    drop(dl);

    let audit = env.broker.queue_consumer(&topic("jobs"), &sub("audit")).unwrap();
    assert_eq!(env.drain(&audit).await.len(), 1);
    assert_eq!(env.broker.redrive(&topic("jobs"), &sub("workers"), 10).await.unwrap(), 1);
    let back = env.drain(&c).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].message.id, "id-0");
    assert!(back[0].message.extensions.keys().all(|k| !k.starts_with("dl")), "metadata stripped");
    assert!(env.drain(&audit).await.is_empty(), "other subscriptions do not see the redriven copy");
    assert_eq!(env.broker.stats(&dlq, &sub("redrive")).unwrap().backlog, 0);
}

#[tokio::test]
async fn lease_expiry_counts_towards_max_deliveries() {
    let env = Env::new().await;
    setup(
        &env,
        1,
        SubscriptionConfig { max_deliveries: Some(1), lease_ms: 100, ..SubscriptionConfig::queue() },
    )
    .await;
    publish_n(&env, 1).await;
    let c = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    assert_eq!(env.drain(&c).await.len(), 1);
    env.advance(Duration::from_millis(100));
    env.broker.tick().await.unwrap();
    let letters =
        env.drain(&env.broker.queue_consumer(&topic("jobs.workers.dlq"), &sub("redrive")).unwrap()).await;
    assert_eq!(letters[0].message.extensions[dead_letter_ext::REASON], "lease expired");
}

#[tokio::test]
async fn ordered_by_key_keeps_one_message_per_key_in_flight() {
    let env = Env::new().await;
    setup(&env, 1, SubscriptionConfig { ordered_by_key: true, ..SubscriptionConfig::queue() }).await;
    for i in 0..6 {
        let key = if i % 2 == 0 { "a" } else { "b" };
        env.broker.publish(&topic("jobs"), msg(i).with_key(key)).await.unwrap();
    }
    env.broker.publish(&topic("jobs"), msg(6)).await.unwrap(); // no key: unordered
    let c = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    let first = env.drain(&c).await;
    let bodies: Vec<_> = first.iter().map(body).collect();
    assert_eq!(bodies, ["0", "1", "6"]);
    // Nacking the head of key a redelivers it before anything else of key a.
    c.nack(&first[0].receipt.unwrap(), Duration::ZERO, None).await.unwrap();
    let again = env.drain(&c).await;
    assert_eq!(again.iter().map(body).collect::<Vec<_>>(), ["0"]);
    c.ack(&again[0].receipt.unwrap()).await.unwrap();
    c.ack(&first[1].receipt.unwrap()).await.unwrap();
    let next = env.drain(&c).await;
    assert_eq!(next.iter().map(body).collect::<BTreeSet<_>>(), BTreeSet::from(["2".into(), "3".into()]));
}

#[tokio::test]
async fn in_flight_bound_per_consumer_holds_back_deliveries() {
    let env = Env::new().await;
    setup(&env, 2, SubscriptionConfig { max_in_flight_per_consumer: 4, ..SubscriptionConfig::queue() }).await;
    publish_n(&env, 10).await;
    let c = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    let got = c.receive(100, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 4);
    assert!(c.receive(100, Duration::ZERO).await.unwrap().is_empty(), "bound reached");
    assert_eq!(c.in_flight(), 4);
    c.ack(&got[0].receipt.unwrap()).await.unwrap();
    assert_eq!(c.receive(100, Duration::ZERO).await.unwrap().len(), 1);
    let other = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    assert_eq!(other.receive(100, Duration::ZERO).await.unwrap().len(), 4, "the bound is per consumer");
}

#[tokio::test]
async fn every_subscription_gets_every_message_and_latest_starts_at_the_end() {
    let env = Env::new().await;
    setup(&env, 2, SubscriptionConfig::queue()).await;
    publish_n(&env, 5).await;
    let late = SubscriptionConfig { start: StartPosition::Latest, ..SubscriptionConfig::queue() };
    env.broker.create_subscription(&topic("jobs"), &sub("late"), late).await.unwrap();
    env.broker.create_subscription(&topic("jobs"), &sub("early"), SubscriptionConfig::queue()).await.unwrap();
    env.broker.publish(&topic("jobs"), msg(5)).await.unwrap();
    let count = |s: &'static str| {
        let env = &env;
        async move { env.drain(&env.broker.queue_consumer(&topic("jobs"), &sub(s)).unwrap()).await.len() }
    };
    assert_eq!(count("workers").await, 6);
    assert_eq!(count("early").await, 6);
    assert_eq!(count("late").await, 1);
}

#[tokio::test]
async fn acks_attempts_and_delays_survive_a_crash() {
    let mut env = Env::new().await;
    setup(&env, 1, SubscriptionConfig::queue()).await;
    publish_n(&env, 6).await;
    let c = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    let got = env.drain(&c).await;
    // Ack a non-contiguous set: 1 and 3 and 4; nack 2 with a delay; leave 0 and 5 leased.
    for i in [1, 3, 4] {
        c.ack(&got[i].receipt.unwrap()).await.unwrap();
    }
    c.nack(&got[2].receipt.unwrap(), Duration::from_secs(60), None).await.unwrap();
    drop(c);
    env.crash_and_restart().await;
    let c = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    let after = env.drain(&c).await;
    let offsets: Vec<_> = after.iter().map(|d| (d.offset, d.attempt)).collect();
    assert_eq!(offsets, [(0, 2), (5, 2)], "leases are not state: redelivered, attempts kept");
    c.ack_many(&receipts(&after)).await.unwrap();
    env.advance(Duration::from_secs(60));
    let delayed = env.drain(&c).await;
    assert_eq!(delayed.iter().map(|d| (d.offset, d.attempt)).collect::<Vec<_>>(), [(2, 2)]);
    assert_eq!(env.broker.stats(&topic("jobs"), &sub("workers")).unwrap().backlog, 1);
}

#[tokio::test]
async fn journal_compaction_keeps_state_across_restart() {
    let mut env =
        Env::with_config(switchboard_broker::BrokerConfig { journal_compact_bytes: 2_000, ..test_config() })
            .await;
    setup(&env, 2, SubscriptionConfig::queue()).await;
    publish_n(&env, 400).await;
    let c = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    let got = env.drain(&c).await;
    for (i, d) in got.iter().enumerate() {
        if i % 3 != 0 {
            c.ack(&d.receipt.unwrap()).await.unwrap();
        }
        if i % 50 == 0 {
            env.broker.tick().await.unwrap();
        }
    }
    env.broker.tick().await.unwrap();
    let journal_files =
        env.storage.paths().into_iter().filter(|p| p.to_string_lossy().contains("journal")).count();
    drop(c);
    env.crash_and_restart().await;
    let c = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    let again = env.drain(&c).await;
    assert_eq!(again.len(), got.iter().enumerate().filter(|(i, _)| i % 3 == 0).count());
    assert!(again.iter().all(|d| d.attempt == 2));
    assert!(journal_files < 20, "compaction deleted old journal segments ({journal_files} files)");
}

#[tokio::test]
async fn until_acked_retention_deletes_segments_only_after_every_queue_subscription_acked() {
    let env = Env::new().await;
    let config = TopicConfig {
        segment_bytes: 4096,
        retention: RetentionConfig { max_age_ms: None, max_bytes: None, until_acked: true },
        ..TopicConfig::default()
    };
    env.broker.create_topic(&topic("jobs"), config).await.unwrap();
    for s in ["a", "b"] {
        env.broker.create_subscription(&topic("jobs"), &sub(s), SubscriptionConfig::queue()).await.unwrap();
    }
    let big = |i: usize| Message::new("/t", "t", vec![b'x'; 1000]).with_id(format!("m{i}"));
    for i in 0..40 {
        env.broker.publish(&topic("jobs"), big(i)).await.unwrap();
    }
    let start = || env.broker.topic_info(&topic("jobs")).unwrap().partitions[0].start_offset;
    let a = env.broker.queue_consumer(&topic("jobs"), &sub("a")).unwrap();
    let got = env.drain(&a).await;
    a.ack_many(&receipts(&got)).await.unwrap();
    env.broker.tick().await.unwrap();
    assert_eq!(start(), 0, "b has acked nothing");
    let b = env.broker.queue_consumer(&topic("jobs"), &sub("b")).unwrap();
    let got = env.drain(&b).await;
    b.ack_many(&receipts(&got[..30])).await.unwrap();
    env.broker.tick().await.unwrap();
    let s = start();
    assert!(s > 0 && s <= 30, "segments below b's floor are gone, the rest stay (start {s})");
    b.ack_many(&receipts(&got[30..])).await.unwrap();
    assert_eq!(env.broker.stats(&topic("jobs"), &sub("b")).unwrap().backlog, 0);
}

#[tokio::test]
async fn delayed_delivery_waits_for_deliver_at() {
    let env = Env::new().await;
    setup(&env, 1, SubscriptionConfig::queue()).await;
    let at = env.clock_now_plus(Duration::from_secs(30));
    env.broker.publish_with(&topic("jobs"), msg(0), PublishOptions { deliver_at: Some(at) }).await.unwrap();
    env.broker.publish(&topic("jobs"), msg(1)).await.unwrap();
    let c = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    let now = env.drain(&c).await;
    assert_eq!(now.iter().map(body).collect::<Vec<_>>(), ["1"]);
    c.ack(&now[0].receipt.unwrap()).await.unwrap();
    env.advance(Duration::from_secs(29));
    assert!(env.drain(&c).await.is_empty());
    env.advance(Duration::from_secs(1));
    assert_eq!(env.drain(&c).await.iter().map(body).collect::<Vec<_>>(), ["0"]);
}

#[tokio::test]
async fn a_waiting_receive_wakes_on_publish() {
    let env = Env::new().await;
    setup(&env, 1, SubscriptionConfig::queue()).await;
    let c = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    let broker = env.broker.clone();
    let publisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        broker.publish(&topic("jobs"), msg(0)).await.unwrap();
    });
    let got = c.receive(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(got.len(), 1);
    publisher.await.unwrap();
}

#[tokio::test]
async fn an_ack_whose_caller_gives_up_midway_still_settles() {
    let env = Env::new().await;
    setup(&env, 1, SubscriptionConfig::queue()).await;
    publish_n(&env, 1).await;
    let c = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    let got = env.drain(&c).await;
    // The caller stops waiting (a client disconnecting) while the ack waits for its fsync.
    env.storage.set_sync_delay(Duration::from_millis(50));
    let _ = tokio::time::timeout(Duration::from_millis(5), c.ack(&got[0].receipt.unwrap())).await;
    env.storage.set_sync_delay(Duration::ZERO);
    for _ in 0..100 {
        if env.broker.stats(&topic("jobs"), &sub("workers")).unwrap().in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let st = env.broker.stats(&topic("jobs"), &sub("workers")).unwrap();
    assert_eq!((st.in_flight, st.backlog), (0, 0), "the ack completed on its own");
    env.advance(Duration::from_secs(3600));
    assert!(env.drain(&c).await.is_empty());
}

#[tokio::test]
async fn reading_a_partition_steps_over_any_run_of_redriven_copies() {
    let env = Env::new().await;
    setup(&env, 1, SubscriptionConfig { max_deliveries: Some(1), ..SubscriptionConfig::queue() }).await;
    publish_n(&env, 150).await;
    let c = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    for d in env.drain(&c).await {
        c.nack(&d.receipt.unwrap(), Duration::ZERO, None).await.unwrap();
    }
    env.broker.tick().await.unwrap();
    assert_eq!(env.broker.redrive(&topic("jobs"), &sub("workers"), 1000).await.unwrap(), 150);
    env.broker.publish(&topic("jobs"), msg(999)).await.unwrap();
    // Offsets 150..300 hold copies meant for `workers` only; a plain read skips all of them.
    let got = env.broker.read(&topic("jobs"), 0, 150, 100).unwrap();
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [300]);
}

#[tokio::test]
async fn each_stage_of_a_message_is_timed_once() {
    use switchboard_broker::Stage;
    let env = Env::new().await;
    setup(&env, 1, SubscriptionConfig::queue()).await;
    let count = |stage: Stage| {
        env.broker.stage_latencies().into_iter().find(|s| s.stage == stage).map_or(0, |s| s.count())
    };
    publish_n(&env, 2).await;
    assert_eq!((count(Stage::Write), count(Stage::FsyncWait), count(Stage::Wake)), (2, 2, 0));
    let c = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
    // A message taken after a newer one became durable is backlog, not wake-up time.
    let old = c.receive(1, Duration::ZERO).await.unwrap();
    assert_eq!(count(Stage::Wake), 0);
    // The newest durable message is timed when a consumer takes it.
    let newest = c.receive(1, Duration::ZERO).await.unwrap();
    assert_eq!(count(Stage::Wake), 1);
    // And so is one a consumer was waiting for.
    let waiting = tokio::spawn({
        let c = env.broker.queue_consumer(&topic("jobs"), &sub("workers")).unwrap();
        async move { c.receive(1, Duration::from_secs(30)).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    env.broker.publish(&topic("jobs"), msg(2)).await.unwrap();
    let fresh = waiting.await.unwrap();
    assert_eq!((fresh.len(), count(Stage::Wake)), (1, 2));
    assert_eq!((count(Stage::Write), count(Stage::FsyncWait)), (3, 3));
    // One ack call is timed once, whatever it carries; a refused ack is not timed.
    c.ack_many(&receipts(&old)).await.unwrap();
    c.ack_many(&[receipts(&newest), receipts(&fresh)].concat()).await.unwrap();
    assert_eq!(count(Stage::AckDurable), 2);
    assert!(c.ack_many(&receipts(&old)).await.unwrap()[0].is_err(), "acked twice");
    assert_eq!(count(Stage::AckDurable), 2);
}
