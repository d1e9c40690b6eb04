//! The outbox in PostgreSQL, shared by any number of relays.
//!
//! - **Commit order per key**: an enqueue takes a transaction-scoped advisory lock on its
//!   key before its id is drawn from the sequence, so of two transactions writing one key
//!   the second draws its id only after the first committed (or rolled back). Without it,
//!   a sequence hands out ids in statement order, and a relay could publish a later
//!   commit's row before an earlier id that is still uncommitted. Keys only wait for their
//!   own writers (and, rarely, for a key whose hash they share).
//! - **One key, one relay**: a relay's round runs in a transaction that locks the lanes it
//!   works on (`FOR UPDATE SKIP LOCKED`, so relays pass over each other's lanes instead of
//!   waiting) and marks the rows in the same transaction. A relay killed mid-round rolls
//!   back: its rows stay pending and the next relay re-publishes them under the same ids.
//! - **Wake-ups**: the enqueue's `pg_notify` is delivered only if the transaction commits.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::{PgPool, Postgres};
use switchboard_policy::Reconnect;
use tokio::sync::watch;

use super::database::{Claim, OutboxDatabase, Outcome, Store, split};
use super::row::{NewRow, bind_new_row, raw_row, row_columns};
use super::{LANES, OutboxRowId, OutboxStats, ParkedRow};

/// The channel enqueues notify on.
const CHANNEL: &str = "switchboard_outbox";

/// The first half of the outbox's two-part advisory locks ("SBOX"), so they do not meet an
/// application's own one-part locks.
const LOCK_SPACE: i32 = 0x5342_4f58;

/// Lanes a relay locks per round: half of them, so a second relay finds work at once.
const LANES_PER_ROUND: i64 = LANES as i64 / 2;

const CREATE: [&str; 5] = [
    "CREATE TABLE IF NOT EXISTS switchboard_outbox (
        id BIGSERIAL PRIMARY KEY,
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
        data BYTEA NOT NULL,
        state SMALLINT NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL DEFAULT 0,
        last_error TEXT,
        enqueued_at BIGINT NOT NULL,
        sent_at BIGINT
    )",
    "CREATE INDEX IF NOT EXISTS switchboard_outbox_pending ON switchboard_outbox (lane, id) WHERE state = 0",
    "CREATE INDEX IF NOT EXISTS switchboard_outbox_sent ON switchboard_outbox (sent_at) WHERE state = 1",
    "CREATE TABLE IF NOT EXISTS switchboard_outbox_lanes (lane INTEGER PRIMARY KEY)",
    "INSERT INTO switchboard_outbox_lanes (lane) SELECT generate_series(0, 63) ON CONFLICT DO NOTHING",
];

const INSERT_KEYED: &str =
    "INSERT INTO switchboard_outbox (lane, partition_key, topic, message_id, source, ty,
        subject, time, datacontenttype, dataschema, extensions, data, enqueued_at)
    SELECT $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15
    FROM (SELECT pg_advisory_xact_lock($1, $2), pg_notify('switchboard_outbox', '')) AS first
    RETURNING id";

const INSERT_KEYLESS: &str =
    "INSERT INTO switchboard_outbox (lane, partition_key, topic, message_id, source, ty,
        subject, time, datacontenttype, dataschema, extensions, data, enqueued_at)
    SELECT $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15
    FROM (SELECT $1::INTEGER, $2::INTEGER, pg_notify('switchboard_outbox', '')) AS first
    RETURNING id";

impl OutboxDatabase for Postgres {
    const NAME: &'static str = "PostgreSQL";

    fn open_store(pool: PgPool) -> BoxFuture<'static, Result<Arc<dyn Store>, sqlx::Error>> {
        Box::pin(async move {
            // Concurrent `CREATE … IF NOT EXISTS` can still collide in the catalog: services
            // starting together take turns.
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1, 0)").bind(LOCK_SPACE).execute(&mut *tx).await?;
            for statement in CREATE {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(Arc::new(PostgresStore { pool }) as Arc<dyn Store>)
        })
    }

    fn begin_write(
        pool: &sqlx::Pool<Self>,
    ) -> BoxFuture<'_, Result<sqlx::Transaction<'static, Self>, sqlx::Error>> {
        Box::pin(async move { pool.begin_with("BEGIN").await })
    }

    fn insert<'c>(
        conn: &'c mut sqlx::PgConnection,
        row: &'c NewRow,
    ) -> BoxFuture<'c, Result<OutboxRowId, sqlx::Error>> {
        Box::pin(async move {
            let sql = if row.key_lock.is_some() { INSERT_KEYED } else { INSERT_KEYLESS };
            let insert = sqlx::query_scalar(sql).bind(LOCK_SPACE).bind(row.key_lock.unwrap_or(0));
            let id: i64 = bind_new_row!(insert, row).fetch_one(conn).await?;
            Ok(OutboxRowId(id))
        })
    }
}

