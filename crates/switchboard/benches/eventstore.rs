//! The event store and projections under load, with the figures BENCHMARKS.md quotes, on
//! SQLite (a WAL file, `synchronous = FULL`) and PostgreSQL (the machine's, fsync on):
//!
//! - **appends/s**: 8 writers, each on its own streams, append for 5 s: single events, then
//!   batches of 10 (and, on PostgreSQL, single events published through the outbox).
//! - **stream load**: a 10,000-event aggregate loaded by the repository with no snapshot
//!   and from a snapshot at its last version (median and p99 of 50 loads).
//! - **feed read**: 100,000 events read from the global feed in pages of 1,000.
//! - **projection**: a projection with one upsert per event catching up with those
//!   100,000 events in batches of 500.
//!
//! PostgreSQL is skipped when it does not answer at `SWITCHBOARD_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`). `SWITCHBOARD_BENCH_ONLY=appends|load|feed`
//! runs one part.
//!
//! `cargo bench -p switchboard --features sqlite,postgres --bench eventstore`

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use switchboard::eventstore::{
    Aggregate, EventStore, EventStoreDatabase, EventStoreOptions, ExpectedVersion, NewEvent, Position,
    RecordedEvent, Repository, SnapshotPolicy, StreamName,
};
use switchboard::outbox::Outbox;
use switchboard::projection::{Projection, ProjectionDatabase, ProjectionError, Projector, Tables};
use switchboard_testkit::unique_topic;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WRITERS: usize = 8;
const APPEND_FOR: Duration = Duration::from_secs(5);
const FEED_EVENTS: usize = 100_000;
const LOADED_EVENTS: u64 = 10_000;

fn payload(n: u64) -> NewEvent {
    NewEvent::json(
        "counter.added",
        &serde_json::json!({ "amount": n % 100, "note": "a typical small event" }),
    )
    .expect("json")
}

/// 8 writers on their own streams, for [`APPEND_FOR`]: events/s and appends/s.
async fn appends<DB: EventStoreDatabase>(label: &str, store: &EventStore<DB>, batch: usize) {
    let deadline = Instant::now() + APPEND_FOR;
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut appends = 0_u64;
                while Instant::now() < deadline {
                    let stream =
                        StreamName::new(format!("bench-b{batch}-w{w}-{}", appends % 64)).expect("name");
                    let events = (0..batch).map(|n| payload(appends + n as u64)).collect();
                    store.append(&stream, ExpectedVersion::Any, events).await.expect("append");
                    appends += 1;
                }
                appends
            })
        })
        .collect();
    let mut total = 0;
    for writer in writers {
        total += writer.await.expect("writer");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "eventstore/appends/{label}/batch {batch}: {:.0} appends/s, {:.0} events/s ({WRITERS} writers, {total} appends in {secs:.1} s)",
        total as f64 / secs,
        (total * batch as u64) as f64 / secs
    );
}

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    total: u64,
    adds: u64,
}

#[derive(Serialize, Deserialize)]
enum CounterEvent {
    #[serde(rename = "counter.added")]
    Added { amount: u64, note: String },
}

impl Aggregate for Counter {
    const KIND: &'static str = "counter";
    type Event = CounterEvent;
    type Command = u64;
    type Error = std::convert::Infallible;
    fn apply(&mut self, event: &CounterEvent) {
        let CounterEvent::Added { amount, .. } = event;
        self.total += amount;
        self.adds += 1;
    }
    fn handle(&self, amount: &u64) -> Result<Vec<CounterEvent>, Self::Error> {
        Ok(vec![CounterEvent::Added { amount: *amount, note: "a typical small event".into() }])
    }
}

/// Loads a 10,000-event aggregate with and without its snapshot.
async fn load<DB: EventStoreDatabase>(label: &str, store: &EventStore<DB>) {
    let plain = Repository::<Counter, DB>::new(store.clone());
    let stream = plain.stream_of("big").expect("name");
    for chunk in 0..LOADED_EVENTS / 1000 {
        let events = (0..1000).map(|n| payload(chunk * 1000 + n)).collect();
        store.append(&stream, ExpectedVersion::Any, events).await.expect("append");
    }
    let snapshotted =
        Repository::<Counter, DB>::new(store.clone()).with_snapshots(SnapshotPolicy::Every(LOADED_EVENTS));
    assert_eq!(snapshotted.save_snapshot("big").await.expect("snapshot"), LOADED_EVENTS);
    for (name, repository) in [("no snapshot", &plain), ("snapshot", &snapshotted)] {
        let mut times = Vec::new();
        let mut version = 0;
        for _ in 0..50 {
            let started = Instant::now();
            let loaded = repository.load("big").await.expect("load");
            times.push(started.elapsed());
            version = loaded.version;
            assert_eq!(loaded.from_snapshot, name == "snapshot");
        }
        times.sort();
        println!(
            "eventstore/load/{label}/{name}: median {:.3} ms, p99 {:.3} ms ({version} events)",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() * 99 / 100].as_secs_f64() * 1e3
        );
    }
}

