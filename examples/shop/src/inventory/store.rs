//! Inventory's own database: stock per product and one reservation per order. The same
//! SQL on SQLite and PostgreSQL, one macro.
//!
//! Stock never goes below zero under concurrency: a reservation takes each line with a
//! conditional update (`… WHERE on_hand >= $qty`) in one transaction, and rolls back
//! whole if any line is short. A reservation is keyed by its order, so a repeated command
//! (a redelivery, a saga retry) finds it and answers the same. A reservation ends released
//! (stock back on hand) or sold (the order was confirmed: it leaves `reserved` for `sold`).

use futures::future::BoxFuture;
use switchboard::outbox::OutboxDatabase;

use crate::order::aggregate::Line;

/// What a reserve command ended in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The stock is set aside for the order.
    Reserved,
    /// A line is short: nothing was reserved.
    Unavailable {
        /// The first product short of stock.
        sku: String,
    },
    /// The order's reservation was released before (a late reserve must not take stock).
    Released,
}

/// Stock of one product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stock {
    /// The product.
    pub sku: String,
    /// Units free to sell.
    pub on_hand: i64,
    /// Units set aside for orders still in checkout.
    pub reserved: i64,
    /// Units sold: reserved for an order that was then confirmed.
    pub sold: i64,
}

/// A database inventory can keep its state in.
pub trait InventoryDatabase: OutboxDatabase {
    #[doc(hidden)]
    fn create_inventory_tables<'p>(
        pool: &'p sqlx::Pool<Self>,
        initial: &'p [(String, i64)],
    ) -> BoxFuture<'p, Result<(), sqlx::Error>>;
    #[doc(hidden)]
    fn reserve<'p>(
        pool: &'p sqlx::Pool<Self>,
        order: &'p str,
        lines: &'p [Line],
        now: i64,
    ) -> BoxFuture<'p, Result<Reservation, sqlx::Error>>;
    /// Releases the order's reservation (or records that there is none to take later);
    /// whether stock went back.
    #[doc(hidden)]
    fn release<'p>(
        pool: &'p sqlx::Pool<Self>,
        order: &'p str,
        now: i64,
    ) -> BoxFuture<'p, Result<bool, sqlx::Error>>;
    /// Turns the order's reservation into a sale (it was confirmed); whether it did (a
    /// repeated or unreserved order changes nothing).
    #[doc(hidden)]
    fn commit<'p>(
        pool: &'p sqlx::Pool<Self>,
        order: &'p str,
        now: i64,
    ) -> BoxFuture<'p, Result<bool, sqlx::Error>>;
    /// Every product's stock, by sku.
    #[doc(hidden)]
    fn all_stock(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<Vec<Stock>, sqlx::Error>>;
    #[doc(hidden)]
    fn stock<'p>(
        pool: &'p sqlx::Pool<Self>,
        sku: &'p str,
    ) -> BoxFuture<'p, Result<Option<Stock>, sqlx::Error>>;
}

