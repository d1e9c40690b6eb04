//! The outbox crash test: a child process commits business rows with their messages (and
//! rolls some back) while its relay publishes to a durable embedded broker, and is SIGKILLed
//! at random moments, many times, on SQLite and on PostgreSQL. Afterwards (one last relay
//! drains what is left) every committed order's message has been published, the broker's
//! log read by a deduplicating consumer holds each exactly once, and no message of a
//! rolled-back transaction exists.
//!
//! The child is this test binary run again with only [`child`] selected and `CHILD_DB`
//! set. Knob: `SWITCHBOARD_OUTBOX_KILLS` (kills per database, default 25).

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::path::Path;
use std::time::Duration;

use switchboard::outbox::{Outbox, Relay, RelayConfig};
use switchboard::{Bus, Message, Start, SubscriptionName, SubscriptionSpec, TopicName};

/// Set in the child only: `sqlite:<file>` or `postgres:<schema>`.
const CHILD_DB: &str = "SWITCHBOARD_OUTBOX_CHILD_DB";
/// Set in the child only: the broker's data directory.
const CHILD_BROKER: &str = "SWITCHBOARD_OUTBOX_CHILD_BROKER";
const TOPIC: &str = "outbox-crash";

fn random_below(n: u64) -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now()) % n.max(1)
}

fn kills() -> u32 {
    std::env::var("SWITCHBOARD_OUTBOX_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(25)
}

fn order(n: i64) -> Message {
    Message::new("/orders", "order.created", format!("{n}"))
        .with_id(format!("order-{n}"))
        .with_key(format!("k{}", n % 5))
}

/// The child's workload on one pool type: orders committed with their message, and every
/// third one followed by a transaction that writes and enqueues, then rolls back.
macro_rules! workload {
    ($pool:expr, $bus:expr) => {{
        let pool = $pool;
        sqlx::query("CREATE TABLE IF NOT EXISTS orders (n BIGINT PRIMARY KEY)")
            .execute(&pool)
            .await
            .expect("table");
        let outbox = Outbox::open(pool.clone()).await.expect("outbox");
        let _relay = Relay::new(outbox.clone(), $bus)
            .with_config(RelayConfig::default().with_poll_interval(Duration::from_millis(20)))
            .spawn();
        let start: i64 =
            sqlx::query_scalar("SELECT coalesce(max(n), 0) FROM orders").fetch_one(&pool).await.expect("max");
        println!("READY");
        let topic = TopicName::from_static(TOPIC);
        for n in start + 1.. {
            let mut tx = pool.begin().await.expect("begin");
            sqlx::query("INSERT INTO orders (n) VALUES ($1)").bind(n).execute(&mut *tx).await.expect("order");
            outbox.enqueue(&mut tx, &topic, order(n)).await.expect("enqueue");
            outbox.commit(tx).await.expect("commit");
            if n % 3 == 0 {
                let mut tx = pool.begin().await.expect("begin");
                sqlx::query("INSERT INTO orders (n) VALUES ($1)")
                    .bind(-n)
                    .execute(&mut *tx)
                    .await
                    .expect("order");
                let doomed = order(-n).with_id(format!("rolled-back-{n}"));
                outbox.enqueue(&mut tx, &topic, doomed).await.expect("enqueue");
                tx.rollback().await.expect("rollback");
            }
        }
    }};
}

/// The child: runs the workload until killed. Does nothing in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child() {
    let Ok(db) = std::env::var(CHILD_DB) else { return };
    let broker = std::env::var(CHILD_BROKER).expect("broker dir");
    let bus = Bus::connect(&format!("embedded:{broker}")).await.expect("broker");
    if let Some(file) = db.strip_prefix("sqlite:") {
        workload!(sqlite_pool(Path::new(file)).await, bus);
    } else if let Some(schema) = db.strip_prefix("postgres:") {
        workload!(crate::util::pg::pool_on(schema, 4).await, bus);
    }
}

async fn sqlite_pool(file: &Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    sqlx::SqlitePool::connect_with(options).await.expect("sqlite")
}

