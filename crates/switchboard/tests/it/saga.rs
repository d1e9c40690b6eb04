//! Sagas through the test harness (SQLite in memory, a manual clock, no broker), and the
//! orchestrator's database guarantees on a SQLite file and on PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use switchboard::saga::{
    Command, ReplyOutcome, Saga, SagaDatabase, SagaError, SagaTest, Status, Step, StepFailed,
};
use switchboard::{Message, TopicName};

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Checkout {
    order: String,
    reservation: Option<String>,
    confirmed: bool,
}

fn command(topic: &'static str, ty: &'static str) -> impl Fn(&Checkout) -> Command + Send + Sync + 'static {
    move |s: &Checkout| {
        Command::new(TopicName::from_static(topic), Message::new("/orders", ty, s.order.clone()))
    }
}

/// reserve stock (released on compensation) → charge (refunded) → confirm (a call).
fn checkout(confirmations: Arc<AtomicU32>) -> Saga<Checkout> {
    checkout_with(confirmations, 1)
}

/// [`checkout`] whose charge is sent up to `charge_attempts` times when it times out.
fn checkout_with(confirmations: Arc<AtomicU32>, charge_attempts: u32) -> Saga<Checkout> {
    Saga::new("checkout", 1)
        .step(
            Step::command("reserve", command("inventory", "stock.reserve"))
                .on_reply(|s: &mut Checkout, reply: &Message| match reply.ty.as_str() {
                    "stock.reserved" => {
                        s.reservation = Some(String::from_utf8_lossy(&reply.data).into_owned());
                        Ok(())
                    }
                    _ => Err(StepFailed::new("out of stock")),
                })
                .compensate(command("inventory", "stock.release"))
                .timeout(Duration::from_secs(10)),
        )
        .step(
            Step::command("charge", command("payment", "payment.charge"))
                .on_reply(|_, reply| {
                    if reply.ty == "payment.charged" { Ok(()) } else { Err(StepFailed::new("card declined")) }
                })
                .compensate(command("payment", "payment.refund"))
                .on_compensation_reply(|_, reply| {
                    if reply.ty == "payment.refunded" {
                        Ok(())
                    } else {
                        Err(StepFailed::new("refund failed"))
                    }
                })
                .timeout(Duration::from_secs(10))
                .retry(charge_attempts),
        )
        .step(Step::call("confirm", move |mut s: Checkout| {
            let confirmations = confirmations.clone();
            async move {
                confirmations.fetch_add(1, Ordering::SeqCst);
                s.confirmed = true;
                Ok(s)
            }
        }))
        .compensation_retries(
            3,
            switchboard_policy::Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(1),
                multiplier: 1.0,
                jitter: 0.0,
            },
        )
}

fn state(order: &str) -> Checkout {
    Checkout { order: order.into(), ..Checkout::default() }
}

fn reply(ty: &str, data: &str) -> Message {
    Message::new("/participant", ty, data.to_owned())
}

async fn only_command<DB: SagaDatabase>(test: &SagaTest<Checkout, DB>) -> Command {
    let mut sent = test.sent().await.expect("sent");
    assert_eq!(sent.len(), 1, "one command: {sent:?}");
    sent.pop().expect("one")
}

