//! Inbox stores in SQL databases through `sqlx`: SQLite (the embedded default for SDK
//! state) and PostgreSQL (production). Both keep one row per (handler, message id) in
//! `switchboard_inbox`, created on first use, and purge rows older than the window as they
//! go, so the table stays bounded by the window's traffic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard_core::contract::BoxError;

use super::inbox::InboxStore;

/// Inserts between purges of expired rows.
const PURGE_EVERY: u64 = 1000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn window_ms(window: Duration) -> i64 {
    i64::try_from(window.as_millis()).unwrap_or(i64::MAX)
}

const CREATE: &str = "CREATE TABLE IF NOT EXISTS switchboard_inbox (
    handler TEXT NOT NULL,
    message_id TEXT NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (handler, message_id)
)";

macro_rules! sql_inbox {
    ($(#[$doc:meta])* $name:ident, $feature:literal, $pool:ty, $contains:literal, $insert:literal, $purge:literal) => {
        $(#[$doc])*
        #[cfg(feature = $feature)]
        #[derive(Debug)]
        pub struct $name {
            pool: $pool,
            window: Duration,
            inserts: AtomicU64,
        }

        #[cfg(feature = $feature)]
        impl $name {
            /// Uses `pool`, creating the table if needed; ids are remembered for `window`.
            ///
            /// # Errors
            /// The table cannot be created.
            pub async fn new(pool: $pool, window: Duration) -> Result<$name, sqlx::Error> {
                sqlx::query(CREATE).execute(&pool).await?;
                Ok($name { pool, window, inserts: AtomicU64::new(0) })
            }
        }

        #[cfg(feature = $feature)]
        #[async_trait::async_trait]
        impl InboxStore for $name {
            async fn contains(&self, handler: &str, message_id: &str) -> Result<bool, BoxError> {
                let since = now_ms().saturating_sub(window_ms(self.window));
                let row = sqlx::query($contains)
                    .bind(handler)
                    .bind(message_id)
                    .bind(since)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.is_some())
            }

            async fn insert(&self, handler: &str, message_id: &str) -> Result<(), BoxError> {
                sqlx::query($insert).bind(handler).bind(message_id).bind(now_ms()).execute(&self.pool).await?;
                if self.inserts.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == 0 {
                    let before = now_ms().saturating_sub(window_ms(self.window));
                    sqlx::query($purge).bind(before).execute(&self.pool).await?;
                }
                Ok(())
            }
        }
    };
}

sql_inbox!(
    /// An inbox in SQLite.
    SqliteInbox,
    "sqlite",
    sqlx::SqlitePool,
    "SELECT 1 FROM switchboard_inbox WHERE handler = ? AND message_id = ? AND processed_at >= ?",
    "INSERT INTO switchboard_inbox (handler, message_id, processed_at) VALUES (?, ?, ?)
     ON CONFLICT (handler, message_id) DO UPDATE SET processed_at = excluded.processed_at",
    "DELETE FROM switchboard_inbox WHERE processed_at < ?"
);

sql_inbox!(
    /// An inbox in PostgreSQL.
    PostgresInbox,
    "postgres",
    sqlx::PgPool,
    "SELECT 1 FROM switchboard_inbox WHERE handler = $1 AND message_id = $2 AND processed_at >= $3",
    "INSERT INTO switchboard_inbox (handler, message_id, processed_at) VALUES ($1, $2, $3)
     ON CONFLICT (handler, message_id) DO UPDATE SET processed_at = excluded.processed_at",
    "DELETE FROM switchboard_inbox WHERE processed_at < $1"
);
