//! Broker throughput on the real filesystem (ext4 here), in process.
//!
//! `cargo bench -p switchboard-broker --bench broker`
//!
//! - `publish_always_1k`: 8 publisher tasks, each keeping 64 single-message publishes in flight,
//!   1 KiB messages, fsync `always` (group commit); throughput in bytes.
//! - `publish_never_batch_100b`: batches of 100 messages of 100 bytes, fsync `never`.
//! - `queue_publish_receive_ack_1k`: one publisher (batches of 64) and one consumer (receive up
//!   to 1,000, ack them in one call) on a queue subscription, fsync `interval` (5 ms);
//!   elements = messages that went all the way through.
//! - `stream_replay`: a fresh stream consumer reading a retained partition from the start.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchboard_broker::{
    Broker, FsyncPolicy, PublishOptions, RetentionConfig, SeekTo, SubscriptionConfig, TopicConfig,
};
use switchboard_core::{Message, SubscriptionName, TopicName};

// The allocator the `switchboard` binary ships with, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn topic_config(fsync: FsyncPolicy) -> TopicConfig {
    TopicConfig {
        fsync,
        dedup_window_ms: 0,
        retention: RetentionConfig { max_age_ms: None, max_bytes: None, until_acked: false },
        ..TopicConfig::default()
    }
}

fn message(size: usize) -> Message {
    // The attributes count towards the size; keep them short so data dominates.
    Message::new("/b", "b", vec![b'x'; size])
}

async fn fresh(fsync: FsyncPolicy) -> (tempfile::TempDir, Broker, TopicName) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::open(dir.path()).await.expect("open");
    let t = TopicName::new("bench").expect("name");
    broker.create_topic(&t, topic_config(fsync)).await.expect("topic");
    (dir, broker, t)
}

fn publish_always(c: &mut Criterion) {
    let rt = runtime();
    let (_dir, broker, t) = rt.block_on(fresh(FsyncPolicy::Always));
    let mut g = c.benchmark_group("broker");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    const PER_TASK: usize = 64 * 40;
    g.throughput(Throughput::Bytes((8 * PER_TASK * 1024) as u64));
    g.bench_function("publish_always_1k", |b| {
        b.to_async(&rt).iter(|| {
            let (broker, t) = (broker.clone(), t.clone());
            async move {
                // 8 publishers, each one task keeping 64 publishes in flight.
                let tasks: Vec<_> = (0..8)
                    .map(|_| {
                        let (broker, t) = (broker.clone(), t.clone());
                        tokio::spawn(async move {
                            let mut inflight = futures::stream::FuturesUnordered::new();
                            for _ in 0..PER_TASK {
                                if inflight.len() >= 64 {
                                    futures::StreamExt::next(&mut inflight).await;
                                }
                                let (broker, t) = (broker.clone(), t.clone());
                                inflight.push(async move {
                                    broker.publish(&t, message(1024 - 40)).await.expect("publish");
                                });
                            }
                            while futures::StreamExt::next(&mut inflight).await.is_some() {}
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("task");
                }
            }
        })
    });
    g.finish();
}

fn publish_never_batches(c: &mut Criterion) {
    let rt = runtime();
    let (_dir, broker, t) = rt.block_on(fresh(FsyncPolicy::Never));
    let mut g = c.benchmark_group("broker");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    const BATCHES: usize = 200;
    g.throughput(Throughput::Elements((BATCHES * 100) as u64));
    g.bench_function("publish_never_batch_100b", |b| {
        b.to_async(&rt).iter(|| {
            let (broker, t) = (broker.clone(), t.clone());
            async move {
                for _ in 0..BATCHES {
                    let batch = (0..100).map(|_| message(100 - 40)).collect();
                    broker.publish_batch(&t, batch, PublishOptions::default()).await.expect("publish");
                }
            }
        })
    });
    g.finish();
}

fn queue_pipeline(c: &mut Criterion) {
    let rt = runtime();
    let (_dir, broker, t) = rt.block_on(fresh(FsyncPolicy::Interval { ms: 5 }));
    let s = SubscriptionName::new("workers").expect("name");
    let config = SubscriptionConfig { max_in_flight_per_consumer: 10_000, ..SubscriptionConfig::queue() };
    rt.block_on(broker.create_subscription(&t, &s, config)).expect("subscription");
    let mut g = c.benchmark_group("broker");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    const N: usize = 50_000;
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("queue_publish_receive_ack_1k", |b| {
        b.to_async(&rt).iter(|| {
            let (broker, t, s) = (broker.clone(), t.clone(), s.clone());
            async move {
                let publisher = {
                    let (broker, t) = (broker.clone(), t.clone());
                    tokio::spawn(async move {
                        for _ in 0..N / 64 {
                            let batch = (0..64).map(|_| message(1024 - 40)).collect();
                            broker
                                .publish_batch(&t, batch, PublishOptions::default())
                                .await
                                .expect("publish");
                        }
                    })
                };
                let consumer = broker.queue_consumer(&t, &s).expect("consumer");
                let mut done = 0;
                while done < (N / 64) * 64 {
                    let got = consumer.receive(1000, Duration::from_secs(5)).await.expect("receive");
                    let receipts: Vec<_> = got.iter().filter_map(|d| d.receipt).collect();
                    consumer.ack_many(&receipts).await.expect("ack");
                    done += receipts.len();
                }
                publisher.await.expect("publisher");
            }
        })
    });
    g.finish();
}

fn stream_replay(c: &mut Criterion) {
    let rt = runtime();
    let (_dir, broker, t) = rt.block_on(fresh(FsyncPolicy::Never));
    const N: usize = 200_000;
    const SIZE: usize = 1024;
    rt.block_on(async {
        for _ in 0..N / 1000 {
            let batch = (0..1000).map(|_| message(SIZE - 40)).collect();
            broker.publish_batch(&t, batch, PublishOptions::default()).await.expect("publish");
        }
    });
    let s = SubscriptionName::new("replay").expect("name");
    rt.block_on(broker.create_subscription(&t, &s, SubscriptionConfig::stream())).expect("subscription");
    let mut g = c.benchmark_group("broker");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Bytes((N * SIZE) as u64));
    g.bench_function("stream_replay_1k", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (broker, t, s) = (broker.clone(), t.clone(), s.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    broker.seek(&t, &s, SeekTo::Earliest).await.expect("seek");
                    let reader = broker.stream_consumer(&t, &s).expect("consumer");
                    let start = Instant::now();
                    let mut read = 0;
                    while read < N {
                        read += reader.receive(5000, Duration::ZERO).await.expect("receive").len();
                    }
                    total += start.elapsed();
                }
                total
            }
        })
    });
    g.finish();
}

criterion_group!(benches, publish_always, publish_never_batches, queue_pipeline, stream_replay);
criterion_main!(benches);
