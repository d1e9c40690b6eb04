//! The orchestrator: loads an instance, runs one transition, and commits the new row (if
//! its version is still the one it read), the commands (through the outbox) and the
//! history in one transaction; runs the calls steps make; fires due timers; and, spawned,
//! reads the saga's reply topic.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use switchboard_core::contract::{BusError, Capability, Nack, Start, SubscriptionSpec};
use switchboard_core::{Message, SharedClock, SubscriptionName, SystemClock, Timestamp, TopicName};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::definition::{Action, Saga};
use super::machine::{Event, Handled, Machine, PendingCall};
use super::store::{InstanceRow, SagaDatabase};
use super::{InstanceSummary, InstanceView, ReplyOutcome, SagaError, Status};
use crate::Bus;
use crate::outbox::Outbox;

/// Transitions retried after losing a version race, before giving up with
/// [`SagaError::Conflict`].
const MAX_CONFLICT_RETRIES: u32 = 20;

/// How long a reply delivered to an orchestrator stays its own before the broker offers
/// it to another (applying one is a single transaction).
const REPLY_LEASE: Duration = Duration::from_secs(10);

/// Replies a spawned orchestrator applies at once.
const REPLIES_IN_FLIGHT: usize = 32;

/// Runs the instances of one saga, stored in `DB`. Cheap to clone.
pub struct Orchestrator<S, DB: SagaDatabase> {
    inner: Arc<Inner<S, DB>>,
}

impl<S, DB: SagaDatabase> Clone for Orchestrator<S, DB> {
    fn clone(&self) -> Self {
        Orchestrator { inner: self.inner.clone() }
    }
}

impl<S, DB: SagaDatabase> std::fmt::Debug for Orchestrator<S, DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator").field("saga", &self.inner.saga.name).finish_non_exhaustive()
    }
}

struct Inner<S, DB: SagaDatabase> {
    saga: Saga<S>,
    pool: sqlx::Pool<DB>,
    outbox: Outbox<DB>,
    clock: SharedClock,
    reply_topic: TopicName,
    /// In the test harness, calls wait here for [`Orchestrator::run_queued_calls`] instead
    /// of running on tasks of their own, so a test decides when they happen.
    queued_calls: Option<parking_lot::Mutex<Vec<(String, PendingCall)>>>,
}

