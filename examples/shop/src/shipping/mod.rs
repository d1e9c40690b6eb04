//! The shipping service: a stream subscription on the `orders` log from the beginning,
//! into its own database. It keeps what it needs of each order from `order.created` and
//! `order.edited` (event-carried state: it never calls the order service), creates a
//! shipping request when an order is confirmed and deletes it when one is canceled.
//!
//! Each event takes effect once: the subscription is a [`StreamProjector`], whose
//! checkpoint per partition commits with the tables.

use switchboard::eventstore::{RecordedEvent, decode_event};
use switchboard::projection::{
    Projection, ProjectionDatabase, ProjectionError, RunningStreamProjection, StreamProjector, Tables,
};
use switchboard::{Bus, TopicName};

use crate::order::OrderEvent;
use crate::order::read_model::order_id;

/// Shipping's read of the order log: `shipping_orders` (what was ordered) and
/// `shipping_requests` (what to ship).
#[derive(Clone, Copy, Debug, Default)]
pub struct ShippingRequests;

/// The shipping service.
pub struct ShippingService {
    projection: RunningStreamProjection,
}

impl ShippingService {
    /// Follows the `orders` log on `bus` into `pool`.
    ///
    /// # Errors
    /// The tables cannot be created or the bus refuses the subscription.
    pub async fn start<DB: ProjectionDatabase>(pool: sqlx::Pool<DB>, bus: Bus) -> anyhow::Result<Self>
    where
        ShippingRequests: Projection<DB>,
    {
        let topic = TopicName::new(crate::order::ORDERS_TOPIC)?;
        bus.create_topic(&topic, 1).await?;
        let projection =
            StreamProjector::new("shipping", ShippingRequests, pool, bus, topic)?.start().await?;
        Ok(ShippingService { projection })
    }

    /// How many order events it has applied.
    pub fn applied(&self) -> u64 {
        self.projection.applied()
    }

    /// Stops after the event in flight.
    pub async fn shutdown(self) {
        self.projection.shutdown().await;
    }
}

macro_rules! shipping_projection {
    ($db:ty, $conn:ty) => {
        #[async_trait::async_trait]
        impl Projection<$db> for ShippingRequests {
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
                        sqlx::query(t.sql(
                            "INSERT INTO {shipping_requests} (order_id, customer, lines, requested_at)
                             SELECT order_id, customer, lines, $2 FROM {shipping_orders} WHERE order_id = $1
                             ON CONFLICT (order_id) DO NOTHING",
                        ))
                        .bind(id)
                        .bind(event.recorded_at.as_millis() as i64)
                        .execute(&mut *tx)
                        .await?;
                    }
                    OrderEvent::Canceled { .. } => {
                        sqlx::query(t.sql("DELETE FROM {shipping_requests} WHERE order_id = $1"))
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
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
