//! The transactional outbox on SQLite and on the machine's PostgreSQL: every case runs on
//! both (the `outbox_cases!` macro instantiates it per database), and the PostgreSQL-only
//! cases cover what only PostgreSQL has (several relays, a connection killed mid-commit).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchboard::outbox::{Outbox, OutboxError, OutboxRowId, Relay, RelayConfig};
use switchboard::{Bus, Message, TopicName};
use switchboard_testkit::unique_topic;

use crate::util::recording::Recording;

/// A bus whose publishes are recorded, over a fresh durable embedded broker.
async fn recorded_bus() -> (Bus, Arc<Recording>, tempfile::TempDir) {
    let (bus, dir) = crate::util::bus().await;
    let recording = Recording::new(bus.backend().clone());
    (Bus::from_backend(recording.clone()), recording, dir)
}

fn order(n: u32, key: &str) -> Message {
    Message::new("/orders", "order.created", format!("{n}")).with_id(format!("order-{n}")).with_key(key)
}

/// A backoff short enough that a test waits it out in milliseconds.
fn quick() -> RelayConfig {
    RelayConfig::default()
        .with_backoff(switchboard_policy::Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
            ..switchboard_policy::Backoff::default()
        })
        .with_poll_interval(Duration::from_millis(20))
}

/// Ids of the messages published to `topic`, in publish order.
fn ids_on(recording: &Recording, topic: &TopicName) -> Vec<String> {
    recording.published().into_iter().filter(|(t, _)| t == topic.as_str()).map(|(_, m)| m.id).collect()
}

