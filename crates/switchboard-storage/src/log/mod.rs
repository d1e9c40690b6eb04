//! The log: a directory of segments behind one handle, [`Log`].
//!
//! This file owns the handle, the state shared by every path (the append lock's `State`,
//! the segment list, the visible end) and opening. Each path lives in a file of its own,
//! because each has its own invariants and they are easier to check one at a time:
//!
//! - `append`: the write path (one `write_at` under the append lock, rolling segments);
//! - `group` and `commit`: group commit, i.e. when an append may return and when readers
//!   may see it: `group` is the synchronisation core (no I/O, model-checked), `commit` the
//!   background driver that runs the fsync rounds and handles their failures;
//! - `read`: reads by offset and by time, which never take the append lock;
//! - `retention`: deleting whole segments from the front.
//!
//! # Concurrency
//!
//! - One `parking_lot::Mutex` (the append lock) guards the write position. An append encodes
//!   its batch before taking it, then does exactly one `write_at` under it.
//! - Under [`FsyncPolicy::Always`] the append then waits for its *commit group*: every append
//!   written since the last fsync started. No thread belongs to the log: the first append that
//!   finds no fsync running starts one with `spawn_blocking`; that background job fsyncs what
//!   was written before it started, publishes it to readers, wakes the group, and goes round
//!   again while more was written meanwhile. So concurrent appenders share fsyncs.
//! - Readers never take the append lock: they read an atomic visible end and the segment list
//!   (a short `RwLock`), then read files, which are immutable below the visible end.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use switchboard_core::{SharedClock, Timestamp};
use tokio::sync::watch;

use crate::config::{FsyncPolicy, LogConfig};
use crate::error::StorageError;
use crate::index::IndexBuilder;
use crate::recovery;
use crate::segment::Segment;
use crate::storage::Storage;

use self::group::GroupCommit;

mod append;
mod commit;
mod group;
mod read;
mod retention;

/// Which guarantee held when [`Log::append`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The batch was fsynced (policy [`FsyncPolicy::Always`]).
    Fsynced,
    /// The batch was written to the file (page cache) but may not survive a power loss.
    Written,
}

/// What [`Log::append`] stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record; the others follow densely.
    pub base_offset: u64,
    /// Number of records.
    pub count: u32,
    /// Timestamp given to every record of the batch.
    pub timestamp: Timestamp,
    /// Which guarantee held when the append returned.
    pub durability: Durability,
    /// The policy in force.
    pub policy: FsyncPolicy,
    /// When the batch was in the file (before any fsync): with the time the append returned,
    /// it splits a publish's latency into its write and its wait for durability.
    pub written_at: std::time::Instant,
}

/// A record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its offset.
    pub offset: u64,
    /// When its batch was appended.
    pub timestamp: Timestamp,
    /// The bytes appended (a zero-copy slice of the read buffer).
    pub payload: Bytes,
}

/// What a retention pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Whole segments deleted.
    pub segments_deleted: usize,
    /// Their size in bytes.
    pub bytes_deleted: u64,
    /// The first retained offset afterwards.
    pub start_offset: u64,
}

/// A segmented, checksummed, append-only log of records with dense `u64` offsets.
///
/// Cheap to clone (all clones share the same log). See the [crate documentation](crate) for
/// a tour.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.dir)
            .field("start_offset", &self.start_offset())
            .field("end_offset", &self.end_offset())
            .field("fsync", &self.inner.config.fsync)
            .finish_non_exhaustive()
    }
}

struct Inner {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    config: LogConfig,
    clock: SharedClock,
    /// The append lock.
    state: Mutex<State>,
    /// All segments, oldest first; the last one is the active one.
    segments: RwLock<Vec<Arc<Segment>>>,
    /// Serialises retention passes.
    retention_lock: Mutex<()>,
    start_offset: AtomicU64,
    /// One past the last offset readers may see.
    visible_end: AtomicU64,
    end_tx: watch::Sender<u64>,
}

