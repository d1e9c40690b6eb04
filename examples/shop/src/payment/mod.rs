//! The payment service: `payment.charge` and `payment.refund` commands over the
//! `payment.commands` queue, each answered to its `replyto`. It calls the payment provider
//! over HTTP through `switchboard-sync` (timeout per attempt, retries within a budget, a
//! breaker), keyed by the order so a repeated charge is charged once. Each outcome is also
//! a fact on the `payments` log (`payment.charged`, `payment.declined`, `payment.refunded`),
//! published with the reply, for whoever keeps a view of payments.

pub mod provider;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard::{
    Bus, Handled, HandlerError, Incoming, Message, Middleware, Outgoing, Router, RunningRouter,
};
use switchboard::{SubscriptionName, SubscriptionSpec, TopicName};
use switchboard_policy::BreakerConfig;
use switchboard_sync::{CallPolicy, HttpClient};
use tower::Layer;

pub use store::{Payment, PaymentDatabase};

use provider::{ChargeAnswer, ChargeRequest};

/// The queue of payment commands.
pub const COMMANDS_TOPIC: &str = "payment.commands";

/// The log of payment outcomes.
pub const PAYMENTS_TOPIC: &str = "payments";

/// `payment.charge`: take an order's total.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// The order.
    pub order: String,
    /// How much, in cents.
    pub amount_cents: i64,
    /// Who pays.
    pub customer: String,
}

/// `payment.refund`: give an order's charge back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    /// The order.
    pub order: String,
}

/// The payment service's running parts.
pub struct PaymentService {
    router: RunningRouter,
}

struct Context<DB: PaymentDatabase> {
    pool: sqlx::Pool<DB>,
    http: HttpClient,
    provider: String,
}

impl PaymentService {
    /// Answers payment commands from `bus`, charging through the provider at `provider`
    /// (`http://host:port`).
    ///
    /// # Errors
    /// The tables cannot be created, or the bus refuses the subscription.
    pub async fn start<DB: PaymentDatabase>(
        pool: sqlx::Pool<DB>,
        bus: Bus,
        provider: String,
    ) -> anyhow::Result<Self> {
        DB::create_payment_tables(&pool).await?;
        let policy =
            CallPolicy::default().with_timeout(Duration::from_secs(2)).with_breaker(BreakerConfig::default());
        let context = Arc::new(Context {
            pool,
            http: HttpClient::new(policy)?.with_peer_service(provider::PEER_SERVICE),
            provider,
        });
        let topic = TopicName::new(COMMANDS_TOPIC)?;
        bus.create_topic(&topic, 1).await?;
        bus.create_topic(&TopicName::new(PAYMENTS_TOPIC)?, 1).await?;
        let handler = tower::service_fn(move |incoming: Incoming| handle(context.clone(), incoming));
        let spec = SubscriptionSpec::queue(SubscriptionName::from_static("payment"));
        let router = Router::new(bus)
            .route("payment", topic, spec, Middleware::default().layer(handler))
            .start()
            .await?;
        Ok(PaymentService { router })
    }

    /// Finishes the commands in flight and stops.
    pub async fn shutdown(self) {
        let _ = self.router.shutdown().await;
    }
}

async fn handle<DB: PaymentDatabase>(cx: Arc<Context<DB>>, incoming: Incoming) -> Handled {
    let reply = |ty: &str, body: serde_json::Value| {
        incoming
            .reply(Message::new("/shop/payment", ty, body.to_string()).with_content_type("application/json"))
            .map_err(HandlerError::permanent)
    };
    match incoming.message.ty.as_str() {
        "payment.charge" => {
            let command: Charge =
                serde_json::from_slice(&incoming.message.data).map_err(HandlerError::permanent)?;
            let payment =
                match DB::payment(&cx.pool, &command.order).await.map_err(HandlerError::transient)? {
                    Some(done) => done,
                    None => {
                        let payment = cx.charge(&command).await?;
                        DB::set_payment(&cx.pool, &command.order, &payment, crate::now_ms())
                            .await
                            .map_err(HandlerError::transient)?;
                        payment
                    }
                };
            let body = serde_json::json!({ "order": command.order, "amount_cents": payment.amount_cents });
            let ty = if payment.state == "charged" { "payment.charged" } else { "payment.declined" };
            Ok(vec![reply(ty, body)?, fact(ty, &command.order, &payment)])
        }
        "payment.refund" => {
            let command: Refund =
                serde_json::from_slice(&incoming.message.data).map_err(HandlerError::permanent)?;
            let mut answers = Vec::new();
            match DB::payment(&cx.pool, &command.order).await.map_err(HandlerError::transient)? {
                Some(payment) if payment.state == "charged" => {
                    cx.refund(&command.order).await?;
                    let refunded = Payment { state: "refunded".into(), ..payment };
                    DB::set_payment(&cx.pool, &command.order, &refunded, crate::now_ms())
                        .await
                        .map_err(HandlerError::transient)?;
                    answers.push(fact("payment.refunded", &command.order, &refunded));
                }
                // A repeated refund says so again (the same fact id: its readers see it once).
                Some(payment) if payment.state == "refunded" => {
                    answers.push(fact("payment.refunded", &command.order, &payment));
                }
                Some(_) => {}
                None => {
                    // Refunded before it was charged: a late charge must not go through.
                    let voided = Payment { state: "voided".into(), amount_cents: 0, charge_id: None };
                    DB::set_payment(&cx.pool, &command.order, &voided, crate::now_ms())
                        .await
                        .map_err(HandlerError::transient)?;
                }
            }
            answers.push(reply("payment.refunded", serde_json::json!({ "order": command.order }))?);
            Ok(answers)
        }
        other => Err(HandlerError::permanent(format!("payment does not know the command {other:?}"))),
    }
}

/// A payment outcome on the `payments` log, its id derived from the order and the outcome
/// so a redelivered command publishes the same fact.
fn fact(ty: &str, order: &str, payment: &Payment) -> Outgoing {
    let body = serde_json::json!({
        "order": order,
        "amount_cents": payment.amount_cents,
        "charge_id": payment.charge_id,
    });
    let message = crate::order_fact("/shop/payment", ty, format!("{ty}-{order}"), order, &body);
    Outgoing::new(TopicName::from_static(PAYMENTS_TOPIC), message)
}

impl<DB: PaymentDatabase> Context<DB> {
    async fn charge(&self, command: &Charge) -> Result<Payment, HandlerError> {
        let request =
            ChargeRequest { amount_cents: command.amount_cents, customer: command.customer.clone() };
        let url = format!("{}/charges/{}", self.provider, command.order);
        // PUT to the order's key: idempotent, so the policy may retry it.
        let response =
            self.http.send(self.http.put(url).json(&request)).await.map_err(HandlerError::transient)?;
        let status = response.status();
        let answer: ChargeAnswer = response.json().await.map_err(HandlerError::transient)?;
        let state = if status == reqwest::StatusCode::CREATED && answer.status == "captured" {
            "charged"
        } else {
            "declined"
        };
        Ok(Payment { state: state.into(), amount_cents: command.amount_cents, charge_id: answer.charge_id })
    }

    async fn refund(&self, order: &str) -> Result<(), HandlerError> {
        let url = format!("{}/refunds/{order}", self.provider);
        let response = self.http.send(self.http.put(url)).await.map_err(HandlerError::transient)?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(HandlerError::transient(format!("the provider refused the refund: {}", response.status())))
        }
    }
}