macro_rules! inventory_database {
    ($db:ty) => {
        impl InventoryDatabase for $db {
            fn create_inventory_tables<'p>(
                pool: &'p sqlx::Pool<Self>,
                initial: &'p [(String, i64)],
            ) -> BoxFuture<'p, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    let mut tx = pool.begin().await?;
                    for ddl in [
                        "CREATE TABLE IF NOT EXISTS inventory_stock (
                            sku TEXT PRIMARY KEY,
                            on_hand BIGINT NOT NULL CHECK (on_hand >= 0),
                            reserved BIGINT NOT NULL CHECK (reserved >= 0),
                            sold BIGINT NOT NULL DEFAULT 0 CHECK (sold >= 0)
                        )",
                        "CREATE TABLE IF NOT EXISTS inventory_reservations (
                            order_id TEXT PRIMARY KEY,
                            lines TEXT NOT NULL,
                            state TEXT NOT NULL,
                            updated_at BIGINT NOT NULL
                        )",
                    ] {
                        sqlx::query(ddl).execute(&mut *tx).await?;
                    }
                    for (sku, on_hand) in initial {
                        sqlx::query(
                            "INSERT INTO inventory_stock (sku, on_hand, reserved) VALUES ($1, $2, 0)
                             ON CONFLICT (sku) DO NOTHING",
                        )
                        .bind(sku)
                        .bind(on_hand)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await
                })
            }

            fn reserve<'p>(
                pool: &'p sqlx::Pool<Self>,
                order: &'p str,
                lines: &'p [Line],
                now: i64,
            ) -> BoxFuture<'p, Result<Reservation, sqlx::Error>> {
                Box::pin(async move {
                    let mut tx = <$db as OutboxDatabase>::begin_write(pool).await?;
                    let state: Option<String> =
                        sqlx::query_scalar("SELECT state FROM inventory_reservations WHERE order_id = $1")
                            .bind(order)
                            .fetch_optional(&mut *tx)
                            .await?;
                    match state.as_deref() {
                        Some("reserved") => return Ok(Reservation::Reserved),
                        Some(_) => return Ok(Reservation::Released),
                        None => {}
                    }
                    for line in lines {
                        let taken = sqlx::query(
                            "UPDATE inventory_stock SET on_hand = on_hand - $2, reserved = reserved + $2
                             WHERE sku = $1 AND on_hand >= $2",
                        )
                        .bind(&line.sku)
                        .bind(line.quantity)
                        .execute(&mut *tx)
                        .await?;
                        if taken.rows_affected() == 0 {
                            // Rolled back with the transaction: no line stays reserved.
                            return Ok(Reservation::Unavailable { sku: line.sku.clone() });
                        }
                    }
                    sqlx::query(
                        "INSERT INTO inventory_reservations (order_id, lines, state, updated_at) VALUES ($1, $2, 'reserved', $3)",
                    )
                    .bind(order)
                    .bind(serde_json::to_string(lines).unwrap_or_default())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(Reservation::Reserved)
                })
            }

            fn release<'p>(pool: &'p sqlx::Pool<Self>, order: &'p str, now: i64) -> BoxFuture<'p, Result<bool, sqlx::Error>> {
                Box::pin(async move {
                    let mut tx = <$db as OutboxDatabase>::begin_write(pool).await?;
                    let row: Option<(String, String)> =
                        sqlx::query_as("SELECT state, lines FROM inventory_reservations WHERE order_id = $1")
                            .bind(order)
                            .fetch_optional(&mut *tx)
                            .await?;
                    let released = match row {
                        Some((state, lines)) if state == "reserved" => {
                            let lines: Vec<Line> = serde_json::from_str(&lines).unwrap_or_default();
                            for line in &lines {
                                sqlx::query(
                                    "UPDATE inventory_stock SET on_hand = on_hand + $2, reserved = reserved - $2 WHERE sku = $1",
                                )
                                .bind(&line.sku)
                                .bind(line.quantity)
                                .execute(&mut *tx)
                                .await?;
                            }
                            sqlx::query("UPDATE inventory_reservations SET state = 'released', updated_at = $2 WHERE order_id = $1")
                                .bind(order)
                                .bind(now)
                                .execute(&mut *tx)
                                .await?;
                            true
                        }
                        Some(_) => false,
                        None => {
                            // Released before it was reserved (the reserve is late or lost):
                            // remember it, so the late reserve takes nothing.
                            sqlx::query(
                                "INSERT INTO inventory_reservations (order_id, lines, state, updated_at) VALUES ($1, '[]', 'released', $2)",
                            )
                            .bind(order)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                            false
                        }
                    };
                    tx.commit().await?;
                    Ok(released)
                })
            }

            fn commit<'p>(pool: &'p sqlx::Pool<Self>, order: &'p str, now: i64) -> BoxFuture<'p, Result<bool, sqlx::Error>> {
                Box::pin(async move {
                    let mut tx = <$db as OutboxDatabase>::begin_write(pool).await?;
                    let lines: Option<String> = sqlx::query_scalar(
                        "SELECT lines FROM inventory_reservations WHERE order_id = $1 AND state = 'reserved'",
                    )
                    .bind(order)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(lines) = lines else { return Ok(false) };
                    let lines: Vec<Line> = serde_json::from_str(&lines).unwrap_or_default();
                    for line in &lines {
                        sqlx::query("UPDATE inventory_stock SET reserved = reserved - $2, sold = sold + $2 WHERE sku = $1")
                            .bind(&line.sku)
                            .bind(line.quantity)
                            .execute(&mut *tx)
                            .await?;
                    }
                    sqlx::query("UPDATE inventory_reservations SET state = 'sold', updated_at = $2 WHERE order_id = $1")
                        .bind(order)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(true)
                })
            }

            fn all_stock(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<Vec<Stock>, sqlx::Error>> {
                Box::pin(async move {
                    let rows: Vec<(String, i64, i64, i64)> =
                        sqlx::query_as("SELECT sku, on_hand, reserved, sold FROM inventory_stock ORDER BY sku")
                            .fetch_all(pool)
                            .await?;
                    Ok(rows.into_iter().map(|(sku, on_hand, reserved, sold)| Stock { sku, on_hand, reserved, sold }).collect())
                })
            }

            fn stock<'p>(pool: &'p sqlx::Pool<Self>, sku: &'p str) -> BoxFuture<'p, Result<Option<Stock>, sqlx::Error>> {
                Box::pin(async move {
                    let row: Option<(String, i64, i64, i64)> =
                        sqlx::query_as("SELECT sku, on_hand, reserved, sold FROM inventory_stock WHERE sku = $1")
                            .bind(sku)
                            .fetch_optional(pool)
                            .await?;
                    Ok(row.map(|(sku, on_hand, reserved, sold)| Stock { sku, on_hand, reserved, sold }))
                })
            }
        }
    };
}

inventory_database!(sqlx::Sqlite);
inventory_database!(sqlx::Postgres);
