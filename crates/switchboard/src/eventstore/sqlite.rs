//! The event store in SQLite. Writers take turns (one write transaction at a time), so an
//! event's rowid, drawn at insert, is its feed position: commit order, no holes.

use std::sync::Arc;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};

use super::ExpectedVersion;
use super::database::{AppendedAt, EventRow, EventStoreDatabase};
use tokio::sync::watch;

pub(super) const POSITION_AT_COMMIT: bool = true;

/// Two statements (in-process, so cheap): the caller's transaction makes them one.
pub(super) const ATOMIC_APPEND: bool = false;

pub(super) const HEAD: &str = "SELECT coalesce(max(position), 0) FROM switchboard_events";

const CREATE: [&str; 3] = [
    // `position` is the rowid: events are never removed (deletion is a tombstone), so it
    // is never reused.
    "CREATE TABLE IF NOT EXISTS switchboard_events (
        position INTEGER PRIMARY KEY,
        stream TEXT NOT NULL,
        version BIGINT NOT NULL,
        event_id TEXT NOT NULL,
        ty TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        data BLOB NOT NULL,
        metadata TEXT NOT NULL,
        recorded_at BIGINT NOT NULL,
        UNIQUE (stream, version)
    )",
    "CREATE TABLE IF NOT EXISTS switchboard_streams (
        stream TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS switchboard_snapshots (
        stream TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        schema_version INTEGER NOT NULL,
        data BLOB NOT NULL,
        taken_at BIGINT NOT NULL
    )",
];

pub(super) async fn create_tables(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for statement in CREATE {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    tx.commit().await
}

pub(super) async fn append_events(
    conn: &mut SqliteConnection,
    stream: &str,
    expected: ExpectedVersion,
    rows: &mut [EventRow],
    now: i64,
) -> Result<Option<AppendedAt>, sqlx::Error> {
    let count = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    let Some(version) = Sqlite::advance(&mut *conn, stream, expected, count, now).await? else {
        return Ok(None);
    };
    for (row, v) in rows.iter_mut().zip(version - count + 1..) {
        row.version = v;
    }
    let position = Sqlite::insert_events(conn, rows).await?;
    Ok(Some((version, position)))
}

pub(super) async fn finish_insert(
    mut insert: QueryBuilder<Sqlite>,
    conn: &mut SqliteConnection,
) -> Result<Option<i64>, sqlx::Error> {
    insert.push(" RETURNING position");
    let positions: Vec<i64> = insert.build_query_scalar().fetch_all(conn).await?;
    Ok(positions.into_iter().max())
}

pub(super) async fn sequence(_pool: &SqlitePool) -> Result<u64, sqlx::Error> {
    Ok(0)
}

/// Every writer of a SQLite file is in this process or polls: nothing to listen to.
pub(super) fn listen_feed(_pool: SqlitePool, _feed: Arc<watch::Sender<u64>>, _stop: watch::Receiver<u64>) {}
