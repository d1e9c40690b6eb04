//! The projection runner: follows the feed batch by batch, rebuilds beside the live model,
//! and switches readers over.

use std::sync::Arc;
use std::time::Duration;

use switchboard_policy::Reconnect;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Projection, ProjectionDatabase, ProjectionError, Tables};
use crate::eventstore::{EventStore, Lag, Position};
use crate::outbox::now_ms;

/// The source partition of the event store's feed (it has one).
const FEED: i64 = 0;

/// What a running projection is doing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProjectionStatus {
    /// The generation readers see.
    pub live_generation: u64,
    /// Its checkpoint: the last feed position it applied.
    pub checkpoint: Position,
    /// The generation being rebuilt, and its checkpoint.
    pub rebuilding: Option<(u64, Position)>,
    /// Events behind the feed's end, at the last round.
    pub lag: Lag,
    /// The last round's error, until a round succeeds.
    pub last_error: Option<String>,
}

/// A projection bound to its name and event store, ready to start.
pub struct Projector<P, DB: ProjectionDatabase> {
    name: String,
    projection: Arc<P>,
    store: EventStore<DB>,
    batch: usize,
}

impl<P: Projection<DB>, DB: ProjectionDatabase> Projector<P, DB> {
    /// `projection` under `name` (1 to 100 of `A-Z a-z 0-9 . _ -`), fed by `store`'s feed;
    /// its tables go in the store's database.
    ///
    /// # Errors
    /// [`ProjectionError::Invalid`] for a bad projection or table name.
    pub fn new(
        name: impl Into<String>,
        projection: P,
        store: EventStore<DB>,
    ) -> Result<Self, ProjectionError> {
        let name = name.into();
        check_names(&name, projection.tables())?;
        Ok(Projector { name, projection: Arc::new(projection), store, batch: 500 })
    }

    /// Events per transaction (500 by default).
    #[must_use]
    pub fn with_batch(mut self, events: usize) -> Self {
        self.batch = events.max(1);
        self
    }

    /// Creates the projection's tables on first use (generation 1 and its views), and
    /// starts following the feed.
    ///
    /// # Errors
    /// The tables cannot be created; [`EventStoreError::CheckpointAhead`](crate::eventstore::EventStoreError::CheckpointAhead)
    /// when the stored checkpoint is past the feed's end (the database was restored from an
    /// older backup, or the checkpoint belongs to another store).
    pub async fn start(self) -> Result<RunningProjection<P, DB>, ProjectionError> {
        self.setup().await?;
        let this = Arc::new(self);
        let status = Arc::new(watch::Sender::new(ProjectionStatus::default()));
        let (stop, stopped) = watch::channel(false);
        let kick = Arc::new(watch::Sender::new(0_u64));
        let task = tokio::spawn(run(this.clone(), status.clone(), stopped, kick.subscribe()));
        Ok(RunningProjection { projector: this, status, stop, kick, task })
    }

    /// Applies batches until the projection has caught up with the feed's end as it was
    /// when called, without a background task; returns the live checkpoint.
    ///
    /// # Errors
    /// As [`Projector::start`], or a batch fails.
    pub async fn catch_up(&self) -> Result<Position, ProjectionError> {
        self.setup().await?;
        let head = self.store.head().await?;
        loop {
            let (live, _) = self.state().await?;
            let (_, checkpoint) = self.step(live).await?;
            if checkpoint >= head {
                return Ok(checkpoint);
            }
        }
    }

    /// How far the live generation is behind the feed.
    ///
    /// # Errors
    /// The database fails.
    pub async fn lag(&self) -> Result<Lag, ProjectionError> {
        let (live, _) = self.state().await?;
        let checkpoint = self.checkpoint(live).await?;
        Ok(self.store.lag(checkpoint).await?)
    }

