//! The shipping service: a stream subscription on the `orders` log from the beginning,
//! into its own database. It keeps what it needs of each order from `order.created` and
//! `order.edited` (event-carried state: it never calls the order service), creates a
//! shipping request when an order is confirmed and deletes it when one is canceled.
//!
//! Each event takes effect once: the subscription is a [`StreamProjector`], whose
//! checkpoint per partition commits with the tables. What shipping decides goes on the
//! `shipments` log (`shipment.requested`, `shipment.canceled`) through an outbox written in
//! the same transaction, so the facts and the tables never disagree.

use switchboard::eventstore::{RecordedEvent, decode_event};
use switchboard::outbox::{Outbox, OutboxDatabase, Relay, RunningRelay};
use switchboard::projection::{
    Projection, ProjectionDatabase, ProjectionError, RunningStreamProjection, StreamProjector, Tables,
};
use switchboard::{Bus, Message, TopicName};

use crate::order::OrderEvent;
use crate::order::read_model::order_id;

/// The log of what shipping decided.
pub const SHIPMENTS_TOPIC: &str = "shipments";

/// Shipping's read of the order log: `shipping_orders` (what was ordered) and
/// `shipping_requests` (what to ship); each request made or withdrawn is also a fact on
/// the `shipments` log.
#[derive(Clone)]
pub struct ShippingRequests<DB: OutboxDatabase> {
    outbox: Outbox<DB>,
    shipments: TopicName,
}

impl<DB: OutboxDatabase> ShippingRequests<DB> {
    fn fact(&self, ty: &str, order: &str, at: i64) -> Message {
        let body = serde_json::json!({ "order": order, "at": at });
        crate::order_fact("/shop/shipping", ty, format!("{ty}-{order}"), order, &body)
    }
}

/// The shipping service.
pub struct ShippingService {
    projection: RunningStreamProjection,
    relay: RunningRelay,
}

impl ShippingService {
    /// Follows the `orders` log on `bus` into `pool`.
    ///
    /// # Errors
    /// The tables cannot be created or the bus refuses the subscription.
    pub async fn start<DB: ProjectionDatabase + OutboxDatabase>(
        pool: sqlx::Pool<DB>,
        bus: Bus,
    ) -> anyhow::Result<Self>
    where
        ShippingRequests<DB>: Projection<DB>,
    {
        let topic = TopicName::new(crate::order::ORDERS_TOPIC)?;
        bus.create_topic(&topic, 1).await?;
        let shipments = TopicName::new(SHIPMENTS_TOPIC)?;
        bus.create_topic(&shipments, 1).await?;
        let outbox = Outbox::open(pool.clone()).await?;
        let relay = Relay::new(outbox.clone(), bus.clone()).spawn();
        let requests = ShippingRequests { outbox, shipments };
        let projection = StreamProjector::new("shipping", requests, pool, bus, topic)?.start().await?;
        Ok(ShippingService { projection, relay })
    }

    /// How many order events it has applied.
    pub fn applied(&self) -> u64 {
        self.projection.applied()
    }

    /// Stops after the event in flight.
    pub async fn shutdown(self) {
        self.projection.shutdown().await;
        self.relay.shutdown().await;
    }
}

macro_rules! shipping_projection {
    ($db:ty, $conn:ty) => {
        #[async_trait::async_trait]
        impl Projection<$db> for ShippingRequests<$db> {
            fn tables(&self) -> &[&'static str] {
                &["shipping_orders", "shipping_requests"]
            }

            async fn create(&self, tx: &mut $conn, t: &Tables) -> Result<(), ProjectionError> {
                for ddl in [
                    "CREATE TABLE {shipping_orders} (order_id TEXT PRIMARY KEY, customer TEXT NOT NULL, lines TEXT NOT NULL)",
                    "CREATE TABLE {shipping_requests} (order_id TEXT PRIMARY KEY, customer TEXT NOT NULL, lines TEXT NOT NULL,
                        requested_at BIGINT NOT NULL)",
                ] {
                    sqlx::query(t.sql(ddl)).execute(&mut *tx).await?;
                }
                Ok(())
            }

            async fn apply(&self, tx: &mut $conn, t: &Tables, event: &RecordedEvent) -> Result<(), ProjectionError> {
                let Some(id) = order_id(event.stream.as_str()) else { return Ok(()) };
                match decode_event::<OrderEvent>(event)? {
                    OrderEvent::Created { customer, lines, .. } => {
                        sqlx::query(t.sql(
                            "INSERT INTO {shipping_orders} (order_id, customer, lines) VALUES ($1, $2, $3)
                             ON CONFLICT (order_id) DO NOTHING",
                        ))
                        .bind(id)
                        .bind(customer)
                        .bind(serde_json::to_string(&lines)?)
                        .execute(&mut *tx)
                        .await?;
                    }
                    OrderEvent::Edited { lines, .. } => {
                        sqlx::query(t.sql("UPDATE {shipping_orders} SET lines = $2 WHERE order_id = $1"))
                            .bind(id)
                            .bind(serde_json::to_string(&lines)?)
                            .execute(&mut *tx)
                            .await?;
                    }
                    OrderEvent::Confirmed => {
                        let at = event.recorded_at.as_millis() as i64;
                        let requested = sqlx::query(t.sql(
                            "INSERT INTO {shipping_requests} (order_id, customer, lines, requested_at)
                             SELECT order_id, customer, lines, $2 FROM {shipping_orders} WHERE order_id = $1
                             ON CONFLICT (order_id) DO NOTHING",
                        ))
                        .bind(id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                        if requested.rows_affected() > 0 {
                            let fact = self.fact("shipment.requested", id, at);
                            self.outbox.enqueue(tx, &self.shipments, fact).await.map_err(ProjectionError::handler)?;
                        }
                    }
                    OrderEvent::Canceled { .. } => {
                        let withdrawn = sqlx::query(t.sql("DELETE FROM {shipping_requests} WHERE order_id = $1"))
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                        if withdrawn.rows_affected() > 0 {
                            let fact = self.fact("shipment.canceled", id, event.recorded_at.as_millis() as i64);
                            self.outbox.enqueue(tx, &self.shipments, fact).await.map_err(ProjectionError::handler)?;
                        }
                    }
                }
                Ok(())
            }
        }
    };
}

shipping_projection!(sqlx::Sqlite, sqlx::SqliteConnection);
shipping_projection!(sqlx::Postgres, sqlx::PgConnection);

/// Shipping's queries.
pub trait ShippingDatabase: ProjectionDatabase {
    /// The orders with a shipping request, by id.
    #[doc(hidden)]
    fn shipping_requests(pool: &sqlx::Pool<Self>) -> futures::future::BoxFuture<'_, Vec<String>>;
}

macro_rules! shipping_database {
    ($db:ty) => {
        impl ShippingDatabase for $db {
            fn shipping_requests(pool: &sqlx::Pool<Self>) -> futures::future::BoxFuture<'_, Vec<String>> {
                Box::pin(async move {
                    sqlx::query_scalar("SELECT order_id FROM shipping_requests ORDER BY order_id")
                        .fetch_all(pool)
                        .await
                        .unwrap_or_default()
                })
            }
        }
    };
}

shipping_database!(sqlx::Sqlite);
shipping_database!(sqlx::Postgres);
