//! The distributed-transaction patterns under load, with the figures BENCHMARKS.md quotes:
//!
//! - **outbox latency**: one writer commits a business row and its message every
//!   millisecond (1,000/s) for 10 s; the latency is from the commit returning to the
//!   broker confirming the relay's publish (p50/p99/max), on SQLite and on PostgreSQL
//!   (woken by `NOTIFY`).
//! - **outbox relay rate**: 50,000 committed rows, then one relay drains them; rows
//!   published per second.
//! - **sagas**: 2,000 three-step sagas started at once on the embedded broker, with
//!   participants answering over it and the orchestrator's state in SQLite; sagas completed
//!   per second.
//!
//! The broker is the durable embedded one (fsync before each publish is confirmed).
//! PostgreSQL cases are skipped when it does not answer at `SWITCHBOARD_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`).
//!
//! `cargo bench -p switchboard --bench patterns`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchboard::backend::{Backend, Publisher, Subscriber};
use switchboard::outbox::{Outbox, OutboxDatabase, Relay, RelayConfig};
use switchboard::saga::{Command, Orchestrator, Saga, Status, Step};
use switchboard::{
    Bus, BusError, Capabilities, Message, PublishOptions, Subscription, SubscriptionName, SubscriptionSpec,
    SubscriptionStats, TopicName, TopicSpec,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stamps the moment the broker confirmed each message id.
struct Stamping {
    inner: Arc<dyn Backend>,
    confirmed: Mutex<HashMap<String, Instant>>,
}

#[async_trait::async_trait]
impl Publisher for Stamping {
    async fn publish(
        &self,
        topic: &TopicName,
        messages: Vec<Message>,
        options: &PublishOptions,
    ) -> Result<(), BusError> {
        let ids: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
        self.inner.publish(topic, messages, options).await?;
        let now = Instant::now();
        let mut confirmed = self.confirmed.lock();
        for id in ids {
            confirmed.entry(id).or_insert(now);
        }
        Ok(())
    }
    async fn flush(&self) -> Result<(), BusError> {
        self.inner.flush().await
    }
}

#[async_trait::async_trait]
impl Subscriber for Stamping {
    async fn subscribe(&self, topic: &TopicName, spec: SubscriptionSpec) -> Result<Subscription, BusError> {
        self.inner.subscribe(topic, spec).await
    }
    async fn stats(&self, topic: &TopicName, sub: &SubscriptionName) -> Result<SubscriptionStats, BusError> {
        self.inner.stats(topic, sub).await
    }
}

#[async_trait::async_trait]
impl Backend for Stamping {
    fn name(&self) -> &'static str {
        "stamping"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn ensure_topic(&self, topic: &TopicName, spec: &TopicSpec) -> Result<(), BusError> {
        self.inner.ensure_topic(topic, spec).await
    }
    async fn delete_topic(&self, topic: &TopicName) -> Result<(), BusError> {
        self.inner.delete_topic(topic).await
    }
    async fn delete_subscription(&self, topic: &TopicName, sub: &SubscriptionName) -> Result<(), BusError> {
        self.inner.delete_subscription(topic, sub).await
    }
    async fn close(&self) -> Result<(), BusError> {
        self.inner.close().await
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn durable_bus(dir: &std::path::Path) -> Bus {
    Bus::connect(&format!("embedded:{}", dir.join("broker").display())).await.expect("broker")
}

/// One writer at 1,000 commits/s for `secs`, each with one message; latency from the
/// commit returning to the publish confirmed.
async fn outbox_latency<DB: OutboxDatabase>(label: &str, pool: sqlx::Pool<DB>, plain_commit: bool)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let stamping = Arc::new(Stamping {
        inner: durable_bus(dir.path()).await.backend().clone(),
        confirmed: Mutex::default(),
    });
    let outbox = Outbox::open(pool.clone()).await.expect("outbox");
    let relay = Relay::new(outbox.clone(), Bus::from_backend(stamping.clone())).spawn();
    let topic = TopicName::from_static("bench-outbox");
    let secs = 10;
    let mut committed = Vec::with_capacity(secs * 1000);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for n in 0..secs * 1000 {
        tick.tick().await;
        let id = format!("{label}-lat-{n}");
        let mut tx = pool.begin().await.expect("begin");
        let message = Message::new("/bench", "bench.event", vec![b'x'; 256])
            .with_id(id.clone())
            .with_key(format!("k{}", n % 64));
        outbox.enqueue(&mut tx, &topic, message).await.expect("enqueue");
        if plain_commit {
            tx.commit().await.expect("commit");
        } else {
            outbox.commit(tx).await.expect("commit");
        }
        committed.push((id, Instant::now()));
    }
    let offered = committed.len() as f64 / started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stamping.confirmed.lock().len() < committed.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.shutdown().await;
    let confirmed = stamping.confirmed.lock();
    let mut latencies: Vec<Duration> = committed
        .iter()
        .filter_map(|(id, at)| confirmed.get(id).map(|c| c.saturating_duration_since(*at)))
        .collect();
    latencies.sort();
    println!(
        "outbox latency  {label:<10} {:>6.0} commits/s offered, {} published: p50 {}  p99 {}  max {}",
        offered,
        latencies.len(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
}

/// Commits `rows` rows (100 per transaction), then times one relay draining them.
async fn outbox_drain<DB: OutboxDatabase>(label: &str, pool: sqlx::Pool<DB>, rows: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = durable_bus(dir.path()).await;
    let outbox = Outbox::open(pool.clone()).await.expect("outbox");
    let topic = TopicName::from_static("bench-drain");
    for chunk in 0..rows / 100 {
        let mut tx = pool.begin().await.expect("begin");
        for i in 0..100 {
            let n = chunk * 100 + i;
            let message =
                Message::new("/bench", "bench.event", vec![b'x'; 256]).with_key(format!("k{}", n % 64));
            outbox.enqueue(&mut tx, &topic, message).await.expect("enqueue");
        }
        tx.commit().await.expect("commit");
    }
    let relay = Relay::new(outbox.clone(), bus).with_config(RelayConfig::default().with_batch(1024));
    let started = Instant::now();
    let mut sent = 0;
    while sent < rows {
        sent += relay.run_once().await.expect("round").sent;
    }
    let elapsed = started.elapsed();
    println!(
        "outbox relay    {label:<10} {rows} rows drained in {:.2} s: {:.0} rows/s",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64()
    );
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Trip {
    n: u32,
}

/// `count` three-step sagas on the embedded broker with SQLite state at `synchronous`.
async fn sagas(count: u32, synchronous: sqlx::sqlite::SqliteSynchronous) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = durable_bus(dir.path()).await;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("sagas.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("sqlite");
    let outbox = Outbox::sqlite(pool.clone()).await.expect("outbox");
    let topics: Vec<TopicName> =
        ["bench-flight", "bench-hotel", "bench-car"].into_iter().map(TopicName::from_static).collect();
    let mut saga = Saga::<Trip>::new("bench-trip", 1);
    for (i, topic) in topics.iter().enumerate() {
        let (t, c) = (topic.clone(), topic.clone());
        saga = saga.step(
            Step::command(["flight", "hotel", "car"][i], move |s: &Trip| {
                Command::new(t.clone(), Message::new("/bench", "book", s.n.to_string()))
            })
            .compensate(move |s: &Trip| {
                Command::new(c.clone(), Message::new("/bench", "cancel", s.n.to_string()))
            }),
        );
    }
    // Participants answer every command at once.
    let mut workers = Vec::new();
    for topic in &topics {
        let mut sub = bus
            .subscribe(
                topic,
                SubscriptionSpec::queue(SubscriptionName::from_static("participant")).with_prefetch(256),
            )
            .await
            .expect("subscribe");
        let bus = bus.clone();
        workers.push(tokio::spawn(async move {
            while let Some(Ok(d)) = sub.next().await {
                if let Ok((to, reply)) =
                    switchboard::request::reply_to(d.message(), Message::new("/p", "booked", ""))
                {
                    bus.publish(&to, reply).await.expect("reply");
                }
                d.ack().await.expect("ack");
            }
        }));
    }
    let relay = Relay::new(outbox.clone(), bus.clone()).spawn();
    let orchestrator = Orchestrator::new(saga, pool, outbox).await.expect("orchestrator");
    let running = orchestrator.clone().spawn(bus, Duration::from_millis(200)).await.expect("spawn");
    let started = Instant::now();
    let mut starters = Vec::new();
    for w in 0..4 {
        let orchestrator = orchestrator.clone();
        starters.push(tokio::spawn(async move {
            for n in (w..count).step_by(4) {
                orchestrator.start(&format!("trip-{n}"), Trip { n }).await.expect("start");
            }
        }));
    }
    for s in starters {
        s.await.expect("starter");
    }
    loop {
        let done = orchestrator.list(Some(Status::Completed), count + 1).await.expect("list").len();
        if done as u32 >= count || started.elapsed() > Duration::from_secs(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    running.shutdown().await;
    relay.shutdown().await;
    for w in workers {
        w.abort();
    }
    println!(
        "sagas           embedded   {count} three-step sagas, SQLite synchronous={synchronous:?}, completed in {:.2} s: {:.0} sagas/s",
        elapsed.as_secs_f64(),
        f64::from(count) / elapsed.as_secs_f64()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("patterns: bench");
        return;
    }
    // `SWITCHBOARD_BENCH_ONLY=sagas` (or `outbox`) runs one part, for profiling.
    let only = std::env::var("SWITCHBOARD_BENCH_ONLY").unwrap_or_default();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        if only == "sagas" {
            sagas(2_000, sqlx::sqlite::SqliteSynchronous::Full).await;
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = |name: &str| {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(dir.path().join(name))
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(30));
            sqlx::sqlite::SqlitePoolOptions::new().max_connections(4).connect_with(options)
        };
        outbox_latency("SQLite", sqlite("latency.db").await.expect("sqlite"), false).await;
        let url = std::env::var("SWITCHBOARD_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let pg = match sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(&url).await {
            Ok(pool) => Some(pool),
            Err(e) => {
                println!("PostgreSQL at {url} does not answer ({e}): its cases are skipped");
                None
            }
        };
        if let Some(pg) = &pg {
            // A schema of its own, so the figures start from empty tables.
            sqlx::query("DROP SCHEMA IF EXISTS switchboard_bench CASCADE").execute(pg).await.expect("drop");
            sqlx::query("CREATE SCHEMA switchboard_bench").execute(pg).await.expect("schema");
            let options: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(8)
                .connect_with(options.options([("search_path", "switchboard_bench")]))
                .await
                .expect("pool");
            outbox_latency("PostgreSQL", pool.clone(), true).await;
            outbox_drain("PostgreSQL", pool, 50_000).await;
        }
        outbox_drain("SQLite", sqlite("drain.db").await.expect("sqlite"), 50_000).await;
        // FULL (sqlx's default) fsyncs every commit; NORMAL in WAL mode fsyncs at checkpoints,
        // which survives a process crash but may lose the last commits on power loss.
        if only != "outbox" {
            sagas(2_000, sqlx::sqlite::SqliteSynchronous::Full).await;
            sagas(2_000, sqlx::sqlite::SqliteSynchronous::Normal).await;
        }
        if let Some(pg) = &pg {
            let _ = sqlx::query("DROP SCHEMA IF EXISTS switchboard_bench CASCADE").execute(pg).await;
        }
    });
}
