//! The saga crash test: an orchestrator process (orchestrator, outbox relay and the
//! SQLite file of its instances) is SIGKILLed at random moments while hundreds of
//! three-step sagas run against participants in this process, over a real
//! `switchboard serve`. After the kills one last orchestrator runs until every instance has
//! finished: each ends completed or compensated as its script says, no participant did a
//! step's work twice, and the participants' books balance.
//!
//! The child is this test binary run again with only [`child`] selected and
//! `SWITCHBOARD_SAGA_CHILD_DB` set. Knob: `SWITCHBOARD_SAGA_KILLS` (default 8).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use switchboard::outbox::{Outbox, Relay, RelayConfig};
use switchboard::saga::{Command, IDEMPOTENCY_KEY, Orchestrator, Saga, SagaError, Status, Step, StepFailed};
use switchboard::{Bus, Message, SubscriptionName, SubscriptionSpec, TopicName};

const CHILD_DB: &str = "SWITCHBOARD_SAGA_CHILD_DB";
const CHILD_BROKER: &str = "SWITCHBOARD_SAGA_CHILD_BROKER";
const SAGAS: u32 = 300;
const STEPS: [&str; 3] = ["crash-flight", "crash-hotel", "crash-car"];

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Trip {
    n: u32,
}

/// Every third trip has no car: the third step fails and the first two are undone.
fn refuses(n: u32, step: usize) -> bool {
    step == 2 && n.is_multiple_of(3)
}

fn saga() -> Saga<Trip> {
    let mut saga = Saga::new("crash-trip", 1);
    for (i, topic) in STEPS.iter().enumerate() {
        let topic = TopicName::from_static(topic);
        let undo = topic.clone();
        saga = saga.step(
            Step::command(STEPS[i], move |t: &Trip| {
                Command::new(topic.clone(), Message::new("/trips", "book", t.n.to_string()))
            })
            .on_reply(|_, r| if r.ty == "booked" { Ok(()) } else { Err(StepFailed::new("refused")) })
            .compensate(move |t: &Trip| {
                Command::new(undo.clone(), Message::new("/trips", "cancel", t.n.to_string()))
            })
            .timeout(Duration::from_secs(20)),
        );
    }
    saga
}

async fn pool(file: &Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30));
    sqlx::sqlite::SqlitePoolOptions::new().max_connections(4).connect_with(options).await.expect("sqlite")
}

/// The child: starts every saga (a start that exists already changes nothing), then runs
/// the orchestrator and the relay until killed. Does nothing in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child() {
    let Ok(db) = std::env::var(CHILD_DB) else { return };
    let broker = std::env::var(CHILD_BROKER).expect("broker");
    let bus = Bus::connect(&broker).await.expect("broker");
    let pool = pool(Path::new(&db)).await;
    let outbox = Outbox::sqlite(pool.clone()).await.expect("outbox");
    let _relay = Relay::new(outbox.clone(), bus.clone())
        .with_config(RelayConfig::default().with_poll_interval(Duration::from_millis(50)))
        .spawn();
    let orchestrator = Orchestrator::new(saga(), pool, outbox).await.expect("orchestrator");
    let _running = orchestrator.clone().spawn(bus, Duration::from_millis(100)).await.expect("spawn");
    println!("READY");
    for n in 0..SAGAS {
        match orchestrator.start(&format!("trip-{n}"), Trip { n }).await {
            Ok(()) | Err(SagaError::AlreadyExists(_)) => {}
            Err(e) => panic!("start: {e}"),
        }
    }
    std::future::pending::<()>().await;
}

/// A participant's books: per (trip, step), bookings made and cancelled; the idempotency
/// keys it has answered (and how).
#[derive(Default)]
struct Books {
    effects: HashMap<(u32, usize), (u32, u32)>,
    answered: HashMap<String, &'static str>,
}