impl<S, DB> Orchestrator<S, DB>
where
    S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    DB: SagaDatabase,
{
    /// The orchestrator of `saga`, keeping instances in `pool` and sending commands through
    /// `outbox` (on the same database); creates its tables if needed.
    ///
    /// # Errors
    /// [`SagaError::Invalid`] for a saga without steps or with a name that makes no topic;
    /// a database error creating the tables.
    pub async fn new(saga: Saga<S>, pool: sqlx::Pool<DB>, outbox: Outbox<DB>) -> Result<Self, SagaError> {
        if saga.steps.is_empty() {
            return Err(SagaError::Invalid(format!("saga {} has no steps", saga.name)));
        }
        let reply_topic = TopicName::new(super::reply_topic_name(&saga.name)).map_err(|e| {
            SagaError::Invalid(format!("saga name {:?} makes no reply topic: {e}", saga.name))
        })?;
        DB::create_saga_tables(&pool).await?;
        let clock: SharedClock = Arc::new(SystemClock);
        Ok(Orchestrator {
            inner: Arc::new(Inner { saga, pool, outbox, clock, reply_topic, queued_calls: None }),
        })
    }

    /// Takes time from `clock` (timeouts, history): the test harness moves a manual one.
    ///
    /// # Panics
    /// When the orchestrator was cloned already (set the clock first).
    #[must_use]
    pub fn with_clock(self, clock: SharedClock) -> Self {
        let mut inner = Arc::into_inner(self.inner).expect("set the clock before cloning the orchestrator");
        inner.clock = clock;
        Orchestrator { inner: Arc::new(inner) }
    }

    /// Queues calls for [`run_queued_calls`](Orchestrator::run_queued_calls) (the harness).
    pub(crate) fn with_queued_calls(self) -> Self {
        let mut inner = Arc::into_inner(self.inner).expect("not cloned yet");
        inner.queued_calls = Some(parking_lot::Mutex::default());
        Orchestrator { inner: Arc::new(inner) }
    }

    /// Runs the queued calls (and the calls their results lead to); returns how many ran.
    pub(crate) async fn run_queued_calls(&self) -> Result<usize, SagaError> {
        let mut ran = 0;
        loop {
            let next = self.inner.queued_calls.as_ref().and_then(|q| {
                let mut q = q.lock();
                if q.is_empty() { None } else { Some(q.remove(0)) }
            });
            let Some((id, call)) = next else { return Ok(ran) };
            self.run_call(&id, call).await?;
            ran += 1;
        }
    }

    /// The topic participants reply to (`<saga>.replies`).
    pub fn reply_topic(&self) -> &TopicName {
        &self.inner.reply_topic
    }

    /// The outbox commands go through.
    pub fn outbox(&self) -> &Outbox<DB> {
        &self.inner.outbox
    }

    fn now(&self) -> i64 {
        i64::try_from(self.inner.clock.now().as_millis()).unwrap_or(i64::MAX)
    }

    /// Starts instance `id` with `state`: its first step's command is committed with it.
    ///
    /// # Errors
    /// [`SagaError::AlreadyExists`] when an instance has this id (starting is idempotent
    /// per id: a retried start changes nothing); [`SagaError::Invalid`] for an empty id.
    pub async fn start(&self, id: &str, state: S) -> Result<(), SagaError> {
        if id.is_empty() || id.len() > 200 {
            return Err(SagaError::Invalid("an instance id is 1 to 200 bytes".into()));
        }
        let now = self.now();
        let json = serde_json::to_string(&state).map_err(SagaError::State)?;
        let row = Machine::<S>::new_row(&self.inner.saga, id, json, now);
        let mut machine = Machine::load(&self.inner.saga, row.clone(), state, now)?;
        machine.start();
        let mut tx = DB::begin_write(&self.inner.pool).await?;
        if !DB::insert_instance(&mut tx, &row).await? {
            return Err(SagaError::AlreadyExists(id.to_owned()));
        }
        let calls = self
            .commit(tx, machine, row.row_version)
            .await?
            .ok_or_else(|| SagaError::Conflict(id.to_owned()))?;
        metrics::counter!("switchboard_saga_started_total", "saga" => self.inner.saga.name.clone())
            .increment(1);
        self.run_calls(id, calls);
        Ok(())
    }

    /// Applies a participant's reply to the instance it names (by `correlationid`).
    ///
    /// # Errors
    /// Only a database failure (the reply should be delivered again); an unknown instance,
    /// a malformed, duplicate or late reply is an [`ReplyOutcome`], recorded and answered.
    pub async fn handle_reply(&self, reply: &Message) -> Result<ReplyOutcome, SagaError> {
        let Some(id) = super::instance_of(reply) else {
            tracing::debug!(id = %reply.id, "A saga reply without a usable correlation id was dropped.");
            return Ok(ReplyOutcome::Malformed(format!("reply {} carries no saga correlation id", reply.id)));
        };
        match self.apply(&id, Event::Reply(reply.clone())).await {
            Ok(Handled::Applied) => Ok(ReplyOutcome::Applied),
            Ok(Handled::Ignored(why)) => Ok(ReplyOutcome::Ignored(why)),
            Ok(Handled::Held) => Ok(ReplyOutcome::Held),
            Err(SagaError::UnknownInstance(id)) => Ok(ReplyOutcome::UnknownInstance(id)),
            Err(SagaError::MalformedReply(why)) => Ok(ReplyOutcome::Malformed(why)),
            Err(e) => Err(e),
        }
    }

    /// Fires every timer due now: an action with no reply in time is compensated; a
    /// compensation is sent again (or the instance parked). Returns how many fired.
    ///
    /// # Errors
    /// A database failure.
    pub async fn fire_due(&self) -> Result<usize, SagaError> {
        let due = DB::due_instances(&self.inner.pool, &self.inner.saga.name, self.now(), 256).await?;
        let mut fired = 0;
        for id in due {
            match self.apply(&id, Event::Timer).await {
                Ok(Handled::Applied) => fired += 1,
                Ok(_) | Err(SagaError::UnknownInstance(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(fired)
    }

    /// Puts a parked instance back to compensating, from the step that failed.
    ///
    /// # Errors
    /// [`SagaError::UnknownInstance`], [`SagaError::NotParked`].
    pub async fn retry(&self, id: &str) -> Result<(), SagaError> {
        self.apply(id, Event::Retry).await.map(drop)
    }

    /// Pauses an instance: its timers wait and its replies stay unacknowledged until
    /// [`resume`](Orchestrator::resume).
    ///
    /// # Errors
    /// [`SagaError::UnknownInstance`], [`SagaError::Finished`].
    pub async fn pause(&self, id: &str) -> Result<(), SagaError> {
        self.apply(id, Event::Pause).await.map(drop)
    }

    /// Resumes a paused instance.
    ///
    /// # Errors
    /// [`SagaError::UnknownInstance`], [`SagaError::NotPaused`].
    pub async fn resume(&self, id: &str) -> Result<(), SagaError> {
        self.apply(id, Event::Resume).await.map(drop)
    }

    /// Cancels an instance: the steps done so far (and the one in flight) are compensated.
    ///
    /// # Errors
    /// [`SagaError::UnknownInstance`], [`SagaError::Finished`].
    pub async fn cancel(&self, id: &str) -> Result<(), SagaError> {
        self.apply(id, Event::Cancel).await.map(drop)
    }

    /// One instance with its history, pending timeout and the reply it waits for.
    ///
    /// # Errors
    /// [`SagaError::UnknownInstance`].
    pub async fn instance(&self, id: &str) -> Result<InstanceView<S>, SagaError> {
        let mut conn = self.inner.pool.acquire().await?;
        let row = DB::load_instance(&mut conn, id)
            .await?
            .ok_or_else(|| SagaError::UnknownInstance(id.to_owned()))?;
        drop(conn);
        let history = DB::history_of(&self.inner.pool, id).await?;
        let state: S = serde_json::from_str(&row.state).map_err(SagaError::State)?;
        let summary = self.summary(&row);
        Ok(InstanceView { summary, state, history })
    }

    /// Instances (oldest first), of one status or all, at most `limit`.
    ///
    /// # Errors
    /// A database failure.
    pub async fn list(&self, status: Option<Status>, limit: u32) -> Result<Vec<InstanceSummary>, SagaError> {
        let rows = DB::list_instances(
            &self.inner.pool,
            &self.inner.saga.name,
            status.map(Status::as_str),
            i64::from(limit),
        )
        .await?;
        Ok(rows.iter().map(|r| self.summary(r)).collect())
    }

    fn summary(&self, row: &InstanceRow) -> InstanceSummary {
        let version = u32::try_from(row.saga_version).unwrap_or(0);
        let step =
            self.inner.saga.steps_of(version).and_then(|s| s.get(usize::try_from(row.step).unwrap_or(0)));
        let ms = |t: i64| Timestamp(u64::try_from(t).unwrap_or(0));
        let now = self.now();
        InstanceSummary {
            id: row.id.clone(),
            saga_version: version,
            status: Status::parse(&row.status),
            paused: row.paused != 0,
            step: step.map(|s| s.name.to_owned()),
            compensating: row.phase == super::machine::COMPENSATION,
            attempt: u32::try_from(row.attempt).unwrap_or(0),
            awaiting: row.awaiting.clone(),
            timeout_at: row.deadline.map(ms),
            error: row.error.clone(),
            created_at: ms(row.created_at),
            updated_at: ms(row.updated_at),
            age: Duration::from_millis(u64::try_from(now - row.created_at).unwrap_or(0)),
        }
    }

    /// Loads, transitions and commits, retrying on a lost version race.
    async fn apply(&self, id: &str, event: Event<S>) -> Result<Handled, SagaError> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let now = self.now();
            let mut tx = DB::begin_write(&self.inner.pool).await?;
            let row = DB::load_instance(&mut tx, id)
                .await?
                .ok_or_else(|| SagaError::UnknownInstance(id.to_owned()))?;
            let state: S = serde_json::from_str(&row.state).map_err(SagaError::State)?;
            let version = row.row_version;
            let mut machine = Machine::load(&self.inner.saga, row, state, now)?;
            let handled = machine.handle(event.clone())?;
            if handled != Handled::Applied {
                // Nothing changes but the history line saying what was ignored.
                if !machine.history.is_empty() {
                    DB::append_history(&mut tx, id, &machine.history).await?;
                    tx.commit().await?;
                }
                return Ok(handled);
            }
            if let Some(calls) = self.commit(tx, machine, version).await? {
                self.run_calls(id, calls);
                return Ok(Handled::Applied);
            }
            metrics::counter!("switchboard_saga_conflicts_total", "saga" => self.inner.saga.name.clone())
                .increment(1);
        }
        Err(SagaError::Conflict(id.to_owned()))
    }

    /// Writes the machine's row (if still at `version`), its commands and its history in
    /// `tx`; `None` when another worker won the race (nothing was written).
    async fn commit(
        &self,
        mut tx: sqlx::Transaction<'static, DB>,
        machine: Machine<'_, S>,
        version: i64,
    ) -> Result<Option<Vec<PendingCall>>, SagaError> {
        let mut row = machine.row;
        row.state = serde_json::to_string(&machine.state).map_err(SagaError::State)?;
        row.row_version = version + 1;
        row.updated_at = self.now();
        if !DB::update_instance(&mut tx, &row, version).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        for command in machine.commands {
            self.inner.outbox.enqueue(&mut tx, &command.topic, command.message).await?;
        }
        DB::append_history(&mut tx, &row.id, &machine.history).await?;
        self.inner.outbox.commit(tx).await?;
        match Status::parse(&row.status) {
            Status::Completed => {
                metrics::counter!("switchboard_saga_completed_total", "saga" => self.inner.saga.name.clone())
                    .increment(1)
            }
            Status::Compensated => {
                metrics::counter!("switchboard_saga_compensated_total", "saga" => self.inner.saga.name.clone())
                    .increment(1)
            }
            Status::Parked => {
                metrics::counter!("switchboard_saga_parked_total", "saga" => self.inner.saga.name.clone())
                    .increment(1)
            }
            _ => {}
        }
        Ok(Some(machine.calls))
    }

    /// Runs the calls a committed transition asked for, each on its own task; a result is
    /// applied like a reply (so a crash before it lands ends in the step's timeout).
    fn run_calls(&self, id: &str, calls: Vec<PendingCall>) {
        if let Some(queue) = &self.inner.queued_calls {
            queue.lock().extend(calls.into_iter().map(|c| (id.to_owned(), c)));
            return;
        }
        for call in calls {
            let this = self.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                if let Err(e) = this.run_call(&id, call).await {
                    tracing::warn!(instance = %id, error = %e, "A saga call's result could not be recorded; the step's timeout takes over.");
                }
            });
        }
    }

    async fn run_call(&self, id: &str, call: PendingCall) -> Result<(), SagaError> {
        let mut conn = self.inner.pool.acquire().await?;
        let row = DB::load_instance(&mut conn, id)
            .await?
            .ok_or_else(|| SagaError::UnknownInstance(id.to_owned()))?;
        drop(conn);
        let state: S = serde_json::from_str(&row.state).map_err(SagaError::State)?;
        let version = u32::try_from(row.saga_version).unwrap_or(0);
        let steps = self
            .inner
            .saga
            .steps_of(version)
            .ok_or(SagaError::UnknownVersion { id: id.to_owned(), version })?;
        let step = &steps[call.step];
        let action = if call.compensation { step.compensation.as_ref() } else { Some(&step.action) };
        let Some(Action::Call(f)) = action else { return Ok(()) };
        let result = match tokio::time::timeout(step.timeout, f(state)).await {
            Ok(result) => result,
            Err(_) => {
                Err(super::StepFailed::new(format!("the call did not finish within {:?}", step.timeout)))
            }
        };
        self.apply(id, Event::CallDone { token: call.token, result }).await.map(drop)
    }

    /// Reads the reply topic and fires timers every `tick`, on the current runtime, until
    /// [`RunningOrchestrator::shutdown`]. Several orchestrators of one saga (processes or
    /// tasks) share the reply subscription and the timers; the version column keeps two of
    /// them from both applying one change.
    ///
    /// # Errors
    /// The reply subscription cannot be opened.
    pub async fn spawn(self, bus: Bus, tick: Duration) -> Result<RunningOrchestrator, BusError> {
        let name = SubscriptionName::new(format!("{}-orchestrator", self.inner.saga.name))?;
        let caps = bus.capabilities();
        // Replies leased to an orchestrator that dies come back after the lease: keep it
        // well under a step's usual timeout, so a restart does not turn them into timeouts.
        let spec = if caps.contains(Capability::Queue) {
            SubscriptionSpec::queue(name).with_lease(REPLY_LEASE)
        } else {
            SubscriptionSpec::stream(name)
        }
        .with_prefetch(REPLIES_IN_FLIGHT as u32 * 2);
        let replies = bus.subscribe(&self.inner.reply_topic, spec.with_start(Start::Earliest)).await?;
        let nack_delay = caps.contains(Capability::NackDelay);
        let (stop, mut stopped) = watch::channel(false);
        let mut stopped_timers = stopped.clone();
        let this = self.clone();
        // Replies for different instances are applied concurrently (a sequential loop would
        // bound the saga rate by one transaction's latency); two for one instance race on
        // the version column, and the loser reloads.
        let readers = tokio::spawn(async move {
            use futures::StreamExt;
            let handle = replies.for_each_concurrent(REPLIES_IN_FLIGHT, |delivery| {
                let this = this.clone();
                async move {
                    let Ok(delivery) = delivery else { return };
                    let settled = match this.handle_reply(delivery.message()).await {
                        Ok(ReplyOutcome::Held) => {
                            if !nack_delay {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            let nack = if nack_delay { Nack::after(Duration::from_secs(1)) } else { Nack::now() };
                            delivery.nack(nack).await
                        }
                        Ok(outcome) => {
                            if !matches!(outcome, ReplyOutcome::Applied) {
                                tracing::debug!(?outcome, "A saga reply changed nothing.");
                            }
                            delivery.ack().await
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "A saga reply could not be applied; it will be delivered again.");
                            delivery.nack(Nack::now()).await
                        }
                    };
                    if let Err(e) = settled {
                        tracing::debug!(error = %e, "Could not settle a saga reply.");
                    }
                }
            });
            tokio::select! {
                () = handle => {}
                _ = stopped.changed() => {}
            }
        });
        let timers = tokio::spawn(async move {
            loop {
                if let Err(e) = self.fire_due().await {
                    tracing::warn!(error = %e, "Saga timers could not be read.");
                }
                tokio::select! {
                    () = tokio::time::sleep(tick) => {}
                    _ = stopped_timers.changed() => return,
                }
            }
        });
        Ok(RunningOrchestrator { stop, tasks: vec![readers, timers] })
    }
}

/// A spawned orchestrator.
#[derive(Debug)]
pub struct RunningOrchestrator {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningOrchestrator {
    /// Stops reading replies and firing timers (a transition in progress finishes).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
