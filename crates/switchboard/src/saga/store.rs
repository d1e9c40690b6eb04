//! Saga instances in SQL: one row per instance with a version column for optimistic
//! concurrency, and an append-only history. The SQL is the same text on SQLite and
//! PostgreSQL (both take `$n` parameters); [`SagaDatabase`] is implemented for each by one
//! macro.

use futures::future::BoxFuture;

use crate::outbox::OutboxDatabase;

/// An instance row, as stored.
#[derive(Clone, Debug, PartialEq)]
#[doc(hidden)]
pub struct InstanceRow {
    pub id: String,
    pub saga: String,
    pub saga_version: i32,
    pub status: String,
    pub paused: i32,
    pub step: i32,
    pub phase: String,
    pub attempt: i32,
    pub awaiting: Option<String>,
    pub deadline: Option<i64>,
    pub state: String,
    pub error: Option<String>,
    pub row_version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One line of an instance's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// When (ms since the epoch, the orchestrator's clock).
    pub at: i64,
    /// What happened (`started`, `command-sent`, `reply`, `reply-ignored`, `step-failed`,
    /// `timed-out`, `compensation-failed`, `parked`, `completed`, `compensated`, `paused`,
    /// `resumed`, `cancelled`, `retried`, `migrated`, `call-done`, `call-failed`).
    pub kind: String,
    /// The step it concerns, if any.
    pub step: Option<String>,
    /// Details for a person: the reply's type, the error, the attempt.
    pub detail: String,
}

/// A database sagas can live in (SQLite or PostgreSQL; sealed with the outbox's).
pub trait SagaDatabase: OutboxDatabase {
    #[doc(hidden)]
    fn create_saga_tables(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<(), sqlx::Error>>;
    #[doc(hidden)]
    fn insert_instance<'c>(
        conn: &'c mut Self::Connection,
        row: &'c InstanceRow,
    ) -> BoxFuture<'c, Result<bool, sqlx::Error>>;
    #[doc(hidden)]
    fn load_instance<'c>(
        conn: &'c mut Self::Connection,
        id: &'c str,
    ) -> BoxFuture<'c, Result<Option<InstanceRow>, sqlx::Error>>;
    #[doc(hidden)]
    fn update_instance<'c>(
        conn: &'c mut Self::Connection,
        row: &'c InstanceRow,
        expected_version: i64,
    ) -> BoxFuture<'c, Result<bool, sqlx::Error>>;
    #[doc(hidden)]
    fn append_history<'c>(
        conn: &'c mut Self::Connection,
        id: &'c str,
        entries: &'c [HistoryEntry],
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;
    #[doc(hidden)]
    fn due_instances<'p>(
        pool: &'p sqlx::Pool<Self>,
        saga: &'p str,
        now: i64,
        limit: i64,
    ) -> BoxFuture<'p, Result<Vec<String>, sqlx::Error>>;
    #[doc(hidden)]
    fn list_instances<'p>(
        pool: &'p sqlx::Pool<Self>,
        saga: &'p str,
        status: Option<&'p str>,
        limit: i64,
    ) -> BoxFuture<'p, Result<Vec<InstanceRow>, sqlx::Error>>;
    #[doc(hidden)]
    fn history_of<'p>(
        pool: &'p sqlx::Pool<Self>,
        id: &'p str,
    ) -> BoxFuture<'p, Result<Vec<HistoryEntry>, sqlx::Error>>;
}

macro_rules! columns {
    () => {
        "id, saga, saga_version, status, paused, step, phase, attempt, awaiting, deadline, state, error, \
         row_version, created_at, updated_at"
    };
}

type Tuple = (
    String,
    String,
    i32,
    String,
    i32,
    i32,
    String,
    i32,
    Option<String>,
    Option<i64>,
    String,
    Option<String>,
    i64,
    i64,
    i64,
);

fn from_tuple(t: Tuple) -> InstanceRow {
    InstanceRow {
        id: t.0,
        saga: t.1,
        saga_version: t.2,
        status: t.3,
        paused: t.4,
        step: t.5,
        phase: t.6,
        attempt: t.7,
        awaiting: t.8,
        deadline: t.9,
        state: t.10,
        error: t.11,
        row_version: t.12,
        created_at: t.13,
        updated_at: t.14,
    }
}

