//! A saga's definition: typed state, steps with an action and a compensation, and the
//! versions and migrations an instance may move between.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use switchboard_core::{Message, TopicName};

/// A command a step sends: a message for a participant's topic. The orchestrator sets its
/// id (one per attempt), its `replyto` and `correlationid` (so the participant's reply finds
/// the instance), `sagaid`, and an `idempotencykey` that stays the same across attempts
/// (the participant's key for doing the work once).
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    /// Where it goes.
    pub topic: TopicName,
    /// What it says.
    pub message: Message,
}

impl Command {
    /// `message` for `topic`.
    pub fn new(topic: TopicName, message: Message) -> Command {
        Command { topic, message }
    }
}

/// Why a step (or a compensation) did not succeed: the participant said no, or a call
/// failed. Recorded in the instance's history.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StepFailed(pub String);

impl StepFailed {
    /// A failure with `reason`.
    pub fn new(reason: impl Into<String>) -> StepFailed {
        StepFailed(reason.into())
    }
}

type MakeCommand<S> = Arc<dyn Fn(&S) -> Command + Send + Sync>;
type ReadReply<S> = Arc<dyn Fn(&mut S, &Message) -> Result<(), StepFailed> + Send + Sync>;
type Call<S> = Arc<dyn Fn(S) -> BoxFuture<'static, Result<S, StepFailed>> + Send + Sync>;

/// What a step (or its compensation) does.
#[derive(Clone)]
pub(crate) enum Action<S> {
    /// Sends a command and waits for the reply, which `read` interprets.
    Command { make: MakeCommand<S>, read: ReadReply<S> },
    /// Calls a service synchronously (through `switchboard-sync`, say); the call returns
    /// the new state.
    Call(Call<S>),
}

/// One step: an action, an optional compensation, and how long the action (and each
/// compensation attempt) may take.
#[derive(Clone)]
pub struct Step<S> {
    pub(crate) name: &'static str,
    pub(crate) action: Action<S>,
    pub(crate) compensation: Option<Action<S>>,
    pub(crate) timeout: Duration,
    pub(crate) attempts: u32,
}

impl<S> std::fmt::Debug for Step<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("compensated", &self.compensation.is_some())
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl<S: Send + 'static> Step<S> {
    /// A step that sends `command(state)` and waits for the reply; every reply counts as
    /// success until [`on_reply`](Step::on_reply) says how to read it.
    pub fn command(name: &'static str, command: impl Fn(&S) -> Command + Send + Sync + 'static) -> Step<S> {
        Step {
            name,
            action: Action::Command { make: Arc::new(command), read: Arc::new(|_, _| Ok(())) },
            compensation: None,
            timeout: Duration::from_secs(30),
            attempts: 1,
        }
    }

    /// A step that calls `call(state)` and continues with the state it returns.
    pub fn call<F, Fut>(name: &'static str, call: F) -> Step<S>
    where
        F: Fn(S) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<S, StepFailed>> + Send + 'static,
    {
        Step {
            name,
            action: Action::Call(Arc::new(move |s| Box::pin(call(s)))),
            compensation: None,
            timeout: Duration::from_secs(30),
            attempts: 1,
        }
    }

    /// Reads the action's reply into the state; an `Err` fails the step (and compensates
    /// the steps before it).
    #[must_use]
    pub fn on_reply(
        mut self,
        read: impl Fn(&mut S, &Message) -> Result<(), StepFailed> + Send + Sync + 'static,
    ) -> Self {
        if let Action::Command { read: r, .. } = &mut self.action {
            *r = Arc::new(read);
        }
        self
    }

    /// Undoes the step by sending `command(state)`; its reply counts as done unless
    /// [`on_compensation_reply`](Step::on_compensation_reply) says otherwise.
    #[must_use]
    pub fn compensate(mut self, command: impl Fn(&S) -> Command + Send + Sync + 'static) -> Self {
        self.compensation = Some(Action::Command { make: Arc::new(command), read: Arc::new(|_, _| Ok(())) });
        self
    }

    /// Undoes the step with a call.
    #[must_use]
    pub fn compensate_with_call<F, Fut>(mut self, call: F) -> Self
    where
        F: Fn(S) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<S, StepFailed>> + Send + 'static,
    {
        self.compensation = Some(Action::Call(Arc::new(move |s| Box::pin(call(s)))));
        self
    }

    /// Reads a compensation's reply: an `Err` means it did not take effect and is retried.
    #[must_use]
    pub fn on_compensation_reply(
        mut self,
        read: impl Fn(&mut S, &Message) -> Result<(), StepFailed> + Send + Sync + 'static,
    ) -> Self {
        if let Some(Action::Command { read: r, .. }) = &mut self.compensation {
            *r = Arc::new(read);
        }
        self
    }

    /// How long the action, and each compensation attempt, may go without a reply
    /// (default 30 s). An action that times out is compensated (it may have taken effect)
    /// unless [`retry`](Step::retry) allows another attempt; a compensation that times out
    /// is sent again.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends an action that timed out again, up to `attempts` in all (default 1), before
    /// compensating: with the same idempotency key, so the participant (or the call) must
    /// treat a repeat as the same request. A timeout says only that the outcome is unknown
    /// (the reply was lost, or the process running a call died before recording its
    /// result); for a step that may already have taken effect and that should go forward
    /// rather than be undone (the pivot of a saga, such as confirming an order), retrying
    /// is what finds out. A step that answers with a failure is compensated at once.
    #[must_use]
    pub fn retry(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }
}

