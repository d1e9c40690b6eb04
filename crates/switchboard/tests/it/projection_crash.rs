//! The projection crash test: a child process appends events and runs a projection of
//! them (now and then starting a rebuild), and is SIGKILLed at random moments, many times,
//! on SQLite and on PostgreSQL. Afterwards the read model, caught up, equals one built from
//! scratch by replaying the feed: no event lost, none applied twice, every stream in order.
//!
//! The child is this test binary run again with only [`child`] selected and `CHILD_DB`
//! set. Knob: `SWITCHBOARD_PROJECTION_KILLS` (kills per database, default 25).

use std::hash::BuildHasher;
use std::path::Path;
use std::time::Duration;

use switchboard::eventstore::{EventStore, EventStoreDatabase, EventStoreOptions};
use switchboard::projection::{Projection, ProjectionDatabase, Projector};

use crate::projection::{Totals, append_spread, model};

/// Set in the child only: `sqlite:<file>` or `postgres:<schema>`.
const CHILD_DB: &str = "SWITCHBOARD_PROJECTION_CHILD_DB";

fn random_below(n: u64) -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now()) % n.max(1)
}

fn kills() -> u32 {
    std::env::var("SWITCHBOARD_PROJECTION_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(25)
}

fn options<DB: EventStoreDatabase>() -> EventStoreOptions<DB> {
    EventStoreOptions::default().poll_interval(Duration::from_millis(20))
}

/// The child's work: the projection in small batches, sometimes a rebuild, and appends.
async fn workload<DB: ProjectionDatabase>(pool: sqlx::Pool<DB>)
where
    Totals: Projection<DB>,
{
    let store = EventStore::open(pool, options()).await.expect("store");
    let running = Projector::new("crash", Totals::new("crash_totals", "crash_applied"), store.clone())
        .expect("projector")
        .with_batch(1 + random_below(200) as usize)
        .start()
        .await
        .expect("start");
    let running = std::sync::Arc::new(running);
    if random_below(2) == 0 {
        let running = running.clone();
        tokio::spawn(async move { running.rebuild().await });
    }
    println!("READY");
    let mut n = store.head().await.expect("head").0 as i64;
    loop {
        append_spread(&store, n, n + 10).await;
        n += 10;
    }
}

/// The child: runs the workload until killed. Does nothing in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child() {
    let Ok(db) = std::env::var(CHILD_DB) else { return };
    if let Some(file) = db.strip_prefix("sqlite:") {
        workload(crate::util::sqlite_file(Path::new(file)).await).await;
    } else if let Some(schema) = db.strip_prefix("postgres:") {
        workload(crate::util::pg::pool_on(schema, 6).await).await;
    }
}

/// Runs the child on `db` and SIGKILLs it 20–400 ms after it is ready, `kills()` times.
fn kill_children(db: &str) -> u32 {
    let rounds = kills();
    for round in 0..rounds {
        let db = std::ffi::OsString::from(db);
        let mut child = switchboard_testkit::Child::spawn("projection_crash::child", &[(CHILD_DB, &db)]);
        assert!(
            child.wait_ready(Duration::from_secs(60)),
            "round {round}: the child did not get ready within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20 + random_below(380)));
        if let Some(status) = child.exited() {
            panic!("round {round}: the child ended on its own: {status}");
        }
        child.kill();
    }
    rounds
}

/// After the kills: the live model caught up (and a replay from scratch); the feed's head.
async fn catch_up_both<DB: ProjectionDatabase>(pool: sqlx::Pool<DB>) -> u64
where
    Totals: Projection<DB>,
{
    let store = EventStore::open(pool, options()).await.expect("store");
    let head = store.head().await.expect("head");
    let live = Projector::new("crash", Totals::new("crash_totals", "crash_applied"), store.clone())
        .expect("projector");
    let building = live.status().await.expect("status").rebuilding;
    if let Some((generation, at)) = building {
        // A rebuild the kills interrupted resumes from its own checkpoint and switches.
        let running = live.start().await.expect("start");
        assert_eq!(running.rebuild().await.expect("rebuild"), generation);
        running.wait_for(head).await.expect("caught up");
        running.shutdown().await;
        eprintln!(
            "a rebuild interrupted by the kills at position {at} resumed and switched to generation {generation}"
        );
    } else {
        assert_eq!(live.catch_up().await.expect("catch up"), head);
    }
    let scratch = Projector::new("scratch", Totals::new("scratch_totals", "scratch_applied"), store)
        .expect("projector");
    scratch.catch_up().await.expect("replay");
    head.0
}

/// The live model after the kills equals the replay.
macro_rules! check {
    ($pool:expr, $kills:expr, $db:literal) => {{
        let pool = $pool;
        let head = catch_up_both(pool.clone()).await;
        let after_kills = model!(&pool, "crash_totals", "crash_applied");
        let replayed = model!(&pool, "scratch_totals", "scratch_applied");
        assert_eq!(after_kills.1, head as i64, "every event applied");
        assert_eq!(after_kills.1, after_kills.2, "no event applied twice");
        assert!(after_kills.0.iter().all(|t| t.4 == 0), "each stream applied in order");
        assert_eq!(after_kills, replayed, "the model after the kills equals a replay from scratch");
        let generation: i64 = sqlx::query_scalar("SELECT live_generation FROM switchboard_projections WHERE name = 'crash'")
            .fetch_one(&pool)
            .await
            .expect("generation");
        eprintln!(
            "projection crash ({}): {} SIGKILLs, {head} events, live generation {generation} (rebuilds survive kills)",
            $db, $kills
        );
        assert!(head > u64::from($kills), "the children appended between kills");
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_projection_equals_a_replay_after_sigkills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("app.db");
    {
        let store = EventStore::open(crate::util::sqlite_file(&file).await, options()).await.expect("store");
        append_spread(&store, 0, 3000).await;
    }
    let kills = tokio::task::block_in_place(|| kill_children(&format!("sqlite:{}", file.display())));
    check!(crate::util::sqlite_file(&file).await, kills, "SQLite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_projection_equals_a_replay_after_sigkills() {
    switchboard_testkit::require_service!(Postgres);
    let (pool, schema) = crate::util::pg::pool(4).await;
    {
        let store = EventStore::open(pool.clone(), options()).await.expect("store");
        append_spread(&store, 0, 3000).await;
    }
    let kills = tokio::task::block_in_place(|| kill_children(&format!("postgres:{}", schema.name)));
    check!(pool, kills, "PostgreSQL");
}