fn participants(
    bus: &Bus,
    books: &Arc<Mutex<Books>>,
    subs: Vec<switchboard::Subscription>,
) -> Vec<tokio::task::JoinHandle<()>> {
    subs.into_iter()
        .enumerate()
        .map(|(step, mut sub)| {
            let (bus, books) = (bus.clone(), books.clone());
            tokio::spawn(async move {
                while let Some(Ok(d)) = sub.next().await {
                    let m = d.message().clone();
                    let n: u32 = String::from_utf8_lossy(&m.data).parse().expect("trip number");
                    let key = m.extensions.get(IDEMPOTENCY_KEY).cloned().expect("idempotency key");
                    let answer = {
                        let mut books = books.lock();
                        if let Some(a) = books.answered.get(&key) {
                            a
                        } else {
                            let e = books.effects.entry((n, step)).or_default();
                            let a = if m.ty == "book" {
                                // A booking that arrives after its cancellation is refused.
                                if refuses(n, step) || e.1 > 0 {
                                    "refused"
                                } else {
                                    e.0 += 1;
                                    "booked"
                                }
                            } else {
                                if e.0 > 0 {
                                    e.1 += 1;
                                } else {
                                    e.1 = 1;
                                    e.0 = 0;
                                }
                                "cancelled"
                            };
                            books.answered.insert(key, a);
                            a
                        }
                    };
                    if let Ok((to, reply)) =
                        switchboard::request::reply_to(&m, Message::new("/participant", answer, ""))
                    {
                        bus.publish(&to, reply).await.expect("reply");
                    }
                    d.ack().await.expect("ack");
                }
            })
        })
        .collect()
}

fn spawn_child(db: &Path, broker: &str) -> switchboard_testkit::Child {
    let broker = std::ffi::OsString::from(broker);
    switchboard_testkit::Child::spawn(
        "saga_crash::child",
        &[(CHILD_DB, db.as_os_str()), (CHILD_BROKER, &broker)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_saga_finishes_and_the_books_balance_across_orchestrator_sigkills() {
    let server = switchboard_testkit::TestServer::start().await;
    let bus = Bus::connect(&server.url()).await.expect("connect");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sagas.db");
    let books = Arc::new(Mutex::new(Books::default()));
    let mut subs = Vec::new();
    for topic in STEPS {
        let spec = SubscriptionSpec::queue(SubscriptionName::from_static("participant"));
        subs.push(bus.subscribe(&TopicName::from_static(topic), spec).await.expect("subscribe"));
    }
    let workers = participants(&bus, &books, subs);

    let kills: u32 = std::env::var("SWITCHBOARD_SAGA_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    for round in 0..kills {
        let mut child = spawn_child(&db, &server.url());
        let ready = tokio::task::block_in_place(|| child.wait_ready(Duration::from_secs(60)));
        assert!(ready, "round {round}: the child did not get ready");
        let pause = 50 + std::collections::hash_map::RandomState::new().hash_one(round) % 600;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        child.kill();
    }

    // One last orchestrator runs until every instance has finished.
    let _last = spawn_child(&db, &server.url());
    let view =
        Orchestrator::new(saga(), pool(&db).await, Outbox::sqlite(pool(&db).await).await.expect("outbox"))
            .await
            .expect("view");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let all = loop {
        let all = view.list(None, SAGAS + 1).await.expect("list");
        if all.len() == SAGAS as usize && all.iter().all(|i| i.status.is_final()) {
            break all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not finished: {:?}",
            all.iter().filter(|i| !i.status.is_final()).take(5).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for w in workers {
        w.abort();
    }
    let books = books.lock();
    let mut completed = 0;
    for instance in &all {
        let n: u32 = instance.id.trim_start_matches("trip-").parse().expect("id");
        let effects: Vec<(u32, u32)> =
            (0..3).map(|s| books.effects.get(&(n, s)).copied().unwrap_or_default()).collect();
        assert!(
            effects.iter().all(|(b, c)| *b <= 1 && *c <= 1),
            "{}: work done twice: {effects:?}",
            instance.id
        );
        if n.is_multiple_of(3) {
            assert_eq!(instance.status, Status::Compensated, "{} has no car", instance.id);
            assert!(
                effects.iter().all(|(b, c)| b == c || *b == 0),
                "{}: books do not balance: {effects:?}",
                instance.id
            );
        } else {
            // A step that timed out during the kills compensates; otherwise it completes.
            match instance.status {
                Status::Completed => {
                    completed += 1;
                    assert_eq!(effects, [(1, 0); 3], "{}", instance.id);
                }
                Status::Compensated => {
                    assert!(effects.iter().all(|(b, c)| b == c || *b == 0), "{}: {effects:?}", instance.id)
                }
                other => panic!("{}: {other:?}", instance.id),
            }
        }
    }
    let ids: HashSet<&str> = all.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), SAGAS as usize);
    eprintln!(
        "saga crash: {kills} SIGKILLs of the orchestrator, {SAGAS} sagas finished ({completed} completed, {} compensated), books balanced",
        SAGAS - completed
    );
    assert!(completed > 0);
}
