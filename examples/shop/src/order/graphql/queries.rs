//! The read model's SQL: orders from the order list, and the facts beside them. The same
//! SQL on SQLite and PostgreSQL, one macro; every query reads the projections' views.

use futures::future::BoxFuture;

use crate::order::store::OrderRow;

/// An order's payment as the `payments` log told it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRow {
    /// `charged`, `declined` or `refunded`.
    pub state: String,
    /// The amount, in cents.
    pub amount_cents: i64,
    /// The provider's charge id.
    pub charge_id: Option<String>,
    /// When it last changed (ms).
    pub updated_at: i64,
}

/// An order's shipment as the `shipments` log told it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShipmentRow {
    /// `requested` or `canceled`.
    pub state: String,
    /// When shipping was asked for it (ms).
    pub requested_at: Option<i64>,
    /// When it last changed (ms).
    pub updated_at: i64,
}

/// An email written about an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailRow {
    /// Its message id.
    pub message_id: String,
    /// `confirmed` or `canceled`.
    pub kind: String,
    /// The recipient.
    pub recipient: String,
    /// The subject line.
    pub subject: String,
    /// When it was written (ms).
    pub sent_at: i64,
}

/// Which orders a page lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderFilter {
    /// Only this status.
    pub status: Option<String>,
    /// Only this customer's.
    pub customer: Option<String>,
    /// After this cursor (created_at, id).
    pub after: Option<(i64, String)>,
    /// At most this many.
    pub limit: i64,
}

/// The read model's queries.
pub trait ReadModelDatabase: sqlx::Database {
    #[doc(hidden)]
    fn order_row<'p>(
        pool: &'p sqlx::Pool<Self>,
        id: &'p str,
    ) -> BoxFuture<'p, Result<Option<OrderRow>, sqlx::Error>>;
    #[doc(hidden)]
    fn order_rows<'p>(
        pool: &'p sqlx::Pool<Self>,
        filter: &'p OrderFilter,
    ) -> BoxFuture<'p, Result<Vec<OrderRow>, sqlx::Error>>;
    #[doc(hidden)]
    fn payment_row<'p>(
        pool: &'p sqlx::Pool<Self>,
        order: &'p str,
    ) -> BoxFuture<'p, Result<Option<PaymentRow>, sqlx::Error>>;
    #[doc(hidden)]
    fn shipment_row<'p>(
        pool: &'p sqlx::Pool<Self>,
        order: &'p str,
    ) -> BoxFuture<'p, Result<Option<ShipmentRow>, sqlx::Error>>;
    #[doc(hidden)]
    fn email_rows<'p>(
        pool: &'p sqlx::Pool<Self>,
        order: &'p str,
    ) -> BoxFuture<'p, Result<Vec<EmailRow>, sqlx::Error>>;
}

const ORDER_COLUMNS: &str = "SELECT id, customer, status, total_cents, lines, cancel_reason, version, created_at, updated_at FROM shop_orders";

macro_rules! read_model_database {
    ($db:ty) => {
        impl ReadModelDatabase for $db {
            fn order_row<'p>(pool: &'p sqlx::Pool<Self>, id: &'p str) -> BoxFuture<'p, Result<Option<OrderRow>, sqlx::Error>> {
                Box::pin(async move {
                    let sql = format!("{ORDER_COLUMNS} WHERE id = $1");
                    let row: Option<super::super::store::OrderTuple> =
                        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?;
                    Ok(row.map(OrderRow::from))
                })
            }

            fn order_rows<'p>(
                pool: &'p sqlx::Pool<Self>,
                filter: &'p OrderFilter,
            ) -> BoxFuture<'p, Result<Vec<OrderRow>, sqlx::Error>> {
                Box::pin(async move {
                    let (after_at, after_id) = filter.after.clone().unwrap_or((-1, String::new()));
                    let sql = format!(
                        "{ORDER_COLUMNS}
                         WHERE (CAST($1 AS TEXT) IS NULL OR status = $1)
                           AND (CAST($2 AS TEXT) IS NULL OR customer = $2)
                           AND (created_at > $3 OR (created_at = $3 AND id > $4))
                         ORDER BY created_at, id LIMIT $5"
                    );
                    let rows: Vec<super::super::store::OrderTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(&filter.status)
                        .bind(&filter.customer)
                        .bind(after_at)
                        .bind(after_id)
                        .bind(filter.limit)
                        .fetch_all(pool)
                        .await?;
                    Ok(rows.into_iter().map(OrderRow::from).collect())
                })
            }

            fn payment_row<'p>(
                pool: &'p sqlx::Pool<Self>,
                order: &'p str,
            ) -> BoxFuture<'p, Result<Option<PaymentRow>, sqlx::Error>> {
                Box::pin(async move {
                    let row: Option<(String, i64, Option<String>, i64)> = sqlx::query_as(
                        "SELECT state, amount_cents, charge_id, updated_at FROM shop_payments WHERE order_id = $1",
                    )
                    .bind(order)
                    .fetch_optional(pool)
                    .await?;
                    Ok(row.map(|(state, amount_cents, charge_id, updated_at)| PaymentRow {
                        state,
                        amount_cents,
                        charge_id,
                        updated_at,
                    }))
                })
            }

            fn shipment_row<'p>(
                pool: &'p sqlx::Pool<Self>,
                order: &'p str,
            ) -> BoxFuture<'p, Result<Option<ShipmentRow>, sqlx::Error>> {
                Box::pin(async move {
                    let row: Option<(String, Option<i64>, i64)> = sqlx::query_as(
                        "SELECT state, requested_at, updated_at FROM shop_shipments WHERE order_id = $1",
                    )
                    .bind(order)
                    .fetch_optional(pool)
                    .await?;
                    Ok(row.map(|(state, requested_at, updated_at)| ShipmentRow { state, requested_at, updated_at }))
                })
            }

            fn email_rows<'p>(pool: &'p sqlx::Pool<Self>, order: &'p str) -> BoxFuture<'p, Result<Vec<EmailRow>, sqlx::Error>> {
                Box::pin(async move {
                    let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
                        "SELECT message_id, kind, recipient, subject, sent_at FROM shop_emails
                         WHERE order_id = $1 ORDER BY sent_at, message_id",
                    )
                    .bind(order)
                    .fetch_all(pool)
                    .await?;
                    Ok(rows
                        .into_iter()
                        .map(|(message_id, kind, recipient, subject, sent_at)| EmailRow {
                            message_id,
                            kind,
                            recipient,
                            subject,
                            sent_at,
                        })
                        .collect())
                })
            }
        }
    };
}

read_model_database!(sqlx::Sqlite);
read_model_database!(sqlx::Postgres);