    /// The projection as stored, read now (from any process): the generation readers see,
    /// its checkpoint, a rebuild in progress, the lag. `last_error` is only known to the
    /// running process ([`RunningProjection::status`]).
    ///
    /// # Errors
    /// The database fails, or the projection was never started.
    pub async fn status(&self) -> Result<ProjectionStatus, ProjectionError> {
        let (live, building) = self.state().await?;
        let checkpoint = self.checkpoint(live).await?;
        let rebuilding = match building {
            Some(b) => Some((u64::try_from(b).unwrap_or(0), self.checkpoint(b).await?)),
            None => None,
        };
        Ok(ProjectionStatus {
            live_generation: u64::try_from(live).unwrap_or(0),
            checkpoint,
            rebuilding,
            lag: self.store.lag(checkpoint).await?,
            last_error: None,
        })
    }

    async fn setup(&self) -> Result<(), ProjectionError> {
        DB::create_projection_tables(self.store.pool()).await?;
        let mut tx = DB::begin_write(self.store.pool()).await?;
        if DB::projection_state(&mut tx, &self.name).await?.is_none() {
            let tables = self.tables(1);
            self.projection.create(&mut tx, &tables).await?;
            DB::set_checkpoint(&mut tx, &self.name, 1, FEED, 0, now_ms()).await?;
            point_views_at::<DB>(&mut tx, &tables).await?;
            DB::set_projection_state(&mut tx, &self.name, 1, None, now_ms()).await?;
            tx.commit().await?;
        } else {
            drop(tx);
        }
        let (live, _) = self.state().await?;
        self.store.check_checkpoint(self.checkpoint(live).await?).await?;
        Ok(())
    }

    fn tables(&self, generation: i64) -> Tables {
        Tables::new(u64::try_from(generation).unwrap_or(0), self.projection.tables())
    }

    async fn state(&self) -> Result<(i64, Option<i64>), ProjectionError> {
        let mut conn = self.store.pool().acquire().await?;
        DB::projection_state(&mut conn, &self.name)
            .await?
            .ok_or_else(|| ProjectionError::Invalid(format!("projection {} has no state row", self.name)))
    }

    async fn checkpoint(&self, generation: i64) -> Result<Position, ProjectionError> {
        let mut conn = self.store.pool().acquire().await?;
        let position = DB::lock_checkpoint(&mut conn, &self.name, generation, FEED).await?.unwrap_or(0);
        Ok(Position(u64::try_from(position).unwrap_or(0)))
    }

    /// One batch into `generation`: (events applied, checkpoint after).
    async fn step(&self, generation: i64) -> Result<(usize, Position), ProjectionError> {
        let mut tx = DB::begin_write(self.store.pool()).await?;
        // Locked until commit: a second runner waits here and then starts after this batch.
        let Some(checkpoint) = DB::lock_checkpoint(&mut tx, &self.name, generation, FEED).await? else {
            // Another runner switched generations and removed this one.
            return Ok((0, Position::START));
        };
        let after = Position(u64::try_from(checkpoint).unwrap_or(0));
        let events = self.store.read_all_in(&mut tx, after, self.batch).await?;
        let Some(last) = events.last().and_then(|e| e.position) else {
            return Ok((0, after));
        };
        let tables = self.tables(generation);
        for event in &events {
            self.projection.apply(&mut tx, &tables, event).await?;
        }
        DB::set_checkpoint(
            &mut tx,
            &self.name,
            generation,
            FEED,
            i64::try_from(last.0).unwrap_or(i64::MAX),
            now_ms(),
        )
        .await?;
        tx.commit().await?;
        metrics::counter!("switchboard_projection_events_total", "projection" => self.name.clone())
            .increment(events.len() as u64);
        Ok((events.len(), last))
    }

    /// Creates the next generation's tables and marks it as being rebuilt (or returns the
    /// one already being rebuilt).
    async fn begin_rebuild(&self) -> Result<i64, ProjectionError> {
        let mut tx = DB::begin_write(self.store.pool()).await?;
        let Some((live, building)) = DB::projection_state(&mut tx, &self.name).await? else {
            return Err(ProjectionError::Invalid(format!("projection {} has no state row", self.name)));
        };
        if let Some(building) = building {
            return Ok(building);
        }
        let next = live + 1;
        self.projection.create(&mut tx, &self.tables(next)).await?;
        DB::set_checkpoint(&mut tx, &self.name, next, FEED, 0, now_ms()).await?;
        DB::set_projection_state(&mut tx, &self.name, live, Some(next), now_ms()).await?;
        tx.commit().await?;
        tracing::info!(projection = %self.name, generation = next, "Rebuilding the projection from the start of the feed.");
        Ok(next)
    }

