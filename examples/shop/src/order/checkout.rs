//! Checkout as a saga: reserve stock, charge the payment, confirm the order. A step that
//! fails (out of stock, a declined card, a timeout, an order canceled meanwhile) undoes the
//! ones before it in reverse order: the payment is refunded, the stock released, the
//! order canceled.
//!
//! Checkout starts from the order's `order.created` event on the feed, not from the
//! request that placed it: an order that committed always gets its checkout, even when the
//! process dies right after the commit. Starting is idempotent per order id, so the
//! follower only needs an at-least-once checkpoint.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard::eventstore::{EventStore, Position, Repository, RepositoryError, decode_event};
use switchboard::saga::{Command, Orchestrator, Saga, SagaError, Step, StepFailed};
use switchboard::{Message, TopicName};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::aggregate::{Line, Order, OrderCommand, OrderEvent, OrderRejected};
use super::read_model::order_id;
use super::store::ShopDatabase;

/// How long a checkout call (opening, confirming: local to the order database) may take
/// before it counts as lost.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a lost call is run again before checkout gives up and compensates: a minute
/// of an order service that does not come back.
const CALL_ATTEMPTS: u32 = 12;

/// A checkout's state, kept by the orchestrator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    /// The order.
    pub order: String,
    /// Who pays.
    pub customer: String,
    /// What to reserve.
    pub lines: Vec<Line>,
    /// What to charge, in cents.
    pub total_cents: i64,
    /// Why it failed, once it did.
    pub failure: Option<String>,
}

/// The checkout saga over `orders`, sending commands to inventory and payment.
pub fn saga<DB: ShopDatabase>(orders: Repository<Order, DB>, step_timeout: Duration) -> Saga<Checkout> {
    let inventory = TopicName::from_static(crate::inventory::COMMANDS_TOPIC);
    let payment = TopicName::from_static(crate::payment::COMMANDS_TOPIC);
    let (reserve_to, release_to, charge_to, refund_to) =
        (inventory.clone(), inventory, payment.clone(), payment);
    let (confirming, canceling) = (orders.clone(), orders);
    let json = |ty: &str, body: serde_json::Value| {
        Message::new("/shop/order", ty, body.to_string()).with_content_type("application/json")
    };
    Saga::new("checkout", 1)
        .step(Step::call("open", |s: Checkout| async move { Ok(s) }).compensate_with_call(move |s: Checkout| {
            let orders = canceling.clone();
            async move {
                let reason = match &s.failure {
                    Some(failure) => failure.clone(),
                    None if orders.load(&s.order).await.is_ok_and(|o| o.state.lines != s.lines) => {
                        OrderRejected::EditedDuringCheckout.to_string()
                    }
                    None => "checkout failed".into(),
                };
                match orders.execute(&s.order, &OrderCommand::Cancel { reason }).await {
                    Ok(_) | Err(RepositoryError::Refused(OrderRejected::Final(_))) => Ok(s),
                    Err(e) => Err(StepFailed::new(e.to_string())),
                }
            }
        })
        // The calls run in this process: one that died with it (its result never
        // recorded) is run again rather than undone; both are idempotent.
        .timeout(CALL_TIMEOUT)
        .retry(CALL_ATTEMPTS))
        .step(
            Step::command("reserve-stock", move |s: &Checkout| {
                let body = serde_json::json!({ "order": s.order, "lines": s.lines });
                Command::new(reserve_to.clone(), json("stock.reserve", body))
            })
            .on_reply(|s, reply| match reply.ty.as_str() {
                "stock.reserved" => Ok(()),
                _ => {
                    s.failure = Some("out of stock".into());
                    Err(StepFailed::new("out of stock"))
                }
            })
            .compensate(move |s: &Checkout| {
                Command::new(release_to.clone(), json("stock.release", serde_json::json!({ "order": s.order })))
            })
            .timeout(step_timeout),
        )
        .step(
            Step::command("charge", move |s: &Checkout| {
                let body = serde_json::json!({ "order": s.order, "amount_cents": s.total_cents, "customer": s.customer });
                Command::new(charge_to.clone(), json("payment.charge", body))
            })
            .on_reply(|s, reply| match reply.ty.as_str() {
                "payment.charged" => Ok(()),
                _ => {
                    s.failure = Some("payment declined".into());
                    Err(StepFailed::new("payment declined"))
                }
            })
            .compensate(move |s: &Checkout| {
                Command::new(refund_to.clone(), json("payment.refund", serde_json::json!({ "order": s.order })))
            })
            .timeout(step_timeout),
        )
        .step(Step::call("confirm", move |s: Checkout| {
            let orders = confirming.clone();
            async move {
                // Refused when the customer canceled or edited the order meanwhile: the charge
                // and the stock are given back.
                match orders.execute(&s.order, &OrderCommand::Confirm { lines: s.lines.clone() }).await {
                    Ok(_) => Ok(s),
                    Err(e) => Err(StepFailed::new(e.to_string())),
                }
            }
        })
        // The calls run in this process: one that died with it (its result never
        // recorded) is run again rather than undone; both are idempotent.
        .timeout(CALL_TIMEOUT)
        .retry(CALL_ATTEMPTS))
}

/// Starts a checkout for every `order.created` on the feed.
pub struct CheckoutStarter {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl CheckoutStarter {
    /// Follows `store`'s feed from its saved checkpoint.
    ///
    /// # Errors
    /// The checkpoint cannot be read.
    pub async fn start<DB: ShopDatabase>(
        store: EventStore<DB>,
        orchestrator: Orchestrator<Checkout, DB>,
    ) -> anyhow::Result<Self> {
        DB::create_shop_tables(store.pool()).await?;
        let after = DB::checkout_checkpoint(store.pool()).await?;
        let mut feed = store.subscribe_all(Position(u64::try_from(after).unwrap_or(0))).await?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = stopped.changed() => return,
                    event = feed.next() => event,
                };
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::warn!(error = %e, "The checkout starter could not read the feed; retrying.");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                if let (Some(id), Ok(OrderEvent::Created { customer, lines, total_cents })) =
                    (order_id(event.stream.as_str()), decode_event::<OrderEvent>(&event))
                {
                    let state =
                        Checkout { order: id.to_owned(), customer, lines, total_cents, failure: None };
                    loop {
                        match orchestrator.start(id, state.clone()).await {
                            Ok(()) | Err(SagaError::AlreadyExists(_)) => break,
                            Err(e) => {
                                tracing::warn!(order = id, error = %e, "Could not start a checkout; retrying.");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                }
                let position = event.position.map_or(0, |p| i64::try_from(p.0).unwrap_or(i64::MAX));
                if let Err(e) = DB::set_checkout_checkpoint(store.pool(), position).await {
                    // Only costs a replay of starts, which are idempotent.
                    tracing::debug!(error = %e, "Could not save the checkout checkpoint.");
                }
            }
        });
        Ok(CheckoutStarter { stop, task })
    }

    /// Stops following the feed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
