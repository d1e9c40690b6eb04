//! What the other services say about orders, kept beside the order list for the read
//! model: payment outcomes (the `payments` log), shipments (`shipments`) and the emails
//! written (`emails.sent`). Each is a stream projection of its log into its own table,
//! checkpointed with the table, so each is applied once and rebuilt from its log.
//!
//! The order service never asks payment, shipping or email anything: it reads their facts.
//! Within one log the facts about an order are in order (keyed by the order), so the last
//! one applied is the current state.

use serde::Deserialize;
use switchboard::eventstore::RecordedEvent;
use switchboard::projection::{
    Projection, ProjectionDatabase, ProjectionError, RunningStreamProjection, StreamProjector, Tables,
};
use switchboard::{Bus, TopicName};

/// Which log a facts projection reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Facts {
    /// `payments` into `shop_payments`.
    Payments,
    /// `shipments` into `shop_shipments`.
    Shipments,
    /// `emails.sent` into `shop_emails`.
    Emails,
}

impl Facts {
    fn topic(self) -> &'static str {
        match self {
            Facts::Payments => crate::payment::PAYMENTS_TOPIC,
            Facts::Shipments => crate::shipping::SHIPMENTS_TOPIC,
            Facts::Emails => crate::email::SENT_TOPIC,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Facts::Payments => "shop-payments",
            Facts::Shipments => "shop-shipments",
            Facts::Emails => "shop-emails",
        }
    }
}

/// The three facts projections, running.
pub struct RunningFacts(Vec<RunningStreamProjection>);

impl RunningFacts {
    /// Follows the three logs on `bus` into `pool`, each from its checkpoint.
    ///
    /// # Errors
    /// A table cannot be created, or the bus refuses a subscription.
    pub async fn start<DB: ProjectionDatabase>(pool: sqlx::Pool<DB>, bus: Bus) -> anyhow::Result<Self>
    where
        Facts: Projection<DB>,
    {
        let mut running = Vec::new();
        for facts in [Facts::Payments, Facts::Shipments, Facts::Emails] {
            let topic = TopicName::new(facts.topic())?;
            bus.create_topic(&topic, 1).await?;
            let projector = StreamProjector::new(facts.name(), facts, pool.clone(), bus.clone(), topic)?;
            running.push(projector.start().await?);
        }
        Ok(RunningFacts(running))
    }

    /// Stops each after the fact in flight.
    pub async fn shutdown(self) {
        for projection in self.0 {
            projection.shutdown().await;
        }
    }
}

#[derive(Deserialize)]
struct PaymentFact {
    order: String,
    amount_cents: i64,
    charge_id: Option<String>,
}

#[derive(Deserialize)]
struct ShipmentFact {
    order: String,
    at: i64,
}

#[derive(Deserialize)]
struct EmailFact {
    order: String,
    kind: String,
    to: String,
    subject: String,
    message_id: String,
    at: i64,
}

macro_rules! facts_projection {
    ($db:ty, $conn:ty) => {
        #[async_trait::async_trait]
        impl Projection<$db> for Facts {
            fn tables(&self) -> &[&'static str] {
                match self {
                    Facts::Payments => &["shop_payments"],
                    Facts::Shipments => &["shop_shipments"],
                    Facts::Emails => &["shop_emails"],
                }
            }

            async fn create(&self, tx: &mut $conn, t: &Tables) -> Result<(), ProjectionError> {
                let ddl: &[&str] = match self {
                    Facts::Payments => &["CREATE TABLE {shop_payments} (order_id TEXT PRIMARY KEY, state TEXT NOT NULL,
                        amount_cents BIGINT NOT NULL, charge_id TEXT, updated_at BIGINT NOT NULL)"],
                    Facts::Shipments => &["CREATE TABLE {shop_shipments} (order_id TEXT PRIMARY KEY, state TEXT NOT NULL,
                        requested_at BIGINT, updated_at BIGINT NOT NULL)"],
                    Facts::Emails => &[
                        "CREATE TABLE {shop_emails} (message_id TEXT PRIMARY KEY, order_id TEXT NOT NULL, kind TEXT NOT NULL,
                            recipient TEXT NOT NULL, subject TEXT NOT NULL, sent_at BIGINT NOT NULL)",
                        "CREATE INDEX {shop_emails}_by_order ON {shop_emails} (order_id, sent_at)",
                    ],
                };
                for statement in ddl {
                    sqlx::query(t.sql(statement)).execute(&mut *tx).await?;
                }
                Ok(())
            }

            async fn apply(&self, tx: &mut $conn, t: &Tables, event: &RecordedEvent) -> Result<(), ProjectionError> {
                match (self, event.ty.as_str()) {
                    (Facts::Payments, ty @ ("payment.charged" | "payment.declined" | "payment.refunded")) => {
                        let fact: PaymentFact = serde_json::from_slice(&event.data)?;
                        let state = ty.trim_start_matches("payment.");
                        sqlx::query(t.sql(
                            "INSERT INTO {shop_payments} (order_id, state, amount_cents, charge_id, updated_at)
                             VALUES ($1, $2, $3, $4, $5)
                             ON CONFLICT (order_id) DO UPDATE SET state = excluded.state,
                               amount_cents = excluded.amount_cents, charge_id = excluded.charge_id,
                               updated_at = excluded.updated_at",
                        ))
                        .bind(&fact.order)
                        .bind(state)
                        .bind(fact.amount_cents)
                        .bind(&fact.charge_id)
                        .bind(event.recorded_at.as_millis() as i64)
                        .execute(&mut *tx)
                        .await?;
                    }
                    (Facts::Shipments, ty @ ("shipment.requested" | "shipment.canceled")) => {
                        let fact: ShipmentFact = serde_json::from_slice(&event.data)?;
                        let state = ty.trim_start_matches("shipment.");
                        sqlx::query(t.sql(
                            "INSERT INTO {shop_shipments} (order_id, state, requested_at, updated_at)
                             VALUES ($1, $2, CASE WHEN $2 = 'requested' THEN $3 END, $3)
                             ON CONFLICT (order_id) DO UPDATE SET state = excluded.state,
                               requested_at = COALESCE(excluded.requested_at, {shop_shipments}.requested_at),
                               updated_at = excluded.updated_at",
                        ))
                        .bind(&fact.order)
                        .bind(state)
                        .bind(fact.at)
                        .execute(&mut *tx)
                        .await?;
                    }
                    (Facts::Emails, "email.sent") => {
                        let fact: EmailFact = serde_json::from_slice(&event.data)?;
                        sqlx::query(t.sql(
                            "INSERT INTO {shop_emails} (message_id, order_id, kind, recipient, subject, sent_at)
                             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (message_id) DO NOTHING",
                        ))
                        .bind(&fact.message_id)
                        .bind(&fact.order)
                        .bind(&fact.kind)
                        .bind(&fact.to)
                        .bind(&fact.subject)
                        .bind(fact.at)
                        .execute(&mut *tx)
                        .await?;
                    }
                    // A kind of fact this version does not show: skipped, not an error, so
                    // a newer publisher does not stop the read model.
                    _ => {}
                }
                Ok(())
            }
        }
    };
}

facts_projection!(sqlx::Sqlite, sqlx::SqliteConnection);
facts_projection!(sqlx::Postgres, sqlx::PgConnection);
