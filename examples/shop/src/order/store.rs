//! The order service's own tables beside the event store: idempotency keys, and the
//! queries on the order list. The same SQL on SQLite and PostgreSQL, one macro.

use futures::future::BoxFuture;
use switchboard::projection::ProjectionDatabase;
use switchboard::saga::SagaDatabase;

/// A row of the order list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderRow {
    /// The order's id.
    pub id: String,
    /// The customer's email.
    pub customer: String,
    /// `pending`, `confirmed` or `canceled`.
    pub status: String,
    /// The total, in cents.
    pub total_cents: i64,
    /// The lines as JSON.
    pub lines: String,
    /// Why it was canceled.
    pub cancel_reason: Option<String>,
    /// The order stream's version the row reflects.
    pub version: i64,
    /// Placed at (ms since the epoch).
    pub created_at: i64,
    /// Last changed at (ms since the epoch).
    pub updated_at: i64,
}

pub(crate) type OrderTuple = (String, String, String, i64, String, Option<String>, i64, i64, i64);

impl From<OrderTuple> for OrderRow {
    fn from(t: OrderTuple) -> OrderRow {
        OrderRow {
            id: t.0,
            customer: t.1,
            status: t.2,
            total_cents: t.3,
            lines: t.4,
            cancel_reason: t.5,
            version: t.6,
            created_at: t.7,
            updated_at: t.8,
        }
    }
}

/// What a stored idempotency key says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// This request claimed it: go ahead.
    Claimed,
    /// A request with this key was seen: its body's hash, and its answer once it has one.
    Seen {
        /// The hash of the request that claimed it.
        request_hash: String,
        /// The answer's status and body, once answered.
        answer: Option<(u16, String)>,
        /// The resource the first request chose (the order id), reused by a retry.
        resource_id: String,
        /// When it was claimed (ms).
        claimed_at: i64,
    },
}

/// A database the order service can keep its state in.
pub trait ShopDatabase: ProjectionDatabase + SagaDatabase + super::graphql::ReadModelDatabase {
    #[doc(hidden)]
    fn create_shop_tables(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<(), sqlx::Error>>;
    #[doc(hidden)]
    fn claim_key<'p>(
        pool: &'p sqlx::Pool<Self>,
        key: &'p str,
        request_hash: &'p str,
        resource_id: &'p str,
        now: i64,
    ) -> BoxFuture<'p, Result<KeyState, sqlx::Error>>;
    #[doc(hidden)]
    fn answer_key<'p>(
        pool: &'p sqlx::Pool<Self>,
        key: &'p str,
        status: u16,
        body: &'p str,
    ) -> BoxFuture<'p, Result<(), sqlx::Error>>;
    #[doc(hidden)]
    fn reclaim_key<'p>(
        pool: &'p sqlx::Pool<Self>,
        key: &'p str,
        claimed_at: i64,
        now: i64,
    ) -> BoxFuture<'p, Result<bool, sqlx::Error>>;
    #[doc(hidden)]
    fn release_key<'p>(pool: &'p sqlx::Pool<Self>, key: &'p str) -> BoxFuture<'p, Result<(), sqlx::Error>>;
    /// The feed position the checkout starter got to.
    #[doc(hidden)]
    fn checkout_checkpoint(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<i64, sqlx::Error>>;
    #[doc(hidden)]
    fn set_checkout_checkpoint(
        pool: &sqlx::Pool<Self>,
        position: i64,
    ) -> BoxFuture<'_, Result<(), sqlx::Error>>;
}

macro_rules! shop_database {
    ($db:ty) => {
        impl ShopDatabase for $db {
            fn create_shop_tables(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query(
                        "CREATE TABLE IF NOT EXISTS shop_idempotency (
                            key TEXT PRIMARY KEY,
                            request_hash TEXT NOT NULL,
                            resource_id TEXT NOT NULL,
                            status INTEGER,
                            body TEXT,
                            claimed_at BIGINT NOT NULL
                        )",
                    )
                    .execute(pool)
                    .await?;
                    sqlx::query(
                        "CREATE TABLE IF NOT EXISTS shop_checkout_feed (one INTEGER PRIMARY KEY CHECK (one = 1), position BIGINT NOT NULL)",
                    )
                    .execute(pool)
                    .await?;
                    Ok(())
                })
            }

            fn checkout_checkpoint(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<i64, sqlx::Error>> {
                Box::pin(async move {
                    let position: Option<i64> = sqlx::query_scalar("SELECT position FROM shop_checkout_feed WHERE one = 1")
                        .fetch_optional(pool)
                        .await?;
                    Ok(position.unwrap_or(0))
                })
            }

            fn set_checkout_checkpoint(pool: &sqlx::Pool<Self>, position: i64) -> BoxFuture<'_, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO shop_checkout_feed (one, position) VALUES (1, $1)
                         ON CONFLICT (one) DO UPDATE SET position = excluded.position",
                    )
                    .bind(position)
                    .execute(pool)
                    .await?;
                    Ok(())
                })
            }

            fn claim_key<'p>(
                pool: &'p sqlx::Pool<Self>,
                key: &'p str,
                request_hash: &'p str,
                resource_id: &'p str,
                now: i64,
            ) -> BoxFuture<'p, Result<KeyState, sqlx::Error>> {
                Box::pin(async move {
                    let inserted = sqlx::query(
                        "INSERT INTO shop_idempotency (key, request_hash, resource_id, claimed_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (key) DO NOTHING",
                    )
                    .bind(key)
                    .bind(request_hash)
                    .bind(resource_id)
                    .bind(now)
                    .execute(pool)
                    .await?;
                    if inserted.rows_affected() == 1 {
                        return Ok(KeyState::Claimed);
                    }
                    let (request_hash, resource_id, status, body, claimed_at): (String, String, Option<i32>, Option<String>, i64) =
                        sqlx::query_as(
                            "SELECT request_hash, resource_id, status, body, claimed_at FROM shop_idempotency WHERE key = $1",
                        )
                        .bind(key)
                        .fetch_one(pool)
                        .await?;
                    let answer = status.zip(body).map(|(s, b)| (u16::try_from(s).unwrap_or(500), b));
                    Ok(KeyState::Seen { request_hash, answer, resource_id, claimed_at })
                })
            }

            fn answer_key<'p>(
                pool: &'p sqlx::Pool<Self>,
                key: &'p str,
                status: u16,
                body: &'p str,
            ) -> BoxFuture<'p, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query("UPDATE shop_idempotency SET status = $2, body = $3 WHERE key = $1")
                        .bind(key)
                        .bind(i32::from(status))
                        .bind(body)
                        .execute(pool)
                        .await?;
                    Ok(())
                })
            }

            fn reclaim_key<'p>(
                pool: &'p sqlx::Pool<Self>,
                key: &'p str,
                claimed_at: i64,
                now: i64,
            ) -> BoxFuture<'p, Result<bool, sqlx::Error>> {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE shop_idempotency SET claimed_at = $3
                         WHERE key = $1 AND claimed_at = $2 AND status IS NULL",
                    )
                    .bind(key)
                    .bind(claimed_at)
                    .bind(now)
                    .execute(pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn release_key<'p>(pool: &'p sqlx::Pool<Self>, key: &'p str) -> BoxFuture<'p, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query("DELETE FROM shop_idempotency WHERE key = $1 AND status IS NULL")
                        .bind(key)
                        .execute(pool)
                        .await?;
                    Ok(())
                })
            }
        }
    };
}

shop_database!(sqlx::Sqlite);
shop_database!(sqlx::Postgres);
