//! Events as the store takes them ([`NewEvent`]) and gives them back ([`RecordedEvent`]),
//! stream names, expected versions and feed positions.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use switchboard_core::{Timestamp, new_message_id};

use super::EventStoreError;
use crate::layers::EXT_CORRELATION_ID;

/// The longest stream name, in bytes.
pub const MAX_STREAM_NAME_LEN: usize = 256;

/// The largest event (data, metadata, type and id together), as the broker's default
/// message limit: an event is also published as one message.
pub const MAX_EVENT_SIZE: usize = 1024 * 1024;

/// The most events one append takes: an append is one transaction, and a larger one holds
/// its stream (and, on SQLite, the database) for too long.
pub const MAX_EVENTS_PER_APPEND: usize = 1000;

/// The type of the tombstone event [`EventStore::delete_stream`](super::EventStore::delete_stream)
/// appends. Names starting with `$` are the store's own.
pub const TOMBSTONE: &str = "$stream-deleted";

/// A stream's name: one aggregate's events (`order-o-1`). 1 to 256 bytes of printable ASCII
/// without spaces; a leading `$` is reserved for the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(String);

impl StreamName {
    /// Checks `name`.
    ///
    /// # Errors
    /// [`EventStoreError::InvalidStreamName`] saying which rule it breaks.
    pub fn new(name: impl Into<String>) -> Result<StreamName, EventStoreError> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > MAX_STREAM_NAME_LEN {
            Some("it is longer than 256 bytes")
        } else if !name.bytes().all(|b| b.is_ascii_graphic()) {
            Some("it holds a character other than printable ASCII (spaces and control characters included)")
        } else if name.starts_with('$') {
            Some("names starting with `$` are reserved")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(EventStoreError::InvalidStreamName { name, reason }),
            None => Ok(StreamName(name)),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name read back from the database, which only ever holds checked names.
    pub(crate) fn trusted(name: String) -> StreamName {
        StreamName(name)
    }
}

impl std::fmt::Display for StreamName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for StreamName {
    type Error = EventStoreError;
    fn try_from(name: &str) -> Result<StreamName, EventStoreError> {
        StreamName::new(name)
    }
}

/// What an append expects of its stream; anything else is
/// [`EventStoreError::WrongExpectedVersion`] and nothing is written.
///
/// A stream's version is the number of its last event: its first event is version 1, so a
/// stream at version `n` holds events 1 to `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Whatever the stream holds, even nothing (no concurrency check).
    Any,
    /// The stream has no events yet.
    NoStream,
    /// The stream has at least one event.
    StreamExists,
    /// The stream's last event is version `n` (`Exact(0)` is [`NoStream`](Self::NoStream)).
    Exact(u64),
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(n) => write!(f, "version {n}"),
        }
    }
}

/// A place in the global feed: the feed's events are numbered 1, 2, 3… in commit order, with
/// no holes; `Position::START` is before the first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub u64);

impl Position {
    /// Before the first event.
    pub const START: Position = Position(0);
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where an event came from: the conversation it belongs to, what caused it, its trace.
/// Stored with the event, and published as the CloudEvents extensions `correlationid`,
/// `causationid` and `traceparent`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Metadata {
    /// The business flow it belongs to.
    #[serde(rename = "correlationid", default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The message or event that caused it.
    #[serde(rename = "causationid", default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The W3C trace context it was written in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Anything else, published as extensions where the name is a valid one.
    #[serde(flatten)]
    pub extra: BTreeMap<String, String>,
}

impl Metadata {
    /// Metadata for an event caused by `message`: its correlation id (or, lacking one, its
    /// id), its id as the cause, and its trace context.
    pub fn caused_by(message: &switchboard_core::Message) -> Metadata {
        let ext = |name: &str| message.extensions.get(name).cloned();
        Metadata {
            correlation_id: Some(ext(EXT_CORRELATION_ID).unwrap_or_else(|| message.id.clone())),
            causation_id: Some(message.id.clone()),
            traceparent: ext(switchboard_core::EXT_TRACEPARENT),
            extra: BTreeMap::new(),
        }
    }