    /// Points the views at `building` and drops the old generation, if `building` has
    /// caught up with the live one; whether it switched.
    async fn switch(&self, building: i64) -> Result<bool, ProjectionError> {
        let mut tx = DB::begin_write(self.store.pool()).await?;
        let Some((live, Some(current))) = DB::projection_state(&mut tx, &self.name).await? else {
            return Ok(false);
        };
        let live_at = DB::lock_checkpoint(&mut tx, &self.name, live, FEED).await?.unwrap_or(0);
        let built_at = DB::lock_checkpoint(&mut tx, &self.name, building, FEED).await?.unwrap_or(0);
        if current != building || built_at < live_at {
            return Ok(false);
        }
        point_views_at::<DB>(&mut tx, &self.tables(building)).await?;
        for base in self.projection.tables() {
            DB::execute_ddl(&mut tx, format!("DROP TABLE IF EXISTS {}", self.tables(live).name(base)))
                .await?;
        }
        DB::delete_checkpoint(&mut tx, &self.name, live).await?;
        DB::set_projection_state(&mut tx, &self.name, building, None, now_ms()).await?;
        tx.commit().await?;
        tracing::info!(projection = %self.name, generation = building, "Readers switched to the rebuilt projection.");
        Ok(true)
    }

    /// One round: a batch into the live generation and one into the generation being
    /// rebuilt, and the switch once it has caught up. Whether there may be more to do.
    async fn round(&self, status: &watch::Sender<ProjectionStatus>) -> Result<bool, ProjectionError> {
        let head = self.store.head().await?;
        let (live, building) = self.state().await?;
        let mut live_at = self.checkpoint(live).await?;
        let mut more = false;
        if live_at < head {
            let (applied, at) = self.step(live).await?;
            live_at = at;
            more |= applied == self.batch;
        }
        let mut rebuilding = None;
        if let Some(building) = building {
            let mut built_at = self.checkpoint(building).await?;
            if built_at < head {
                let (applied, at) = self.step(building).await?;
                built_at = at;
                more |= applied == self.batch;
            }
            rebuilding = Some((u64::try_from(building).unwrap_or(0), built_at));
            if built_at >= live_at && self.switch(building).await? {
                rebuilding = None;
                live_at = built_at;
                more = true;
            }
        }
        // Against the head this round started from: reading it again would number the feed twice.
        let lag = self.store.lag_at(live_at, head).await?;
        metrics::gauge!("switchboard_projection_lag_events", "projection" => self.name.clone())
            .set(lag.events as f64);
        metrics::gauge!("switchboard_projection_lag_seconds", "projection" => self.name.clone())
            .set(lag.behind.as_secs_f64());
        let live_generation = match (rebuilding, building) {
            (None, Some(b)) => b,
            _ => live,
        };
        status.send_replace(ProjectionStatus {
            live_generation: u64::try_from(live_generation).unwrap_or(0),
            checkpoint: live_at,
            rebuilding,
            lag,
            last_error: None,
        });
        Ok(more || live_at < head)
    }
}

/// Refuses a projection name or table name that breaks the rules.
pub(super) fn check_names(name: &str, tables: &[&'static str]) -> Result<(), ProjectionError> {
    if name.is_empty()
        || name.len() > 100
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(ProjectionError::Invalid(format!(
            "projection name {name:?}: use 1 to 100 of A-Z a-z 0-9 . _ -"
        )));
    }
    if tables.is_empty() {
        return Err(ProjectionError::Invalid(format!("projection {name} declares no tables")));
    }
    for table in tables {
        let ok = table.len() <= 48
            && table.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && table.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(ProjectionError::Invalid(format!(
                "table name {table:?}: use up to 48 of a-z 0-9 _, starting with a letter"
            )));
        }
    }
    Ok(())
}

