//! Projections on SQLite and PostgreSQL: built once per event (even with two runners),
//! rebuilt while writes continue, lag, a stalled handler, and the refusals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use switchboard::eventstore::{
    EventStore, EventStoreDatabase, EventStoreError, EventStoreOptions, ExpectedVersion, NewEvent, Position,
    RecordedEvent, StreamName,
};
use switchboard::projection::{Projection, ProjectionError, Projector, StreamProjector, Tables};

/// Per-stream totals, and one row per applied event: a double apply shows as a repeated
/// position, a lost one as a missing one, a reordering as `out_of_order`.
pub(crate) struct Totals {
    names: [&'static str; 2],
    /// While set, every event of type `poison` fails.
    pub(crate) poisoned: Arc<AtomicBool>,
}

impl Totals {
    pub(crate) fn new(totals: &'static str, applied: &'static str) -> Totals {
        Totals { names: [totals, applied], poisoned: Arc::new(AtomicBool::new(false)) }
    }

    fn sql(&self, tables: &Tables, template: &str) -> sqlx::AssertSqlSafe<String> {
        tables.sql(
            &template
                .replace("{totals}", &format!("{{{}}}", self.names[0]))
                .replace("{applied}", &format!("{{{}}}", self.names[1])),
        )
    }
}

macro_rules! totals_projection {
    ($db:ty, $conn:ty) => {
        #[async_trait::async_trait]
        impl Projection<$db> for Totals {
            fn tables(&self) -> &[&'static str] {
                &self.names
            }

            async fn create(&self, tx: &mut $conn, tables: &Tables) -> Result<(), ProjectionError> {
                for ddl in [
                    "CREATE TABLE {totals} (stream TEXT PRIMARY KEY, events BIGINT NOT NULL, sum BIGINT NOT NULL,
                        last_version BIGINT NOT NULL, out_of_order BIGINT NOT NULL)",
                    "CREATE TABLE {applied} (position BIGINT NOT NULL, stream TEXT NOT NULL, version BIGINT NOT NULL)",
                ] {
                    sqlx::query(self.sql(tables, ddl)).execute(&mut *tx).await?;
                }
                Ok(())
            }

            async fn apply(&self, tx: &mut $conn, tables: &Tables, event: &RecordedEvent) -> Result<(), ProjectionError> {
                if event.ty == "poison" && self.poisoned.load(Ordering::SeqCst) {
                    return Err(ProjectionError::handler("poisoned event"));
                }
                let n = event.json::<serde_json::Value>()?["n"].as_i64().unwrap_or(0);
                let version = event.version as i64;
                sqlx::query(self.sql(
                    tables,
                    "INSERT INTO {totals} (stream, events, sum, last_version, out_of_order) VALUES ($1, 1, $2, $3, 0)
                     ON CONFLICT (stream) DO UPDATE SET events = {totals}.events + 1, sum = {totals}.sum + excluded.sum,
                         out_of_order = {totals}.out_of_order
                             + CASE WHEN excluded.last_version = {totals}.last_version + 1 THEN 0 ELSE 1 END,
                         last_version = excluded.last_version",
                ))
                .bind(event.stream.as_str())
                .bind(n)
                .bind(version)
                .execute(&mut *tx)
                .await?;
                sqlx::query(self.sql(tables, "INSERT INTO {applied} (position, stream, version) VALUES ($1, $2, $3)"))
                    .bind(event.position.map_or(0, |p| p.0 as i64))
                    .bind(event.stream.as_str())
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
                Ok(())
            }
        }
    };
}

totals_projection!(sqlx::Sqlite, sqlx::SqliteConnection);
totals_projection!(sqlx::Postgres, sqlx::PgConnection);

pub(crate) fn numbered(n: i64) -> NewEvent {
    NewEvent::json("counted", &serde_json::json!({ "n": n })).expect("json")
}

pub(crate) async fn append_spread<DB: EventStoreDatabase>(store: &EventStore<DB>, from: i64, to: i64) {
    for n in from..to {
        let s = StreamName::new(format!("s-{}", n % 17)).expect("name");
        store.append(&s, ExpectedVersion::Any, vec![numbered(n)]).await.expect("append");
    }
}

/// The read model behind `totals`/`applied` (views or tables), as comparable rows.
macro_rules! model {
    ($pool:expr, $totals:expr, $applied:expr) => {{
        let totals: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT stream, events, sum, last_version, out_of_order FROM {} ORDER BY stream",
            $totals
        )))
        .fetch_all($pool)
        .await
        .expect("totals");
        let (rows, distinct): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), count(DISTINCT position) FROM {}",
            $applied
        )))
        .fetch_one($pool)
        .await
        .expect("applied");
        (totals, rows, distinct)
    }};
}

