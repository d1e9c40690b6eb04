//! The event store in SQLite. Writers take turns (one write transaction at a time), so an
//! event's rowid, drawn at insert, is its feed position: commit order, no holes.

use std::sync::Arc;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};

use super::ExpectedVersion;
use super::database::{AppendedAt, EventRow};
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
    super::database::CREATE_STREAMS,
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
    let Some(version) = advance(&mut *conn, stream, expected, count, now).await? else {
        return Ok(None);
    };
    for (row, v) in rows.iter_mut().zip(version - count + 1..) {
        row.version = v;
    }
    let position = insert_events(conn, rows).await?;
    Ok(Some((version, position)))
}

/// Moves `stream` forward by `count` versions if it is at `expected` (and not deleted): one
/// statement per expectation, each of which only writes when the stream is where the append
/// expects it. The new version, or `None`.
async fn advance(
    conn: &mut SqliteConnection,
    stream: &str,
    expected: ExpectedVersion,
    count: i64,
    now: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let statement = match expected {
        ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => sqlx::query_scalar(
            "INSERT INTO switchboard_streams (stream, version, deleted, created_at, updated_at)
             VALUES ($1, $2, 0, $3, $3) ON CONFLICT (stream) DO NOTHING RETURNING version",
        )
        .bind(stream)
        .bind(count)
        .bind(now),
        ExpectedVersion::Any => sqlx::query_scalar(
            "INSERT INTO switchboard_streams (stream, version, deleted, created_at, updated_at)
             VALUES ($1, $2, 0, $3, $3)
             ON CONFLICT (stream) DO UPDATE SET version = switchboard_streams.version + excluded.version,
                 updated_at = excluded.updated_at
             WHERE switchboard_streams.deleted = 0
             RETURNING version",
        )
        .bind(stream)
        .bind(count)
        .bind(now),
        ExpectedVersion::StreamExists => sqlx::query_scalar(
            "UPDATE switchboard_streams SET version = version + $2, updated_at = $3
             WHERE stream = $1 AND deleted = 0 RETURNING version",
        )
        .bind(stream)
        .bind(count)
        .bind(now),
        ExpectedVersion::Exact(n) => sqlx::query_scalar(
            "UPDATE switchboard_streams SET version = version + $2, updated_at = $3
             WHERE stream = $1 AND deleted = 0 AND version = $4 RETURNING version",
        )
        .bind(stream)
        .bind(count)
        .bind(now)
        .bind(i64::try_from(n).unwrap_or(i64::MAX)),
    };
    statement.fetch_optional(conn).await
}

/// Inserts the rows in one statement; the feed position (rowid) of the last.
async fn insert_events(conn: &mut SqliteConnection, rows: &[EventRow]) -> Result<Option<i64>, sqlx::Error> {
    let mut insert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO switchboard_events (stream, version, event_id, ty, schema_version, data, metadata, recorded_at) ",
    );
    insert.push_values(rows, |mut values, row| {
        values
            .push_bind(row.stream.as_str())
            .push_bind(row.version)
            .push_bind(row.id.as_str())
            .push_bind(row.ty.as_str())
            .push_bind(row.schema_version)
            .push_bind(row.data.as_slice())
            .push_bind(row.metadata.as_str())
            .push_bind(row.recorded_at);
    });
    insert.push(" RETURNING position");
    let positions: Vec<i64> = insert.build_query_scalar().fetch_all(conn).await?;
    Ok(positions.into_iter().max())
}

pub(super) async fn sequence(_pool: &SqlitePool) -> Result<u64, sqlx::Error> {
    Ok(0)
}

/// Every writer of a SQLite file is in this process or polls: nothing to listen to.
pub(super) fn listen_feed(_pool: SqlitePool, _feed: Arc<watch::Sender<u64>>, _stop: watch::Receiver<u64>) {}
