//! Sagas: a transaction across services as a sequence of local steps, each with a
//! compensation that undoes it, run by an orchestrator that keeps every instance in a
//! database.
//!
//! A saga is typed state plus [`Step`]s. A step's action is a command sent over messaging
//! (its reply, correlated to the instance by id, says whether it worked) or a synchronous
//! call (through `switchboard-sync`, say). When a step fails or times out, the steps before
//! it are compensated in reverse order; a compensation is retried until it succeeds, and
//! one that keeps failing parks the instance with its error for an operator.
//!
//! What the orchestrator guarantees:
//! - **One row per instance, with a version column.** Two workers that handle replies
//!   for one instance at once never both win: the loser's update matches no row, and it
//!   reloads and tries again.
//! - **A state change and the commands it sends commit together** (through the
//!   [outbox](crate::outbox)): no command is lost, none is sent for a change that did not
//!   commit.
//! - **Duplicate and late replies change nothing**: a reply counts only while its
//!   instance awaits exactly that correlation id; anything else is recorded in the
//!   history and dropped.
//! - **Timeouts are durable**: the deadline is a column of the instance row, committed
//!   with the state, fired by whichever orchestrator polls next (also after a restart).
//! - **Versions**: an instance finishes on the version it started with
//!   ([`Saga::keep_version`]), unless a migration ([`Saga::migrate_from`]) moves it.
//!
//! Participants: a command carries `replyto`, `correlationid`, `sagaid` and an
//! `idempotencykey` that stays the same across the attempts of one step, so a participant
//! that keys its work on it does the work once and answers a repeat with the same answer.
//! They answer with [`reply_to`](crate::request::reply_to) or
//! [`Incoming::reply`](crate::Incoming::reply).
//!
//! ```
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use switchboard::saga::{Command, Saga, SagaTest, Status, Step, StepFailed};
//! use switchboard::{Message, TopicName};
//!
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct Checkout { order: String }
//!
//! let inventory = TopicName::from_static("inventory.commands");
//! let payment = TopicName::from_static("payment.commands");
//! let (i, p) = (inventory.clone(), payment.clone());
//! let checkout = Saga::<Checkout>::new("checkout", 1)
//!     .step(
//!         Step::command("reserve-stock", move |s: &Checkout| {
//!             Command::new(i.clone(), Message::new("/orders", "stock.reserve", s.order.clone()))
//!         })
//!         .compensate(move |s: &Checkout| {
//!             Command::new(inventory.clone(), Message::new("/orders", "stock.release", s.order.clone()))
//!         }),
//!     )
//!     .step(
//!         Step::command("charge", move |s: &Checkout| {
//!             Command::new(p.clone(), Message::new("/orders", "payment.charge", s.order.clone()))
//!         })
//!         .on_reply(|_, reply| if reply.ty == "payment.charged" { Ok(()) } else { Err(StepFailed::new("declined")) }),
//!     );
//!
//! // The harness drives it without a broker: replies in, commands out, time by hand.
//! let test = SagaTest::new(checkout).await?;
//! test.start("order-1", Checkout { order: "order-1".into() }).await?;
//! let reserve = test.sent().await?.pop().expect("reserve");
//! test.reply(&reserve, Message::new("/inventory", "stock.reserved", "")).await?;
//! let charge = test.sent().await?.pop().expect("charge");
//! test.reply(&charge, Message::new("/payment", "payment.declined", "")).await?;
//! let release = test.sent().await?.pop().expect("the reservation is released");
//! assert_eq!(release.message.ty, "stock.release");
//! test.reply(&release, Message::new("/inventory", "stock.released", "")).await?;
//! assert_eq!(test.instance("order-1").await?.summary.status, Status::Compensated);
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run()).unwrap();
//! ```

mod definition;
mod machine;
mod orchestrator;
mod store;
// The harness defaults to an in-memory SQLite database.
#[cfg(feature = "sqlite")]
mod testing;

use std::time::Duration;

use switchboard_core::{Message, Timestamp};

pub use definition::{Command, Migration, Saga, Step, StepFailed};
pub use machine::{IDEMPOTENCY_KEY, SAGA_ID};
pub use orchestrator::{Orchestrator, RunningOrchestrator};
pub use store::{HistoryEntry, SagaDatabase};
#[cfg(feature = "sqlite")]
pub use testing::SagaTest;

