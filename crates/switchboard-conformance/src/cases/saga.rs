//! A saga over the backend under test: the orchestrator keeps its instances in SQLite,
//! sends its commands through the outbox and a relay, and reads its replies from the
//! backend; participants answer over the backend too.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use parking_lot::Mutex;
use switchboard::Bus;
use switchboard::outbox::{Outbox, Relay, RelayConfig};
use switchboard::request::reply_to;
use switchboard::saga::{Command, IDEMPOTENCY_KEY, Orchestrator, Saga, Status, Step, StepFailed};
use switchboard_core::backend::Backend;
use switchboard_core::contract::Subscription;
use switchboard_core::{Message, TopicName};

use crate::Harness;
use crate::util::Ctx;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Order {
    number: u32,
}

/// What the inventory participant holds: reservations made and released, per order.
#[derive(Default)]
struct Books {
    reserved: HashSet<u32>,
    released: HashSet<u32>,
    keys: HashSet<String>,
}

/// Answers every command on `commands` with what `answer` says, over `backend`.
fn participant(
    mut commands: Subscription,
    backend: Arc<dyn Backend>,
    answer: impl Fn(&Message) -> &'static str + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = commands.next().await {
            let command = delivery.message().clone();
            let ty = answer(&command);
            if let Ok((topic, reply)) = reply_to(&command, Message::new("/participant", ty, "")) {
                let _ = backend.publish(&topic, vec![reply], &Default::default()).await;
            }
            let _ = delivery.ack().await;
        }
    })
}

/// Ten checkouts, half declined by payment: the accepted ones complete, the declined ones
/// release their stock and end compensated, and the inventory's books balance.
pub async fn saga_over_the_backend(h: Arc<dyn Harness>) -> Result<()> {
    let ctx = Ctx::new(h, "saga_over_the_backend").await?;
    let inventory = ctx.topic("inventory")?;
    let payment = ctx.topic("payment")?;
    // Registers the reply topic for the cleanup; the saga's name makes it.
    let replies = ctx.topic("checkout.replies")?;
    let name = replies.as_str().trim_end_matches(".replies").to_owned();

    let books = Arc::new(Mutex::new(Books::default()));
    let number = |m: &Message| String::from_utf8_lossy(&m.data).parse::<u32>().unwrap_or(0);
    let inventory_books = books.clone();
    let inventory_worker = participant(
        ctx.subscribe(&inventory, ctx.any_mode("inventory")?.context("mode")?).await?,
        ctx.bus.clone(),
        move |m| {
            let mut books = inventory_books.lock();
            let key = m.extensions.get(IDEMPOTENCY_KEY).cloned().unwrap_or_default();
            let first = books.keys.insert(key);
            match m.ty.as_str() {
                "stock.reserve" => {
                    if first {
                        books.reserved.insert(number(m));
                    }
                    "stock.reserved"
                }
                _ => {
                    if first {
                        books.released.insert(number(m));
                    }
                    "stock.released"
                }
            }
        },
    );
    let payment_worker = participant(
        ctx.subscribe(&payment, ctx.any_mode("payment")?.context("mode")?).await?,
        ctx.bus.clone(),
        move |m| if number(m) % 2 == 1 { "payment.declined" } else { "payment.charged" },
    );

    let (inv, pay) = (inventory.clone(), payment.clone());
    let command = |topic: TopicName, ty: &'static str| {
        move |o: &Order| Command::new(topic.clone(), Message::new("/orders", ty, o.number.to_string()))
    };
    let saga = Saga::<Order>::new(name, 1)
        .step(
            Step::command("reserve", command(inv.clone(), "stock.reserve"))
                .compensate(command(inv, "stock.release"))
                .timeout(Duration::from_secs(60)),
        )
        .step(
            Step::command("charge", command(pay, "payment.charge"))
                .on_reply(
                    |_, r| if r.ty == "payment.charged" { Ok(()) } else { Err(StepFailed::new("declined")) },
                )
                .timeout(Duration::from_secs(60)),
        );

    let dir = tempfile::tempdir()?;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("sagas.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30));
    let pool = sqlx::SqlitePool::connect_with(options).await?;
    let outbox = Outbox::sqlite(pool.clone()).await?;
    let bus = Bus::from_backend(ctx.connect().await?);
    let relay = Relay::new(outbox.clone(), bus.clone())
        .with_config(RelayConfig::default().with_poll_interval(Duration::from_millis(50)))
        .spawn();
    let orchestrator = Orchestrator::new(saga, pool, outbox).await?;
    let running = orchestrator.clone().spawn(bus, Duration::from_millis(100)).await?;

    const N: u32 = 10;
    for n in 0..N {
        orchestrator.start(&format!("order-{n}"), Order { number: n }).await?;
    }
    let deadline = tokio::time::Instant::now() + ctx.t.wait * 3;
    let statuses: HashMap<String, Status> = loop {
        let all = orchestrator.list(None, 100).await?;
        if all.len() == N as usize && all.iter().all(|i| i.status.is_final()) {
            break all.into_iter().map(|i| (i.id, i.status)).collect();
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the sagas did not finish: {:?}",
            all.iter().map(|i| (&i.id, i.status, &i.step)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.shutdown().await;
    relay.shutdown().await;
    inventory_worker.abort();
    payment_worker.abort();
    for n in 0..N {
        let want = if n % 2 == 1 { Status::Compensated } else { Status::Completed };
        ensure!(
            statuses[&format!("order-{n}")] == want,
            "order-{n} ended {:?}, expected {want:?}",
            statuses[&format!("order-{n}")]
        );
    }
    let books = books.lock();
    let held: HashSet<u32> = books.reserved.difference(&books.released).copied().collect();
    let completed: HashSet<u32> = (0..N).filter(|n| n % 2 == 0).collect();
    ensure!(
        held == completed,
        "the inventory holds stock for {held:?}, the completed orders are {completed:?}"
    );
    Ok(())
}
