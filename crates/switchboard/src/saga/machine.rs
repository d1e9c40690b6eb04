//! The transitions of one instance, in memory: what a reply, a timer, a call's result or
//! an operator's action does to it, and the commands, calls and history lines that follow.
//! The orchestrator loads the row, runs one transition, and commits the row, the commands
//! (through the outbox) and the history together.

use switchboard_core::Message;

use super::definition::{Action, Saga, Step, StepFailed};
use super::store::{HistoryEntry, InstanceRow};
use super::{SagaError, Status};
use crate::request::{CORRELATION_ID, REPLY_TO};

/// The extension naming the instance a command belongs to.
pub const SAGA_ID: &str = "sagaid";
/// The extension a participant keys its work on: the same for every attempt of one step's
/// action (or compensation), so a repeat is recognised and answered again, not redone.
pub const IDEMPOTENCY_KEY: &str = "idempotencykey";

pub(crate) const ACTION: &str = "action";
pub(crate) const COMPENSATION: &str = "compensation";

/// What happens to an instance.
#[derive(Clone, Debug)]
pub(crate) enum Event<S> {
    Reply(Message),
    Timer,
    CallDone { token: String, result: Result<S, StepFailed> },
    Retry,
    Pause,
    Resume,
    Cancel,
}

/// What a transition made of its event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Handled {
    /// The instance moved on.
    Applied,
    /// Nothing changed (a duplicate or late reply, a timer for a paused instance); why.
    Ignored(String),
    /// The instance is paused: the reply waits (unacked) until it resumes.
    Held,
}

/// A call a step makes once its transition committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PendingCall {
    pub step: usize,
    pub compensation: bool,
    pub token: String,
}

pub(crate) struct Machine<'a, S> {
    saga: &'a Saga<S>,
    steps: &'a [Step<S>],
    pub(crate) row: InstanceRow,
    pub(crate) state: S,
    now: i64,
    pub(crate) commands: Vec<super::Command>,
    pub(crate) calls: Vec<PendingCall>,
    pub(crate) history: Vec<HistoryEntry>,
}

