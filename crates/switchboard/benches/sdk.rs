//! What the SDK costs on top of the broker, and what the router does with every layer on.
//!
//! - `overhead/broker_direct` vs `overhead/sdk_embedded`: publish, receive and ack one
//!   message at a time on one in-memory broker (topics without fsync, so the figure is CPU),
//!   straight through `Broker` and through `Bus`/`Subscription`/`Delivery`. The difference is
//!   the SDK's cost per message.
//! - `router/full_stack`: messages already on a topic, processed by a router whose handler
//!   is wrapped in the whole standard stack (tracing, metrics, correlation, dead-letter,
//!   inbox, per-key ordered concurrency, circuit breaker, retry, timeout, panic recovery).
//!
//! - `telemetry/off` vs `telemetry/otlp`: publish 2,000 messages and handle them through the
//!   full stack, first with no tracer provider (spans are no-ops), then with the OTLP
//!   exporter (`switchboard::telemetry`) shipping every producer and consumer span to an
//!   in-process `switchboard serve`'s service graph. The difference is what telemetry costs
//!   a message.
//!
//! `cargo bench -p switchboard --bench sdk`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchboard::embedded::EmbeddedBackend;
use switchboard::layers::{MemoryInbox, Middleware};
use switchboard::router::{Handled, Incoming, Router};
use switchboard::{Bus, Message, SubscriptionName, SubscriptionSpec, TopicName};
use switchboard_broker::{Broker, BrokerConfig, SubscriptionConfig, TopicConfig};
use switchboard_core::SystemClock;
use switchboard_storage::MemStorage;
use tower::Layer;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: u64 = 2_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

async fn memory_broker() -> Broker {
    Broker::open_with(Arc::new(MemStorage::new()), "/bench", Arc::new(SystemClock), BrokerConfig::default())
        .await
        .expect("broker")
}

fn no_fsync() -> TopicConfig {
    TopicConfig { fsync: switchboard_storage::FsyncPolicy::Never, ..TopicConfig::default() }
}

fn payload() -> bytes::Bytes {
    bytes::Bytes::from(vec![b'x'; 256])
}

fn overhead(c: &mut Criterion) {
    let rt = runtime();
    let broker = rt.block_on(memory_broker());
    let bus = Bus::from_backend(Arc::new(EmbeddedBackend::from_broker(broker.clone(), false)));
    let mut group = c.benchmark_group("overhead");
    group.throughput(Throughput::Elements(BATCH));
    let round = AtomicU64::new(0);

    group.bench_function(BenchmarkId::new("broker_direct", "256B"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let broker = broker.clone();
            let r = round.fetch_add(1, Ordering::Relaxed);
            async move {
                let topic = TopicName::new(format!("direct-{r}")).expect("name");
                let sub = SubscriptionName::new("s").expect("name");
                broker.create_topic(&topic, no_fsync()).await.expect("topic");
                broker.create_subscription(&topic, &sub, SubscriptionConfig::queue()).await.expect("sub");
                let consumer = broker.queue_consumer(&topic, &sub).expect("consumer");
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..BATCH {
                        broker.publish(&topic, Message::new("/b", "t", payload())).await.expect("publish");
                    }
                    let mut acked = 0;
                    while acked < BATCH {
                        for d in consumer.receive(64, Duration::from_secs(5)).await.expect("receive") {
                            consumer.ack(&d.receipt.expect("receipt")).await.expect("ack");
                            acked += 1;
                        }
                    }
                }
                start.elapsed()
            }
        });
    });

    group.bench_function(BenchmarkId::new("sdk_embedded", "256B"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (bus, broker) = (bus.clone(), broker.clone());
            let r = round.fetch_add(1, Ordering::Relaxed);
            async move {
                let topic = TopicName::new(format!("sdk-{r}")).expect("name");
                broker.create_topic(&topic, no_fsync()).await.expect("topic");
                let spec =
                    SubscriptionSpec::queue(SubscriptionName::new("s").expect("name")).with_prefetch(64);
                let mut sub = bus.subscribe(&topic, spec).await.expect("subscribe");
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..BATCH {
                        bus.publish(&topic, Message::new("/b", "t", payload())).await.expect("publish");
                    }
                    for _ in 0..BATCH {
                        let d = sub.next().await.expect("open").expect("delivery");
                        d.ack().await.expect("ack");
                    }
                }
                start.elapsed()
            }
        });
    });
    group.finish();
}

