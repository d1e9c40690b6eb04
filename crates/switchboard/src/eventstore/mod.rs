//! An event store: each aggregate's history as a stream of events, appended with
//! optimistic concurrency, and one global feed of every event in commit order that
//! subscribers and [projections](crate::projection) follow.
//!
//! - **Streams and versions.** A stream's first event is version 1. An append names the
//!   version it expects ([`ExpectedVersion`]); if another writer got there first the append
//!   is refused with [`EventStoreError::WrongExpectedVersion`] carrying the stream's actual
//!   version, and nothing is written.
//! - **The global feed** numbers every event 1, 2, 3… in commit order with no holes, so a
//!   reader's checkpoint is one number. On PostgreSQL, where writers commit concurrently and
//!   sequence ids are not commit order, the feed is numbered just after commit by a
//!   sequencer (see `postgres.rs`); on SQLite writers take turns and the rowid is the
//!   position.
//! - **Catch-up subscriptions** ([`EventStore::subscribe_all`]) read from a checkpoint and
//!   then wait for new events with the same query, so the switch to live has no gap and no
//!   duplicate.
//! - **Schemas and upcasting.** Every event has a type and a schema version; a [`Schema`]
//!   declares the current versions and upcasters that turn older stored events into the
//!   current form on every read.
//! - **Snapshots** keep an aggregate's state at a version ([`Repository`] takes them every
//!   N events); **deletion** is soft: a tombstone event ends the stream, and later appends
//!   fail with [`EventStoreError::StreamDeleted`].
//! - **Publishing.** With [`EventStoreOptions::publish_to`], every append also enqueues its
//!   events on the [outbox](crate::outbox) in the same transaction, so other services see
//!   them on a topic as CloudEvents: the event's id, type, `subject` = stream, `time`, and
//!   the extensions `streamversion`, `schemaversion`, `correlationid`, `causationid`,
//!   `traceparent`, keyed by stream so each stream keeps its order.
//!
//! ```
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use switchboard::eventstore::{EventStore, EventStoreError, ExpectedVersion, NewEvent, Position, StreamName};
//!
//! let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
//! let store = EventStore::sqlite(pool).await?;
//! let order = StreamName::new("order-o-1")?;
//!
//! let placed = NewEvent::json("order.placed", &serde_json::json!({"total_cents": 1250}))?;
//! let appended = store.append(&order, ExpectedVersion::NoStream, vec![placed]).await?;
//! assert_eq!(appended.version, 1);
//!
//! // A writer that read the stream at version 0 loses: nothing is written.
//! let late = NewEvent::json("order.canceled", &serde_json::json!({}))?;
//! let err = store.append(&order, ExpectedVersion::NoStream, vec![late]).await.unwrap_err();
//! assert!(matches!(err, EventStoreError::WrongExpectedVersion { actual: Some(1), .. }));
//!
//! // The feed, from the start, then live.
//! let mut feed = store.subscribe_all(Position::START).await?;
//! assert_eq!(feed.next().await?.ty, "order.placed");
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run()).unwrap();
//! ```

mod aggregate;
mod database;
mod error;
mod event;
#[cfg(feature = "postgres")]
mod postgres;
mod publish;
pub use publish::{EXT_SCHEMA_VERSION, EXT_STREAM_VERSION};
mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;
mod subscription;

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{Timestamp, TopicName};
use tokio::sync::watch;

pub use aggregate::{
    Aggregate, Executed, Loaded, Repository, RepositoryError, SnapshotPolicy, decode_event, encode_event,
};
pub use database::EventStoreDatabase;
use database::{EventRow, SnapshotRow};
pub use error::EventStoreError;
pub use event::{
    Appended, Direction, ExpectedVersion, MAX_EVENT_SIZE, MAX_EVENTS_PER_APPEND, MAX_STREAM_NAME_LEN,
    Metadata, NewEvent, Position, RecordedEvent, StreamName, StreamState, TOMBSTONE,
};
pub use schema::Schema;
pub use subscription::CatchUp;

use crate::outbox::{Outbox, now_ms};

/// How far a reader of the feed is behind its end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lag {
    /// Events after the reader's checkpoint.
    pub events: u64,
    /// How long ago the oldest of them was recorded (zero when caught up).
    pub behind: Duration,
}

/// How an [`EventStore`] is set up.
pub struct EventStoreOptions<DB: EventStoreDatabase> {
    schema: Schema,
    publish: Option<Publishing<DB>>,
    poll_interval: Duration,
}

impl<DB: EventStoreDatabase> Default for EventStoreOptions<DB> {
    fn default() -> Self {
        EventStoreOptions { schema: Schema::new(), publish: None, poll_interval: Duration::from_millis(500) }
    }
}