/// A position in the log: segment, byte length of it, next offset.
#[derive(Clone)]
struct Point {
    segment: Arc<Segment>,
    pos: u64,
    offset: u64,
}

struct State {
    active: Arc<Segment>,
    write_pos: u64,
    next_offset: u64,
    last_timestamp: u64,
    builder: IndexBuilder,
    /// Everything before this point is durable.
    durable: Point,
    /// Segments sealed since the last fsync round started; the next round fsyncs them.
    pending_sealed: Vec<Arc<Segment>>,
    /// Segment files were created or removed since the last fsync round started.
    dir_dirty: bool,
    /// Who drives fsync rounds and who waits for which (see `group`).
    commit: GroupCommit,
    /// Clock time at which the last round started (for `FsyncPolicy::Interval`).
    last_sync_ms: u64,
    poisoned: Option<String>,
}

impl State {
    fn check_poisoned(&self) -> Result<(), StorageError> {
        match &self.poisoned {
            Some(reason) => Err(StorageError::Poisoned { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    fn is_dirty(&self) -> bool {
        !Arc::ptr_eq(&self.durable.segment, &self.active)
            || self.durable.pos != self.write_pos
            || !self.pending_sealed.is_empty()
            || self.dir_dirty
    }
}

impl Log {
    /// Opens the log in `dir` (creating it if needed) and recovers it: a torn or corrupt tail
    /// is cut off, missing or damaged indexes are rebuilt (see the crate docs).
    ///
    /// # Errors
    /// I/O errors from the storage.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: impl Into<PathBuf>,
        config: LogConfig,
        clock: SharedClock,
    ) -> Result<Log, StorageError> {
        let dir = dir.into();
        let rec = recovery::recover(storage.as_ref(), &dir, &config)?;
        let mut segments = rec.sealed;
        segments.push(rec.active.clone());
        let start = segments[0].base_offset;
        let (end_tx, _) = watch::channel(rec.next_offset);
        let now = clock.now().0;
        let state = State {
            active: rec.active.clone(),
            write_pos: rec.write_pos,
            next_offset: rec.next_offset,
            last_timestamp: rec.last_timestamp,
            builder: rec.builder,
            durable: Point { segment: rec.active, pos: rec.write_pos, offset: rec.next_offset },
            pending_sealed: Vec::new(),
            dir_dirty: false,
            commit: GroupCommit::default(),
            last_sync_ms: now,
            poisoned: None,
        };
        Ok(Log {
            inner: Arc::new(Inner {
                storage,
                dir,
                config,
                clock,
                state: Mutex::new(state),
                segments: RwLock::new(segments),
                retention_lock: Mutex::new(()),
                start_offset: AtomicU64::new(start),
                visible_end: AtomicU64::new(rec.next_offset),
                end_tx,
            }),
        })
    }

    /// The first retained offset.
    pub fn start_offset(&self) -> u64 {
        self.inner.start_offset.load(Ordering::Acquire)
    }

    /// One past the last record readers can see.
    pub fn end_offset(&self) -> u64 {
        self.inner.visible_end.load(Ordering::Acquire)
    }

    /// Bytes of all segment files (indexes excluded).
    pub fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.inner.segments.read().len()
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }
}

impl Inner {
    fn size_bytes(&self) -> u64 {
        self.segments.read().iter().map(|s| s.size.load(Ordering::Acquire)).sum()
    }

    /// Makes bytes `..pos` of `seg` and offsets `..end` visible to readers.
    fn publish(&self, seg: &Segment, pos: u64, end: u64) {
        // Segment first, then the log end: a reader that sees the new end sees the bytes.
        seg.visible_len.fetch_max(pos, Ordering::AcqRel);
        self.visible_end.fetch_max(end, Ordering::AcqRel);
        self.end_tx.send_if_modified(|v| {
            if *v < end {
                *v = end;
                true
            } else {
                false
            }
        });
    }
}
