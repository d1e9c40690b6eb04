//! The event store in PostgreSQL, where the global feed has to be numbered after commit.
//!
//! Writers append concurrently (group commit shares their fsyncs), so an id drawn from a
//! sequence at insert is not commit order: a transaction that drew id 7 may commit after
//! one that drew 8, and a reader that already passed 8 would never see 7. Instead, events
//! are inserted without a position, and a **sequencer** numbers the committed ones: one at
//! a time (an advisory lock), in a transaction that takes the next dense positions from a
//! one-row head and notifies subscribers. A reader only sees numbered events, and every
//! numbering commits after the previous one, so the feed only ever grows at its end: no
//! hole is filled later and nothing is seen twice. Per-stream order holds because a
//! stream's next event is inserted only after the previous one committed (the stream row's
//! lock), so it has the higher id.
//!
//! Any process with the store open runs the sequencer after its own appends and on a poll;
//! readers of the feed run a round first, so a feed read sees every append that committed
//! before it.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use super::ExpectedVersion;
use super::database::{AppendedAt, EventRow};
use switchboard_policy::Reconnect;
use tokio::sync::watch;

pub(super) const POSITION_AT_COMMIT: bool = false;

/// One statement: an append needs no transaction of its own (and so one round trip).
pub(super) const ATOMIC_APPEND: bool = true;

pub(super) const HEAD: &str = "SELECT position FROM switchboard_event_head";

/// The channel a numbering notifies on.
const CHANNEL: &str = "switchboard_events";

/// The first half of the event store's two-part advisory locks ("SBES").
const LOCK_SPACE: i32 = 0x5342_4553;

/// The most events one numbering round takes.
const SEQUENCE_BATCH: i64 = 20_000;

const CREATE: [&str; 7] = [
    "CREATE TABLE IF NOT EXISTS switchboard_events (
        id BIGSERIAL,
        position BIGINT,
        stream TEXT NOT NULL,
        version BIGINT NOT NULL,
        event_id TEXT NOT NULL,
        ty TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        data BYTEA NOT NULL,
        metadata TEXT NOT NULL,
        recorded_at BIGINT NOT NULL,
        PRIMARY KEY (stream, version)
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS switchboard_events_position ON switchboard_events (position)",
    "CREATE INDEX IF NOT EXISTS switchboard_events_unnumbered ON switchboard_events (id) WHERE position IS NULL",
    "CREATE TABLE IF NOT EXISTS switchboard_event_head (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        position BIGINT NOT NULL
    )",
    "INSERT INTO switchboard_event_head (one, position) VALUES (1, 0) ON CONFLICT DO NOTHING",
    super::database::CREATE_STREAMS,
    "CREATE TABLE IF NOT EXISTS switchboard_snapshots (
        stream TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        schema_version INTEGER NOT NULL,
        data BYTEA NOT NULL,
        taken_at BIGINT NOT NULL
    )",
];

/// Numbers up to `$1` committed, unnumbered events in id order, after the head, and moves
/// the head; returns how many. Runs under the sequencer lock, so its snapshot (taken after
/// the lock) sees every earlier numbering.
const SEQUENCE: &str = "
    WITH pending AS (
        SELECT id FROM switchboard_events WHERE position IS NULL ORDER BY id LIMIT $1
    ), numbered AS (
        SELECT id, (SELECT position FROM switchboard_event_head) + row_number() OVER (ORDER BY id) AS position
        FROM pending
    ), assigned AS (
        UPDATE switchboard_events e SET position = numbered.position FROM numbered
        WHERE e.id = numbered.id AND e.position IS NULL
        RETURNING e.position
    )
    UPDATE switchboard_event_head
    SET position = coalesce((SELECT max(position) FROM assigned), switchboard_event_head.position)
    RETURNING (SELECT count(*) FROM assigned)";

/// The events of one append, inserted from parallel arrays after the stream row moved.
macro_rules! append_sql {
    ($advance:literal) => {
        concat!(
            "WITH advanced AS (",
            $advance,
            "), inserted AS (
                INSERT INTO switchboard_events (stream, version, event_id, ty, schema_version, data, metadata, recorded_at)
                SELECT $1, advanced.version - $2 + e.ord, e.event_id, e.ty, e.schema_version, e.data, e.metadata, $3
                FROM advanced,
                    unnest($5::TEXT[], $6::TEXT[], $7::INTEGER[], $8::BYTEA[], $9::TEXT[])
                        WITH ORDINALITY AS e(event_id, ty, schema_version, data, metadata, ord)
                RETURNING 1
            )
            SELECT version FROM advanced"
        )
    };
}