/// The behaviour cases, on the harness's in-memory SQLite and on the machine's PostgreSQL
/// (a schema per test).
macro_rules! saga_cases {
    ($db:ident, $harness:ident $(, $pre:stmt)*) => {
        mod $db {
            use super::*;

        #[tokio::test]
        async fn a_saga_runs_its_steps_in_order_and_completes() {
            $($pre;)*
            let confirmations = Arc::new(AtomicU32::new(0));
            let (test, _guard) = $harness(checkout(confirmations.clone())).await;
            test.start("o-1", state("o-1")).await.expect("start");
            let reserve = only_command(&test).await;
            assert_eq!((reserve.topic.as_str(), reserve.message.ty.as_str()), ("inventory", "stock.reserve"));
            let ext = |k: &str| reserve.message.extensions.get(k).cloned();
            assert_eq!(ext("replyto").as_deref(), Some("checkout.replies"));
            assert_eq!(ext("sagaid").as_deref(), Some("o-1"));
            assert_eq!(ext("idempotencykey"), ext("correlationid"));
            assert_eq!(reserve.message.partition_key(), Some("o-1"), "one instance's commands keep their order");

            assert_eq!(
                test.reply(&reserve, reply("stock.reserved", "r-9")).await.expect("reply"),
                ReplyOutcome::Applied
            );
            let charge = only_command(&test).await;
            assert_eq!(charge.message.ty, "payment.charge");
            test.reply(&charge, reply("payment.charged", "")).await.expect("reply");
            let view = test.instance("o-1").await.expect("instance");
            assert_eq!(view.summary.status, Status::Completed);
            assert_eq!(view.state.reservation.as_deref(), Some("r-9"));
            assert!(view.state.confirmed);
            assert_eq!(confirmations.load(Ordering::SeqCst), 1);
            let kinds: Vec<&str> = view.history.iter().map(|h| h.kind.as_str()).collect();
            assert_eq!(
                kinds,
                ["started", "command-sent", "reply", "command-sent", "reply", "call", "call-done", "completed"]
            );
            assert!(test.sent().await.expect("sent").is_empty());
        }

        #[tokio::test]
        async fn a_failed_step_compensates_the_steps_before_it_in_reverse_order() {
            $($pre;)*
            let (test, _guard) = $harness(checkout(Arc::default())).await;
            test.start("o-2", state("o-2")).await.expect("start");
            let reserve = only_command(&test).await;
            test.reply(&reserve, reply("stock.reserved", "r-1")).await.expect("reply");
            let charge = only_command(&test).await;
            test.reply(&charge, reply("payment.declined", "")).await.expect("reply");
            // The declined charge took no effect: only the reservation is undone.
            let release = only_command(&test).await;
            assert_eq!(release.message.ty, "stock.release");
            let view = test.instance("o-2").await.expect("instance");
            assert_eq!(view.summary.status, Status::Compensating);
            assert_eq!(view.summary.error.as_deref(), Some("card declined"));
            test.reply(&release, reply("stock.released", "")).await.expect("reply");
            assert_eq!(test.instance("o-2").await.expect("instance").summary.status, Status::Compensated);
        }

        #[tokio::test]
        async fn a_step_with_no_reply_in_time_is_compensated_itself_then_the_ones_before() {
            $($pre;)*
            let (test, _guard) = $harness(checkout(Arc::default())).await;
            test.start("o-3", state("o-3")).await.expect("start");
            let reserve = only_command(&test).await;
            test.reply(&reserve, reply("stock.reserved", "r-1")).await.expect("reply");
            let charge = only_command(&test).await;
            let view = test.instance("o-3").await.expect("instance");
            assert_eq!(
                view.summary.awaiting,
                charge.message.extensions.get("correlationid").cloned(),
                "waits for the charge"
            );
            assert!(view.summary.timeout_at.is_some());
            assert_eq!(test.advance(Duration::from_secs(9)).await.expect("tick"), 0, "not due yet");
            assert_eq!(test.advance(Duration::from_secs(2)).await.expect("tick"), 1);
            // The charge may have gone through: refund it, then release.
            let refund = only_command(&test).await;
            assert_eq!(refund.message.ty, "payment.refund");
            // The charge's reply arrives late: it changes nothing.
            match test.reply(&charge, reply("payment.charged", "")).await.expect("reply") {
                ReplyOutcome::Ignored(why) => assert!(why.contains("late"), "{why}"),
                other => panic!("a late reply is ignored, got {other:?}"),
            }
            test.reply(&refund, reply("payment.refunded", "")).await.expect("reply");
            let release = only_command(&test).await;
            assert_eq!(release.message.ty, "stock.release");
            test.reply(&release, reply("stock.released", "")).await.expect("reply");
            let view = test.instance("o-3").await.expect("instance");
            assert_eq!(view.summary.status, Status::Compensated);
            assert!(view.history.iter().any(|h| h.kind == "reply-ignored"));
        }

        #[tokio::test]
        async fn a_step_allowed_to_retry_is_sent_again_with_the_same_key_before_it_is_compensated() {
            $($pre;)*
            let confirmations = Arc::new(AtomicU32::new(0));
            let (test, _guard) = $harness(checkout_with(confirmations.clone(), 2)).await;
            for order in ["o-r1", "o-r2"] {
                test.start(order, state(order)).await.expect("start");
            }
            for reserve in test.sent().await.expect("sent") {
                test.reply(&reserve, reply("stock.reserved", "r-1")).await.expect("reply");
            }
            let first = test.sent().await.expect("sent");
            assert_eq!(first.len(), 2, "a charge each");
            assert_eq!(test.advance(Duration::from_secs(11)).await.expect("tick"), 2);
            // Timed out once: each charge goes again, a new message with the same key.
            let again = test.sent().await.expect("sent");
            assert_eq!(again.len(), 2, "sent again, not refunded: {again:?}");
            for (a, b) in first.iter().zip(&again) {
                assert_eq!(b.message.ty, "payment.charge");
                assert_ne!(a.message.id, b.message.id);
                assert_eq!(a.message.extensions.get("idempotencykey"), b.message.extensions.get("idempotencykey"));
            }
            // o-r1's second attempt is answered: it goes forward and completes.
            let r1 = again.iter().find(|c| c.message.data.as_ref() == b"o-r1").expect("o-r1's charge");
            test.reply(r1, reply("payment.charged", "")).await.expect("reply");
            assert_eq!(test.instance("o-r1").await.expect("instance").summary.status, Status::Completed);
            assert_eq!(confirmations.load(Ordering::SeqCst), 1);
            // o-r2's attempts are spent: now it is compensated, charge first.
            assert_eq!(test.advance(Duration::from_secs(11)).await.expect("tick"), 1);
            let refund = only_command(&test).await;
            assert_eq!(refund.message.ty, "payment.refund");
            assert_eq!(test.instance("o-r2").await.expect("instance").summary.status, Status::Compensating);
        }

        #[tokio::test]
        async fn a_compensation_that_keeps_failing_is_retried_then_parked_until_an_operator_retries_it() {
            $($pre;)*
            let (test, _guard) = $harness(checkout(Arc::default())).await;
            test.start("o-4", state("o-4")).await.expect("start");
            test.reply(&only_command(&test).await, reply("stock.reserved", "r")).await.expect("reply");
            test.reply(&only_command(&test).await, reply("payment.charged", "")).await.expect("reply");
            // Completed: cancelling a finished instance is refused.
            assert!(matches!(test.orchestrator().cancel("o-4").await, Err(SagaError::Finished(_))));

            test.start("o-5", state("o-5")).await.expect("start");
            test.reply(&only_command(&test).await, reply("stock.reserved", "r")).await.expect("reply");
            let charge = only_command(&test).await;
            test.orchestrator().cancel("o-5").await.expect("cancel");
            let mut refund = only_command(&test).await;
            let key = refund.message.extensions.get("idempotencykey").cloned();
            for attempt in 1..=3 {
                assert_eq!(refund.message.id, format!("o-5/1/c/{attempt}"), "each attempt has its own id");
                assert_eq!(refund.message.extensions.get("idempotencykey").cloned(), key, "and one idempotency key");
                test.reply(&refund, reply("payment.refund-failed", "")).await.expect("reply");
                if attempt < 3 {
                    assert!(test.sent().await.expect("sent").is_empty(), "the retry waits for its backoff");
                    test.advance(Duration::from_millis(1100)).await.expect("tick");
                    refund = only_command(&test).await;
                }
            }
            let view = test.instance("o-5").await.expect("instance");
            assert_eq!(view.summary.status, Status::Parked);
            assert!(
                view.summary.error.as_deref().is_some_and(|e| e.contains("refund failed")),
                "{:?}",
                view.summary.error
            );
            let parked = test.orchestrator().list(Some(Status::Parked), 10).await.expect("list");
            assert_eq!(parked.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["o-5"]);
            // Replies for the first charge are late now.
            assert!(matches!(
                test.reply(&charge, reply("payment.charged", "")).await.expect("reply"),
                ReplyOutcome::Ignored(_)
            ));

            test.orchestrator().retry("o-5").await.expect("retry");
            let refund = only_command(&test).await;
            assert_eq!(refund.message.ty, "payment.refund");
            test.reply(&refund, reply("payment.refunded", "")).await.expect("reply");
            test.reply(&only_command(&test).await, reply("stock.released", "")).await.expect("reply");
            assert_eq!(test.instance("o-5").await.expect("instance").summary.status, Status::Compensated);
            assert!(matches!(test.orchestrator().retry("o-5").await, Err(SagaError::NotParked(_))));
        }

        #[tokio::test]
        async fn duplicate_unknown_and_malformed_replies_change_nothing() {
            $($pre;)*
            let (test, _guard) = $harness(checkout(Arc::default())).await;
            test.start("o-6", state("o-6")).await.expect("start");
            assert!(matches!(test.start("o-6", state("o-6")).await, Err(SagaError::AlreadyExists(_))));
            let reserve = only_command(&test).await;
            test.reply(&reserve, reply("stock.reserved", "r")).await.expect("reply");
            let before = test.instance("o-6").await.expect("instance").summary;
            assert!(matches!(
                test.reply(&reserve, reply("stock.reserved", "r")).await.expect("dup"),
                ReplyOutcome::Ignored(_)
            ));
            let after = test.instance("o-6").await.expect("instance").summary;
            assert_eq!((before.step, before.attempt, before.awaiting), (after.step, after.attempt, after.awaiting));
            assert_eq!(only_command(&test).await.message.ty, "payment.charge", "the duplicate sent nothing");

            let orchestrator = test.orchestrator();
            let stray = reply("stock.reserved", "").with_extension("correlationid", "nobody/0/a");
            assert_eq!(
                orchestrator.handle_reply(&stray).await.expect("stray"),
                ReplyOutcome::UnknownInstance("nobody".into())
            );
            for bad in [reply("x", ""), reply("x", "").with_extension("correlationid", "o-6/not-a-step/a")] {
                assert!(matches!(orchestrator.handle_reply(&bad).await.expect("bad"), ReplyOutcome::Malformed(_)));
            }
            assert!(matches!(orchestrator.instance("nobody").await, Err(SagaError::UnknownInstance(_))));
            assert!(matches!(orchestrator.cancel("nobody").await, Err(SagaError::UnknownInstance(_))));
        }

        #[tokio::test]
        async fn a_paused_instance_holds_its_replies_and_timers_until_it_resumes() {
            $($pre;)*
            let (test, _guard) = $harness(checkout(Arc::default())).await;
            test.start("o-7", state("o-7")).await.expect("start");
            let reserve = only_command(&test).await;
            test.orchestrator().pause("o-7").await.expect("pause");
            assert_eq!(test.reply(&reserve, reply("stock.reserved", "r")).await.expect("reply"), ReplyOutcome::Held);
            assert_eq!(test.advance(Duration::from_secs(60)).await.expect("tick"), 0, "timers wait too");
            assert!(test.instance("o-7").await.expect("instance").summary.paused);
            test.orchestrator().resume("o-7").await.expect("resume");
            assert!(matches!(test.orchestrator().resume("o-7").await, Err(SagaError::NotPaused(_))));
            // The held reply is delivered again (the broker keeps it unacked).
            assert_eq!(
                test.reply(&reserve, reply("stock.reserved", "r")).await.expect("reply"),
                ReplyOutcome::Applied
            );
            assert_eq!(only_command(&test).await.message.ty, "payment.charge");
        }
        }
    };
}