impl<DB: EventStoreDatabase> EventStoreOptions<DB> {
    /// The event types, their schema versions and upcasters.
    #[must_use]
    pub fn schema(mut self, schema: Schema) -> Self {
        self.schema = schema;
        self
    }

    /// Publishes every appended event to `topic` through `outbox`, in the append's
    /// transaction, with `source` as the CloudEvents source (`/orders`).
    #[must_use]
    pub fn publish_to(mut self, outbox: Outbox<DB>, topic: TopicName, source: impl Into<String>) -> Self {
        self.publish = Some(Publishing { outbox, topic, source: source.into() });
        self
    }

    /// How often subscriptions (and the PostgreSQL sequencer) look for events that no
    /// notification announced: appends by other processes to SQLite, a lost `NOTIFY`.
    /// Half a second by default.
    #[must_use]
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every.max(Duration::from_millis(1));
        self
    }
}

struct Publishing<DB: EventStoreDatabase> {
    outbox: Outbox<DB>,
    topic: TopicName,
    source: String,
}

/// The event store in one database (tables `switchboard_events`, `switchboard_streams`,
/// `switchboard_snapshots`, created on first use). Cheap to clone.
pub struct EventStore<DB: EventStoreDatabase> {
    inner: Arc<Inner<DB>>,
}

impl<DB: EventStoreDatabase> Clone for EventStore<DB> {
    fn clone(&self) -> Self {
        EventStore { inner: self.inner.clone() }
    }
}

impl<DB: EventStoreDatabase> std::fmt::Debug for EventStore<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("database", &<DB as crate::outbox::OutboxDatabase>::NAME)
            .finish_non_exhaustive()
    }
}

struct Inner<DB: EventStoreDatabase> {
    pool: sqlx::Pool<DB>,
    schema: Schema,
    publish: Option<Publishing<DB>>,
    poll_interval: Duration,
    /// Bumped after every append this process commits: wakes the sequencer where the feed
    /// is numbered after commit. Its closing (the last handle dropped) ends the background
    /// tasks.
    appended: watch::Sender<u64>,
    /// Bumped whenever the feed grew, as far as this process can tell: wakes subscriptions.
    feed: Arc<watch::Sender<u64>>,
    listening: std::sync::Once,
}

#[cfg(feature = "sqlite")]
impl EventStore<sqlx::Sqlite> {
    /// The event store in a SQLite database (the embedded default).
    ///
    /// # Errors
    /// The tables cannot be created.
    pub async fn sqlite(pool: sqlx::SqlitePool) -> Result<Self, EventStoreError> {
        EventStore::open(pool, EventStoreOptions::default()).await
    }
}

#[cfg(feature = "postgres")]
impl EventStore<sqlx::Postgres> {
    /// The event store in a PostgreSQL database.
    ///
    /// # Errors
    /// The tables cannot be created.
    pub async fn postgres(pool: sqlx::PgPool) -> Result<Self, EventStoreError> {
        EventStore::open(pool, EventStoreOptions::default()).await
    }
}

impl<DB: EventStoreDatabase> EventStore<DB> {
    /// The event store in the database behind `pool`, its tables created if needed.
    ///
    /// # Errors
    /// The tables cannot be created.
    pub async fn open(pool: sqlx::Pool<DB>, options: EventStoreOptions<DB>) -> Result<Self, EventStoreError> {
        DB::create_event_tables(&pool).await?;
        let inner = Arc::new(Inner {
            pool,
            schema: options.schema,
            publish: options.publish,
            poll_interval: options.poll_interval,
            appended: watch::Sender::new(0),
            feed: Arc::new(watch::Sender::new(0)),
            listening: std::sync::Once::new(),
        });
        if !DB::POSITION_AT_COMMIT {
            tokio::spawn(run_sequencer::<DB>(
                inner.pool.clone(),
                inner.appended.subscribe(),
                inner.feed.clone(),
                inner.poll_interval,
            ));
        }
        Ok(EventStore { inner })
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        &self.inner.pool
    }

    /// The store's schema.
    pub fn schema(&self) -> &Schema {
        &self.inner.schema
    }

