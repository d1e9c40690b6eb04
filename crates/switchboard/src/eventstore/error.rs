//! Why the event store refused or failed an operation.

use super::{ExpectedVersion, Position};
use crate::outbox::OutboxError;

/// Why the event store refused or failed an operation. Every refusal leaves the database
/// as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventStoreError {
    /// The stream name breaks a rule.
    #[error("invalid stream name {name:?}: {reason}")]
    InvalidStreamName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// An event is not valid (empty type, too large, too many in one append…).
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// The stream is not at the expected version: another writer got there first.
    #[error("stream {stream} is at {actual}, not {expected}", actual = describe(*.actual))]
    WrongExpectedVersion {
        /// The stream.
        stream: String,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's version (`None`: it has no events).
        actual: Option<u64>,
    },
    /// The stream was deleted: it takes no more events.
    #[error("stream {stream} was deleted (at version {version})")]
    StreamDeleted {
        /// The stream.
        stream: String,
        /// Its last version, the tombstone's.
        version: u64,
    },
    /// The event's type is not one the store's schema declares, and no upcaster names it.
    #[error("unknown event type {ty:?}: the store's schema declares no such type")]
    UnknownEventType {
        /// The type.
        ty: String,
    },
    /// A stored event is at an older schema version and no upcaster takes it further.
    #[error(
        "event type {ty:?} is stored at schema version {from}, and no upcaster takes it from there to {to}"
    )]
    NoUpcaster {
        /// The type.
        ty: String,
        /// The stored version.
        from: u32,
        /// The current version.
        to: u32,
    },
    /// An upcaster failed on a stored event.
    #[error("upcasting {ty:?} from schema version {from} failed: {error}")]
    Upcast {
        /// The type.
        ty: String,
        /// The version it was upcast from.
        from: u32,
        /// The upcaster's error.
        error: String,
    },
    /// A stored event's data does not match the type it is read as.
    #[error("event {stream}@{version} ({ty}) cannot be decoded: {error}")]
    Decode {
        /// Its stream.
        stream: String,
        /// Its version.
        version: u64,
        /// Its type.
        ty: String,
        /// The decoder's error.
        error: String,
    },
    /// A subscription or projection was asked to start past the feed's end: the checkpoint
    /// belongs to another database, or the feed was restored from an older backup.
    #[error("checkpoint {checkpoint} is ahead of the feed, which ends at {head}")]
    CheckpointAhead {
        /// The checkpoint given.
        checkpoint: Position,
        /// The feed's last position.
        head: Position,
    },
    /// Publishing the events through the outbox failed (the append was rolled back).
    #[error("event store outbox: {0}")]
    Outbox(#[from] OutboxError),
    /// The database failed.
    #[error("event store database error: {0}")]
    Database(#[from] sqlx::Error),
}

fn describe(version: Option<u64>) -> String {
    match version {
        None => "no stream".to_owned(),
        Some(n) => format!("version {n}"),
    }
}