/// Runs the child on `db` and SIGKILLs it 50–500 ms after it is ready, `kills()` times.
fn kill_children(db: &str, broker: &Path) -> u32 {
    let rounds = kills();
    for round in 0..rounds {
        let db = std::ffi::OsString::from(db);
        let mut child = switchboard_testkit::Child::spawn(
            "outbox_crash::child",
            &[(CHILD_DB, &db), (CHILD_BROKER, broker.as_os_str())],
        );
        assert!(
            child.wait_ready(Duration::from_secs(60)),
            "round {round}: the child did not get ready within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50 + random_below(450)));
        if let Some(status) = child.exited() {
            panic!("round {round}: the child ended on its own: {status}");
        }
        child.kill();
    }
    rounds
}

/// Every message id in the broker's log, with how often it was stored.
async fn log_contents(bus: &Bus) -> HashMap<String, u32> {
    let topic = TopicName::from_static(TOPIC);
    let spec = SubscriptionSpec::stream(SubscriptionName::from_static("audit")).with_start(Start::Earliest);
    let mut sub = bus.subscribe(&topic, spec).await.expect("subscribe");
    let mut seen = HashMap::new();
    while let Some(delivery) = switchboard_testkit::next_within(&mut sub, Duration::from_secs(2)).await {
        *seen.entry(delivery.message().id.clone()).or_insert(0) += 1;
        delivery.ack().await.expect("ack");
    }
    seen
}

/// After the kills: drains the outbox, then checks the log against the committed orders.
macro_rules! check {
    ($pool:expr, $broker:expr, $kills:expr, $db:literal) => {{
        let pool = $pool;
        let bus = Bus::connect(&format!("embedded:{}", $broker.display())).await.expect("broker");
        let outbox = Outbox::open(pool.clone()).await.expect("outbox");
        let relay = Relay::new(outbox.clone(), bus.clone());
        while outbox.stats().await.expect("stats").pending > 0 {
            relay.run_once().await.expect("drain");
        }
        let committed: Vec<i64> = sqlx::query_scalar("SELECT n FROM orders ORDER BY n").fetch_all(&pool).await.expect("orders");
        assert!(committed.iter().all(|n| *n > 0), "a rolled-back order row exists");
        let expected: BTreeSet<String> = committed.iter().map(|n| format!("order-{n}")).collect();
        let seen = log_contents(&bus).await;
        let stored: BTreeSet<String> = seen.keys().cloned().collect();
        let rolled_back: Vec<&String> = stored.iter().filter(|id| id.starts_with("rolled-back")).collect();
        assert!(rolled_back.is_empty(), "messages of rolled-back transactions were published: {rolled_back:?}");
        let missing: Vec<&String> = expected.difference(&stored).collect();
        assert!(missing.is_empty(), "committed messages never published: {missing:?}");
        let extra: Vec<&String> = stored.difference(&expected).collect();
        assert!(extra.is_empty(), "published messages without a committed order: {extra:?}");
        let duplicates: u32 = seen.values().map(|n| n - 1).sum();
        eprintln!(
            "outbox crash ({}): {} SIGKILLs, {} committed orders, each published once to a deduplicating reader \
             ({duplicates} copies stored twice in the log)",
            $db,
            $kills,
            expected.len()
        );
        assert!(expected.len() as u32 > $kills, "the children committed work between kills");
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_loses_no_committed_message_and_publishes_no_rolled_back_one_across_sigkills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, broker) = (dir.path().join("app.db"), dir.path().join("broker"));
    let kills = tokio::task::block_in_place(|| kill_children(&format!("sqlite:{}", file.display()), &broker));
    check!(sqlite_pool(&file).await, broker, kills, "SQLite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_loses_no_committed_message_and_publishes_no_rolled_back_one_across_sigkills() {
    switchboard_testkit::require_service!(Postgres);
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = dir.path().join("broker");
    let (pool, schema) = crate::util::pg::pool(4).await;
    let kills = tokio::task::block_in_place(|| kill_children(&format!("postgres:{}", schema.name), &broker));
    check!(pool, broker, kills, "PostgreSQL");
}