macro_rules! outbox_cases {
    ($db:ident, $open:expr) => {
        mod $db {
            use super::*;

            #[tokio::test]
            async fn a_committed_transaction_publishes_its_messages_and_a_rolled_back_one_nothing() {
                let (pool, _guard) = $open;
                sqlx::query("CREATE TABLE orders (id TEXT PRIMARY KEY)").execute(&pool).await.expect("table");
                let outbox = Outbox::open(pool.clone()).await.expect("outbox");
                let (bus, recording, _dir) = recorded_bus().await;
                let topic = unique_topic("outbox");

                let mut tx = pool.begin().await.expect("begin");
                sqlx::query("INSERT INTO orders (id) VALUES ('o-1')").execute(&mut *tx).await.expect("row");
                outbox.enqueue(&mut tx, &topic, order(1, "o-1")).await.expect("enqueue");
                outbox.commit(tx).await.expect("commit");

                let mut tx = pool.begin().await.expect("begin");
                sqlx::query("INSERT INTO orders (id) VALUES ('o-2')").execute(&mut *tx).await.expect("row");
                outbox.enqueue(&mut tx, &topic, order(2, "o-2")).await.expect("enqueue");
                tx.rollback().await.expect("rollback");

                let mut tx = pool.begin().await.expect("begin");
                outbox.enqueue(&mut tx, &topic, order(3, "o-3")).await.expect("enqueue");
                tx.commit().await.expect("a plain commit works too");

                let relay = Relay::new(outbox.clone(), bus);
                let report = relay.run_once().await.expect("round");
                assert_eq!((report.claimed, report.sent), (2, 2));
                assert_eq!(ids_on(&recording, &topic), ["order-1", "order-3"], "ids are the ones enqueued");
                assert_eq!(relay.run_once().await.expect("round").claimed, 0, "sent rows are not sent again");
                let stats = outbox.stats().await.expect("stats");
                assert_eq!((stats.pending, stats.sent, stats.parked), (0, 2, 0));
            }

            #[tokio::test]
            async fn a_failed_publish_is_retried_and_holds_back_only_its_own_key() {
                let (pool, _guard) = $open;
                let outbox = Outbox::open(pool.clone()).await.expect("outbox");
                let (bus, recording, _dir) = recorded_bus().await;
                let (a, b) = (unique_topic("outbox-a"), unique_topic("outbox-b"));
                for (topic, message) in [(&a, order(1, "k1")), (&b, order(2, "k2")), (&b, order(3, "k1"))] {
                    let mut tx = pool.begin().await.expect("begin");
                    outbox.enqueue(&mut tx, topic, message).await.expect("enqueue");
                    outbox.commit(tx).await.expect("commit");
                }
                recording.fail_next(1);
                let relay = Relay::new(outbox.clone(), bus).with_config(quick());
                let first = relay.run_once().await.expect("round");
                assert_eq!((first.sent, first.retried), (1, 1), "{first:?}");
                assert_eq!(ids_on(&recording, &b), ["order-2"], "k1's second row waits behind its first");
                let due = first.next_due.expect("the failed row is due again");

                tokio::time::sleep(Duration::from_millis(30)).await;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_millis();
                assert!(now >= u128::try_from(due).expect("positive"), "the backoff has passed");
                let second = relay.run_once().await.expect("round");
                assert_eq!(second.sent, 2, "{second:?}");
                assert_eq!(ids_on(&recording, &a), ["order-1"]);
                assert_eq!(ids_on(&recording, &b), ["order-2", "order-3"]);
            }

            #[tokio::test]
            async fn a_row_for_a_topic_that_is_gone_is_parked_with_its_error_until_an_operator_retries_it() {
                let (pool, _guard) = $open;
                let outbox = Outbox::open(pool.clone()).await.expect("outbox");
                let (bus, recording, _dir) = recorded_bus().await;
                let (gone, live) = (unique_topic("outbox-gone"), unique_topic("outbox-live"));
                recording.refuse(gone.as_str(), true);
                let mut tx = pool.begin().await.expect("begin");
                let parked_id = outbox.enqueue(&mut tx, &gone, order(1, "k")).await.expect("enqueue");
                outbox.enqueue(&mut tx, &live, order(2, "k")).await.expect("enqueue");
                outbox.commit(tx).await.expect("commit");

                let relay = Relay::new(outbox.clone(), bus);
                let report = relay.run_once().await.expect("round");
                assert_eq!((report.sent, report.parked), (1, 1), "{report:?}");
                let parked = outbox.parked(10).await.expect("parked");
                assert_eq!(parked.len(), 1);
                assert_eq!(
                    (parked[0].id, parked[0].message_id.as_str(), parked[0].attempts),
                    (parked_id, "order-1", 1)
                );
                assert!(parked[0].error.contains("does not exist"), "{}", parked[0].error);
                assert_eq!(outbox.stats().await.expect("stats").parked, 1, "kept, not dropped");

                match outbox.retry_parked(OutboxRowId(i64::MAX)).await {
                    Err(OutboxError::NotParked(id)) => assert_eq!(id.0, i64::MAX),
                    other => panic!("an unknown row is refused: {other:?}"),
                }
                recording.refuse(gone.as_str(), false);
                outbox.retry_parked(parked_id).await.expect("retry");
                assert_eq!(relay.run_once().await.expect("round").sent, 1);
                assert_eq!(ids_on(&recording, &gone), ["order-1"]);
                assert_eq!(outbox.stats().await.expect("stats").parked, 0);
            }

            #[tokio::test]
            async fn an_invalid_message_is_refused_and_leaves_the_transaction_as_it_was() {
                let (pool, _guard) = $open;
                sqlx::query("CREATE TABLE orders (id TEXT PRIMARY KEY)").execute(&pool).await.expect("table");
                let outbox = Outbox::open(pool.clone()).await.expect("outbox");
                let topic = unique_topic("outbox");
                let mut tx = pool.begin().await.expect("begin");
                sqlx::query("INSERT INTO orders (id) VALUES ('o-1')").execute(&mut *tx).await.expect("row");
                let mut bad = order(1, "o-1");
                bad.source.clear();
                assert!(matches!(
                    outbox.enqueue(&mut tx, &topic, bad).await,
                    Err(OutboxError::InvalidMessage(_))
                ));
                let huge = Message::new(
                    "/orders",
                    "order.created",
                    vec![b'x'; 2 * switchboard::outbox::MAX_MESSAGE_SIZE],
                );
                assert!(matches!(
                    outbox.enqueue(&mut tx, &topic, huge).await,
                    Err(OutboxError::InvalidMessage(_))
                ));
                outbox.commit(tx).await.expect("the transaction is still good");
                let rows: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&pool).await.expect("count");
                assert_eq!(rows, 1);
                assert_eq!(outbox.stats().await.expect("stats").pending, 0);
            }

            #[tokio::test]
            async fn a_spawned_relay_wakes_on_commit_and_deletes_sent_rows_after_the_retention() {
                let (pool, _guard) = $open;
                let outbox = Outbox::open(pool.clone()).await.expect("outbox");
                let (bus, recording, _dir) = recorded_bus().await;
                let topic = unique_topic("outbox");
                // Polling once a minute: a prompt publish is the wake-up's doing.
                let mut config = RelayConfig::default()
                    .with_poll_interval(Duration::from_secs(60))
                    .with_retention(Duration::ZERO);
                config.purge_every = Duration::from_millis(10);
                let relay = Relay::new(outbox.clone(), bus).with_config(config).spawn();
                tokio::time::sleep(Duration::from_millis(200)).await;

                let mut tx = pool.begin().await.expect("begin");
                outbox.enqueue(&mut tx, &topic, order(1, "k")).await.expect("enqueue");
                outbox.commit(tx).await.expect("commit");
                switchboard_testkit::eventually(
                    "the publish, without waiting for a poll",
                    Duration::from_secs(10),
                    async || ids_on(&recording, &topic).len() == 1,
                )
                .await;
                // The publish shows before the relay marks its row sent: wait for both the mark
                // and the purge.
                let mut stats = outbox.stats().await.expect("stats");
                for _ in 0..200 {
                    if (stats.pending, stats.sent) == (0, 0) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    stats = outbox.stats().await.expect("stats");
                }
                assert_eq!((stats.pending, stats.sent), (0, 0), "the sent row was deleted");
                relay.shutdown().await;
            }
        }
    };
}

outbox_cases!(sqlite, {
    let dir = tempfile::tempdir().expect("tempdir");
    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("app.db")).create_if_missing(true);
    (sqlx::SqlitePool::connect_with(options).await.expect("sqlite"), dir)
});