async fn sqlite_harness(saga: Saga<Checkout>) -> (SagaTest<Checkout>, ()) {
    (SagaTest::new(saga).await.expect("harness"), ())
}

async fn postgres_harness(
    saga: Saga<Checkout>,
) -> (SagaTest<Checkout, sqlx::Postgres>, crate::util::pg::Schema) {
    let (pool, schema) = crate::util::pg::pool(4).await;
    (SagaTest::on(saga, pool).await.expect("harness"), schema)
}

saga_cases!(sqlite, sqlite_harness);

/// The database goes away under an orchestrator: the reply fails with a database error (so
/// the reply loop leaves it unacknowledged) and the instance is as it was; once the database
/// is back, the same reply applies.
async fn outage_case<DB: SagaDatabase>(a: sqlx::Pool<DB>, b: sqlx::Pool<DB>) {
    let outbox = switchboard::outbox::Outbox::open(a.clone()).await.expect("outbox");
    let first = switchboard::saga::Orchestrator::new(checkout(Arc::default()), a.clone(), outbox)
        .await
        .expect("first");
    first.start("o-9", state("o-9")).await.expect("start");
    a.close().await;
    let answer = reply("stock.reserved", "r").with_extension("correlationid", "o-9/0/a");
    assert!(matches!(first.handle_reply(&answer).await, Err(SagaError::Database(_))));

    let outbox = switchboard::outbox::Outbox::open(b.clone()).await.expect("outbox");
    let second =
        switchboard::saga::Orchestrator::new(checkout(Arc::default()), b, outbox).await.expect("second");
    let unchanged = second.instance("o-9").await.expect("instance").summary;
    assert_eq!(
        (unchanged.status, unchanged.step.as_deref(), unchanged.attempt),
        (Status::Running, Some("reserve"), 1)
    );
    assert_eq!(second.handle_reply(&answer).await.expect("reply"), ReplyOutcome::Applied);
    assert_eq!(second.instance("o-9").await.expect("instance").summary.step.as_deref(), Some("charge"));
}