/// Publishes [`BATCH`] messages to a new topic (timed from the first publish when
/// `time_publish`) and handles them through the full stack; returns the time taken.
async fn publish_and_handle(bus: &Bus, broker: &Broker, name: String, time_publish: bool) -> Duration {
    let topic = TopicName::new(name).expect("name");
    broker.create_topic(&topic, no_fsync()).await.expect("topic");
    let messages: Vec<Message> =
        (0..BATCH).map(|n| Message::new("/b", "t", payload()).with_key(format!("k{}", n % 64))).collect();
    let published = Instant::now();
    for chunk in messages.chunks(500) {
        bus.publish_all(&topic, chunk.to_vec()).await.expect("publish");
    }
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    let handler = tower::service_fn(move |_: Incoming| {
        d.fetch_add(1, Ordering::Relaxed);
        async { Handled::Ok(vec![]) }
    });
    let stack = Middleware::default()
        .with_key_ordered_concurrency(Some(32))
        .with_inbox(Some(Arc::new(MemoryInbox::new(Duration::from_secs(60), 100_000))));
    let spec = SubscriptionSpec::queue(SubscriptionName::new("s").expect("name")).with_prefetch(256);
    let start = if time_publish { published } else { Instant::now() };
    let running = Router::new(bus.clone())
        .route("bench", topic, spec, stack.layer(handler))
        .start()
        .await
        .expect("start");
    while done.load(Ordering::Relaxed) < BATCH {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let took = start.elapsed();
    running.shutdown().await.expect("shutdown");
    took
}

/// The Bus, broker and runtime one group's publish-and-handle runs share.
struct Rig {
    rt: tokio::runtime::Runtime,
    broker: Broker,
    bus: Bus,
    round: AtomicU64,
}

impl Rig {
    fn new() -> Rig {
        let rt = runtime();
        let broker = rt.block_on(memory_broker());
        let bus = Bus::from_backend(Arc::new(EmbeddedBackend::from_broker(broker.clone(), false)));
        Rig { rt, broker, bus, round: AtomicU64::new(0) }
    }

    /// One benchmark of [`publish_and_handle`], each iteration on a topic of its own.
    fn bench(
        &self,
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        name: &str,
        time_publish: bool,
    ) {
        group.bench_function(BenchmarkId::new(name, "256B"), |b| {
            b.to_async(&self.rt).iter_custom(|iters| {
                let (bus, broker) = (self.bus.clone(), self.broker.clone());
                let r = self.round.fetch_add(1, Ordering::Relaxed);
                let name = name.to_owned();
                async move {
                    let mut total = Duration::ZERO;
                    for i in 0..iters {
                        total +=
                            publish_and_handle(&bus, &broker, format!("{name}-{r}-{i}"), time_publish).await;
                    }
                    total
                }
            });
        });
    }
}

fn telemetry(c: &mut Criterion) {
    let rig = Rig::new();
    let server = rig.rt.block_on(switchboard_testkit::TestServer::start());
    let mut group = c.benchmark_group("telemetry");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(20);
    rig.bench(&mut group, "off", true);
    let endpoint = format!("{}/v1/traces", server.http());
    let exporter = switchboard::telemetry::init(&endpoint, "bench", true).expect("exporter");
    rig.bench(&mut group, "otlp", true);
    group.finish();
    let _ = exporter.flush();
    let spans = server.server().state().telemetry.with_graph(|g| g.size());
    eprintln!("the broker's graph after the run: {spans:?} (nodes, edges)");
    drop(exporter);
    rig.rt.block_on(server.shutdown()).expect("shutdown");
}

fn router(c: &mut Criterion) {
    let rig = Rig::new();
    let mut group = c.benchmark_group("router");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(20);
    rig.bench(&mut group, "full_stack", false);
    group.finish();
}

criterion_group!(benches, overhead, router, telemetry);
criterion_main!(benches);