outbox_cases!(postgres, {
    switchboard_testkit::require_service!(Postgres);
    crate::util::pg::pool(8).await
});

mod postgres_only {
    use super::*;

    #[tokio::test]
    async fn two_relays_share_the_work_publish_each_row_once_and_keep_each_keys_commit_order() {
        switchboard_testkit::require_service!(Postgres);
        let (pool, _guard) = crate::util::pg::pool(12).await;
        let outbox = Outbox::postgres(pool.clone()).await.expect("outbox");
        let (bus, _dir) = crate::util::bus().await;
        let topic = unique_topic("outbox-shared");
        let first = Recording::new(bus.backend().clone());
        let second = Recording::new(bus.backend().clone());
        let config = quick().with_batch(50);
        let relays = [
            Relay::new(outbox.clone(), Bus::from_backend(first.clone())).with_config(config.clone()).spawn(),
            Relay::new(outbox.clone(), Bus::from_backend(second.clone())).with_config(config).spawn(),
        ];
        // Four writers interleave on ten keys; each key's rows carry its own sequence.
        const PER_WRITER: u32 = 250;
        let mut writers = Vec::new();
        for w in 0..4_u32 {
            let (pool, outbox, topic) = (pool.clone(), outbox.clone(), topic.clone());
            writers.push(tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    let n = w * PER_WRITER + i;
                    let mut tx = pool.begin().await.expect("begin");
                    outbox
                        .enqueue(&mut tx, &topic, order(n, &format!("k{}", n % 10)))
                        .await
                        .expect("enqueue");
                    tx.commit().await.expect("commit");
                }
            }));
        }
        for w in writers {
            w.await.expect("writer");
        }
        let total = 4 * PER_WRITER as usize;
        let published = || ids_on(&first, &topic).len() + ids_on(&second, &topic).len();
        switchboard_testkit::eventually("every row published", Duration::from_secs(60), async || {
            published() >= total
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        for relay in relays {
            relay.shutdown().await;
        }
        let (a, b) = (ids_on(&first, &topic), ids_on(&second, &topic));
        assert_eq!(a.len() + b.len(), total, "no row was published twice");
        assert!(!a.is_empty() && !b.is_empty(), "both relays took part: {} and {}", a.len(), b.len());

        // Per key, the publish order is the commit order: PostgreSQL's row ids for one key
        // rise with commit order (the enqueue's key lock), and no key is in two relays' hands.
        let ids_in_commit_order: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, message_id FROM switchboard_outbox ORDER BY id")
                .fetch_all(&pool)
                .await
                .expect("rows");
        let rank: HashMap<String, i64> = ids_in_commit_order.into_iter().map(|(id, m)| (m, id)).collect();
        let mut last: HashMap<String, i64> = HashMap::new();
        let all = first.published().into_iter().chain(second.published()).collect::<Vec<_>>();
        // Two relays never hold one key, so per key all its messages went through one
        // relay's calls in order; checking each relay's sequence per key is the order.
        for recording in [&first, &second] {
            last.clear();
            for (_, message) in recording.published() {
                let key = message.partition_key().expect("keyed").to_owned();
                let r = rank[&message.id];
                if let Some(prev) = last.insert(key.clone(), r) {
                    assert!(prev < r, "key {key}: row {r} published after row {prev}");
                }
            }
        }
        assert_eq!(all.len(), total);
    }

    #[tokio::test]
    async fn a_connection_killed_mid_commit_publishes_nothing_of_its_transaction_and_keeps_the_rest() {
        switchboard_testkit::require_service!(Postgres);
        let (pool, _guard) = crate::util::pg::pool(4).await;
        sqlx::query("CREATE TABLE orders (id TEXT PRIMARY KEY)").execute(&pool).await.expect("table");
        let outbox = Outbox::postgres(pool.clone()).await.expect("outbox");
        let (bus, recording, _dir) = recorded_bus().await;
        let topic = unique_topic("outbox");

        let mut tx = pool.begin().await.expect("begin");
        outbox.enqueue(&mut tx, &topic, order(1, "k")).await.expect("enqueue");
        tx.commit().await.expect("commit");

        let mut tx = pool.begin().await.expect("begin");
        sqlx::query("INSERT INTO orders (id) VALUES ('o-2')").execute(&mut *tx).await.expect("row");
        outbox.enqueue(&mut tx, &topic, order(2, "k")).await.expect("enqueue");
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *tx).await.expect("pid");
        // The database goes away under the transaction.
        let admin = sqlx::PgPool::connect(&switchboard_testkit::postgres_url()).await.expect("admin");
        sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&admin).await.expect("terminate");
        assert!(tx.commit().await.is_err(), "the commit reports the lost connection");

        let report = Relay::new(outbox.clone(), bus).run_once().await.expect("round");
        assert_eq!(report.sent, 1);
        assert_eq!(ids_on(&recording, &topic), ["order-1"], "nothing of the lost transaction");
        let orders: i64 =
            sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&pool).await.expect("count");
        assert_eq!(orders, 0);
    }
}