/// Points each table's view (its plain name) at `tables`' generation.
pub(super) async fn point_views_at<DB: ProjectionDatabase>(
    tx: &mut DB::Connection,
    tables: &Tables,
) -> Result<(), ProjectionError> {
    for base in tables.bases() {
        DB::execute_ddl(tx, format!("DROP VIEW IF EXISTS {base}")).await?;
        DB::execute_ddl(tx, format!("CREATE VIEW {base} AS SELECT * FROM {}", tables.name(base))).await?;
    }
    Ok(())
}

/// A projection following the feed in a background task.
pub struct RunningProjection<P, DB: ProjectionDatabase> {
    projector: Arc<Projector<P, DB>>,
    status: Arc<watch::Sender<ProjectionStatus>>,
    stop: watch::Sender<bool>,
    kick: Arc<watch::Sender<u64>>,
    task: JoinHandle<()>,
}

impl<P: Projection<DB>, DB: ProjectionDatabase> RunningProjection<P, DB> {
    /// What it is doing, as of its last round.
    pub fn status(&self) -> ProjectionStatus {
        self.status.borrow().clone()
    }

    /// How far the live generation is behind the feed, read now.
    ///
    /// # Errors
    /// The database fails.
    pub async fn lag(&self) -> Result<Lag, ProjectionError> {
        self.projector.lag().await
    }

    /// Waits until the live generation has applied the feed up to `position`.
    ///
    /// # Errors
    /// The projection stopped.
    pub async fn wait_for(&self, position: Position) -> Result<(), ProjectionError> {
        let mut status = self.status.subscribe();
        status
            .wait_for(|s| s.checkpoint >= position)
            .await
            .map(|_| ())
            .map_err(|_| ProjectionError::Invalid("the projection stopped".into()))
    }

    /// Rebuilds the read model from the start of the feed into fresh tables, while the live
    /// generation keeps serving readers and following the feed; returns once readers are
    /// switched to the new generation (its number).
    ///
    /// # Errors
    /// The new tables cannot be created, or the projection stopped.
    pub async fn rebuild(&self) -> Result<u64, ProjectionError> {
        let generation = u64::try_from(self.projector.begin_rebuild().await?).unwrap_or(0);
        let mut status = self.status.subscribe();
        self.kick.send_modify(|n| *n = n.wrapping_add(1));
        status
            .wait_for(|s| s.live_generation >= generation)
            .await
            .map(|_| generation)
            .map_err(|_| ProjectionError::Invalid("the projection stopped".into()))
    }

    /// Stops after the batch in flight (whose transaction either commits or rolls back).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn run<P: Projection<DB>, DB: ProjectionDatabase>(
    projector: Arc<Projector<P, DB>>,
    status: Arc<watch::Sender<ProjectionStatus>>,
    mut stop: watch::Receiver<bool>,
    mut kick: watch::Receiver<u64>,
) {
    let mut changes = projector.store.feed_changes();
    let mut failures = Reconnect::up_to(Duration::from_secs(30));
    let poll = projector.store.poll_interval();
    loop {
        if *stop.borrow() {
            return;
        }
        changes.borrow_and_update();
        kick.borrow_and_update();
        let wait = match projector.round(&status).await {
            Ok(true) => {
                failures = Reconnect::up_to(Duration::from_secs(30));
                continue;
            }
            Ok(false) => {
                failures = Reconnect::up_to(Duration::from_secs(30));
                poll
            }
            Err(e) => {
                let delay = failures.next_delay();
                tracing::warn!(projection = %projector.name, error = %e, retry_in = ?delay, "A projection batch failed; it is retried.");
                metrics::counter!("switchboard_projection_errors_total", "projection" => projector.name.clone())
                    .increment(1);
                status.send_modify(|s| s.last_error = Some(e.to_string()));
                // Only a stop cuts the backoff short: new events would just fail again.
                tokio::select! {
                    _ = stop.changed() => {}
                    () = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        tokio::select! {
            _ = changes.changed() => {}
            _ = kick.changed() => {}
            _ = stop.changed() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