use crate::outbox::OutboxError;
use crate::request::CORRELATION_ID;

/// Where an instance is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Its steps are running.
    Running,
    /// A step failed (or it was cancelled): the steps done are being undone.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// Every step that had taken effect was undone.
    Compensated,
    /// A compensation kept failing: an operator has to look ([`Orchestrator::retry`]).
    Parked,
}

impl Status {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Compensating => "compensating",
            Status::Completed => "completed",
            Status::Compensated => "compensated",
            Status::Parked => "parked",
        }
    }

    pub(crate) fn parse(s: &str) -> Status {
        match s {
            "compensating" => Status::Compensating,
            "completed" => Status::Completed,
            "compensated" => Status::Compensated,
            "parked" => Status::Parked,
            _ => Status::Running,
        }
    }

    /// Completed or compensated: nothing more happens to it.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Compensated)
    }
}

/// What a reply did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// It moved its instance on.
    Applied,
    /// A duplicate or late reply: recorded in the history, nothing else changed.
    Ignored(String),
    /// Its instance is paused: the reply is delivered again later.
    Held,
    /// No instance has the id it names.
    UnknownInstance(String),
    /// It names no instance (no usable `correlationid`).
    Malformed(String),
}

/// Why a saga operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    /// No instance has this id.
    #[error("no saga instance {0}")]
    UnknownInstance(String),
    /// An instance with this id exists.
    #[error("saga instance {0} exists already")]
    AlreadyExists(String),
    /// The instance has finished (completed or compensated).
    #[error("saga instance {0} has finished")]
    Finished(String),
    /// The instance is not parked.
    #[error("saga instance {0} is not parked")]
    NotParked(String),
    /// The instance is not paused.
    #[error("saga instance {0} is not paused")]
    NotPaused(String),
    /// The instance started on a version this orchestrator neither keeps nor migrates.
    #[error(
        "saga instance {id} runs on version {version}, which this orchestrator neither keeps nor migrates"
    )]
    UnknownVersion {
        /// The instance.
        id: String,
        /// Its version.
        version: u32,
    },
    /// A reply that names no instance.
    #[error("malformed saga reply: {0}")]
    MalformedReply(String),
    /// Other workers kept changing the instance; try again.
    #[error("saga instance {0} kept changing under this worker")]
    Conflict(String),
    /// A definition or argument that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// The state did not (de)serialize.
    #[error("saga state: {0}")]
    State(#[source] serde_json::Error),
    /// The outbox refused a command.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The database failed.
    #[error("saga database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// An instance at a glance.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceSummary {
    /// Its id.
    pub id: String,
    /// The saga version it runs on.
    pub saga_version: u32,
    /// Where it is.
    pub status: Status,
    /// Paused by an operator.
    pub paused: bool,
    /// The step it is at (or was at when it finished).
    pub step: Option<String>,
    /// True when that step is being compensated.
    pub compensating: bool,
    /// Attempts of the current action or compensation.
    pub attempt: u32,
    /// The correlation id of the reply it waits for (or `call:…` for a call).
    pub awaiting: Option<String>,
    /// When its pending timeout fires.
    pub timeout_at: Option<Timestamp>,
    /// The last error (why it compensates, or why it is parked).
    pub error: Option<String>,
    /// When it started.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// How long ago it started.
    pub age: Duration,
}

/// One instance in full: its summary, its state and its history.
#[derive(Clone, Debug)]
pub struct InstanceView<S> {
    /// Where it is.
    pub summary: InstanceSummary,
    /// Its state.
    pub state: S,
    /// Everything that happened to it, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// The topic a saga's participants reply to.
pub(crate) fn reply_topic_name(saga: &str) -> String {
    format!("{saga}.replies")
}

/// The instance a reply's correlation id (`<instance>/<step>/<a|c>`) names.
pub(crate) fn instance_of(reply: &Message) -> Option<String> {
    let correlation = reply.extensions.get(CORRELATION_ID)?;
    let mut parts = correlation.rsplitn(3, '/');
    let phase = parts.next()?;
    let step = parts.next()?;
    let id = parts.next()?;
    (matches!(phase, "a" | "c") && step.parse::<usize>().is_ok() && !id.is_empty()).then(|| id.to_owned())
}