/// Moves an instance's state (and its step index) from an older version to the next.
pub type Migration<S> = Arc<dyn Fn(&mut S, usize) -> usize + Send + Sync>;

/// A saga: a name, a version, and its steps in order.
///
/// An instance runs on the version it started with: register the older versions an
/// orchestrator still has instances of with [`Saga::keep_version`], or declare a
/// [`migration`](Saga::migrate_from) that moves such instances to this version when they
/// are next touched.
pub struct Saga<S> {
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) steps: Vec<Step<S>>,
    pub(crate) older: HashMap<u32, Vec<Step<S>>>,
    pub(crate) migrations: HashMap<u32, Migration<S>>,
    pub(crate) max_compensation_attempts: u32,
    pub(crate) compensation_backoff: switchboard_policy::Backoff,
}

impl<S> std::fmt::Debug for Saga<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saga")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl<S: Send + 'static> Saga<S> {
    /// An empty saga `name` at `version`. The name also names its reply topic
    /// (`<name>.replies`), so it is a valid topic name.
    pub fn new(name: impl Into<String>, version: u32) -> Saga<S> {
        Saga {
            name: name.into(),
            version,
            steps: Vec::new(),
            older: HashMap::new(),
            migrations: HashMap::new(),
            max_compensation_attempts: 10,
            compensation_backoff: switchboard_policy::Backoff {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(30),
                ..switchboard_policy::Backoff::default()
            },
        }
    }

    /// Adds a step after the others.
    #[must_use]
    pub fn step(mut self, step: Step<S>) -> Self {
        self.steps.push(step);
        self
    }

    /// Keeps version `version`'s steps, so its instances finish on them.
    #[must_use]
    pub fn keep_version(mut self, version: u32, steps: Vec<Step<S>>) -> Self {
        self.older.insert(version, steps);
        self
    }

    /// Moves instances of version `from` to this version: `migrate(state, step)` updates
    /// the state and returns the step index the instance continues at.
    #[must_use]
    pub fn migrate_from(
        mut self,
        from: u32,
        migrate: impl Fn(&mut S, usize) -> usize + Send + Sync + 'static,
    ) -> Self {
        self.migrations.insert(from, Arc::new(migrate));
        self
    }

    /// Compensation attempts before an instance is parked (default 10), and the backoff
    /// between them.
    #[must_use]
    pub fn compensation_retries(mut self, attempts: u32, backoff: switchboard_policy::Backoff) -> Self {
        self.max_compensation_attempts = attempts.max(1);
        self.compensation_backoff = backoff;
        self
    }

    /// The steps instances of `version` run on, if this saga knows them.
    pub(crate) fn steps_of(&self, version: u32) -> Option<&[Step<S>]> {
        if version == self.version { Some(&self.steps) } else { self.older.get(&version).map(Vec::as_slice) }
    }
}
