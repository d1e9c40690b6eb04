//! The outbox in SQLite. SQLite has one writer at a time, so ids are handed out in commit
//! order already; a relay reads without a transaction (holding SQLite's write lock while
//! publishing would stall the service's own writes) and records outcomes in a short one.
//! One relay per database file.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::{Sqlite, SqlitePool};
use tokio::sync::watch;

use super::database::{Claim, OutboxDatabase, Outcome, Store, split};
use super::row::{NewRow, bind_new_row, raw_row, row_columns};
use super::{OutboxRowId, OutboxStats, ParkedRow};

const CREATE: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS switchboard_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        lane INTEGER NOT NULL,
        partition_key TEXT,
        topic TEXT NOT NULL,
        message_id TEXT NOT NULL,
        source TEXT NOT NULL,
        ty TEXT NOT NULL,
        subject TEXT,
        time TEXT,
        datacontenttype TEXT,
        dataschema TEXT,
        extensions TEXT NOT NULL,
        data BLOB NOT NULL,
        state INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        enqueued_at INTEGER NOT NULL,
        sent_at INTEGER
    )",
    "CREATE INDEX IF NOT EXISTS switchboard_outbox_pending ON switchboard_outbox (id) WHERE state = 0",
    "CREATE INDEX IF NOT EXISTS switchboard_outbox_sent ON switchboard_outbox (sent_at) WHERE state = 1",
];

impl OutboxDatabase for Sqlite {
    const NAME: &'static str = "SQLite";

    fn open_store(pool: SqlitePool) -> BoxFuture<'static, Result<Arc<dyn Store>, sqlx::Error>> {
        Box::pin(async move {
            let mut tx = pool.begin().await?;
            for statement in CREATE {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(Arc::new(SqliteStore { pool }) as Arc<dyn Store>)
        })
    }

    fn begin_write(
        pool: &sqlx::Pool<Self>,
    ) -> BoxFuture<'_, Result<sqlx::Transaction<'static, Self>, sqlx::Error>> {
        Box::pin(async move { pool.begin_with("BEGIN IMMEDIATE").await })
    }

    fn insert<'c>(
        conn: &'c mut sqlx::SqliteConnection,
        row: &'c NewRow,
    ) -> BoxFuture<'c, Result<OutboxRowId, sqlx::Error>> {
        Box::pin(async move {
            let insert = sqlx::query_scalar(
                "INSERT INTO switchboard_outbox (lane, partition_key, topic, message_id, source, ty, subject, time,
                    datacontenttype, dataschema, extensions, data, enqueued_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            );
            let id: i64 = bind_new_row!(insert, row).fetch_one(conn).await?;
            Ok(OutboxRowId(id))
        })
    }
}

struct SqliteStore {
    pool: SqlitePool,
}

/// Ids as a JSON array, for `IN (SELECT value FROM json_each(?))`: one statement for a
/// whole round's sent rows.
fn json_ids(ids: &[i64]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn claim(&self, limit: u32) -> Result<Claim, sqlx::Error> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            row_columns!(),
            " FROM switchboard_outbox WHERE state = 0 ORDER BY id LIMIT ?"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let rows =
            rows.iter().map(|r| raw_row(r).map(super::row::RawRow::into_row)).collect::<Result<_, _>>()?;
        let pool = self.pool.clone();
        Ok(Claim { rows, finish: Box::new(move |outcomes, now| Box::pin(finish(pool, outcomes, now))) })
    }

    async fn purge(&self, before: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM switchboard_outbox WHERE state = 1 AND sent_at < ?")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn stats(&self, now: i64) -> Result<OutboxStats, sqlx::Error> {
        let (pending, parked, sent, oldest): (i64, i64, i64, Option<i64>) =
            sqlx::query_as(STATS).fetch_one(&self.pool).await?;
        Ok(super::database::stats(pending, parked, sent, oldest, now))
    }

    async fn parked(&self, limit: u32) -> Result<Vec<ParkedRow>, sqlx::Error> {
        let rows: Vec<(i64, String, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT id, topic, message_id, attempts, last_error FROM switchboard_outbox WHERE state = 2 ORDER BY id LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(super::database::parked_row).collect())
    }

    async fn unpark(&self, id: OutboxRowId) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE switchboard_outbox SET state = 0, next_attempt_at = 0 WHERE id = ? AND state = 2",
        )
        .bind(id.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    fn listen(&self, _wake: Arc<watch::Sender<u64>>) {
        // SQLite cannot tell another process's commits; `Outbox::commit` and the poll do.
    }
}

const STATS: &str = "SELECT count(*) FILTER (WHERE state = 0), count(*) FILTER (WHERE state = 2),
     count(*) FILTER (WHERE state = 1), min(enqueued_at) FILTER (WHERE state = 0) FROM switchboard_outbox";

async fn finish(pool: SqlitePool, outcomes: Vec<(i64, Outcome)>, now: i64) -> Result<(), sqlx::Error> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let (sent, failed) = split(outcomes);
    let mut tx = pool.begin().await?;
    if !sent.is_empty() {
        sqlx::query("UPDATE switchboard_outbox SET state = 1, sent_at = ? WHERE id IN (SELECT value FROM json_each(?))")
            .bind(now)
            .bind(json_ids(&sent))
            .execute(&mut *tx)
            .await?;
    }
    for (id, outcome) in failed {
        let (state, next_attempt_at, error) = match outcome {
            Outcome::Retry { next_attempt_at, error } => (0, next_attempt_at, error),
            Outcome::Park { error } => (2, 0, error),
            Outcome::Sent => continue,
        };
        sqlx::query(
            "UPDATE switchboard_outbox SET state = ?, attempts = attempts + 1, next_attempt_at = ?, last_error = ?
             WHERE id = ?",
        )
        .bind(state)
        .bind(next_attempt_at)
        .bind(error)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