#[tokio::test]
async fn a_sqlite_database_that_goes_away_fails_the_reply_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("sagas.db"))
        .create_if_missing(true);
    let a = sqlx::SqlitePool::connect_with(options.clone()).await.expect("a");
    let b = sqlx::SqlitePool::connect_with(options).await.expect("b");
    outage_case(a, b).await;
}

#[tokio::test]
async fn a_postgres_database_that_goes_away_fails_the_reply_and_changes_nothing() {
    switchboard_testkit::require_service!(Postgres);
    let (a, schema) = crate::util::pg::pool(2).await;
    let b = crate::util::pg::pool_on(&schema.name, 2).await;
    outage_case(a, b).await;
}
saga_cases!(postgres, postgres_harness, switchboard_testkit::require_service!(Postgres));

#[tokio::test]
async fn an_instance_finishes_on_its_version_unless_a_migration_moves_it() {
    // Version 1 had one step; instances of it must finish on it.
    let v1_steps = || vec![Step::command("reserve", command("inventory", "stock.reserve"))];
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("db");
    let outbox = switchboard::outbox::Outbox::sqlite(pool.clone()).await.expect("outbox");
    let v1 = Saga::<Checkout>::new("versioned", 1).step(v1_steps()[0].clone());
    let old = switchboard::saga::Orchestrator::new(v1, pool.clone(), outbox.clone()).await.expect("v1");
    old.start("kept", state("kept")).await.expect("start");
    old.start("moved", state("moved")).await.expect("start");

    let v2 = || {
        Saga::<Checkout>::new("versioned", 2)
            .step(Step::command("reserve", command("inventory", "stock.reserve")))
            .step(Step::command("charge", command("payment", "payment.charge")))
    };
    let reply_to =
        |id: &str| reply("stock.reserved", "").with_extension("correlationid", format!("{id}/0/a"));
    // v2 keeping v1: "kept" completes after its one step.
    let keeping =
        switchboard::saga::Orchestrator::new(v2().keep_version(1, v1_steps()), pool.clone(), outbox.clone())
            .await
            .expect("v2");
    keeping.handle_reply(&reply_to("kept")).await.expect("reply");
    let kept = keeping.instance("kept").await.expect("kept").summary;
    assert_eq!((kept.saga_version, kept.status), (1, Status::Completed));
    // v2 migrating v1: "moved" continues on v2 and goes on to charge.
    let migrating = switchboard::saga::Orchestrator::new(
        v2().migrate_from(1, |_, step| step),
        pool.clone(),
        outbox.clone(),
    )
    .await
    .expect("v2");
    migrating.handle_reply(&reply_to("moved")).await.expect("reply");
    let moved = migrating.instance("moved").await.expect("moved");
    assert_eq!((moved.summary.saga_version, moved.summary.status), (2, Status::Running));
    assert_eq!(moved.summary.step.as_deref(), Some("charge"));
    assert!(moved.history.iter().any(|h| h.kind == "migrated"));
    // v2 knowing nothing of v1 refuses its instances instead of guessing.
    old.start("orphan", state("orphan")).await.expect("start");
    let strict = switchboard::saga::Orchestrator::new(v2(), pool, outbox).await.expect("v2");
    assert!(matches!(
        strict.handle_reply(&reply_to("orphan")).await,
        Err(SagaError::UnknownVersion { version: 1, .. })
    ));
}

