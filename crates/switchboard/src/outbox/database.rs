//! What the outbox needs from a database: the sealed [`OutboxDatabase`] trait (implemented
//! for SQLite and PostgreSQL), and the object-safe [`Store`] the relay drives, so the relay
//! is written once.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::row::{NewRow, Row};
use super::{OutboxRowId, OutboxStats, ParkedRow};

/// A database the outbox can live in: `sqlx::Sqlite` (feature `sqlite`) or
/// `sqlx::Postgres` (feature `postgres`). Sealed: the SQL is the outbox's own.
pub trait OutboxDatabase: sqlx::Database + sealed::Sealed {
    /// The database's name, for logs.
    const NAME: &'static str;

    #[doc(hidden)]
    fn open_store(pool: sqlx::Pool<Self>) -> BoxFuture<'static, Result<Arc<dyn Store>, sqlx::Error>>;

    /// A transaction that will read and then write. On SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`): a deferred one that read first could not upgrade after
    /// another writer committed, and would fail instead of waiting.
    #[doc(hidden)]
    fn begin_write(
        pool: &sqlx::Pool<Self>,
    ) -> BoxFuture<'_, Result<sqlx::Transaction<'static, Self>, sqlx::Error>>;

    #[doc(hidden)]
    fn insert<'c>(
        conn: &'c mut Self::Connection,
        row: &'c NewRow,
    ) -> BoxFuture<'c, Result<OutboxRowId, sqlx::Error>>;
}

pub(crate) mod sealed {
    pub trait Sealed {}
    #[cfg(feature = "sqlite")]
    impl Sealed for sqlx::Sqlite {}
    #[cfg(feature = "postgres")]
    impl Sealed for sqlx::Postgres {}
}

/// What became of one row in a round.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The broker confirmed it.
    Sent,
    /// It failed and is tried again at `next_attempt_at` (ms).
    Retry { next_attempt_at: i64, error: String },
    /// It failed for good.
    Park { error: String },
}

/// Records a round's outcomes (at a time in ms) and releases its claim.
pub(crate) type Finish =
    Box<dyn FnOnce(Vec<(i64, Outcome)>, i64) -> BoxFuture<'static, Result<(), sqlx::Error>> + Send>;

/// The rows of one round, claimed by one relay until [`Claim::finish`].
pub struct Claim {
    pub rows: Vec<Row>,
    pub finish: Finish,
}

impl Claim {
    /// Records the outcomes (at `now`, ms) and releases the claim.
    pub async fn finish(self, outcomes: Vec<(i64, Outcome)>, now: i64) -> Result<(), sqlx::Error> {
        (self.finish)(outcomes, now).await
    }
}

/// The outbox tables of one database, as the relay and the operator API use them.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Claims up to `limit` pending rows (in id order) of lanes no other relay holds.
    async fn claim(&self, limit: u32) -> Result<Claim, sqlx::Error>;
    /// Deletes sent rows sent before `before` (ms); returns how many.
    async fn purge(&self, before: i64) -> Result<u64, sqlx::Error>;
    /// Counts, and the oldest pending row's age at `now`.
    async fn stats(&self, now: i64) -> Result<OutboxStats, sqlx::Error>;
    /// Parked rows, oldest first.
    async fn parked(&self, limit: u32) -> Result<Vec<ParkedRow>, sqlx::Error>;
    /// Makes a parked row pending again; false when no parked row has this id.
    async fn unpark(&self, id: OutboxRowId) -> Result<bool, sqlx::Error>;
    /// Starts bumping `wake` whenever another process commits rows, where the database can
    /// tell (PostgreSQL's `LISTEN`); the task ends when `wake` has no receivers.
    fn listen(&self, wake: Arc<watch::Sender<u64>>);
}

/// Splits outcomes into sent ids and the failed rows, for the dialects' updates.
pub(crate) fn split(outcomes: Vec<(i64, Outcome)>) -> (Vec<i64>, Vec<(i64, Outcome)>) {
    let mut sent = Vec::new();
    let mut failed = Vec::new();
    for (id, outcome) in outcomes {
        match outcome {
            Outcome::Sent => sent.push(id),
            other => failed.push((id, other)),
        }
    }
    (sent, failed)
}

/// The counts of the stats query, as [`OutboxStats`].
pub(crate) fn stats(pending: i64, parked: i64, sent: i64, oldest: Option<i64>, now: i64) -> OutboxStats {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    OutboxStats {
        pending: count(pending),
        parked: count(parked),
        sent: count(sent),
        oldest_pending: oldest
            .map(|at| std::time::Duration::from_millis(u64::try_from(now - at).unwrap_or(0))),
    }
}

/// A parked row's columns as [`ParkedRow`].
pub(crate) fn parked_row(
    (id, topic, message_id, attempts, error): (i64, String, String, i64, Option<String>),
) -> ParkedRow {
    ParkedRow {
        id: OutboxRowId(id),
        topic,
        message_id,
        attempts: u32::try_from(attempts).unwrap_or(0),
        error: error.unwrap_or_default(),
    }
}
