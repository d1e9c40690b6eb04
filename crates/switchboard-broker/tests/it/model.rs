//! Model-based property test: random sequences of publish / receive / ack / nack / lease
//! expiry / seek / crash / power cut, checked against a simple reference model.
//!
//! Checked after every step:
//! - no acknowledged publish is lost (every published id is in the log after any restart);
//! - no message is delivered again after its ack returned `Ok`;
//! - a message under a running lease is not handed to anyone else;
//! - ordered by key: a delivered keyed message is the oldest unfinished message of its key,
//!   and at most one message per key is out;
//! - stream: offsets come in order per partition between seeks;
//!
//! and at the end: every message is eventually acked or dead-lettered.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use switchboard_broker::{BrokerDelivery, BrokerError, Receipt, SeekTo, SubscriptionConfig, TopicConfig};
use switchboard_core::{Clock, Message, Timestamp};

use crate::util::*;

const LEASE_MS: u64 = 1_000;
const MAX_DELIVERIES: u32 = 3;

#[derive(Clone, Debug)]
enum Op {
    Publish { key: Option<u8>, count: u8 },
    Receive { consumer: u8, max: u8 },
    Ack { pick: u16 },
    Nack { pick: u16, delay_ms: u16 },
    Extend { pick: u16 },
    Advance { ms: u16 },
    StreamRead { max: u8 },
    StreamCommit,
    StreamSeekEarliest,
    Tick,
    Crash,
    PowerCut,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (proptest::option::of(0u8..4), 1u8..4).prop_map(|(key, count)| Op::Publish { key, count }),
        5 => (0u8..2, 1u8..6).prop_map(|(consumer, max)| Op::Receive { consumer, max }),
        5 => any::<u16>().prop_map(|pick| Op::Ack { pick }),
        2 => (any::<u16>(), prop_oneof![Just(0u16), 1u16..1500]).prop_map(|(pick, delay_ms)| Op::Nack { pick, delay_ms }),
        1 => any::<u16>().prop_map(|pick| Op::Extend { pick }),
        3 => (1u16..1500).prop_map(|ms| Op::Advance { ms }),
        2 => (1u8..8).prop_map(|max| Op::StreamRead { max }),
        1 => Just(Op::StreamCommit),
        1 => Just(Op::StreamSeekEarliest),
        2 => Just(Op::Tick),
        1 => Just(Op::Crash),
        1 => Just(Op::PowerCut),
    ]
}

struct Out {
    receipt: Receipt,
    id: String,
    key: Option<String>,
    until: Timestamp,
}

#[derive(Default)]
struct Model {
    /// Published ids in order, with their keys.
    published: Vec<(String, Option<String>)>,
    acked: HashSet<String>,
    /// Deliveries this test holds (receipts not yet settled).
    out: Vec<Out>,
    /// Highest attempt seen per id: a message at MAX_DELIVERIES may be dead-lettered.
    attempts: HashMap<String, u32>,
    /// Highest attempt seen per id since the last power cut: delivery counts are not
    /// fsynced before a delivery, so a power cut may take the last few back.
    attempts_since_power_cut: HashMap<String, u32>,
    /// Stream: last offset read per partition since the last seek/restart.
    stream_last: BTreeMap<u32, u64>,
    stream_next: BTreeMap<u32, u64>,
    seq: usize,
}

impl Model {
    fn may_be_dead(&self, id: &str) -> bool {
        self.attempts.get(id).is_some_and(|a| *a >= MAX_DELIVERIES)
    }