    /// Appends `events` to `stream` if it is at `expected`, in one transaction.
    ///
    /// # Errors
    /// [`EventStoreError::WrongExpectedVersion`] or [`EventStoreError::StreamDeleted`] when
    /// the stream is not where the append expects it; [`EventStoreError::InvalidEvent`],
    /// [`EventStoreError::UnknownEventType`] for events the store refuses. Nothing is
    /// written in any of these cases.
    pub async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, EventStoreError> {
        if DB::ATOMIC_APPEND && self.inner.publish.is_none() {
            // One statement commits on its own: no BEGIN/COMMIT round trips.
            let mut conn = self.inner.pool.acquire().await?;
            let appended = self.append_rows(&mut conn, stream, expected, events, false).await?;
            self.committed();
            return Ok(appended);
        }
        let mut tx = DB::begin_write(&self.inner.pool).await?;
        let appended = self.append_rows(&mut tx, stream, expected, events, false).await?;
        self.commit(tx).await?;
        Ok(appended)
    }

    /// Appends `events` inside the caller's transaction, with the caller's own writes;
    /// commit it with [`EventStore::commit`] (or commit it yourself: subscriptions then
    /// see the events at their next poll). On SQLite begin the transaction with
    /// `BEGIN IMMEDIATE` when it reads before it writes.
    ///
    /// # Errors
    /// As [`EventStore::append`]; on a refusal the transaction holds no write of the
    /// append's, and is still usable.
    pub async fn append_in(
        &self,
        tx: &mut DB::Connection,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, EventStoreError> {
        self.append_rows(tx, stream, expected, events, false).await
    }

    /// Commits a transaction that [`EventStore::append_in`] wrote to, and wakes this
    /// process's subscriptions (and relays) at once.
    ///
    /// # Errors
    /// The commit fails: nothing was appended.
    pub async fn commit(&self, tx: sqlx::Transaction<'_, DB>) -> Result<(), EventStoreError> {
        tx.commit().await?;
        self.committed();
        Ok(())
    }

    /// Wakes what follows the feed after appends committed.
    fn committed(&self) {
        let bump = |n: &mut u64| *n = n.wrapping_add(1);
        self.inner.appended.send_modify(bump);
        if DB::POSITION_AT_COMMIT {
            self.inner.feed.send_modify(bump);
        }
        if let Some(publish) = &self.inner.publish {
            publish.outbox.bump();
        }
    }

    /// Ends `stream`: appends the [`TOMBSTONE`] event (if the stream is at `expected`), after
    /// which appends fail with [`EventStoreError::StreamDeleted`]. Its events stay readable
    /// and in the feed: deletion is soft.
    ///
    /// # Errors
    /// As [`EventStore::append`].
    pub async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
    ) -> Result<Appended, EventStoreError> {
        let mut tx = DB::begin_write(&self.inner.pool).await?;
        let tombstone = NewEvent::new(TOMBSTONE, "{}");
        let appended = self.append_rows(&mut tx, stream, expected, vec![tombstone], true).await?;
        DB::mark_deleted(&mut tx, stream.as_str()).await?;
        self.commit(tx).await?;
        Ok(appended)
    }

    async fn append_rows(
        &self,
        tx: &mut DB::Connection,
        stream: &StreamName,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
        tombstone: bool,
    ) -> Result<Appended, EventStoreError> {
        let metadata = self.admit(&mut events, tombstone)?;
        let now = now_ms();
        let (mut rows, metadata): (Vec<EventRow>, Vec<Metadata>) = events
            .into_iter()
            .zip(metadata)
            .map(|(event, encoded)| {
                let row = EventRow {
                    position: None,
                    stream: stream.as_str().to_owned(),
                    version: 0,
                    id: event.id,
                    ty: event.ty,
                    schema_version: i32::try_from(event.schema_version).unwrap_or(i32::MAX),
                    data: event.data.to_vec(),
                    metadata: encoded,
                    recorded_at: now,
                };
                (row, event.metadata)
            })
            .unzip();
        let Some((version, position)) =
            DB::append_events(tx, stream.as_str(), expected, &mut rows, now).await?
        else {
            return Err(match DB::stream_state(tx, stream.as_str()).await? {
                Some((version, true)) => {
                    EventStoreError::StreamDeleted { stream: stream.to_string(), version: to_u64(version) }
                }
                actual => EventStoreError::WrongExpectedVersion {
                    stream: stream.to_string(),
                    expected,
                    actual: actual.map(|(v, _)| to_u64(v)),
                },
            });
        };
        let first = rows.first().map_or(version, |r| r.version);
        if let Some(publish) = &self.inner.publish {
            for (row, metadata) in rows.iter().zip(metadata) {
                let message = publish::to_message(&publish.source, row, metadata);
                publish.outbox.enqueue(tx, &publish.topic, message).await?;
            }
        }
        metrics::counter!("switchboard_eventstore_appended_total").increment(rows.len() as u64);
        Ok(Appended {
            first_version: to_u64(first),
            version: to_u64(version),
            position: position.map(|p| Position(to_u64(p))),
        })
    }

