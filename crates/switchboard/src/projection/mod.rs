//! Projections: read models kept in SQL tables, fed by the event store's global feed.
//!
//! - **Each event takes effect once**, crashes included: a batch's table changes and the
//!   projection's checkpoint commit in one transaction, and the checkpoint row is locked
//!   while the batch runs, so even two runners of one projection never apply an event
//!   twice.
//! - **Generations and views.** A projection writes into tables of its current generation
//!   (`orders_g1`), and readers query a view with the plain name (`orders`). A
//!   **rebuild** creates generation 2's tables, replays the feed from the beginning into them
//!   beside the live generation (which keeps serving and keeps following the feed), and
//!   once it has caught up switches the views over in one transaction and drops
//!   generation 1.
//! - **Lag** (events behind and how old the oldest of them is) is in
//!   [`RunningProjection::lag`] and in the gauges `switchboard_projection_lag_events` and
//!   `switchboard_projection_lag_seconds` (label `projection`).
//!
//! A handler gets the transaction and the generation's [`Tables`]; `tables.sql(..)` turns
//! `{orders}` into the generation's table name.
//!
//! ```
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use switchboard::eventstore::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamName};
//! use switchboard::projection::{Projection, ProjectionError, Projector, Tables};
//!
//! struct OrderTotals;
//!
//! #[async_trait::async_trait]
//! impl Projection<sqlx::Sqlite> for OrderTotals {
//!     fn tables(&self) -> &[&'static str] {
//!         &["order_totals"]
//!     }
//!     async fn create(&self, tx: &mut sqlx::SqliteConnection, t: &Tables) -> Result<(), ProjectionError> {
//!         sqlx::query(t.sql("CREATE TABLE {order_totals} (stream TEXT PRIMARY KEY, total BIGINT NOT NULL)"))
//!             .execute(tx).await?;
//!         Ok(())
//!     }
//!     async fn apply(&self, tx: &mut sqlx::SqliteConnection, t: &Tables, event: &RecordedEvent) -> Result<(), ProjectionError> {
//!         if event.ty == "order.placed" {
//!             let total: i64 = event.json::<serde_json::Value>()?["total_cents"].as_i64().unwrap_or(0);
//!             sqlx::query(t.sql("INSERT INTO {order_totals} (stream, total) VALUES ($1, $2)"))
//!                 .bind(event.stream.as_str()).bind(total).execute(tx).await?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
//! let store = EventStore::sqlite(pool.clone()).await?;
//! let placed = NewEvent::json("order.placed", &serde_json::json!({"total_cents": 1250}))?;
//! store.append(&StreamName::new("order-1")?, ExpectedVersion::NoStream, vec![placed]).await?;
//!
//! let running = Projector::new("order-totals", OrderTotals, store.clone())?.start().await?;
//! running.wait_for(store.head().await?).await?;
//! let total: i64 = sqlx::query_scalar("SELECT total FROM order_totals").fetch_one(&pool).await?;
//! assert_eq!(total, 1250);
//!
//! running.rebuild().await?; // replays into order_totals_g2, then switches the view
//! let total: i64 = sqlx::query_scalar("SELECT total FROM order_totals").fetch_one(&pool).await?;
//! assert_eq!(total, 1250);
//! running.shutdown().await;
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run()).unwrap();
//! ```

mod database;
mod runner;
mod stream;

pub use database::ProjectionDatabase;
pub use runner::{ProjectionStatus, Projector, RunningProjection};
pub use stream::{RunningStreamProjection, StreamProjector, recorded_from_message};

use crate::eventstore::{EventStoreError, RecordedEvent};

/// A read model: the tables it owns, how to create them, and how an event changes them.
#[async_trait::async_trait]
pub trait Projection<DB: ProjectionDatabase>: Send + Sync + 'static {
    /// The names readers use for its tables (each becomes a view over the live
    /// generation's table): lowercase letters, digits and `_`, starting with a letter.
    fn tables(&self) -> &[&'static str];

    /// Creates one generation's tables (and their indexes), named through `tables`.
    ///
    /// # Errors
    /// The DDL fails.
    async fn create(&self, tx: &mut DB::Connection, tables: &Tables) -> Result<(), ProjectionError>;

    /// Applies one event, in the transaction that also moves the checkpoint past it.
    ///
    /// # Errors
    /// Any: the batch rolls back and is retried with backoff (the projection stalls on an
    /// event it cannot apply, rather than skip it).
    async fn apply(
        &self,
        tx: &mut DB::Connection,
        tables: &Tables,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError>;
}

/// The table names of one generation of a projection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tables {
    generation: u64,
    bases: Vec<&'static str>,
}

impl Tables {
    pub(crate) fn new(generation: u64, bases: &[&'static str]) -> Tables {
        Tables { generation, bases: bases.to_vec() }
    }

    /// The generation (1 for the first build, then one more per rebuild).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The generation's physical name of table `base` (`orders` → `orders_g3`).
    pub fn name(&self, base: &str) -> String {
        format!("{base}_g{}", self.generation)
    }

    /// `template` with every `{base}` of the projection's tables replaced by its physical
    /// name, ready for `sqlx::query`. Only the declared, checked table names are
    /// substituted; values go in as bind parameters, never through here.
    pub fn sql(&self, template: &str) -> sqlx::AssertSqlSafe<String> {
        let mut sql = template.to_owned();
        for base in &self.bases {
            sql = sql.replace(&format!("{{{base}}}"), &self.name(base));
        }
        sqlx::AssertSqlSafe(sql)
    }

    pub(crate) fn bases(&self) -> &[&'static str] {
        &self.bases
    }
}

/// Why a projection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// Its name, or a table name, breaks a rule.
    #[error("invalid projection: {0}")]
    Invalid(String),
    /// The handler refused an event.
    #[error("projection handler: {0}")]
    Handler(String),
    /// The event store failed (or refused a checkpoint ahead of the feed).
    #[error(transparent)]
    Store(#[from] EventStoreError),
    /// The database failed.
    #[error("projection database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl ProjectionError {
    /// A handler's own error.
    pub fn handler(error: impl std::fmt::Display) -> ProjectionError {
        ProjectionError::Handler(error.to_string())
    }
}

impl From<serde_json::Error> for ProjectionError {
    fn from(e: serde_json::Error) -> Self {
        ProjectionError::Handler(e.to_string())
    }
}