    /// Checks one queue delivery against the model.
    fn check_delivery(&self, d: &BrokerDelivery, now: Timestamp) {
        let id = &d.message.id;
        assert!(!self.acked.contains(id), "{id} delivered after its ack returned Ok");
        assert!(
            !self.out.iter().any(|o| &o.id == id && o.until > now),
            "{id} delivered while its lease was still running"
        );
        if let Some(k) = d.message.partition_key() {
            assert!(
                !self.out.iter().any(|o| o.key.as_deref() == Some(k) && o.until > now),
                "two messages of key {k} out at once"
            );
            // Every unfinished message of the key published before this one must be one that
            // may have been dead-lettered.
            for (pid, pk) in &self.published {
                if pid == id {
                    break;
                }
                if pk.as_deref() == Some(k) && !self.acked.contains(pid) {
                    assert!(self.may_be_dead(pid), "key {k}: {id} delivered before {pid}");
                }
            }
        }
    }
}

async fn run(ops: Vec<Op>) {
    let mut env = Env::new().await;
    let t = topic("m");
    env.broker.create_topic(&t, TopicConfig { partitions: 2, ..TopicConfig::default() }).await.unwrap();
    let qconf = SubscriptionConfig {
        lease_ms: LEASE_MS,
        max_deliveries: Some(MAX_DELIVERIES),
        ordered_by_key: true,
        ..SubscriptionConfig::queue()
    };
    env.broker.create_subscription(&t, &sub("q"), qconf).await.unwrap();
    env.broker.create_subscription(&t, &sub("s"), SubscriptionConfig::stream()).await.unwrap();
    let mut m = Model::default();
    let mut consumers = vec![
        env.broker.queue_consumer(&t, &sub("q")).unwrap(),
        env.broker.queue_consumer(&t, &sub("q")).unwrap(),
    ];
    let mut reader = env.broker.stream_consumer(&t, &sub("s")).unwrap();

    for op in ops {
        let now = env.clock.now();
        match op {
            Op::Publish { key, count } => {
                let batch: Vec<Message> = (0..count)
                    .map(|_| {
                        m.seq += 1;
                        let msg = msg(m.seq);
                        match key {
                            Some(k) => msg.with_key(format!("k{k}")),
                            None => msg,
                        }
                    })
                    .collect();
                let ids: Vec<_> =
                    batch.iter().map(|x| (x.id.clone(), x.partition_key().map(str::to_owned))).collect();
                env.broker.publish_batch(&t, batch, Default::default()).await.unwrap();
                m.published.extend(ids);
            }
            Op::Receive { consumer, max } => {
                let c = &consumers[consumer as usize];
                for d in c.receive(max as usize, Duration::ZERO).await.unwrap() {
                    m.check_delivery(&d, now);
                    let a = m.attempts_since_power_cut.entry(d.message.id.clone()).or_insert(0);
                    assert!(d.attempt >= *a, "attempts never go backwards without a power cut");
                    *a = d.attempt;
                    let a = m.attempts.entry(d.message.id.clone()).or_insert(0);
                    *a = (*a).max(d.attempt);
                    m.out.retain(|o| o.id != d.message.id);
                    m.out.push(Out {
                        receipt: d.receipt.unwrap(),
                        id: d.message.id.clone(),
                        key: d.message.partition_key().map(str::to_owned),
                        until: d.lease_expires_at.unwrap(),
                    });
                }
            }
            Op::Ack { pick } | Op::Nack { pick, .. } | Op::Extend { pick } if !m.out.is_empty() => {
                let o = m.out.remove(pick as usize % m.out.len());
                let c = &consumers[0]; // any consumer may settle any receipt
                let result = match op {
                    Op::Ack { .. } => c.ack(&o.receipt).await,
                    Op::Nack { delay_ms, .. } => {
                        c.nack(&o.receipt, Duration::from_millis(delay_ms.into()), Some("model".into())).await
                    }
                    _ => c.extend(&o.receipt, Duration::from_millis(LEASE_MS)).map(|_| ()),
                };
                let expired = o.until <= now;
                match result {
                    Ok(()) => {
                        assert!(!expired, "{} settled after its lease ran out", o.id);
                        match op {
                            Op::Ack { .. } => {
                                m.acked.insert(o.id);
                            }
                            Op::Extend { .. } => m.out.push(Out {
                                until: now.saturating_add(Duration::from_millis(LEASE_MS)),
                                ..o
                            }),
                            _ => {}
                        }
                    }
                    Err(BrokerError::LeaseExpired(_)) => {
                        assert!(expired, "{} reported expired too early", o.id)
                    }
                    // Expired and then dead-lettered: the receipt names nothing any more.
                    Err(BrokerError::UnknownReceipt(_)) if expired && m.may_be_dead(&o.id) => {}
                    Err(e) => panic!("settling {}: {e}", o.id),
                }
            }
            Op::Ack { .. } | Op::Nack { .. } | Op::Extend { .. } => {}
            Op::Advance { ms } => env.advance(Duration::from_millis(ms.into())),
            Op::StreamRead { max } => {
                for d in reader.receive(max as usize, Duration::ZERO).await.unwrap() {
                    if let Some(prev) = m.stream_last.insert(d.partition, d.offset) {
                        assert_eq!(d.offset, prev + 1, "stream order in partition {}", d.partition);
                    }
                    m.stream_next.insert(d.partition, d.offset + 1);
                }
            }
            Op::StreamCommit => {
                for (&p, &o) in &m.stream_next {
                    reader.commit(p, o).await.unwrap();
                }
            }
            Op::StreamSeekEarliest => {
                env.broker.seek(&t, &sub("s"), SeekTo::Earliest).await.unwrap();
                m.stream_last.clear();
                m.stream_next.clear();
            }
            Op::Tick => env.broker.tick().await.unwrap(),
            Op::Crash | Op::PowerCut => {
                drop(consumers);
                drop(reader);
                if matches!(op, Op::Crash) {
                    env.crash_and_restart().await;
                } else {
                    env.power_cut_and_restart().await;
                    m.attempts_since_power_cut.clear();
                }
                // Leases do not survive a restart: held receipts are void.
                m.out.clear();
                m.stream_last.clear();
                m.stream_next.clear();
                consumers = vec![
                    env.broker.queue_consumer(&t, &sub("q")).unwrap(),
                    env.broker.queue_consumer(&t, &sub("q")).unwrap(),
                ];
                reader = env.broker.stream_consumer(&t, &sub("s")).unwrap();
                assert_all_published_present(&env, &m).await;
            }
        }
    }

    // Eventually every message is acked or dead-lettered.
    let c = &consumers[0];
    for _ in 0..(MAX_DELIVERIES as usize + 3) * 4 {
        env.advance(Duration::from_millis(2 * LEASE_MS));
        env.broker.tick().await.unwrap();
        loop {
            let got = c.receive(100, Duration::ZERO).await.unwrap();
            if got.is_empty() {
                break;
            }
            for d in &got {
                assert!(!m.acked.contains(&d.message.id), "{} redelivered after ack", d.message.id);
                c.ack(&d.receipt.unwrap()).await.unwrap();
                m.acked.insert(d.message.id.clone());
            }
        }
    }
    env.broker.tick().await.unwrap();
    let dlq = env.drain(&env.broker.queue_consumer(&topic("m.q.dlq"), &sub("redrive")).unwrap()).await;
    let dead: HashSet<String> = dlq.iter().map(|d| d.message.id.clone()).collect();
    for (id, _) in &m.published {
        assert!(m.acked.contains(id) || dead.contains(id), "{id} neither acked nor dead-lettered");
    }
    assert_eq!(env.broker.stats(&t, &sub("q")).unwrap().backlog, 0);
    assert_all_published_present(&env, &m).await;
}

async fn assert_all_published_present(env: &Env, m: &Model) {
    let info = env.broker.topic_info(&topic("m")).unwrap();
    let total: u64 = info.partitions.iter().map(|p| p.end_offset).sum();
    assert_eq!(total as usize, m.published.len(), "every acknowledged publish is stored, once");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]
    #[test]
    fn broker_matches_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run(ops));
    }
}