    /// Metadata for an event caused by an earlier event.
    pub fn caused_by_event(event: &RecordedEvent) -> Metadata {
        Metadata {
            correlation_id: Some(event.metadata.correlation_id.clone().unwrap_or_else(|| event.id.clone())),
            causation_id: Some(event.id.clone()),
            traceparent: event.metadata.traceparent.clone(),
            extra: BTreeMap::new(),
        }
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Metadata {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    #[must_use]
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Metadata {
        self.causation_id = Some(id.into());
        self
    }

    /// Sets the trace context.
    #[must_use]
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Metadata {
        self.traceparent = Some(traceparent.into());
        self
    }

    pub(crate) fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    pub(crate) fn decode(text: &str) -> Metadata {
        // Metadata is only ever written by `encode`; an operator's hand edit that broke it
        // loses the metadata, not the event.
        serde_json::from_str(text).unwrap_or_default()
    }
}

/// An event on its way in.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// Unique id; published as the message id, so a re-publish is recognised as one.
    pub id: String,
    /// What happened (`order.placed`).
    pub ty: String,
    /// The version of the type's schema its data follows; 0 means the store's current one
    /// for the type (1 for a type the store's [`Schema`](super::Schema) does not declare).
    pub schema_version: u32,
    /// The payload: JSON, which is what upcasters and projections read.
    pub data: Bytes,
    /// Correlation, causation, trace.
    pub metadata: Metadata,
}

impl NewEvent {
    /// An event of type `ty` with `data` (JSON) and a fresh id.
    pub fn new(ty: impl Into<String>, data: impl Into<Bytes>) -> NewEvent {
        NewEvent {
            id: new_message_id(),
            ty: ty.into(),
            schema_version: 0,
            data: data.into(),
            metadata: Metadata::default(),
        }
    }

    /// An event of type `ty` whose data is `value` as JSON.
    ///
    /// # Errors
    /// `value` cannot be serialized.
    pub fn json<T: serde::Serialize>(
        ty: impl Into<String>,
        value: &T,
    ) -> Result<NewEvent, serde_json::Error> {
        Ok(NewEvent::new(ty, serde_json::to_vec(value)?))
    }

    /// Sets the id (to make a retried append recognisable downstream).
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> NewEvent {
        self.id = id.into();
        self
    }

    /// Sets the schema version its data follows.
    #[must_use]
    pub fn with_schema_version(mut self, version: u32) -> NewEvent {
        self.schema_version = version;
        self
    }

    /// Sets the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> NewEvent {
        self.metadata = metadata;
        self
    }

    /// Its size as the store counts it against [`MAX_EVENT_SIZE`].
    pub(crate) fn size(&self, metadata: &str) -> usize {
        self.id.len() + self.ty.len() + self.data.len() + metadata.len()
    }
}

/// An event as stored, after the store's upcasters ran.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    /// Its stream.
    pub stream: StreamName,
    /// Its version in the stream (1 for the first).
    pub version: u64,
    /// Its place in the global feed; `None` on PostgreSQL for an event read from its stream
    /// before the feed numbered it (which happens within milliseconds of its commit).
    pub position: Option<Position>,
    /// Its id.
    pub id: String,
    /// Its type.
    pub ty: String,
    /// The schema version its `data` follows (the current one, after upcasting).
    pub schema_version: u32,
    /// Its payload.
    pub data: Bytes,
    /// Correlation, causation, trace.
    pub metadata: Metadata,
    /// When it was appended (the writer's clock).
    pub recorded_at: Timestamp,
}

impl RecordedEvent {
    /// The data, deserialized from JSON.
    ///
    /// # Errors
    /// [`EventStoreError::Decode`] when it does not match `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, EventStoreError> {
        serde_json::from_slice(&self.data).map_err(|e| self.decode_error(e.to_string()))
    }

    /// Whether this is the tombstone of a deleted stream.
    pub fn is_tombstone(&self) -> bool {
        self.ty == TOMBSTONE
    }

    pub(crate) fn decode_error(&self, error: String) -> EventStoreError {
        EventStoreError::Decode {
            stream: self.stream.to_string(),
            version: self.version,
            ty: self.ty.clone(),
            error,
        }
    }
}

/// What an append wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The version of its first event.
    pub first_version: u64,
    /// The stream's version now (its last event's): the next append's `Exact`.
    pub version: u64,
    /// The feed position of its last event, where it is known at commit (SQLite); on
    /// PostgreSQL the feed numbers events just after they commit.
    pub position: Option<Position>,
}

/// Which way a stream is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first, from a version up.
    Forward,
    /// Newest first, from a version down.
    Backward,
}

/// A stream's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamState {
    /// Its last event's version.
    pub version: u64,
    /// Whether it was deleted (its last event is then the tombstone).
    pub deleted: bool,
}
