//! Aggregates: state rebuilt from its events, commands decided against that state, and the
//! [`Repository`] that loads (snapshot + tail), decides, and appends with the version it
//! loaded.
//!
//! An aggregate's events are a serde enum in serde's default (externally tagged) form: the
//! variant's name (or its `#[serde(rename)]`) is the stored event type, its content the
//! data.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    Direction, EventStore, EventStoreDatabase, EventStoreError, ExpectedVersion, Metadata, NewEvent,
    RecordedEvent, StreamName,
};

/// How many events a load reads at a time.
const PAGE: usize = 1000;

/// State rebuilt from events; commands decided against it. Its events are a serde enum
/// in serde's default (externally tagged) form: the variant's name, or its
/// `#[serde(rename)]`, is the stored event type.
///
/// ```
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use serde::{Deserialize, Serialize};
/// use switchboard::eventstore::{Aggregate, EventStore, Repository, SnapshotPolicy};
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Account { balance: i64, open: bool }
///
/// #[derive(Serialize, Deserialize)]
/// enum AccountEvent {
///     #[serde(rename = "account.opened")] Opened,
///     #[serde(rename = "account.deposited")] Deposited { amount: i64 },
/// }
///
/// enum Command { Open, Deposit(i64) }
///
/// #[derive(Debug, thiserror::Error)]
/// enum Refused { #[error("the account is not open")] NotOpen, #[error("already open")] AlreadyOpen }
///
/// impl Aggregate for Account {
///     const KIND: &'static str = "account";
///     type Event = AccountEvent;
///     type Command = Command;
///     type Error = Refused;
///     fn apply(&mut self, event: &AccountEvent) {
///         match event {
///             AccountEvent::Opened => self.open = true,
///             AccountEvent::Deposited { amount } => self.balance += amount,
///         }
///     }
///     fn handle(&self, command: &Command) -> Result<Vec<AccountEvent>, Refused> {
///         match command {
///             Command::Open if self.open => Err(Refused::AlreadyOpen),
///             Command::Open => Ok(vec![AccountEvent::Opened]),
///             Command::Deposit(_) if !self.open => Err(Refused::NotOpen),
///             Command::Deposit(amount) => Ok(vec![AccountEvent::Deposited { amount: *amount }]),
///         }
///     }
/// }
///
/// let store = EventStore::sqlite(sqlx::SqlitePool::connect("sqlite::memory:").await?).await?;
/// let accounts = Repository::<Account, _>::new(store).with_snapshots(SnapshotPolicy::Every(100)).retry_on_conflict(3);
/// accounts.execute("a-1", &Command::Open).await?;
/// let done = accounts.execute("a-1", &Command::Deposit(250)).await?;
/// assert_eq!((done.state.balance, done.version), (250, 2));
/// assert!(accounts.execute("a-2", &Command::Deposit(1)).await.is_err());
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run()).unwrap();
/// ```
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stream prefix: aggregate `id`'s events are in stream `{KIND}-{id}`.
    const KIND: &'static str;
    /// The version of the state's serialized form; bump it when the form changes, and older
    /// snapshots are ignored (the state is rebuilt from events).
    const SNAPSHOT_VERSION: u32 = 1;
    /// What happened (an externally tagged serde enum).
    type Event: Serialize + DeserializeOwned + Send + Sync;
    /// What is asked.
    type Command: Send + Sync;
    /// Why a command is refused.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Moves the state forward by one event. Never fails: the event already happened.
    fn apply(&mut self, event: &Self::Event);

    /// Decides what `command` makes happen, or refuses it. Called again with fresh state
    /// when an append loses a race and the repository retries.
    ///
    /// # Errors
    /// The command is refused.
    fn handle(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
}

/// When the repository saves a snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SnapshotPolicy {
    /// Never: loads replay the whole stream.
    #[default]
    Never,
    /// Whenever an append crosses a multiple of `n` versions.
    Every(u64),
}

/// An aggregate as loaded.
#[derive(Debug)]
pub struct Loaded<A> {
    /// Its state.
    pub state: A,
    /// The version it was loaded at (0: no events yet).
    pub version: u64,
    /// Whether it came from a snapshot (plus the events after it).
    pub from_snapshot: bool,
}

