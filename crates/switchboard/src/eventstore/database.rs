//! What the event store needs from a database: [`EventStoreDatabase`], implemented for
//! SQLite and PostgreSQL by one macro over the SQL both share (`$n` parameters work in
//! both), with the parts that differ — the events table, the insert, how the feed is
//! numbered, wake-ups — in each dialect's module.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::ExpectedVersion;
use crate::outbox::OutboxDatabase;

/// An event's columns, as written and read.
#[derive(Clone, Debug)]
#[doc(hidden)]
pub struct EventRow {
    pub position: Option<i64>,
    pub stream: String,
    pub version: i64,
    pub id: String,
    pub ty: String,
    pub schema_version: i32,
    pub data: Vec<u8>,
    pub metadata: String,
    pub recorded_at: i64,
}

pub(crate) type EventTuple = (Option<i64>, String, i64, String, String, i32, Vec<u8>, String, i64);

impl From<EventTuple> for EventRow {
    fn from(t: EventTuple) -> EventRow {
        EventRow {
            position: t.0,
            stream: t.1,
            version: t.2,
            id: t.3,
            ty: t.4,
            schema_version: t.5,
            data: t.6,
            metadata: t.7,
            recorded_at: t.8,
        }
    }
}

/// Where an append left its stream: the new version, and the last event's feed position
/// where the dialect knows it at commit.
#[doc(hidden)]
pub(crate) type AppendedAt = (i64, Option<i64>);

/// A stored snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub struct SnapshotRow {
    pub stream: String,
    pub version: i64,
    pub schema_version: i32,
    pub data: Vec<u8>,
    pub taken_at: i64,
}

/// The streams table: one row per stream, its version the concurrency check. The same text
/// on both databases.
pub(crate) const CREATE_STREAMS: &str = "CREATE TABLE IF NOT EXISTS switchboard_streams (
    stream TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
)";

/// A database the event store can live in (SQLite or PostgreSQL; sealed with the outbox's).
pub trait EventStoreDatabase: OutboxDatabase {
    /// Whether an event's feed position is known when its append commits (SQLite, where
    /// writers take turns). PostgreSQL numbers the feed just after commit instead.
    #[doc(hidden)]
    const POSITION_AT_COMMIT: bool;

    #[doc(hidden)]
    fn create_event_tables(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<(), sqlx::Error>>;

    /// Whether [`EventStoreDatabase::append_events`] is one statement, and so atomic
    /// without a transaction around it.
    #[doc(hidden)]
    const ATOMIC_APPEND: bool;

    /// Advances `stream` past `rows` if it is at `expected` and inserts them, numbering
    /// their versions; `(new version, last feed position if known)`, or `None` (nothing
    /// written) when the stream is not where the append expects it.
    #[doc(hidden)]
    fn append_events<'c>(
        conn: &'c mut Self::Connection,
        stream: &'c str,
        expected: ExpectedVersion,
        rows: &'c mut [EventRow],
        now: i64,
    ) -> BoxFuture<'c, Result<Option<AppendedAt>, sqlx::Error>>;

    /// The stream's version and whether it is deleted.
    #[doc(hidden)]
    fn stream_state<'c>(
        conn: &'c mut Self::Connection,
        stream: &'c str,
    ) -> BoxFuture<'c, Result<Option<(i64, bool)>, sqlx::Error>>;

    #[doc(hidden)]
    fn mark_deleted<'c>(
        conn: &'c mut Self::Connection,
        stream: &'c str,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;

    #[doc(hidden)]
    fn read_stream<'c>(
        conn: &'c mut Self::Connection,
        stream: &'c str,
        from: i64,
        forward: bool,
        limit: i64,
    ) -> BoxFuture<'c, Result<Vec<EventRow>, sqlx::Error>>;

    #[doc(hidden)]
    fn read_feed<'c>(
        conn: &'c mut Self::Connection,
        after: i64,
        limit: i64,
    ) -> BoxFuture<'c, Result<Vec<EventRow>, sqlx::Error>>;

    /// The feed's last position.
    #[doc(hidden)]
    fn head<'c>(conn: &'c mut Self::Connection) -> BoxFuture<'c, Result<i64, sqlx::Error>>;

    /// When the event at `position` was recorded.
    #[doc(hidden)]
    fn recorded_at<'c>(
        conn: &'c mut Self::Connection,
        position: i64,
    ) -> BoxFuture<'c, Result<Option<i64>, sqlx::Error>>;

    /// Numbers committed events that have no feed position yet; how many it numbered.
    #[doc(hidden)]
    fn sequence(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<u64, sqlx::Error>>;

    /// Bumps `feed` whenever another process extends the feed, until `stop` closes.
    #[doc(hidden)]
    fn listen_feed(pool: sqlx::Pool<Self>, feed: Arc<watch::Sender<u64>>, stop: watch::Receiver<u64>);

    #[doc(hidden)]
    fn save_snapshot<'c>(
        conn: &'c mut Self::Connection,
        row: &'c SnapshotRow,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;

    #[doc(hidden)]
    fn load_snapshot<'c>(
        conn: &'c mut Self::Connection,
        stream: &'c str,
    ) -> BoxFuture<'c, Result<Option<SnapshotRow>, sqlx::Error>>;
}

/// The columns of an event, in [`EventTuple`] order.
macro_rules! event_columns {
    () => {
        "position, stream, version, event_id, ty, schema_version, data, metadata, recorded_at"
    };
}