impl<'a, S: Clone + Send + 'static> Machine<'a, S> {
    /// The instance in `row` with its state `state`, on the steps of its version (after a
    /// declared migration, if one applies).
    pub(crate) fn load(
        saga: &'a Saga<S>,
        mut row: InstanceRow,
        mut state: S,
        now: i64,
    ) -> Result<Self, SagaError> {
        let mut history = Vec::new();
        let version = u32::try_from(row.saga_version).unwrap_or(0);
        if version != saga.version
            && let Some(migrate) = saga.migrations.get(&version)
        {
            let step = migrate(&mut state, usize::try_from(row.step).unwrap_or(0));
            history.push(entry(now, "migrated", None, format!("from version {version} to {}", saga.version)));
            row.saga_version = i32::try_from(saga.version).unwrap_or(i32::MAX);
            row.step = i32::try_from(step).unwrap_or(i32::MAX);
        }
        let version = u32::try_from(row.saga_version).unwrap_or(0);
        let steps = saga
            .steps_of(version)
            .ok_or_else(|| SagaError::UnknownVersion { id: row.id.clone(), version })?;
        Ok(Machine { saga, steps, row, state, now, commands: Vec::new(), calls: Vec::new(), history })
    }

    /// A new instance's row, before its first step.
    pub(crate) fn new_row(saga: &Saga<S>, id: &str, state_json: String, now: i64) -> InstanceRow {
        InstanceRow {
            id: id.to_owned(),
            saga: saga.name.clone(),
            saga_version: i32::try_from(saga.version).unwrap_or(i32::MAX),
            status: Status::Running.as_str().to_owned(),
            paused: 0,
            step: 0,
            phase: ACTION.to_owned(),
            attempt: 0,
            awaiting: None,
            deadline: None,
            state: state_json,
            error: None,
            row_version: 0,
            created_at: now,
            updated_at: now,
        }
    }

    fn status(&self) -> Status {
        Status::parse(&self.row.status)
    }

    fn step_index(&self) -> usize {
        usize::try_from(self.row.step).unwrap_or(0)
    }

    fn step_name(&self, i: usize) -> Option<String> {
        self.steps.get(i).map(|s| s.name.to_owned())
    }

    fn log(&mut self, kind: &str, step: Option<usize>, detail: impl Into<String>) {
        let step = step.and_then(|i| self.step_name(i));
        self.history.push(entry(self.now, kind, step, detail.into()));
    }

    /// Starts the first step.
    pub(crate) fn start(&mut self) {
        self.log("started", None, format!("version {}", self.row.saga_version));
        self.enter_step(0);
    }

    pub(crate) fn handle(&mut self, event: Event<S>) -> Result<Handled, SagaError> {
        let status = self.status();
        let paused = self.row.paused != 0;
        match event {
            Event::Reply(reply) => self.on_reply(&reply, status, paused),
            Event::Timer => {
                if paused || !matches!(status, Status::Running | Status::Compensating) {
                    return Ok(Handled::Ignored("no timer is due".into()));
                }
                if self.row.deadline.is_none_or(|d| d > self.now) {
                    return Ok(Handled::Ignored("the timer is not due yet".into()));
                }
                self.on_timer(status);
                Ok(Handled::Applied)
            }
            Event::CallDone { token, result } => {
                if self.row.awaiting.as_deref() != Some(token.as_str()) || paused {
                    return Ok(Handled::Ignored("a call result for an attempt no longer awaited".into()));
                }
                let i = self.step_index();
                match (status, result) {
                    (Status::Running, Ok(state)) => {
                        self.state = state;
                        self.log("call-done", Some(i), "");
                        self.enter_step(i + 1);
                    }
                    (Status::Running, Err(failed)) => {
                        self.log("step-failed", Some(i), failed.0.clone());
                        self.begin_compensation(i.checked_sub(1), &failed.0);
                    }
                    (Status::Compensating, Ok(state)) => {
                        self.state = state;
                        self.log("compensated-step", Some(i), "");
                        self.begin_compensation(i.checked_sub(1), "");
                    }
                    (Status::Compensating, Err(failed)) => self.compensation_failed(&failed.0),
                    _ => return Ok(Handled::Ignored("the instance has finished".into())),
                }
                Ok(Handled::Applied)
            }
            Event::Retry => {
                if status != Status::Parked {
                    return Err(SagaError::NotParked(self.row.id.clone()));
                }
                self.log("retried", Some(self.step_index()), "by an operator");
                self.row.status = Status::Compensating.as_str().to_owned();
                self.row.error = None;
                self.row.attempt = 0;
                self.send(self.step_index(), true);
                Ok(Handled::Applied)
            }
            Event::Pause => {
                if status.is_final() {
                    return Err(SagaError::Finished(self.row.id.clone()));
                }
                self.row.paused = 1;
                self.log("paused", None, "by an operator");
                Ok(Handled::Applied)
            }
            Event::Resume => {
                if !paused {
                    return Err(SagaError::NotPaused(self.row.id.clone()));
                }
                self.row.paused = 0;
                self.log("resumed", None, "by an operator");
                Ok(Handled::Applied)
            }
            Event::Cancel => match status {
                Status::Running => {
                    let i = self.step_index();
                    self.log("cancelled", Some(i), "by an operator");
                    // The step in flight may have taken effect: it is compensated too.
                    self.begin_compensation(Some(i), "cancelled by an operator");
                    Ok(Handled::Applied)
                }
                Status::Parked => self.handle(Event::Retry),
                Status::Compensating => Ok(Handled::Ignored("the instance is already compensating".into())),
                Status::Completed | Status::Compensated => Err(SagaError::Finished(self.row.id.clone())),
            },
        }
    }

    fn on_reply(&mut self, reply: &Message, status: Status, paused: bool) -> Result<Handled, SagaError> {
        let Some(correlation) = reply.extensions.get(CORRELATION_ID) else {
            return Err(SagaError::MalformedReply(format!("reply {} has no `{CORRELATION_ID}`", reply.id)));
        };
        if status.is_final()
            || status == Status::Parked
            || self.row.awaiting.as_deref() != Some(correlation.as_str())
        {
            let why = format!(
                "{} reply {} ({})",
                if status.is_final() { "late" } else { "duplicate or late" },
                reply.id,
                reply.ty
            );
            self.log("reply-ignored", None, why.clone());
            return Ok(Handled::Ignored(why));
        }
        if paused {
            return Ok(Handled::Held);
        }
        let i = self.step_index();
        let compensating = status == Status::Compensating;
        let action =
            if compensating { self.steps[i].compensation.as_ref() } else { Some(&self.steps[i].action) };
        let Some(Action::Command { read, .. }) = action else {
            return Ok(Handled::Ignored(format!("reply {} for a step that makes a call", reply.id)));
        };
        let read = read.clone();
        let result = read(&mut self.state, reply);
        match (compensating, result) {
            (false, Ok(())) => {
                self.log("reply", Some(i), reply.ty.clone());
                self.enter_step(i + 1);
            }
            (false, Err(failed)) => {
                self.log("step-failed", Some(i), failed.0.clone());
                self.begin_compensation(i.checked_sub(1), &failed.0);
            }
            (true, Ok(())) => {
                self.log("compensated-step", Some(i), reply.ty.clone());
                self.begin_compensation(i.checked_sub(1), "");
            }
            (true, Err(failed)) => self.compensation_failed(&failed.0),
        }
        Ok(Handled::Applied)
    }

    fn on_timer(&mut self, status: Status) {
        let i = self.step_index();
        if status == Status::Running {
            let why = format!("no reply within {:?}", self.steps[i].timeout);
            self.log("timed-out", Some(i), why.clone());
            if u32::try_from(self.row.attempt).unwrap_or(u32::MAX) < self.steps[i].attempts {
                self.send(i, false);
            } else {
                self.begin_compensation(Some(i), &format!("step {} timed out", self.steps[i].name));
            }
        } else if u32::try_from(self.row.attempt).unwrap_or(0) >= self.saga.max_compensation_attempts {
            let error = self.row.error.clone().unwrap_or_else(|| "no reply".to_owned());
            self.park(&format!(
                "compensation of {} failed {} times: {error}",
                self.steps[i].name, self.row.attempt
            ));
        } else {
            self.send(i, true);
        }
    }

    fn enter_step(&mut self, i: usize) {
        if i >= self.steps.len() {
            self.finish(Status::Completed);
            return;
        }
        self.row.step = i32::try_from(i).unwrap_or(i32::MAX);
        self.row.phase = ACTION.to_owned();
        self.row.attempt = 0;
        self.send(i, false);
    }

    /// Compensates the highest step at or below `from` that has a compensation, or ends
    /// the instance compensated when none is left.
    fn begin_compensation(&mut self, from: Option<usize>, reason: &str) {
        if !reason.is_empty() {
            self.row.error = Some(reason.to_owned());
        }
        let next = from.and_then(|from| {
            (0..=from.min(self.steps.len().saturating_sub(1)))
                .rev()
                .find(|&j| self.steps[j].compensation.is_some())
        });
        match next {
            None => self.finish(Status::Compensated),
            Some(j) => {
                self.row.status = Status::Compensating.as_str().to_owned();
                self.row.step = i32::try_from(j).unwrap_or(i32::MAX);
                self.row.phase = COMPENSATION.to_owned();
                self.row.attempt = 0;
                self.send(j, true);
            }
        }
    }

    fn compensation_failed(&mut self, error: &str) {
        let i = self.step_index();
        self.log("compensation-failed", Some(i), format!("attempt {}: {error}", self.row.attempt));
        self.row.error = Some(error.to_owned());
        if u32::try_from(self.row.attempt).unwrap_or(0) >= self.saga.max_compensation_attempts {
            self.park(&format!(
                "compensation of {} failed {} times: {error}",
                self.steps[i].name, self.row.attempt
            ));
        } else {
            // The timer sends the next attempt after the backoff.
            let delay = self.saga.compensation_backoff.delay(u32::try_from(self.row.attempt).unwrap_or(1));
            self.row.deadline = Some(self.now.saturating_add(millis(delay)));
        }
    }

    fn park(&mut self, error: &str) {
        self.log("parked", Some(self.step_index()), error);
        self.row.status = Status::Parked.as_str().to_owned();
        self.row.error = Some(error.to_owned());
        self.row.awaiting = None;
        self.row.deadline = None;
    }

    fn finish(&mut self, status: Status) {
        self.row.status = status.as_str().to_owned();
        self.row.awaiting = None;
        self.row.deadline = None;
        if status == Status::Completed {
            self.row.error = None;
        }
        self.log(status.as_str(), None, "");
    }

    /// Sends attempt `attempt + 1` of step `i`'s action (or compensation).
    fn send(&mut self, i: usize, compensation: bool) {
        self.row.attempt += 1;
        let step = &self.steps[i];
        let action = if compensation { step.compensation.clone() } else { Some(step.action.clone()) };
        let Some(action) = action else { return };
        let correlation = format!("{}/{i}/{}", self.row.id, if compensation { "c" } else { "a" });
        self.row.deadline = Some(self.now.saturating_add(millis(step.timeout)));
        match action {
            Action::Command { make, .. } => {
                let mut command = make(&self.state);
                let m = &mut command.message;
                m.id = format!("{correlation}/{}", self.row.attempt);
                m.extensions.insert(REPLY_TO.to_owned(), super::reply_topic_name(&self.saga.name));
                m.extensions.insert(CORRELATION_ID.to_owned(), correlation.clone());
                m.extensions.insert(SAGA_ID.to_owned(), self.row.id.clone());
                m.extensions.insert(IDEMPOTENCY_KEY.to_owned(), correlation.clone());
                if m.partition_key().is_none() {
                    // One instance's commands stay in order.
                    *m = std::mem::take(m).with_key(self.row.id.clone());
                }
                let detail =
                    format!("{} to {} (attempt {})", command.message.ty, command.topic, self.row.attempt);
                self.commands.push(command);
                self.row.awaiting = Some(correlation);
                self.log(if compensation { "compensation-sent" } else { "command-sent" }, Some(i), detail);
            }
            Action::Call(_) => {
                let token = format!("call:{correlation}/{}", self.row.attempt);
                self.calls.push(PendingCall { step: i, compensation, token: token.clone() });
                self.row.awaiting = Some(token);
                self.log(
                    if compensation { "compensation-call" } else { "call" },
                    Some(i),
                    format!("attempt {}", self.row.attempt),
                );
            }
        }
    }
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn entry(at: i64, kind: &str, step: Option<String>, detail: String) -> HistoryEntry {
    HistoryEntry { at, kind: kind.to_owned(), step, detail }
}