/// The stream moves only when it is where the append expects it (`$4` is the expected
/// version, unused by the other forms); a second writer waits for the first's row lock and
/// then re-checks its condition on the committed row.
const APPEND_NO_STREAM: &str = append_sql!(
    "INSERT INTO switchboard_streams (stream, version, deleted, created_at, updated_at)
     SELECT $1, $2, 0, $3, $3 WHERE $4::BIGINT IS NOT NULL
     ON CONFLICT (stream) DO NOTHING RETURNING version"
);
const APPEND_ANY: &str = append_sql!(
    "INSERT INTO switchboard_streams (stream, version, deleted, created_at, updated_at)
     SELECT $1, $2, 0, $3, $3 WHERE $4::BIGINT IS NOT NULL
     ON CONFLICT (stream) DO UPDATE SET version = switchboard_streams.version + excluded.version,
         updated_at = excluded.updated_at
     WHERE switchboard_streams.deleted = 0
     RETURNING version"
);
const APPEND_EXISTS: &str = append_sql!(
    "UPDATE switchboard_streams SET version = version + $2, updated_at = $3
     WHERE stream = $1 AND deleted = 0 AND $4::BIGINT IS NOT NULL RETURNING version"
);
const APPEND_EXACT: &str = append_sql!(
    "UPDATE switchboard_streams SET version = version + $2, updated_at = $3
     WHERE stream = $1 AND deleted = 0 AND version = $4 RETURNING version"
);

pub(super) async fn append_events(
    conn: &mut PgConnection,
    stream: &str,
    expected: ExpectedVersion,
    rows: &mut [EventRow],
    now: i64,
) -> Result<Option<AppendedAt>, sqlx::Error> {
    let count = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    let (sql, exact) = match expected {
        ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => (APPEND_NO_STREAM, 0),
        ExpectedVersion::Any => (APPEND_ANY, 0),
        ExpectedVersion::StreamExists => (APPEND_EXISTS, 0),
        ExpectedVersion::Exact(n) => (APPEND_EXACT, i64::try_from(n).unwrap_or(i64::MAX)),
    };
    let version: Option<i64> = sqlx::query_scalar(sql)
        .bind(stream)
        .bind(count)
        .bind(now)
        .bind(exact)
        .bind(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.ty.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.schema_version).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.data.as_slice()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.metadata.as_str()).collect::<Vec<_>>())
        .fetch_optional(conn)
        .await?;
    let Some(version) = version else { return Ok(None) };
    for (row, v) in rows.iter_mut().zip(version - count + 1..) {
        row.version = v;
    }
    Ok(Some((version, None)))
}

pub(super) async fn create_tables(pool: &PgPool) -> Result<(), sqlx::Error> {
    // Concurrent `CREATE … IF NOT EXISTS` can still collide in the catalog: take turns.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, 0)").bind(LOCK_SPACE).execute(&mut *tx).await?;
    for statement in CREATE {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    tx.commit().await
}

pub(super) async fn sequence(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let pending: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM switchboard_events WHERE position IS NULL)")
            .fetch_one(pool)
            .await?;
    if !pending {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, 1)").bind(LOCK_SPACE).execute(&mut *tx).await?;
    let numbered: i64 = sqlx::query_scalar(SEQUENCE).bind(SEQUENCE_BATCH).fetch_one(&mut *tx).await?;
    if numbered > 0 {
        // One notification per round, from the one sequencer: it costs the appends nothing.
        sqlx::query("SELECT pg_notify('switchboard_events', '')").execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(u64::try_from(numbered).unwrap_or(0))
}

pub(super) fn listen_feed(pool: PgPool, feed: Arc<watch::Sender<u64>>, mut stop: watch::Receiver<u64>) {
    tokio::spawn(async move {
        let mut reconnect = Reconnect::up_to(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = closed(&mut stop) => return,
                ended = listen_until_error(&pool, &feed) => {
                    let Err(e) = ended else { return };
                    let delay = reconnect.next_delay();
                    tracing::debug!(error = %e, retry_in = ?delay, "The event store's LISTEN connection failed; subscriptions poll until it is back.");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    });
}

async fn closed(stop: &mut watch::Receiver<u64>) {
    while stop.changed().await.is_ok() {}
}

async fn listen_until_error(pool: &PgPool, feed: &watch::Sender<u64>) -> Result<(), sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    feed.send_modify(|n| *n = n.wrapping_add(1));
    loop {
        listener.recv().await?;
        feed.send_modify(|n| *n = n.wrapping_add(1));
    }
}
