//! A harness for testing a saga without a broker, in the spirit of NServiceBus's testable
//! sagas: an orchestrator on an in-memory SQLite database (or a database the test gives)
//! and a manual clock; the test reads the commands it sent, answers them, and moves time.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use switchboard_core::{ManualClock, Message, Timestamp};

use super::{Command, InstanceView, Orchestrator, ReplyOutcome, Saga, SagaDatabase, SagaError};
use crate::outbox::Outbox;

/// Drives one saga by hand. See the [module docs](super) for an example.
pub struct SagaTest<S, DB: SagaDatabase = sqlx::Sqlite> {
    orchestrator: Orchestrator<S, DB>,
    clock: Arc<ManualClock>,
    pool: sqlx::Pool<DB>,
}

impl<S, DB: SagaDatabase> std::fmt::Debug for SagaTest<S, DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaTest").field("orchestrator", &self.orchestrator).finish_non_exhaustive()
    }
}

impl<S> SagaTest<S, sqlx::Sqlite>
where
    S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// `saga` on a fresh in-memory SQLite database, at clock time 1,000,000 ms.
    ///
    /// # Errors
    /// The database cannot be set up.
    pub async fn new(saga: Saga<S>) -> Result<Self, SagaError> {
        // One connection: every connection to `sqlite::memory:` is a database of its own.
        let pool =
            sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await?;
        SagaTest::on(saga, pool).await
    }
}

impl<S, DB> SagaTest<S, DB>
where
    S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    DB: SagaDatabase,
{
    /// `saga` on the database behind `pool` (the PostgreSQL of a test, say; its outbox and
    /// saga tables should be empty), at clock time 1,000,000 ms.
    ///
    /// # Errors
    /// The database cannot be set up.
    pub async fn on(saga: Saga<S>, pool: sqlx::Pool<DB>) -> Result<Self, SagaError> {
        let outbox = Outbox::open(pool.clone()).await?;
        let clock = Arc::new(ManualClock::new(Timestamp(1_000_000)));
        let orchestrator = Orchestrator::new(saga, pool.clone(), outbox)
            .await?
            .with_clock(clock.clone())
            .with_queued_calls();
        Ok(SagaTest { orchestrator, clock, pool })
    }

    /// A new orchestrator for `saga` on the same database and clock, as after a crash and
    /// restart of the orchestrator process: whatever it held in memory (calls not yet run)
    /// is gone; what it committed is not.
    ///
    /// # Errors
    /// The database cannot be opened again.
    pub async fn restart(&mut self, saga: Saga<S>) -> Result<(), SagaError> {
        let outbox = Outbox::open(self.pool.clone()).await?;
        self.orchestrator = Orchestrator::new(saga, self.pool.clone(), outbox)
            .await?
            .with_clock(self.clock.clone())
            .with_queued_calls();
        Ok(())
    }

    /// The orchestrator under test (inspection and operator actions).
    pub fn orchestrator(&self) -> &Orchestrator<S, DB> {
        &self.orchestrator
    }

    /// Starts an instance (and runs the calls it leads to).
    ///
    /// # Errors
    /// As [`Orchestrator::start`].
    pub async fn start(&self, id: &str, state: S) -> Result<(), SagaError> {
        self.orchestrator.start(id, state).await?;
        self.orchestrator.run_queued_calls().await.map(drop)
    }

    /// The commands committed since the last call, in commit order.
    ///
    /// # Errors
    /// A database failure.
    pub async fn sent(&self) -> Result<Vec<Command>, SagaError> {
        Ok(self
            .orchestrator
            .outbox()
            .take_pending()
            .await?
            .into_iter()
            .map(|(topic, message)| Command { topic, message })
            .collect())
    }

    /// Answers `command` with `reply` as a participant would (correlated with
    /// [`reply_to`](crate::request::reply_to)), and runs the calls it leads to.
    ///
    /// # Errors
    /// A database failure; a command that asks for no reply.
    pub async fn reply(&self, command: &Command, reply: Message) -> Result<ReplyOutcome, SagaError> {
        let (_, reply) = crate::request::reply_to(&command.message, reply)
            .map_err(|e| SagaError::Invalid(e.to_string()))?;
        let outcome = self.orchestrator.handle_reply(&reply).await?;
        self.orchestrator.run_queued_calls().await?;
        Ok(outcome)
    }

    /// Moves the clock on by `by` and fires the timers due; returns how many fired.
    ///
    /// # Errors
    /// A database failure.
    pub async fn advance(&self, by: Duration) -> Result<usize, SagaError> {
        self.clock.advance(by);
        let fired = self.orchestrator.fire_due().await?;
        self.orchestrator.run_queued_calls().await?;
        Ok(fired)
    }

    /// Runs the calls waiting (started by an operator action, say).
    ///
    /// # Errors
    /// A database failure.
    pub async fn run_calls(&self) -> Result<usize, SagaError> {
        self.orchestrator.run_queued_calls().await
    }

    /// One instance in full.
    ///
    /// # Errors
    /// [`SagaError::UnknownInstance`].
    pub async fn instance(&self, id: &str) -> Result<InstanceView<S>, SagaError> {
        self.orchestrator.instance(id).await
    }
}
