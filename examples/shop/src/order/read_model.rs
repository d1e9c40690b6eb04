//! The order list: a projection of the order streams into `shop_orders`, which the REST
//! list and (later) the GraphQL read model query. Rebuildable from the feed.

use switchboard::eventstore::{RecordedEvent, decode_event};
use switchboard::projection::{Projection, ProjectionError, Tables};

use super::aggregate::OrderEvent;

/// The projection of orders into `shop_orders`.
#[derive(Clone, Copy, Debug, Default)]
pub struct OrderList;

/// The order id of an order stream (`order-<id>`), if it is one.
pub(crate) fn order_id(stream: &str) -> Option<&str> {
    stream.strip_prefix("order-")
}

macro_rules! order_list_projection {
    ($db:ty, $conn:ty) => {
        #[async_trait::async_trait]
        impl Projection<$db> for OrderList {
            fn tables(&self) -> &[&'static str] {
                &["shop_orders"]
            }

            async fn create(&self, tx: &mut $conn, t: &Tables) -> Result<(), ProjectionError> {
                for ddl in [
                    "CREATE TABLE {shop_orders} (
                        id TEXT PRIMARY KEY,
                        customer TEXT NOT NULL,
                        status TEXT NOT NULL,
                        total_cents BIGINT NOT NULL,
                        lines TEXT NOT NULL,
                        cancel_reason TEXT,
                        version BIGINT NOT NULL,
                        created_at BIGINT NOT NULL,
                        updated_at BIGINT NOT NULL
                    )",
                    "CREATE INDEX {shop_orders}_by_status ON {shop_orders} (status, created_at, id)",
                    "CREATE INDEX {shop_orders}_by_time ON {shop_orders} (created_at, id)",
                ] {
                    sqlx::query(t.sql(ddl)).execute(&mut *tx).await?;
                }
                Ok(())
            }

            async fn apply(&self, tx: &mut $conn, t: &Tables, event: &RecordedEvent) -> Result<(), ProjectionError> {
                let Some(id) = order_id(event.stream.as_str()) else { return Ok(()) };
                if event.is_tombstone() {
                    return Ok(());
                }
                let at = event.recorded_at.as_millis() as i64;
                let version = event.version as i64;
                match decode_event::<OrderEvent>(event)? {
                    OrderEvent::Created { customer, lines, total_cents } => {
                        sqlx::query(t.sql(
                            "INSERT INTO {shop_orders} (id, customer, status, total_cents, lines, version, created_at, updated_at)
                             VALUES ($1, $2, 'pending', $3, $4, $5, $6, $6)",
                        ))
                        .bind(id)
                        .bind(customer)
                        .bind(total_cents)
                        .bind(serde_json::to_string(&lines)?)
                        .bind(version)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    }
                    OrderEvent::Edited { lines, total_cents } => {
                        sqlx::query(t.sql(
                            "UPDATE {shop_orders} SET lines = $2, total_cents = $3, version = $4, updated_at = $5 WHERE id = $1",
                        ))
                        .bind(id)
                        .bind(serde_json::to_string(&lines)?)
                        .bind(total_cents)
                        .bind(version)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    }
                    OrderEvent::Confirmed => {
                        sqlx::query(t.sql(
                            "UPDATE {shop_orders} SET status = 'confirmed', version = $2, updated_at = $3 WHERE id = $1",
                        ))
                        .bind(id)
                        .bind(version)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    }
                    OrderEvent::Canceled { reason } => {
                        sqlx::query(t.sql(
                            "UPDATE {shop_orders} SET status = 'canceled', cancel_reason = $2, version = $3, updated_at = $4
                             WHERE id = $1",
                        ))
                        .bind(id)
                        .bind(reason)
                        .bind(version)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                Ok(())
            }
        }
    };
}

order_list_projection!(sqlx::Sqlite, sqlx::SqliteConnection);
order_list_projection!(sqlx::Postgres, sqlx::PgConnection);