/// What a command did.
#[derive(Debug)]
pub struct Executed<A: Aggregate> {
    /// The state after it.
    pub state: A,
    /// The stream's version after it.
    pub version: u64,
    /// The events it appended (none when the command changed nothing).
    pub events: Vec<A::Event>,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError<E: std::error::Error + 'static> {
    /// The aggregate refused it.
    #[error("refused: {0}")]
    Refused(#[source] E),
    /// The store failed, or the append kept losing races after the retries allowed
    /// ([`EventStoreError::WrongExpectedVersion`]).
    #[error(transparent)]
    Store(#[from] EventStoreError),
}

/// Loads and saves one kind of aggregate.
pub struct Repository<A: Aggregate, DB: EventStoreDatabase> {
    store: EventStore<DB>,
    snapshots: SnapshotPolicy,
    retries: u32,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate, DB: EventStoreDatabase> Clone for Repository<A, DB> {
    fn clone(&self) -> Self {
        Repository {
            store: self.store.clone(),
            snapshots: self.snapshots,
            retries: self.retries,
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate, DB: EventStoreDatabase> Repository<A, DB> {
    /// A repository on `store`, without snapshots or retries.
    pub fn new(store: EventStore<DB>) -> Self {
        Repository { store, snapshots: SnapshotPolicy::Never, retries: 0, _aggregate: PhantomData }
    }

    /// Takes snapshots by `policy`.
    #[must_use]
    pub fn with_snapshots(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshots = policy;
        self
    }

    /// On a lost race, reloads and decides again, up to `retries` times.
    #[must_use]
    pub fn retry_on_conflict(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The stream of aggregate `id`.
    ///
    /// # Errors
    /// The name would not be a valid stream name.
    pub fn stream_of(&self, id: &str) -> Result<StreamName, EventStoreError> {
        StreamName::new(format!("{}-{id}", A::KIND))
    }

    /// The store underneath.
    pub fn store(&self) -> &EventStore<DB> {
        &self.store
    }

    /// Aggregate `id` at its latest version: from its snapshot (where the policy keeps one
    /// and it has the current form) and the events after it.
    ///
    /// # Errors
    /// [`EventStoreError::StreamDeleted`] for a deleted aggregate; a stored event that does
    /// not decode.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, EventStoreError> {
        let stream = self.stream_of(id)?;
        self.load_stream(&stream).await
    }

    async fn load_stream(&self, stream: &StreamName) -> Result<Loaded<A>, EventStoreError> {
        let mut loaded = Loaded { state: A::default(), version: 0, from_snapshot: false };
        if self.snapshots != SnapshotPolicy::Never
            && let Some(snapshot) = self.store.load_snapshot(stream).await?
            && u32::try_from(snapshot.schema_version).ok() == Some(A::SNAPSHOT_VERSION)
            && let Ok(state) = serde_json::from_slice::<A>(&snapshot.data)
        {
            // A snapshot that no longer decodes is only a cache miss: the events rebuild it.
            loaded =
                Loaded { state, version: u64::try_from(snapshot.version).unwrap_or(0), from_snapshot: true };
        }
        loop {
            let page = self.store.read_stream(stream, Direction::Forward, loaded.version + 1, PAGE).await?;
            let full = page.len() == PAGE;
            for event in page {
                if event.is_tombstone() {
                    return Err(EventStoreError::StreamDeleted {
                        stream: stream.to_string(),
                        version: event.version,
                    });
                }
                loaded.state.apply(&decode_event::<A::Event>(&event)?);
                loaded.version = event.version;
            }
            if !full {
                return Ok(loaded);
            }
        }
    }

    /// Loads aggregate `id`, has it decide `command`, and appends the events at the version
    /// it loaded.
    ///
    /// # Errors
    /// [`RepositoryError::Refused`] with the aggregate's reason; [`RepositoryError::Store`]
    /// when the store fails or the append lost more races than the retries allow.
    pub async fn execute(
        &self,
        id: &str,
        command: &A::Command,
    ) -> Result<Executed<A>, RepositoryError<A::Error>> {
        self.execute_with(id, command, Metadata::default()).await
    }

    /// [`Repository::execute`] with metadata (correlation, causation, trace) on every
    /// event it appends.
    ///
    /// # Errors
    /// As [`Repository::execute`].
    pub async fn execute_with(
        &self,
        id: &str,
        command: &A::Command,
        metadata: Metadata,
    ) -> Result<Executed<A>, RepositoryError<A::Error>> {
        let stream = self.stream_of(id)?;
        let mut attempt = 0;
        loop {
            let Loaded { mut state, version, .. } = self.load_stream(&stream).await?;
            let events = state.handle(command).map_err(RepositoryError::Refused)?;
            if events.is_empty() {
                return Ok(Executed { state, version, events });
            }
            let new: Vec<NewEvent> = events
                .iter()
                .map(|e| encode_event(e).map(|event| event.with_metadata(metadata.clone())))
                .collect::<Result<_, _>>()?;
            let expected =
                if version == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(version) };
            match self.store.append(&stream, expected, new).await {
                Ok(appended) => {
                    for event in &events {
                        state.apply(event);
                    }
                    self.maybe_snapshot(&stream, &state, version, appended.version).await;
                    return Ok(Executed { state, version: appended.version, events });
                }
                Err(EventStoreError::WrongExpectedVersion { .. }) if attempt < self.retries => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Saves a snapshot of aggregate `id` at its current version now, whatever the policy
    /// (a migration, or an aggregate known to be hot); returns that version.
    ///
    /// # Errors
    /// As [`Repository::load`], or the snapshot cannot be saved.
    pub async fn save_snapshot(&self, id: &str) -> Result<u64, EventStoreError> {
        let stream = self.stream_of(id)?;
        let loaded = self.load_stream(&stream).await?;
        let data = serde_json::to_vec(&loaded.state)
            .map_err(|e| EventStoreError::InvalidEvent(format!("the state does not serialize: {e}")))?;
        self.store.save_snapshot(&stream, loaded.version, A::SNAPSHOT_VERSION, data).await?;
        Ok(loaded.version)
    }

    async fn maybe_snapshot(&self, stream: &StreamName, state: &A, before: u64, after: u64) {
        let SnapshotPolicy::Every(n) = self.snapshots else { return };
        let n = n.max(1);
        if after / n == before / n {
            return;
        }
        // The snapshot is a cache: failing to save one costs the next load time, not data.
        let saved = match serde_json::to_vec(state) {
            Ok(data) => self.store.save_snapshot(stream, after, A::SNAPSHOT_VERSION, data).await,
            Err(e) => Err(EventStoreError::InvalidEvent(format!("the state does not serialize: {e}"))),
        };
        if let Err(e) = saved {
            tracing::warn!(%stream, version = after, error = %e, "Could not save a snapshot.");
        }
    }
}

/// An event enum value as a stored event: the variant's name is the type, its content the
/// data.
///
/// # Errors
/// [`EventStoreError::InvalidEvent`] when `event` is not an externally tagged enum value.
pub fn encode_event<E: Serialize>(event: &E) -> Result<NewEvent, EventStoreError> {
    let value = serde_json::to_value(event).map_err(|e| EventStoreError::InvalidEvent(e.to_string()))?;
    let (ty, data) = match value {
        serde_json::Value::String(ty) => (ty, serde_json::Value::Null),
        serde_json::Value::Object(map) if map.len() == 1 => map.into_iter().next().unwrap_or_default(),
        other => {
            return Err(EventStoreError::InvalidEvent(format!(
                "an aggregate's events must be an externally tagged enum (serde's default), not {other}"
            )));
        }
    };
    let data = serde_json::to_vec(&data).map_err(|e| EventStoreError::InvalidEvent(e.to_string()))?;
    Ok(NewEvent::new(ty, data))
}

/// A stored event as a value of the event enum.
///
/// # Errors
/// [`EventStoreError::Decode`] when the type is not a variant or the data does not match.
pub fn decode_event<E: DeserializeOwned>(event: &RecordedEvent) -> Result<E, EventStoreError> {
    let data: serde_json::Value =
        serde_json::from_slice(&event.data).map_err(|e| event.decode_error(e.to_string()))?;
    let tagged = if data.is_null() {
        serde_json::Value::String(event.ty.clone())
    } else {
        serde_json::Value::Object(std::iter::once((event.ty.clone(), data)).collect())
    };
    serde_json::from_value(tagged).map_err(|e| event.decode_error(e.to_string()))
}
