//! Stream subscriptions: order per partition, consumer groups, commits and seeks.

use std::collections::BTreeMap;
use std::time::Duration;

use switchboard_broker::{BrokerError, SeekTo, StartPosition, SubscriptionConfig, TopicConfig};

use crate::util::*;

async fn setup(env: &Env, partitions: u32) {
    env.broker
        .create_topic(&topic("orders"), TopicConfig { partitions, ..TopicConfig::default() })
        .await
        .unwrap();
    env.broker
        .create_subscription(&topic("orders"), &sub("shipping"), SubscriptionConfig::stream())
        .await
        .unwrap();
}

async fn publish_keyed(env: &Env, n: usize, keys: usize) {
    let first = env
        .broker
        .topic_info(&topic("orders"))
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.end_offset as usize)
        .sum::<usize>();
    for i in first..first + n {
        env.broker.publish(&topic("orders"), msg(i).with_key(format!("k{}", i % keys))).await.unwrap();
    }
}

async fn read_all(c: &switchboard_broker::StreamConsumer) -> Vec<switchboard_broker::BrokerDelivery> {
    let mut all = Vec::new();
    loop {
        let got = c.receive(100, Duration::ZERO).await.unwrap();
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

fn seq(body: &str) -> usize {
    body.parse().unwrap()
}

#[tokio::test]
async fn order_per_partition_and_per_key_is_kept() {
    let env = Env::new().await;
    setup(&env, 4).await;
    publish_keyed(&env, 200, 10).await;
    let c = env.broker.stream_consumer(&topic("orders"), &sub("shipping")).unwrap();
    let all = read_all(&c).await;
    assert_eq!(all.len(), 200);
    let mut last_offset: BTreeMap<u32, u64> = BTreeMap::new();
    let mut last_seq_of_key: BTreeMap<String, usize> = BTreeMap::new();
    for d in &all {
        if let Some(prev) = last_offset.insert(d.partition, d.offset) {
            assert_eq!(d.offset, prev + 1, "offsets in order without gaps");
        }
        let k = d.message.partition_key().unwrap().to_owned();
        let s = seq(&body(d));
        if let Some(prev) = last_seq_of_key.insert(k, s) {
            assert!(s > prev, "per-key order");
        }
    }
}

#[tokio::test]
async fn committed_offsets_survive_a_crash_and_uncommitted_messages_come_again() {
    let mut env = Env::new().await;
    setup(&env, 1).await;
    publish_keyed(&env, 10, 1).await;
    let c = env.broker.stream_consumer(&topic("orders"), &sub("shipping")).unwrap();
    let got = c.receive(6, Duration::ZERO).await.unwrap();
    c.commit(0, got[3].offset + 1).await.unwrap();
    drop(c);
    env.crash_and_restart().await;
    let c = env.broker.stream_consumer(&topic("orders"), &sub("shipping")).unwrap();
    let again = read_all(&c).await;
    assert_eq!(again.first().unwrap().offset, 4);
    assert_eq!(again.len(), 6);
    let st = env.broker.stats(&topic("orders"), &sub("shipping")).unwrap();
    assert_eq!((st.backlog, st.in_flight), (6, 6));
}

#[tokio::test]
async fn members_split_partitions_and_rebalance_when_one_leaves() {
    let env = Env::new().await;
    setup(&env, 4).await;
    publish_keyed(&env, 40, 40).await;
    let a = env.broker.stream_consumer(&topic("orders"), &sub("shipping")).unwrap();
    let b = env.broker.stream_consumer(&topic("orders"), &sub("shipping")).unwrap();
    let (pa, pb) = (a.assignment(), b.assignment());
    assert_eq!(pa.len(), 2);
    assert_eq!(pb.len(), 2);
    assert!(pa.iter().all(|p| !pb.contains(p)));
    let from_a = read_all(&a).await;
    assert!(from_a.iter().all(|d| pa.contains(&d.partition)));
    // b reads nothing and commits nothing, then leaves: a takes over b's partitions from
    // their committed offsets.
    let b_count: usize = env
        .broker
        .topic_info(&topic("orders"))
        .unwrap()
        .partitions
        .iter()
        .filter(|p| pb.contains(&p.partition))
        .map(|p| p.end_offset as usize)
        .sum();
    drop(b);
    assert_eq!(a.assignment(), vec![0, 1, 2, 3]);
    let taken_over = read_all(&a).await;
    assert_eq!(taken_over.len(), b_count);
    // A stale member cannot commit a partition it lost.
    let c = env.broker.stream_consumer(&topic("orders"), &sub("shipping")).unwrap();
    let lost = (0..4).find(|p| !a.assignment().contains(p)).unwrap();
    let err = a.commit(lost, 1).await.unwrap_err();
    assert!(matches!(err, BrokerError::NotAssigned { .. }), "{err}");
    drop(c);
}

#[tokio::test]
async fn seek_to_earliest_latest_offset_and_time() {
    let env = Env::new().await;
    setup(&env, 1).await;
    publish_keyed(&env, 5, 1).await;
    let t_mid = env.clock_now_plus(Duration::from_secs(10));
    env.advance(Duration::from_secs(10));
    env.broker.publish(&topic("orders"), msg(5)).await.unwrap();
    env.broker.publish(&topic("orders"), msg(6)).await.unwrap();
    let c = env.broker.stream_consumer(&topic("orders"), &sub("shipping")).unwrap();
    assert_eq!(read_all(&c).await.len(), 7);
    let (o, s) = (topic("orders"), sub("shipping"));
    env.broker.seek(&o, &s, SeekTo::Earliest).await.unwrap();
    assert_eq!(read_all(&c).await.len(), 7);
    env.broker.seek(&o, &s, SeekTo::Time(t_mid)).await.unwrap();
    assert_eq!(read_all(&c).await.iter().map(body).collect::<Vec<_>>(), ["5", "6"]);
    env.broker.seek(&o, &s, SeekTo::Offset { partition: 0, offset: 3 }).await.unwrap();
    assert_eq!(read_all(&c).await.first().map(body).unwrap(), "3");
    env.broker.seek(&o, &s, SeekTo::Latest).await.unwrap();
    assert!(read_all(&c).await.is_empty());
    let err = env.broker.seek(&o, &s, SeekTo::Offset { partition: 0, offset: 99 }).await.unwrap_err();
    assert!(matches!(err, BrokerError::OffsetOutOfRange { offset: 99, end: 7, .. }), "{err}");
}

#[tokio::test]
async fn a_stream_and_a_queue_subscription_share_one_topic() {
    let env = Env::new().await;
    setup(&env, 2).await;
    env.broker
        .create_subscription(&topic("orders"), &sub("email"), SubscriptionConfig::queue())
        .await
        .unwrap();
    let latest = SubscriptionConfig { start: StartPosition::Latest, ..SubscriptionConfig::stream() };
    publish_keyed(&env, 10, 3).await;
    env.broker.create_subscription(&topic("orders"), &sub("tail"), latest).await.unwrap();
    publish_keyed(&env, 2, 3).await;
    let q = env.broker.queue_consumer(&topic("orders"), &sub("email")).unwrap();
    let got = env.drain(&q).await;
    q.ack_many(&receipts(&got)).await.unwrap();
    assert_eq!(got.len(), 12);
    let s = env.broker.stream_consumer(&topic("orders"), &sub("shipping")).unwrap();
    assert_eq!(read_all(&s).await.len(), 12, "acks on the queue do not remove anything from the log");
    let t = env.broker.stream_consumer(&topic("orders"), &sub("tail")).unwrap();
    assert_eq!(read_all(&t).await.len(), 2);
}