macro_rules! event_store_database {
    ($db:ty, $feature:literal, $dialect:ident) => {
        #[cfg(feature = $feature)]
        impl EventStoreDatabase for $db {
            const POSITION_AT_COMMIT: bool = super::$dialect::POSITION_AT_COMMIT;
            const ATOMIC_APPEND: bool = super::$dialect::ATOMIC_APPEND;

            fn append_events<'c>(
                conn: &'c mut Self::Connection,
                stream: &'c str,
                expected: ExpectedVersion,
                rows: &'c mut [EventRow],
                now: i64,
            ) -> BoxFuture<'c, Result<Option<AppendedAt>, sqlx::Error>> {
                Box::pin(super::$dialect::append_events(conn, stream, expected, rows, now))
            }

            fn create_event_tables(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<(), sqlx::Error>> {
                Box::pin(super::$dialect::create_tables(pool))
            }

            fn stream_state<'c>(
                conn: &'c mut Self::Connection,
                stream: &'c str,
            ) -> BoxFuture<'c, Result<Option<(i64, bool)>, sqlx::Error>> {
                Box::pin(async move {
                    let row: Option<(i64, i32)> =
                        sqlx::query_as("SELECT version, deleted FROM switchboard_streams WHERE stream = $1")
                            .bind(stream)
                            .fetch_optional(conn)
                            .await?;
                    Ok(row.map(|(version, deleted)| (version, deleted != 0)))
                })
            }

            fn mark_deleted<'c>(conn: &'c mut Self::Connection, stream: &'c str) -> BoxFuture<'c, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query("UPDATE switchboard_streams SET deleted = 1 WHERE stream = $1")
                        .bind(stream)
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            }

            fn read_stream<'c>(
                conn: &'c mut Self::Connection,
                stream: &'c str,
                from: i64,
                forward: bool,
                limit: i64,
            ) -> BoxFuture<'c, Result<Vec<EventRow>, sqlx::Error>> {
                Box::pin(async move {
                    let sql = if forward {
                        concat!("SELECT ", event_columns!(), " FROM switchboard_events
                            WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3")
                    } else {
                        concat!("SELECT ", event_columns!(), " FROM switchboard_events
                            WHERE stream = $1 AND version <= $2 ORDER BY version DESC LIMIT $3")
                    };
                    let rows: Vec<EventTuple> =
                        sqlx::query_as(sql).bind(stream).bind(from).bind(limit).fetch_all(conn).await?;
                    Ok(rows.into_iter().map(EventRow::from).collect())
                })
            }

            fn read_feed<'c>(
                conn: &'c mut Self::Connection,
                after: i64,
                limit: i64,
            ) -> BoxFuture<'c, Result<Vec<EventRow>, sqlx::Error>> {
                Box::pin(async move {
                    let rows: Vec<EventTuple> = sqlx::query_as(concat!(
                        "SELECT ",
                        event_columns!(),
                        " FROM switchboard_events WHERE position > $1 ORDER BY position LIMIT $2"
                    ))
                    .bind(after)
                    .bind(limit)
                    .fetch_all(conn)
                    .await?;
                    Ok(rows.into_iter().map(EventRow::from).collect())
                })
            }

            fn head<'c>(conn: &'c mut Self::Connection) -> BoxFuture<'c, Result<i64, sqlx::Error>> {
                Box::pin(async move { sqlx::query_scalar(super::$dialect::HEAD).fetch_one(conn).await })
            }

            fn recorded_at<'c>(
                conn: &'c mut Self::Connection,
                position: i64,
            ) -> BoxFuture<'c, Result<Option<i64>, sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query_scalar("SELECT recorded_at FROM switchboard_events WHERE position = $1")
                        .bind(position)
                        .fetch_optional(conn)
                        .await
                })
            }

            fn sequence(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<u64, sqlx::Error>> {
                Box::pin(super::$dialect::sequence(pool))
            }

            fn listen_feed(pool: sqlx::Pool<Self>, feed: Arc<watch::Sender<u64>>, stop: watch::Receiver<u64>) {
                super::$dialect::listen_feed(pool, feed, stop);
            }

            fn save_snapshot<'c>(
                conn: &'c mut Self::Connection,
                row: &'c SnapshotRow,
            ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
                Box::pin(async move {
                    // A snapshot only ever moves forward: two writers racing to save one keep the
                    // newer.
                    sqlx::query(
                        "INSERT INTO switchboard_snapshots (stream, version, schema_version, data, taken_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (stream) DO UPDATE SET version = excluded.version,
                             schema_version = excluded.schema_version, data = excluded.data, taken_at = excluded.taken_at
                         WHERE excluded.version > switchboard_snapshots.version
                             OR excluded.schema_version <> switchboard_snapshots.schema_version",
                    )
                    .bind(row.stream.as_str())
                    .bind(row.version)
                    .bind(row.schema_version)
                    .bind(row.data.as_slice())
                    .bind(row.taken_at)
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            }

            fn load_snapshot<'c>(
                conn: &'c mut Self::Connection,
                stream: &'c str,
            ) -> BoxFuture<'c, Result<Option<SnapshotRow>, sqlx::Error>> {
                Box::pin(async move {
                    let row: Option<(String, i64, i32, Vec<u8>, i64)> = sqlx::query_as(
                        "SELECT stream, version, schema_version, data, taken_at FROM switchboard_snapshots WHERE stream = $1",
                    )
                    .bind(stream)
                    .fetch_optional(conn)
                    .await?;
                    Ok(row.map(|(stream, version, schema_version, data, taken_at)| SnapshotRow {
                        stream,
                        version,
                        schema_version,
                        data,
                        taken_at,
                    }))
                })
            }
        }
    };
}

event_store_database!(sqlx::Sqlite, "sqlite", sqlite);
event_store_database!(sqlx::Postgres, "postgres", postgres);