/// One upsert per event: the shape of a typical read model.
struct Sums;

macro_rules! sums_projection {
    ($db:ty, $conn:ty) => {
        #[async_trait::async_trait]
        impl Projection<$db> for Sums {
            fn tables(&self) -> &[&'static str] {
                &["bench_sums"]
            }
            async fn create(&self, tx: &mut $conn, t: &Tables) -> Result<(), ProjectionError> {
                sqlx::query(
                    t.sql("CREATE TABLE {bench_sums} (stream TEXT PRIMARY KEY, total BIGINT NOT NULL)"),
                )
                .execute(tx)
                .await?;
                Ok(())
            }
            async fn apply(
                &self,
                tx: &mut $conn,
                t: &Tables,
                event: &RecordedEvent,
            ) -> Result<(), ProjectionError> {
                let amount = event.json::<serde_json::Value>()?["amount"].as_i64().unwrap_or(0);
                sqlx::query(t.sql(
                    "INSERT INTO {bench_sums} (stream, total) VALUES ($1, $2)
                     ON CONFLICT (stream) DO UPDATE SET total = {bench_sums}.total + excluded.total",
                ))
                .bind(event.stream.as_str())
                .bind(amount)
                .execute(tx)
                .await?;
                Ok(())
            }
        }
    };
}
sums_projection!(sqlx::Sqlite, sqlx::SqliteConnection);
sums_projection!(sqlx::Postgres, sqlx::PgConnection);

/// Fills the feed to [`FEED_EVENTS`], reads it all, then projects it.
async fn feed<DB: ProjectionDatabase>(label: &str, store: &EventStore<DB>)
where
    Sums: Projection<DB>,
{
    let start = store.head().await.expect("head").0 as usize;
    for n in (start..FEED_EVENTS).step_by(100) {
        let stream = StreamName::new(format!("feed-{}", n % 1000)).expect("name");
        let events = (0..100.min(FEED_EVENTS - n)).map(|k| payload((n + k) as u64)).collect();
        store.append(&stream, ExpectedVersion::Any, events).await.expect("append");
    }
    let head = store.head().await.expect("head");
    let started = Instant::now();
    let (mut after, mut read) = (Position::START, 0_usize);
    loop {
        let page = store.read_all(after, 1000).await.expect("read");
        let Some(last) = page.last() else { break };
        after = last.position.expect("numbered");
        read += page.len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "eventstore/feed/{label}: {:.0} events/s ({read} events to position {head} in {secs:.2} s)",
        read as f64 / secs
    );

    let projector = Projector::new("bench-sums", Sums, store.clone()).expect("projector");
    let started = Instant::now();
    projector.catch_up().await.expect("project");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "eventstore/projection/{label}: {:.0} events/s ({} events, batches of 500, {secs:.2} s)",
        head.0 as f64 / secs,
        head.0
    );
}

async fn run<DB: ProjectionDatabase>(label: &str, pool: sqlx::Pool<DB>, only: &str)
where
    Sums: Projection<DB>,
{
    let store = EventStore::open(pool.clone(), EventStoreOptions::default()).await.expect("store");
    if only.is_empty() || only == "appends" {
        appends(label, &store, 1).await;
        appends(label, &store, 10).await;
        if <DB as switchboard::outbox::OutboxDatabase>::NAME == "PostgreSQL" {
            let outbox = Outbox::open(pool.clone()).await.expect("outbox");
            let options = EventStoreOptions::default().publish_to(outbox, unique_topic("bench"), "/bench");
            let publishing = EventStore::open(pool.clone(), options).await.expect("store");
            appends(&format!("{label} + outbox"), &publishing, 1).await;
        }
    }
    if only.is_empty() || only == "load" {
        load(label, &store).await;
    }
    if only.is_empty() || only == "feed" {
        feed(label, &store).await;
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("eventstore: bench");
        return;
    }
    let only = std::env::var("SWITCHBOARD_BENCH_ONLY").unwrap_or_default();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("events.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30));
        let sqlite = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .expect("sqlite");
        run("SQLite", sqlite, &only).await;

        let url = std::env::var("SWITCHBOARD_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let admin = match sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url).await {
            Ok(pool) => pool,
            Err(e) => {
                println!("PostgreSQL at {url} does not answer ({e}): its cases are skipped");
                return;
            }
        };
        sqlx::query("DROP SCHEMA IF EXISTS switchboard_bench_es CASCADE")
            .execute(&admin)
            .await
            .expect("drop");
        sqlx::query("CREATE SCHEMA switchboard_bench_es").execute(&admin).await.expect("schema");
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(12)
            .connect_with(options.options([("search_path", "switchboard_bench_es")]))
            .await
            .expect("postgres");
        run("PostgreSQL", pool.clone(), &only).await;
        pool.close().await;
        let _ = sqlx::query("DROP SCHEMA IF EXISTS switchboard_bench_es CASCADE").execute(&admin).await;
    });
}