/// Two orchestrators (two pools, as two processes would have) handle the same replies at
/// the same moment: for every instance exactly one wins each reply, and exactly one next
/// command is committed.
macro_rules! race_case {
    ($name:ident, $open:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (pools, _guard) = $open;
            let (a_pool, b_pool) = pools;
            let a_outbox = switchboard::outbox::Outbox::open(a_pool.clone()).await.expect("outbox");
            let b_outbox = switchboard::outbox::Outbox::open(b_pool.clone()).await.expect("outbox");
            let a = switchboard::saga::Orchestrator::new(checkout(Arc::default()), a_pool.clone(), a_outbox)
                .await
                .expect("a");
            let b = switchboard::saga::Orchestrator::new(checkout(Arc::default()), b_pool, b_outbox)
                .await
                .expect("b");
            const N: usize = 40;
            for i in 0..N {
                a.start(&format!("race-{i}"), state(&format!("race-{i}"))).await.expect("start");
            }
            let mut applied = 0;
            let mut ignored = 0;
            let mut handles = Vec::new();
            for i in 0..N {
                let reserved =
                    reply("stock.reserved", "r").with_extension("correlationid", format!("race-{i}/0/a"));
                for orchestrator in [a.clone(), b.clone()] {
                    let reserved = reserved.clone();
                    handles.push(tokio::spawn(async move { orchestrator.handle_reply(&reserved).await }));
                }
            }
            for h in handles {
                match h.await.expect("task").expect("handled") {
                    ReplyOutcome::Applied => applied += 1,
                    ReplyOutcome::Ignored(_) => ignored += 1,
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!((applied, ignored), (N, N), "each reply won exactly once");
            let charges: i64 =
                sqlx::query_scalar("SELECT count(*) FROM switchboard_outbox WHERE ty = 'payment.charge'")
                    .fetch_one(&a_pool)
                    .await
                    .expect("count");
            assert_eq!(charges, N as i64, "one charge per instance");
            for i in 0..N {
                let view = a.instance(&format!("race-{i}")).await.expect("instance");
                assert_eq!(view.summary.step.as_deref(), Some("charge"));
                assert_eq!(view.summary.attempt, 1);
            }
        }
    };
}

race_case!(two_orchestrators_on_one_sqlite_file_never_both_apply_a_reply, {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("sagas.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30));
        sqlx::sqlite::SqlitePoolOptions::new().max_connections(2).connect_with(options)
    };
    let a = open().await.expect("a");
    let b = open().await.expect("b");
    ((a, b), dir)
});

race_case!(two_orchestrators_on_one_postgres_database_never_both_apply_a_reply, {
    switchboard_testkit::require_service!(Postgres);
    let (a, schema) = crate::util::pg::pool(4).await;
    let b = crate::util::pg::pool_on(&schema.name, 4).await;
    ((a, b), schema)
});