macro_rules! projection_cases {
    ($db:ident, $open:expr) => {
        mod $db {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn each_event_takes_effect_once_even_with_two_runners_and_lag_is_reported() {
                let (pool, _guard) = $open;
                let options = EventStoreOptions::default().poll_interval(Duration::from_millis(20));
                let store = EventStore::open(pool.clone(), options).await.expect("store");
                append_spread(&store, 0, 600).await;
                let projector = Projector::new("totals", Totals::new("totals", "applied"), store.clone()).expect("projector");
                let first = projector.start().await.expect("start");
                let second = Projector::new("totals", Totals::new("totals", "applied"), store.clone())
                    .expect("projector")
                    .with_batch(37)
                    .start()
                    .await
                    .expect("a second runner of the same projection");
                append_spread(&store, 600, 900).await;
                let head = store.head().await.expect("head");
                first.wait_for(head).await.expect("caught up");
                second.wait_for(head).await.expect("caught up");
                let (totals, rows, distinct) = model!(&pool, "totals", "applied");
                assert_eq!((rows, distinct), (900, 900), "every event applied exactly once");
                assert_eq!(totals.len(), 17);
                assert!(totals.iter().all(|t| t.4 == 0), "each stream's events in order");
                assert_eq!(totals.iter().map(|t| t.2).sum::<i64>(), (0..900).sum::<i64>());
                assert_eq!(first.lag().await.expect("lag").events, 0);
                second.shutdown().await;
                first.shutdown().await;

                append_spread(&store, 900, 950).await;
                let idle = Projector::new("totals", Totals::new("totals", "applied"), store.clone()).expect("projector");
                let lag = idle.lag().await.expect("lag");
                assert_eq!(lag.events, 50, "a stopped projection falls behind by what was appended");
                assert_eq!(idle.catch_up().await.expect("catch up"), Position(950));
                assert_eq!(idle.lag().await.expect("lag").events, 0);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_rebuild_while_writes_continue_ends_equal_to_the_live_model_and_never_stops_serving() {
                let (pool, _guard) = $open;
                let options = EventStoreOptions::default().poll_interval(Duration::from_millis(20));
                let store = EventStore::open(pool.clone(), options).await.expect("store");
                append_spread(&store, 0, 1500).await;
                let running = Projector::new("live", Totals::new("live_totals", "live_applied"), store.clone())
                    .expect("projector")
                    .with_batch(100)
                    .start()
                    .await
                    .expect("start");
                running.wait_for(store.head().await.expect("head")).await.expect("built");
                let stop = Arc::new(AtomicBool::new(false));
                let writer = {
                    let (store, stop) = (store.clone(), stop.clone());
                    tokio::spawn(async move {
                        let mut n = 1500;
                        while !stop.load(Ordering::SeqCst) {
                            append_spread(&store, n, n + 5).await;
                            n += 5;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        n
                    })
                };
                let reader = {
                    let (pool, stop) = (pool.clone(), stop.clone());
                    tokio::spawn(async move {
                        let (mut last, mut reads) = (0_i64, 0_u32);
                        while !stop.load(Ordering::SeqCst) {
                            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM live_applied")
                                .fetch_one(&pool)
                                .await
                                .expect("readers are served throughout the rebuild");
                            assert!(rows >= last, "the model readers see never goes back ({rows} after {last})");
                            (last, reads) = (rows, reads + 1);
                            tokio::time::sleep(Duration::from_millis(3)).await;
                        }
                        reads
                    })
                };
                let generation = running.rebuild().await.expect("rebuild");
                assert_eq!(generation, 2);
                tokio::time::sleep(Duration::from_millis(100)).await;
                stop.store(true, Ordering::SeqCst);
                let written = writer.await.expect("writer");
                let reads = reader.await.expect("reader");
                let head = store.head().await.expect("head");
                assert_eq!(head.0 as i64, written);
                running.wait_for(head).await.expect("caught up");
                assert_eq!(running.status().live_generation, 2);

                let scratch = Projector::new("scratch", Totals::new("scratch_totals", "scratch_applied"), store.clone()).expect("projector");
                scratch.catch_up().await.expect("replay");
                let live = model!(&pool, "live_totals", "live_applied");
                let replayed = model!(&pool, "scratch_totals", "scratch_applied");
                assert_eq!(live.1, written, "the rebuilt model holds every event once");
                assert_eq!(live, replayed, "the rebuilt model equals a replay from scratch");
                let old = sqlx::query("SELECT count(*) FROM live_applied_g1").fetch_one(&pool).await;
                assert!(old.is_err(), "the old generation's tables are dropped");
                eprintln!("projection rebuild: {written} events, {reads} reads served during the rebuild");
                running.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_event_the_handler_cannot_apply_stalls_the_projection_until_it_can() {
                let (pool, _guard) = $open;
                let options = EventStoreOptions::default().poll_interval(Duration::from_millis(20));
                let store = EventStore::open(pool.clone(), options).await.expect("store");
                append_spread(&store, 0, 10).await;
                let poison = NewEvent::json("poison", &serde_json::json!({"n": 1000})).expect("json");
                store.append(&StreamName::new("s-poison").expect("name"), ExpectedVersion::Any, vec![poison]).await.expect("append");
                append_spread(&store, 10, 20).await;
                let totals = Totals::new("stall_totals", "stall_applied");
                let poisoned = totals.poisoned.clone();
                poisoned.store(true, Ordering::SeqCst);
                let running = Projector::new("stall", totals, store.clone()).expect("projector").with_batch(5).start().await.expect("start");
                tokio::time::timeout(Duration::from_secs(10), async {
                    while running.status().last_error.is_none() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
                .await
                .expect("the failure is reported");
                let status = running.status();
                assert!(status.last_error.as_deref().unwrap_or("").contains("poisoned"), "{status:?}");
                assert_eq!(status.checkpoint, Position(10), "stopped before the event it cannot apply, not past it");
                poisoned.store(false, Ordering::SeqCst);
                tokio::time::timeout(Duration::from_secs(60), running.wait_for(Position(21))).await.expect("resumes").expect("caught up");
                let (_, rows, distinct) = model!(&pool, "stall_totals", "stall_applied");
                assert_eq!((rows, distinct), (21, 21));
                running.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_projection_fed_by_a_bus_stream_applies_each_message_once_even_when_redelivered() {
                let (pool, _guard) = $open;
                let (bus, _dir) = crate::util::bus().await;
                let topic = switchboard_testkit::unique_topic("es-stream-projection");
                bus.create_topic(&topic, 1).await.expect("topic");
                let publish = |from: i64, to: i64| {
                    let (bus, topic) = (bus.clone(), topic.clone());
                    async move {
                        for n in from..to {
                            let version = n / 5 + 1;
                            let m = switchboard::Message::new("/accounts", "counted", serde_json::json!({"n": n}).to_string())
                                .with_subject(format!("acct-{}", n % 5))
                                .with_extension("streamversion", version.to_string());
                            bus.publish(&topic, m).await.expect("publish");
                        }
                    }
                };
                publish(0, 40).await;
                let start = || {
                    StreamProjector::new("bus-totals", Totals::new("bus_totals", "bus_applied"), pool.clone(), bus.clone(), topic.clone())
                        .expect("projector")
                        .start()
                };
                let running = start().await.expect("start");
                running.wait_for_applied(40).await;
                publish(40, 60).await;
                running.wait_for_applied(60).await;
                running.shutdown().await;
                let before = model!(&pool, "bus_totals", "bus_applied");
                assert_eq!((before.1, before.2), (60, 60));
                assert_eq!(before.0.iter().map(|t| t.2).sum::<i64>(), (0..60).sum::<i64>());

                // The subscription is gone: the topic is read again from its start, and every
                // offset at or below the checkpoint is acked without being applied.
                bus.backend().delete_subscription(&topic, &switchboard::SubscriptionName::from_static("bus-totals")).await.expect("delete");
                let again = start().await.expect("restart");
                publish(60, 61).await;
                again.wait_for_applied(1).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert_eq!(again.applied(), 1, "only the new message was applied");
                again.shutdown().await;
                let after = model!(&pool, "bus_totals", "bus_applied");
                assert_eq!((after.1, after.2), (61, 61), "redelivered messages took effect once");
            }

            #[tokio::test]
            async fn a_checkpoint_ahead_of_the_feed_and_bad_names_are_refused() {
                let (pool, _guard) = $open;
                let store = EventStore::open(pool.clone(), EventStoreOptions::default()).await.expect("store");
                append_spread(&store, 0, 3).await;
                let projector = Projector::new("ahead", Totals::new("ahead_totals", "ahead_applied"), store.clone()).expect("projector");
                projector.catch_up().await.expect("built");
                sqlx::query("UPDATE switchboard_projection_checkpoints SET position = 99 WHERE name = 'ahead'")
                    .execute(&pool)
                    .await
                    .expect("corrupt the checkpoint");
                let projector = Projector::new("ahead", Totals::new("ahead_totals", "ahead_applied"), store.clone()).expect("projector");
                let err = projector.start().await.err().expect("refused");
                assert!(
                    matches!(err, ProjectionError::Store(EventStoreError::CheckpointAhead { checkpoint: Position(99), head: Position(3) })),
                    "{err}"
                );
                let (_, rows, _) = model!(&pool, "ahead_totals", "ahead_applied");
                assert_eq!(rows, 3, "nothing was applied");

                for name in ["", "has space", "semi;colon", &"p".repeat(101)] {
                    let err = Projector::new(name, Totals::new("ok_totals", "ok_applied"), store.clone()).err().expect("refused");
                    assert!(matches!(err, ProjectionError::Invalid(_)), "{name:?}: {err}");
                }
                for table in ["Upper", "1digit", "drop table x", "with-dash"] {
                    let table: &'static str = Box::leak(table.to_owned().into_boxed_str());
                    let err = Projector::new("fine", Totals::new(table, "ok_applied"), store.clone()).err().expect("refused");
                    assert!(matches!(err, ProjectionError::Invalid(_)), "{table:?}: {err}");
                }
            }
        }
    };
}

projection_cases!(sqlite, {
    let dir = tempfile::tempdir().expect("tempdir");
    (crate::util::sqlite_file(&dir.path().join("app.db")).await, dir)
});

projection_cases!(postgres, {
    switchboard_testkit::require_service!(Postgres);
    crate::util::pg::pool(12).await
});
pub(crate) use model;