struct PostgresStore {
    pool: PgPool,
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn claim(&self, limit: u32) -> Result<Claim, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let lanes: Vec<i32> = sqlx::query_scalar(
            "SELECT lane FROM switchboard_outbox_lanes l
             WHERE EXISTS (SELECT 1 FROM switchboard_outbox o WHERE o.lane = l.lane AND o.state = 0)
             ORDER BY random() LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(LANES_PER_ROUND)
        .fetch_all(&mut *tx)
        .await?;
        let rows = if lanes.is_empty() {
            Vec::new()
        } else {
            let rows = sqlx::query(concat!(
                "SELECT ",
                row_columns!(),
                " FROM switchboard_outbox WHERE state = 0 AND lane = ANY($1) ORDER BY id LIMIT $2"
            ))
            .bind(&lanes)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
            rows.iter().map(|r| raw_row(r).map(super::row::RawRow::into_row)).collect::<Result<_, _>>()?
        };
        Ok(Claim { rows, finish: Box::new(move |outcomes, now| Box::pin(finish(tx, outcomes, now))) })
    }

    async fn purge(&self, before: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM switchboard_outbox WHERE state = 1 AND sent_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn stats(&self, now: i64) -> Result<OutboxStats, sqlx::Error> {
        let (pending, parked, sent, oldest): (i64, i64, i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 0), count(*) FILTER (WHERE state = 2),
                 count(*) FILTER (WHERE state = 1), min(enqueued_at) FILTER (WHERE state = 0) FROM switchboard_outbox",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(super::database::stats(pending, parked, sent, oldest, now))
    }

    async fn parked(&self, limit: u32) -> Result<Vec<ParkedRow>, sqlx::Error> {
        let rows: Vec<(i64, String, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT id, topic, message_id, attempts::BIGINT, last_error FROM switchboard_outbox
             WHERE state = 2 ORDER BY id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(super::database::parked_row).collect())
    }

    async fn unpark(&self, id: OutboxRowId) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE switchboard_outbox SET state = 0, next_attempt_at = 0 WHERE id = $1 AND state = 2",
        )
        .bind(id.0)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            // Relays in other processes hear of it like of a commit.
            sqlx::query("SELECT pg_notify('switchboard_outbox', '')").execute(&self.pool).await?;
        }
        Ok(done.rows_affected() == 1)
    }

    fn listen(&self, wake: Arc<watch::Sender<u64>>) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut reconnect = Reconnect::up_to(Duration::from_secs(5));
            loop {
                tokio::select! {
                    () = wake.closed() => return,
                    ended = listen_until_error(&pool, &wake) => {
                        let Err(e) = ended else { return };
                        let delay = reconnect.next_delay();
                        tracing::debug!(error = %e, retry_in = ?delay, "The outbox's LISTEN connection failed; polling until it is back.");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        });
    }
}

/// Bumps `wake` on every notification until the connection fails (or the pool closes).
async fn listen_until_error(pool: &PgPool, wake: &watch::Sender<u64>) -> Result<(), sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    // Commits made while the listener was away were not heard: one bump covers them.
    wake.send_modify(|n| *n = n.wrapping_add(1));
    loop {
        listener.recv().await?;
        wake.send_modify(|n| *n = n.wrapping_add(1));
    }
}

async fn finish(
    mut tx: sqlx::Transaction<'static, Postgres>,
    outcomes: Vec<(i64, Outcome)>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let (sent, failed) = split(outcomes);
    if !sent.is_empty() {
        sqlx::query("UPDATE switchboard_outbox SET state = 1, sent_at = $1 WHERE id = ANY($2)")
            .bind(now)
            .bind(&sent)
            .execute(&mut *tx)
            .await?;
    }
    for (id, outcome) in failed {
        let (state, next_attempt_at, error) = match outcome {
            Outcome::Retry { next_attempt_at, error } => (0_i16, next_attempt_at, error),
            Outcome::Park { error } => (2, 0, error),
            Outcome::Sent => continue,
        };
        sqlx::query(
            "UPDATE switchboard_outbox SET state = $1, attempts = attempts + 1, next_attempt_at = $2, last_error = $3
             WHERE id = $4",
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
