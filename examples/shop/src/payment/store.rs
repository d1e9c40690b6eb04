//! Payment's own database: one row per order's payment. The same SQL on SQLite and
//! PostgreSQL, one macro.

use futures::future::BoxFuture;
use switchboard::outbox::OutboxDatabase;

/// An order's payment as stored: `charged`, `declined`, `refunded`, or `voided` (refunded
/// before any charge: a late charge must not go through).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// The state.
    pub state: String,
    /// The amount, in cents.
    pub amount_cents: i64,
    /// The provider's charge id.
    pub charge_id: Option<String>,
}

/// A database payment can keep its state in.
pub trait PaymentDatabase: OutboxDatabase {
    #[doc(hidden)]
    fn create_payment_tables(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<(), sqlx::Error>>;
    #[doc(hidden)]
    fn payment<'p>(
        pool: &'p sqlx::Pool<Self>,
        order: &'p str,
    ) -> BoxFuture<'p, Result<Option<Payment>, sqlx::Error>>;
    /// Every payment, by order.
    #[doc(hidden)]
    fn all_payments(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<Vec<(String, Payment)>, sqlx::Error>>;
    #[doc(hidden)]
    fn set_payment<'p>(
        pool: &'p sqlx::Pool<Self>,
        order: &'p str,
        payment: &'p Payment,
        now: i64,
    ) -> BoxFuture<'p, Result<(), sqlx::Error>>;
}

macro_rules! payment_database {
    ($db:ty) => {
        impl PaymentDatabase for $db {
            fn create_payment_tables(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query(
                        "CREATE TABLE IF NOT EXISTS payments (
                            order_id TEXT PRIMARY KEY,
                            state TEXT NOT NULL,
                            amount_cents BIGINT NOT NULL,
                            charge_id TEXT,
                            updated_at BIGINT NOT NULL
                        )",
                    )
                    .execute(pool)
                    .await?;
                    Ok(())
                })
            }

            fn payment<'p>(pool: &'p sqlx::Pool<Self>, order: &'p str) -> BoxFuture<'p, Result<Option<Payment>, sqlx::Error>> {
                Box::pin(async move {
                    let row: Option<(String, i64, Option<String>)> =
                        sqlx::query_as("SELECT state, amount_cents, charge_id FROM payments WHERE order_id = $1")
                            .bind(order)
                            .fetch_optional(pool)
                            .await?;
                    Ok(row.map(|(state, amount_cents, charge_id)| Payment { state, amount_cents, charge_id }))
                })
            }

            fn all_payments(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<Vec<(String, Payment)>, sqlx::Error>> {
                Box::pin(async move {
                    let rows: Vec<(String, String, i64, Option<String>)> =
                        sqlx::query_as("SELECT order_id, state, amount_cents, charge_id FROM payments ORDER BY order_id")
                            .fetch_all(pool)
                            .await?;
                    Ok(rows
                        .into_iter()
                        .map(|(order, state, amount_cents, charge_id)| (order, Payment { state, amount_cents, charge_id }))
                        .collect())
                })
            }

            fn set_payment<'p>(
                pool: &'p sqlx::Pool<Self>,
                order: &'p str,
                payment: &'p Payment,
                now: i64,
            ) -> BoxFuture<'p, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO payments (order_id, state, amount_cents, charge_id, updated_at) VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (order_id) DO UPDATE SET state = excluded.state, amount_cents = excluded.amount_cents,
                             charge_id = excluded.charge_id, updated_at = excluded.updated_at",
                    )
                    .bind(order)
                    .bind(&payment.state)
                    .bind(payment.amount_cents)
                    .bind(payment.charge_id.as_deref())
                    .bind(now)
                    .execute(pool)
                    .await?;
                    Ok(())
                })
            }
        }
    };
}

payment_database!(sqlx::Sqlite);
payment_database!(sqlx::Postgres);
