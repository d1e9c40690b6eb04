//! The transactional outbox: a service writes its business rows and the messages they cause
//! in **one database transaction**, and a [`Relay`] publishes what committed.
//!
//! Publishing straight from a handler after a database commit loses the message when the
//! process dies between the two; publishing before the commit sends a message for a change
//! that may roll back. The outbox closes that gap: the message is a row in the same
//! transaction, so it exists exactly when the business change does, and the relay turns
//! rows into publishes afterwards, at least once.
//!
//! - **Ids are fixed at enqueue.** A row re-published after a crash (published, then the
//!   process died before marking it sent) carries the same message id, which the broker's
//!   dedup window absorbs where the backend has [`Capability::Dedup`](crate::Capability),
//!   and the consumer's [inbox](crate::layers::InboxLayer) elsewhere.
//! - **Order per partition key is commit order.** Rows of one key are published in the
//!   order their transactions committed; a key whose head row fails waits (with backoff)
//!   and the keys behind it go on. Rows without a key have no order among themselves.
//! - **Several relays share one PostgreSQL database.** The keys hash into lanes; a relay
//!   locks the lanes it works on (`FOR UPDATE SKIP LOCKED`) for the length of a round, so
//!   two relays never publish one row in the normal case and one key is only ever in one
//!   relay's hands. On SQLite run one relay per database file.
//! - **Wake-ups.** On PostgreSQL an enqueue sends `NOTIFY` inside the caller's transaction,
//!   so the relay hears of exactly the commits (a rollback sends nothing). On SQLite,
//!   [`Outbox::commit`] commits and wakes the relays of this process. Both also poll (every
//!   second by default), which covers writers elsewhere and a lost notification.
//! - A row whose publish fails for good (the topic was deleted, the message is too large
//!   for the backend) is **parked** with its error, not dropped: [`Outbox::parked`] lists
//!   them and [`Outbox::retry_parked`] puts one back.
//!
//! ```
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use switchboard::outbox::{Outbox, Relay};
//! use switchboard::{Bus, Message, SubscriptionName, SubscriptionSpec, TopicName};
//!
//! let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
//! sqlx::query("CREATE TABLE orders (id TEXT PRIMARY KEY)").execute(&pool).await?;
//! let outbox = Outbox::sqlite(pool.clone()).await?;
//! let bus = Bus::connect("embedded:").await?;
//! let orders = TopicName::from_static("outbox-doc-orders");
//! let mut sub = bus.subscribe(&orders, SubscriptionSpec::queue(SubscriptionName::from_static("email"))).await?;
//! let relay = Relay::new(outbox.clone(), bus.clone()).spawn();
//!
//! // The business row and its event commit together, or neither does.
//! let mut tx = pool.begin().await?;
//! sqlx::query("INSERT INTO orders (id) VALUES ('o-1')").execute(&mut *tx).await?;
//! outbox.enqueue(&mut tx, &orders, Message::new("/orders", "order.created", "o-1").with_key("o-1")).await?;
//! outbox.commit(tx).await?;
//!
//! let delivery = sub.next().await.expect("a delivery")?;
//! assert_eq!(delivery.message().ty, "order.created");
//! delivery.ack().await?;
//! relay.shutdown().await;
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run()).unwrap();
//! ```

mod database;
#[cfg(feature = "postgres")]
mod postgres;
mod relay;
mod row;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{Message, MessageError, TopicName};
use tokio::sync::watch;

pub use database::OutboxDatabase;
use database::Store;
pub use relay::{Relay, RelayConfig, RoundReport, RunningRelay};
pub use row::{OutboxRowId, ParkedRow};

/// The largest message the outbox accepts, as the broker's default limit: a larger one
/// could never be published, so it is refused in the caller's transaction instead.
pub const MAX_MESSAGE_SIZE: usize = 1024 * 1024;

/// How many lanes the partition keys hash into; the unit of work a relay locks.
pub const LANES: u32 = 64;

/// Why the outbox refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The message is not valid (the transaction is unchanged).
    #[error("invalid outbox message: {0}")]
    InvalidMessage(#[from] MessageError),
    /// No parked row has this id.
    #[error("no parked outbox row {0}")]
    NotParked(OutboxRowId),
    /// The database failed.
    #[error("outbox database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// What the outbox holds right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Rows committed and not yet published.
    pub pending: u64,
    /// Rows whose publish failed for good, waiting for an operator.
    pub parked: u64,
    /// Published rows kept until the retention passes.
    pub sent: u64,
    /// Age of the oldest pending row.
    pub oldest_pending: Option<Duration>,
}

/// The outbox tables in one database (`switchboard_outbox`, `switchboard_outbox_lanes`),
/// created on first use. Cheap to clone.
pub struct Outbox<DB: OutboxDatabase> {
    store: Arc<dyn Store>,
    /// Bumped on every commit this process makes through [`Outbox::commit`]; each relay
    /// watches it (a watch, unlike a `Notify`, cannot lose a bump that came while a relay
    /// was busy).
    wake: Arc<watch::Sender<u64>>,
    _db: PhantomData<fn() -> DB>,
}