    /// Checks the events of one append and returns their encoded metadata.
    fn admit(&self, events: &mut [NewEvent], tombstone: bool) -> Result<Vec<String>, EventStoreError> {
        if events.is_empty() {
            return Err(EventStoreError::InvalidEvent("an append needs at least one event".into()));
        }
        if events.len() > MAX_EVENTS_PER_APPEND {
            return Err(EventStoreError::InvalidEvent(format!(
                "{} events in one append; the most is {MAX_EVENTS_PER_APPEND}",
                events.len()
            )));
        }
        let mut encoded = Vec::with_capacity(events.len());
        for event in events.iter_mut() {
            check_text("type", &event.ty)?;
            check_text("id", &event.id)?;
            if event.ty.starts_with('$') && !tombstone {
                return Err(EventStoreError::InvalidEvent(format!(
                    "event type {:?}: types starting with `$` are the store's own",
                    event.ty
                )));
            }
            self.inner.schema.admit(event)?;
            let metadata = event.metadata.encode();
            let size = event.size(&metadata);
            if size > MAX_EVENT_SIZE {
                return Err(EventStoreError::InvalidEvent(format!(
                    "event {} of type {:?} is {size} bytes; the most is {MAX_EVENT_SIZE}",
                    event.id, event.ty
                )));
            }
            encoded.push(metadata);
        }
        Ok(encoded)
    }

    /// Up to `limit` events of `stream` from version `from` (inclusive), oldest first
    /// ([`Direction::Forward`]) or newest first ([`Direction::Backward`]; `u64::MAX` for
    /// the end). A stream that does not exist reads as empty.
    ///
    /// # Errors
    /// The database fails, or an event cannot be upcast.
    pub async fn read_stream(
        &self,
        stream: &StreamName,
        direction: Direction,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        let rows = DB::read_stream(
            &mut conn,
            stream.as_str(),
            i64::try_from(from).unwrap_or(i64::MAX),
            direction == Direction::Forward,
            i64::try_from(limit).unwrap_or(i64::MAX),
        )
        .await?;
        self.recorded(rows)
    }