macro_rules! saga_database {
    ($db:ty, $feature:literal) => {
        #[cfg(feature = $feature)]
        impl SagaDatabase for $db {
            fn create_saga_tables(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    let mut tx = pool.begin().await?;
                    for statement in [
                        "CREATE TABLE IF NOT EXISTS switchboard_saga (
                            id TEXT PRIMARY KEY,
                            saga TEXT NOT NULL,
                            saga_version INTEGER NOT NULL,
                            status TEXT NOT NULL,
                            paused INTEGER NOT NULL,
                            step INTEGER NOT NULL,
                            phase TEXT NOT NULL,
                            attempt INTEGER NOT NULL,
                            awaiting TEXT,
                            deadline BIGINT,
                            state TEXT NOT NULL,
                            error TEXT,
                            row_version BIGINT NOT NULL,
                            created_at BIGINT NOT NULL,
                            updated_at BIGINT NOT NULL
                        )",
                        "CREATE INDEX IF NOT EXISTS switchboard_saga_by_status ON switchboard_saga (saga, status, created_at)",
                        "CREATE INDEX IF NOT EXISTS switchboard_saga_by_deadline ON switchboard_saga (saga, deadline)",
                        "CREATE TABLE IF NOT EXISTS switchboard_saga_history (
                            instance TEXT NOT NULL,
                            seq BIGINT NOT NULL,
                            at BIGINT NOT NULL,
                            kind TEXT NOT NULL,
                            step TEXT,
                            detail TEXT NOT NULL,
                            PRIMARY KEY (instance, seq)
                        )",
                    ] {
                        sqlx::query(statement).execute(&mut *tx).await?;
                    }
                    tx.commit().await
                })
            }

            fn insert_instance<'c>(conn: &'c mut Self::Connection, row: &'c InstanceRow) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
                Box::pin(async move {
                    let done = sqlx::query(concat!(
                        "INSERT INTO switchboard_saga (",
                        columns!(),
                        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                         ON CONFLICT (id) DO NOTHING"
                    ))
                    .bind(&row.id)
                    .bind(&row.saga)
                    .bind(row.saga_version)
                    .bind(&row.status)
                    .bind(row.paused)
                    .bind(row.step)
                    .bind(&row.phase)
                    .bind(row.attempt)
                    .bind(row.awaiting.as_deref())
                    .bind(row.deadline)
                    .bind(&row.state)
                    .bind(row.error.as_deref())
                    .bind(row.row_version)
                    .bind(row.created_at)
                    .bind(row.updated_at)
                    .execute(conn)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn load_instance<'c>(conn: &'c mut Self::Connection, id: &'c str) -> BoxFuture<'c, Result<Option<InstanceRow>, sqlx::Error>> {
                Box::pin(async move {
                    let row: Option<Tuple> =
                        sqlx::query_as(concat!("SELECT ", columns!(), " FROM switchboard_saga WHERE id = $1"))
                            .bind(id)
                            .fetch_optional(conn)
                            .await?;
                    Ok(row.map(from_tuple))
                })
            }

            fn update_instance<'c>(
                conn: &'c mut Self::Connection,
                row: &'c InstanceRow,
                expected_version: i64,
            ) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE switchboard_saga SET saga_version = $1, status = $2, paused = $3, step = $4, phase = $5,
                            attempt = $6, awaiting = $7, deadline = $8, state = $9, error = $10,
                            row_version = $11, updated_at = $12
                         WHERE id = $13 AND row_version = $14",
                    )
                    .bind(row.saga_version)
                    .bind(&row.status)
                    .bind(row.paused)
                    .bind(row.step)
                    .bind(&row.phase)
                    .bind(row.attempt)
                    .bind(row.awaiting.as_deref())
                    .bind(row.deadline)
                    .bind(&row.state)
                    .bind(row.error.as_deref())
                    .bind(row.row_version)
                    .bind(row.updated_at)
                    .bind(&row.id)
                    .bind(expected_version)
                    .execute(conn)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
            }

            fn append_history<'c>(
                conn: &'c mut Self::Connection,
                id: &'c str,
                entries: &'c [HistoryEntry],
            ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    if entries.is_empty() {
                        return Ok(());
                    }
                    let next: i64 = sqlx::query_scalar(
                        "SELECT coalesce(max(seq), 0) + 1 FROM switchboard_saga_history WHERE instance = $1",
                    )
                    .bind(id)
                    .fetch_one(&mut *conn)
                    .await?;
                    for (k, e) in entries.iter().enumerate() {
                        sqlx::query(
                            "INSERT INTO switchboard_saga_history (instance, seq, at, kind, step, detail)
                             VALUES ($1, $2, $3, $4, $5, $6)",
                        )
                        .bind(id)
                        .bind(next + k as i64)
                        .bind(e.at)
                        .bind(&e.kind)
                        .bind(e.step.as_deref())
                        .bind(&e.detail)
                        .execute(&mut *conn)
                        .await?;
                    }
                    Ok(())
                })
            }

            fn due_instances<'p>(pool: &'p sqlx::Pool<Self>, saga: &'p str, now: i64, limit: i64) -> BoxFuture<'p, Result<Vec<String>, sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query_scalar(
                        "SELECT id FROM switchboard_saga WHERE saga = $1 AND deadline IS NOT NULL AND deadline <= $2
                         AND paused = 0 ORDER BY deadline LIMIT $3",
                    )
                    .bind(saga)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
                })
            }

            fn list_instances<'p>(
                pool: &'p sqlx::Pool<Self>,
                saga: &'p str,
                status: Option<&'p str>,
                limit: i64,
            ) -> BoxFuture<'p, Result<Vec<InstanceRow>, sqlx::Error>> {
                Box::pin(async move {
                    let rows: Vec<Tuple> = sqlx::query_as(concat!(
                        "SELECT ",
                        columns!(),
                        " FROM switchboard_saga WHERE saga = $1 AND (CAST($2 AS TEXT) IS NULL OR status = $2)
                         ORDER BY created_at, id LIMIT $3"
                    ))
                    .bind(saga)
                    .bind(status)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?;
                    Ok(rows.into_iter().map(from_tuple).collect())
                })
            }

            fn history_of<'p>(pool: &'p sqlx::Pool<Self>, id: &'p str) -> BoxFuture<'p, Result<Vec<HistoryEntry>, sqlx::Error>> {
                Box::pin(async move {
                    let rows: Vec<(i64, String, Option<String>, String)> = sqlx::query_as(
                        "SELECT at, kind, step, detail FROM switchboard_saga_history WHERE instance = $1 ORDER BY seq",
                    )
                    .bind(id)
                    .fetch_all(pool)
                    .await?;
                    Ok(rows.into_iter().map(|(at, kind, step, detail)| HistoryEntry { at, kind, step, detail }).collect())
                })
            }
        }
    };
}

saga_database!(sqlx::Sqlite, "sqlite");
saga_database!(sqlx::Postgres, "postgres");