impl<DB: OutboxDatabase> Clone for Outbox<DB> {
    fn clone(&self) -> Self {
        Outbox { store: self.store.clone(), wake: self.wake.clone(), _db: PhantomData }
    }
}

impl<DB: OutboxDatabase> std::fmt::Debug for Outbox<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("database", &<DB as OutboxDatabase>::NAME).finish_non_exhaustive()
    }
}

#[cfg(feature = "sqlite")]
impl Outbox<sqlx::Sqlite> {
    /// The outbox in a SQLite database (the embedded default for SDK state).
    ///
    /// # Errors
    /// The tables cannot be created.
    pub async fn sqlite(pool: sqlx::SqlitePool) -> Result<Self, OutboxError> {
        Outbox::open(pool).await
    }
}

#[cfg(feature = "postgres")]
impl Outbox<sqlx::Postgres> {
    /// The outbox in a PostgreSQL database.
    ///
    /// # Errors
    /// The tables cannot be created.
    pub async fn postgres(pool: sqlx::PgPool) -> Result<Self, OutboxError> {
        Outbox::open(pool).await
    }
}

impl<DB: OutboxDatabase> Outbox<DB> {
    /// The outbox in the database behind `pool`, its tables created if needed.
    ///
    /// # Errors
    /// The tables cannot be created.
    pub async fn open(pool: sqlx::Pool<DB>) -> Result<Self, OutboxError> {
        let store = DB::open_store(pool).await?;
        Ok(Outbox { store, wake: Arc::new(watch::Sender::new(0)), _db: PhantomData })
    }

    /// Adds `message` for `topic` to the caller's transaction: it is published after the
    /// transaction commits, and never if it rolls back. Its id, and its partition key
    /// (`partitionkey`), are the ones it has now.
    ///
    /// # Errors
    /// [`OutboxError::InvalidMessage`] for a message the broker would refuse (the
    /// transaction is unchanged); [`OutboxError::Database`] when the insert fails (the
    /// caller's transaction is then in the database's hands: roll it back).
    pub async fn enqueue(
        &self,
        tx: &mut DB::Connection,
        topic: &TopicName,
        message: Message,
    ) -> Result<OutboxRowId, OutboxError> {
        message.validate(MAX_MESSAGE_SIZE)?;
        let row = row::NewRow::new(topic, message, now_ms());
        Ok(DB::insert(tx, &row).await?)
    }

    /// Commits `tx` and wakes this process's relays at once (without waiting for their
    /// next poll). On PostgreSQL a plain `tx.commit()` wakes them as quickly, by `NOTIFY`.
    ///
    /// # Errors
    /// The commit fails: nothing it enqueued is published.
    pub async fn commit(&self, tx: sqlx::Transaction<'_, DB>) -> Result<(), OutboxError> {
        tx.commit().await?;
        self.bump();
        Ok(())
    }

    /// Counts of pending, parked and sent rows, and the age of the oldest pending one.
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        Ok(self.store.stats(now_ms()).await?)
    }

    /// The parked rows (oldest first, at most `limit`), with the error that parked them.
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn parked(&self, limit: u32) -> Result<Vec<ParkedRow>, OutboxError> {
        Ok(self.store.parked(limit).await?)
    }

    /// Puts a parked row back in line (after the topic was recreated, say).
    ///
    /// # Errors
    /// [`OutboxError::NotParked`] when no parked row has this id.
    pub async fn retry_parked(&self, id: OutboxRowId) -> Result<(), OutboxError> {
        if self.store.unpark(id).await? {
            self.bump();
            Ok(())
        } else {
            Err(OutboxError::NotParked(id))
        }
    }

    /// Marks every pending row sent and returns them in order, without publishing: the
    /// saga test harness reads the commands this way, with no broker.
    pub(crate) async fn take_pending(&self) -> Result<Vec<(TopicName, Message)>, OutboxError> {
        let mut claim = self.store.claim(u32::MAX >> 1).await?;
        let rows = std::mem::take(&mut claim.rows);
        let outcomes = rows.iter().map(|r| (r.id, database::Outcome::Sent)).collect();
        claim.finish(outcomes, now_ms()).await?;
        Ok(rows.into_iter().filter_map(|r| TopicName::new(r.topic).ok().map(|t| (t, r.message))).collect())
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn wakeups(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    pub(crate) fn wake_sender(&self) -> Arc<watch::Sender<u64>> {
        self.wake.clone()
    }

    pub(crate) fn bump(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Wall-clock milliseconds: rows are stamped with the time they were enqueued and sent, for
/// retention and the latency metric; ordering never depends on it.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