    /// The stream's version and whether it was deleted; `None` when it has no events.
    ///
    /// # Errors
    /// The database fails.
    pub async fn stream_state(&self, stream: &StreamName) -> Result<Option<StreamState>, EventStoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        let state = DB::stream_state(&mut conn, stream.as_str()).await?;
        Ok(state.map(|(version, deleted)| StreamState { version: to_u64(version), deleted }))
    }

    /// Up to `limit` events of the global feed after `after`, in commit order.
    ///
    /// # Errors
    /// The database fails, or an event cannot be upcast.
    pub async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        DB::sequence(&self.inner.pool).await?;
        let mut conn = self.inner.pool.acquire().await?;
        self.read_all_in(&mut conn, after, limit).await
    }

    /// [`EventStore::read_all`] on the caller's connection (a projection reads its batch in
    /// the transaction that moves its checkpoint). Does not number new events first.
    pub(crate) async fn read_all_in(
        &self,
        conn: &mut DB::Connection,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        let rows = DB::read_feed(
            conn,
            i64::try_from(after.0).unwrap_or(i64::MAX),
            i64::try_from(limit).unwrap_or(i64::MAX),
        )
        .await?;
        self.recorded(rows)
    }

    /// The position of the feed's last event ([`Position::START`] when it is empty).
    ///
    /// # Errors
    /// The database fails.
    pub async fn head(&self) -> Result<Position, EventStoreError> {
        DB::sequence(&self.inner.pool).await?;
        let mut conn = self.inner.pool.acquire().await?;
        Ok(Position(to_u64(DB::head(&mut conn).await?)))
    }

    /// How far a reader at `checkpoint` is behind the feed's end.
    ///
    /// # Errors
    /// The database fails.
    pub async fn lag(&self, checkpoint: Position) -> Result<Lag, EventStoreError> {
        let head = self.head().await?;
        self.lag_at(checkpoint, head).await
    }

    /// How far a reader at `checkpoint` is behind `head`, a feed end the caller just read.
    pub(crate) async fn lag_at(&self, checkpoint: Position, head: Position) -> Result<Lag, EventStoreError> {
        if checkpoint >= head {
            return Ok(Lag::default());
        }
        let mut conn = self.inner.pool.acquire().await?;
        let next = i64::try_from(checkpoint.0 + 1).unwrap_or(i64::MAX);
        let behind = DB::recorded_at(&mut conn, next)
            .await?
            .map(|at| Duration::from_millis(u64::try_from(now_ms() - at).unwrap_or(0)))
            .unwrap_or_default();
        Ok(Lag { events: head.0 - checkpoint.0, behind })
    }

    /// A catch-up subscription to the whole feed after `after`: it reads what is there,
    /// then waits for new events, with no gap and no duplicate between the two.
    ///
    /// # Errors
    /// [`EventStoreError::CheckpointAhead`] when `after` is past the feed's end.
    pub async fn subscribe_all(&self, after: Position) -> Result<CatchUp<DB>, EventStoreError> {
        self.check_checkpoint(after).await?;
        Ok(CatchUp::new(self.clone(), None, after.0))
    }

    /// A catch-up subscription to one stream, after version `after` (0 for all of it).
    ///
    /// # Errors
    /// The database fails.
    pub async fn subscribe_stream(
        &self,
        stream: &StreamName,
        after: u64,
    ) -> Result<CatchUp<DB>, EventStoreError> {
        Ok(CatchUp::new(self.clone(), Some(stream.clone()), after))
    }

    /// Refuses a checkpoint past the feed's end.
    pub(crate) async fn check_checkpoint(&self, checkpoint: Position) -> Result<(), EventStoreError> {
        let head = self.head().await?;
        if checkpoint > head {
            return Err(EventStoreError::CheckpointAhead { checkpoint, head });
        }
        Ok(())
    }

    /// The stream's snapshot, if one was saved.
    pub(crate) async fn load_snapshot(
        &self,
        stream: &StreamName,
    ) -> Result<Option<SnapshotRow>, EventStoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        Ok(DB::load_snapshot(&mut conn, stream.as_str()).await?)
    }

    /// Saves a snapshot of `stream` at `version` (unless a newer one is there).
    pub(crate) async fn save_snapshot(
        &self,
        stream: &StreamName,
        version: u64,
        schema_version: u32,
        data: Vec<u8>,
    ) -> Result<(), EventStoreError> {
        let row = SnapshotRow {
            stream: stream.as_str().to_owned(),
            version: i64::try_from(version).unwrap_or(i64::MAX),
            schema_version: i32::try_from(schema_version).unwrap_or(i32::MAX),
            data,
            taken_at: now_ms(),
        };
        let mut conn = self.inner.pool.acquire().await?;
        Ok(DB::save_snapshot(&mut conn, &row).await?)
    }

    /// A receiver of feed growth, with the LISTEN task started where there is one.
    pub(crate) fn feed_changes(&self) -> watch::Receiver<u64> {
        let inner = &self.inner;
        inner.listening.call_once(|| {
            DB::listen_feed(inner.pool.clone(), inner.feed.clone(), inner.appended.subscribe());
        });
        inner.feed.subscribe()
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        self.inner.poll_interval
    }

    fn recorded(&self, rows: Vec<EventRow>) -> Result<Vec<RecordedEvent>, EventStoreError> {
        rows.into_iter().map(|row| self.inner.schema.upcast_event(recorded_event(row))).collect()
    }
}

fn recorded_event(row: EventRow) -> RecordedEvent {
    RecordedEvent {
        stream: StreamName::trusted(row.stream),
        version: to_u64(row.version),
        position: row.position.map(|p| Position(to_u64(p))),
        id: row.id,
        ty: row.ty,
        schema_version: u32::try_from(row.schema_version).unwrap_or(0),
        data: row.data.into(),
        metadata: Metadata::decode(&row.metadata),
        recorded_at: Timestamp(u64::try_from(row.recorded_at).unwrap_or(0)),
    }
}

/// Type and id: 1 to 256 bytes, no control characters.
fn check_text(what: &str, value: &str) -> Result<(), EventStoreError> {
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(EventStoreError::InvalidEvent(format!(
            "an event's {what} must be 1 to 256 bytes without control characters, not {value:?}"
        )));
    }
    Ok(())
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Numbers the feed after this process's appends, and on a poll for other writers'.
async fn run_sequencer<DB: EventStoreDatabase>(
    pool: sqlx::Pool<DB>,
    mut appended: watch::Receiver<u64>,
    feed: Arc<watch::Sender<u64>>,
    poll: Duration,
) {
    let mut failures = 0_u32;
    loop {
        loop {
            match DB::sequence(&pool).await {
                Ok(0) => break,
                Ok(_) => {
                    failures = 0;
                    feed.send_modify(|n| *n = n.wrapping_add(1));
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(error = %e, failures, "The event store could not number new events; retrying.");
                    }
                    break;
                }
            }
        }
        tokio::select! {
            changed = appended.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(poll) => {}
        }
    }
}
