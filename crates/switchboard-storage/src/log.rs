//! The log: appends with group commit, reads, time lookups and retention.
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
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use switchboard_core::{SharedClock, Timestamp};
use tokio::sync::{Notify, watch};
use tracing::warn;

use crate::config::{FsyncPolicy, LogConfig, Retention};
use crate::error::StorageError;
use crate::format::{self, EncodedBatch};
use crate::index::{Entries, IndexBuilder};
use crate::recovery;
use crate::segment::{BatchCursor, Segment, Step};
use crate::storage::Storage;

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
    /// A background fsync job is running.
    syncing: bool,
    /// Someone wants another fsync round.
    sync_requested: bool,
    /// Waiters for what was written since the last round started.
    group: Arc<Group>,
    /// The group of the round in progress.
    inflight: Option<Arc<Group>>,
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

    /// Claims the right to start the background fsync job, if one is wanted and none runs.
    fn claim_driver(&mut self) -> bool {
        if self.sync_requested && !self.syncing {
            self.syncing = true;
            true
        } else {
            false
        }
    }
}

/// The appends (and `sync` calls) waiting for one fsync round.
#[derive(Debug, Default)]
struct Group {
    /// `None` inside: success.
    outcome: OnceLock<Option<StorageError>>,
    notify: Notify,
}

impl Group {
    fn finish(&self, outcome: Option<StorageError>) {
        let _ = self.outcome.set(outcome);
        self.notify.notify_waiters();
    }

    fn outcome(&self) -> Option<Result<(), StorageError>> {
        self.outcome.get().map(|o| match o {
            None => Ok(()),
            Some(e) => Err(e.duplicate()),
        })
    }

    async fn wait(&self) -> Result<(), StorageError> {
        loop {
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            if let Some(result) = self.outcome() {
                return result;
            }
            notified.await;
        }
    }
}

/// One fsync round: what it covers.
struct Round {
    sealed: Vec<Arc<Segment>>,
    target: Point,
    sync_active: bool,
    sync_dir: bool,
    group: Arc<Group>,
}

/// The right to run the background fsync job. If the job never starts (the runtime is
/// shutting down and dropped it), dropping the ticket runs it right there; if it panicked,
/// dropping the ticket fails its waiters instead of leaving them hanging.
struct DriverTicket {
    inner: Option<Arc<Inner>>,
    started: bool,
}

impl DriverTicket {
    fn run(mut self) {
        self.started = true;
        if let Some(inner) = self.inner.clone() {
            inner.drive();
        }
        self.inner = None;
    }
}

impl Drop for DriverTicket {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            if self.started {
                inner.abandon_driver();
            } else {
                inner.drive();
            }
        }
    }
}

fn launch_driver(inner: &Arc<Inner>) {
    let ticket = DriverTicket { inner: Some(inner.clone()), started: false };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn_blocking(move || ticket.run())),
        // Called outside a runtime (e.g. `roll` from plain code): do it here.
        Err(_) => ticket.run(),
    }
}

/// Chunk size for reads: at least this much per read call.
const MIN_READ_CHUNK: usize = 64 * 1024;
/// Chunk size for reads: at most this much per read call (bigger batches are read whole).
const MAX_READ_CHUNK: usize = 16 * 1024 * 1024;

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
            syncing: false,
            sync_requested: false,
            group: Arc::default(),
            inflight: None,
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

    /// Appends `records` as one atomic batch with consecutive offsets.
    ///
    /// Under [`FsyncPolicy::Always`] it returns once an fsync covering the batch succeeded
    /// (shared with concurrent appends), and only then do readers see it. Otherwise it returns
    /// after the write and readers see the batch at once.
    ///
    /// If the future is dropped after the write, the batch stays in the log and becomes
    /// visible with the next fsync round.
    ///
    /// # Errors
    /// [`StorageError::EmptyBatch`], [`StorageError::BatchTooLarge`]; [`StorageError::NoSpace`]
    /// or [`StorageError::Io`] if the write or the fsync failed: then nothing of the batch
    /// is kept and no offset is consumed. [`StorageError::Poisoned`] if an earlier failure
    /// could not be undone.
    pub async fn append(&self, records: &[Bytes]) -> Result<Appended, StorageError> {
        let (mut batch, count) = self.encode_checked(records)?;
        let (appended, group) = self.inner.write_batch(&mut batch, count)?;
        if let Some(group) = group {
            group.wait().await?;
        }
        Ok(appended)
    }

    /// Appends one atomic batch like [`append`](Log::append), but returns as soon as it is
    /// written, without waiting for the fsync that the `always` policy starts for it (the
    /// result says [`Durability::Written`]). The batch survives a process crash at once and a
    /// power cut once the next group commit completes. For data whose last moments may be
    /// lost to a power cut (counters), never for acknowledgements.
    ///
    /// # Errors
    /// As for [`append`](Log::append).
    pub fn append_unsynced(&self, records: &[Bytes]) -> Result<Appended, StorageError> {
        let (mut batch, count) = self.encode_checked(records)?;
        let (mut appended, _group) = self.inner.write_batch(&mut batch, count)?;
        appended.durability = Durability::Written;
        Ok(appended)
    }

    /// Checks a batch against the limits and encodes it.
    fn encode_checked(&self, records: &[Bytes]) -> Result<(EncodedBatch, u32), StorageError> {
        if records.is_empty() {
            return Err(StorageError::EmptyBatch);
        }
        let len = format::encoded_len(records);
        let max = self.inner.config.max_batch_bytes;
        if len > max as usize {
            return Err(StorageError::BatchTooLarge { size: len, max });
        }
        // Fits: every record takes at least 4 bytes of a u32-sized batch.
        Ok((EncodedBatch::new(records, len), records.len() as u32))
    }

    /// Up to `max_records` records from offset `from` on, in order, stopping once the
    /// payloads reach `max_bytes` or before a record that would take them over it (but always
    /// returning at least one record when there is one).
    /// Returns nothing if `from` is at or past [`end_offset`](Log::end_offset).
    ///
    /// Every batch read is checksummed.
    ///
    /// # Errors
    /// [`StorageError::OffsetOutOfRange`] if `from` is below
    /// [`start_offset`](Log::start_offset); [`StorageError::Corrupt`] if the data does not
    /// check out (bad bytes are never returned); I/O errors.
    pub fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<Record>, StorageError> {
        self.inner.read(from, max_records, max_bytes)
    }

    /// The first retained offset.
    pub fn start_offset(&self) -> u64 {
        self.inner.start_offset.load(Ordering::Acquire)
    }

    /// One past the last record readers can see.
    pub fn end_offset(&self) -> u64 {
        self.inner.visible_end.load(Ordering::Acquire)
    }

    /// The first offset whose timestamp is `>= ts`, or [`end_offset`](Log::end_offset) if
    /// there is none.
    ///
    /// # Errors
    /// [`StorageError::Corrupt`] or I/O errors from reading the segment concerned.
    pub fn offset_for_time(&self, ts: Timestamp) -> Result<u64, StorageError> {
        self.inner.offset_for_time(ts)
    }

    /// A receiver whose value is [`end_offset`](Log::end_offset), updated whenever it grows.
    pub fn watch_end(&self) -> watch::Receiver<u64> {
        self.inner.end_tx.subscribe()
    }

    /// Makes everything written so far durable (fsyncs the segments and the directory).
    ///
    /// # Errors
    /// The fsync error. Under [`FsyncPolicy::Always`] the unsynced data is then discarded,
    /// as for a failed append.
    pub async fn sync(&self) -> Result<(), StorageError> {
        let (group, launch) = {
            let mut st = self.inner.state.lock();
            st.check_poisoned()?;
            if !st.is_dirty() && !st.syncing {
                return Ok(());
            }
            st.sync_requested = true;
            (st.group.clone(), st.claim_driver())
        };
        if launch {
            launch_driver(&self.inner);
        }
        group.wait().await
    }

    /// For [`FsyncPolicy::Interval`]: if something is not yet durable and the last fsync
    /// started at least the interval ago, starts one in the background
    /// (`tokio::task::spawn_blocking`, or inline outside a runtime). A failure is logged and
    /// retried at the next due time. No-op for the other policies.
    pub fn sync_if_due(&self) {
        let FsyncPolicy::Interval { ms } = self.inner.config.fsync else { return };
        let launch = {
            let mut st = self.inner.state.lock();
            let now = self.inner.clock.now().0;
            if st.poisoned.is_some() || !st.is_dirty() || now.saturating_sub(st.last_sync_ms) < ms {
                return;
            }
            st.sync_requested = true;
            st.claim_driver()
        };
        if launch {
            launch_driver(&self.inner);
        }
    }

    /// Starts a new segment now (no-op if the active one is empty).
    ///
    /// # Errors
    /// I/O errors creating the new segment file; [`StorageError::Poisoned`].
    pub fn roll(&self) -> Result<(), StorageError> {
        let launch = {
            let mut st = self.inner.state.lock();
            st.check_poisoned()?;
            self.inner.roll_locked(&mut st)?;
            st.claim_driver()
        };
        if launch {
            launch_driver(&self.inner);
        }
        Ok(())
    }

    /// Deletes whole sealed segments whose records are all below `offset`, oldest first.
    ///
    /// # Errors
    /// I/O errors removing files (segments deleted before the error stay deleted).
    pub fn delete_segments_before(&self, offset: u64) -> Result<RetentionReport, StorageError> {
        self.inner.delete_prefix(|seg, _| seg.end_offset.load(Ordering::Acquire) <= offset)
    }

    /// Deletes the oldest sealed segments that `retention` no longer wants: by age (the
    /// segment's newest record is older than now − `max_age_ms`) or by size (while the log is
    /// bigger than `max_bytes`). Never deletes the active segment, nor a segment holding an
    /// offset `>= keep_from` (e.g. one a consumer has not read yet).
    ///
    /// # Errors
    /// I/O errors removing files (segments deleted before the error stay deleted).
    pub fn apply_retention(
        &self,
        retention: &Retention,
        keep_from: Option<u64>,
    ) -> Result<RetentionReport, StorageError> {
        let now = self.inner.clock.now().0;
        let keep_from = keep_from.unwrap_or(u64::MAX);
        let age_cutoff = retention.max_age_ms.map(|age| now.saturating_sub(age));
        self.inner.delete_prefix(|seg, remaining| {
            if seg.end_offset.load(Ordering::Acquire) > keep_from {
                return false;
            }
            let too_old = age_cutoff.is_some_and(|cutoff| seg.max_timestamp.load(Ordering::Acquire) < cutoff);
            let too_big = retention.max_bytes.is_some_and(|max| remaining > max);
            too_old || too_big
        })
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

    /// The append path: one write under the append lock.
    fn write_batch(
        self: &Arc<Self>,
        batch: &mut EncodedBatch,
        count: u32,
    ) -> Result<(Appended, Option<Arc<Group>>), StorageError> {
        let len = batch.len() as u64;
        let mut guard = self.state.lock();
        guard.check_poisoned()?;
        let now = self.clock.now().0;
        if guard.write_pos > 0 {
            let too_big = guard.write_pos + len > self.config.segment_max_bytes;
            let first = guard.active.first_timestamp.load(Ordering::Relaxed);
            let too_old = now.saturating_sub(first) > self.config.segment_max_age_ms;
            if too_big || too_old {
                self.roll_locked(&mut guard)?;
            }
        }
        let st = &mut *guard;
        let timestamp = now.max(st.last_timestamp);
        let base = st.next_offset;
        let Some(end) = base.checked_add(u64::from(count)) else {
            return Err(StorageError::OffsetsExhausted { next: base, count });
        };
        let pos = st.write_pos;
        let seg = &st.active;
        if let Err(e) = seg.file.write_at(batch.seal(base, timestamp), pos) {
            let error = StorageError::io("write", &seg.log_path, e);
            // Take back whatever part of the batch reached the file.
            if let Err(undo) = seg.file.set_len(pos) {
                let reason = format!(
                    "could not cut {} back to {pos} bytes after a failed write: {undo}",
                    seg.log_path.display()
                );
                warn!(%reason, %error, "Poisoning the log.");
                st.poisoned = Some(reason.clone());
                return Err(StorageError::Poisoned { reason });
            }
            return Err(error);
        }
        let new_pos = pos + len;
        if st.builder.observe(len) {
            seg.with_entries_mut(|e| e.push(base, pos, timestamp));
        }
        if pos == 0 {
            seg.first_timestamp.store(timestamp, Ordering::Relaxed);
        }
        seg.size.store(new_pos, Ordering::Release);
        seg.end_offset.store(end, Ordering::Release);
        seg.max_timestamp.store(timestamp, Ordering::Release);
        st.write_pos = new_pos;
        st.next_offset = end;
        st.last_timestamp = timestamp;
        let policy = self.config.fsync;
        let mut appended = Appended {
            base_offset: base,
            count,
            timestamp: Timestamp(timestamp),
            durability: Durability::Written,
            policy,
        };
        let group = if policy == FsyncPolicy::Always {
            appended.durability = Durability::Fsynced;
            st.sync_requested = true;
            Some(st.group.clone())
        } else {
            None
        };
        // Publish outside the lock (for `Interval` and `Never`): the bytes are in the file
        // already, and `publish` only ever moves the visible end forward.
        let published = group.is_none().then(|| seg.clone());
        let launch = st.claim_driver();
        drop(guard);
        if let Some(seg) = published {
            self.publish(&seg, new_pos, end);
        }
        if launch {
            launch_driver(self);
        }
        Ok((appended, group))
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

    /// Seals the active segment and starts a new one named by the next offset.
    fn roll_locked(&self, st: &mut State) -> Result<(), StorageError> {
        if st.write_pos == 0 {
            return Ok(());
        }
        let interval = self.config.index_interval_bytes;
        let new = Segment::open(self.storage.as_ref(), &self.dir, st.next_offset, true, interval)?;
        let stale = new.file.len().map_err(|e| StorageError::io("stat", &new.log_path, e))?;
        if stale != 0 {
            warn!(segment = %new.log_path.display(), bytes = stale, "Emptying a stale file in the way of a new segment.");
            new.file.set_len(0).map_err(|e| StorageError::io("truncate", &new.log_path, e))?;
        }
        new.set_entries(Entries::default());
        let new = Arc::new(new);
        let old = std::mem::replace(&mut st.active, new.clone());
        old.write_index_files(self.storage.as_ref());
        self.segments.write().push(new.clone());
        let old_end = std::mem::replace(&mut st.write_pos, 0);
        if self.config.fsync != FsyncPolicy::Always {
            // Its last append may not have published yet; readers must be able to read it
            // whole once the new segment's records become visible.
            old.visible_len.fetch_max(old_end, Ordering::AcqRel);
        }
        st.builder = IndexBuilder::new(interval);
        if Arc::ptr_eq(&st.durable.segment, &old) && st.durable.pos == old_end {
            // Already durable: only the new directory entry needs an fsync.
            st.durable = Point { segment: new, pos: 0, offset: st.next_offset };
        } else {
            // Seal durably: the next round fsyncs the old segment too.
            st.pending_sealed.push(old);
        }
        st.dir_dirty = true;
        st.sync_requested = true;
        Ok(())
    }

    /// The background fsync job: rounds until nobody wants one.
    fn drive(&self) {
        loop {
            let round = {
                let mut st = self.state.lock();
                if let Some(reason) = st.poisoned.clone() {
                    st.syncing = false;
                    st.sync_requested = false;
                    st.group.finish(Some(StorageError::Poisoned { reason }));
                    st.group = Arc::default();
                    return;
                }
                if !st.sync_requested {
                    st.syncing = false;
                    return;
                }
                st.sync_requested = false;
                st.last_sync_ms = self.clock.now().0;
                let group = std::mem::take(&mut st.group);
                st.inflight = Some(group.clone());
                let unchanged =
                    Arc::ptr_eq(&st.durable.segment, &st.active) && st.durable.pos == st.write_pos;
                Round {
                    sealed: std::mem::take(&mut st.pending_sealed),
                    target: Point { segment: st.active.clone(), pos: st.write_pos, offset: st.next_offset },
                    sync_active: !unchanged && st.write_pos > 0,
                    sync_dir: std::mem::take(&mut st.dir_dirty),
                    group,
                }
            };
            let result = self.sync_round(&round);
            let mut st = self.state.lock();
            st.inflight = None;
            match result {
                Ok(()) => {
                    st.durable = round.target.clone();
                    drop(st);
                    if self.config.fsync == FsyncPolicy::Always {
                        for s in &round.sealed {
                            s.visible_len.fetch_max(s.size.load(Ordering::Acquire), Ordering::AcqRel);
                        }
                        self.publish(&round.target.segment, round.target.pos, round.target.offset);
                    }
                    round.group.finish(None);
                }
                Err(error) => self.round_failed(&mut st, round, error),
            }
        }
    }

    fn sync_round(&self, round: &Round) -> Result<(), StorageError> {
        for s in &round.sealed {
            s.file.sync_data().map_err(|e| StorageError::io("fsync", &s.log_path, e))?;
        }
        if round.sync_active {
            let seg = &round.target.segment;
            seg.file.sync_data().map_err(|e| StorageError::io("fsync", &seg.log_path, e))?;
        }
        if round.sync_dir {
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| StorageError::io("fsync directory", &self.dir, e))?;
        }
        Ok(())
    }

    fn round_failed(&self, st: &mut State, round: Round, error: StorageError) {
        if self.config.fsync == FsyncPolicy::Always {
            warn!(dir = %self.dir.display(), %error, "fsync failed; discarding what was written since the last successful fsync.");
            // Everything after the durable point goes, including appends written while the
            // round ran: they are all failed, and their offsets are reused.
            let current = std::mem::take(&mut st.group);
            let outcome = match self.discard_locked(st) {
                Ok(()) => error,
                Err(poisoned) => poisoned,
            };
            st.sync_requested = false;
            round.group.finish(Some(outcome.duplicate()));
            current.finish(Some(outcome));
        } else {
            warn!(dir = %self.dir.display(), %error, "Background fsync failed; it will be retried.");
            let mut sealed = round.sealed;
            sealed.append(&mut st.pending_sealed);
            st.pending_sealed = sealed;
            st.dir_dirty |= round.sync_dir;
            round.group.finish(Some(error));
        }
    }

    /// Cuts the log back to the durable point (after a failed fsync under `Always`).
    fn discard_locked(&self, st: &mut State) -> Result<(), StorageError> {
        let d = st.durable.clone();
        let doomed = {
            let mut segs = self.segments.write();
            let keep = segs.iter().position(|s| s.base_offset > d.segment.base_offset).unwrap_or(segs.len());
            segs.split_off(keep)
        };
        let mut problems = Vec::new();
        for s in &doomed {
            if let Err(e) = s.remove_files(self.storage.as_ref()) {
                problems.push(e.to_string());
            }
        }
        if let Err(e) = d.segment.file.set_len(d.pos) {
            problems.push(format!(
                "could not cut {} back to {} bytes: {e}",
                d.segment.log_path.display(),
                d.pos
            ));
        }
        if !Arc::ptr_eq(&d.segment, &st.active)
            && let Err(error) = d.segment.remove_index_files(self.storage.as_ref())
        {
            // Harmless: a stale index no longer matches the file and is rebuilt when needed.
            warn!(%error, "Could not remove a stale segment index.");
        }
        d.segment.with_entries_mut(|e| e.truncate_to(d.pos));
        d.segment.size.store(d.pos, Ordering::Release);
        d.segment.end_offset.store(d.offset, Ordering::Release);
        if d.pos == 0 {
            d.segment.first_timestamp.store(0, Ordering::Release);
        }
        st.active = d.segment.clone();
        st.write_pos = d.pos;
        st.next_offset = d.offset;
        st.builder.force_next();
        st.pending_sealed.clear();
        st.dir_dirty = true;
        if problems.is_empty() {
            Ok(())
        } else {
            let reason = format!("could not discard data after a failed fsync: {}", problems.join("; "));
            warn!(%reason, "Poisoning the log.");
            st.poisoned = Some(reason.clone());
            Err(StorageError::Poisoned { reason })
        }
    }

    /// The background job was dropped without running, or panicked.
    fn abandon_driver(&self) {
        let mut st = self.state.lock();
        let reason = "the background fsync job stopped unexpectedly".to_string();
        st.syncing = false;
        if self.config.fsync == FsyncPolicy::Always {
            // Waiters cannot know whether their data is durable: make the log say so.
            st.poisoned = Some(reason.clone());
        }
        if let Some(g) = st.inflight.take() {
            g.finish(Some(StorageError::Poisoned { reason: reason.clone() }));
        }
        let g = std::mem::take(&mut st.group);
        g.finish(Some(StorageError::Poisoned { reason }));
    }

    /// The segment holding `offset` (the last with base <= offset).
    fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read();
        let i = segs.partition_point(|s| s.base_offset <= offset);
        (i > 0).then(|| segs[i - 1].clone())
    }

    fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<Record>, StorageError> {
        let end = self.visible_end.load(Ordering::Acquire);
        let start = self.start_offset.load(Ordering::Acquire);
        if from < start {
            return Err(StorageError::OffsetOutOfRange { requested: from, start, end });
        }
        if from >= end || max_records == 0 {
            return Ok(Vec::new());
        }
        // Read about what the caller wants in one go (plus slack for the batch framing and a
        // batch that starts before `from`), but not much more: unneeded bytes cost a copy.
        let chunk_for = |taken: usize| {
            max_bytes
                .saturating_sub(taken)
                .saturating_add(MIN_READ_CHUNK)
                .clamp(MIN_READ_CHUNK, MAX_READ_CHUNK)
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        let mut previous: Option<Arc<Segment>> = None;
        'segments: while next < end {
            let Some(seg) = self.segment_for(next) else {
                // Retention removed it meanwhile.
                let start = self.start_offset.load(Ordering::Acquire);
                return Err(StorageError::OffsetOutOfRange { requested: from, start, end });
            };
            if previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, &seg)) {
                break; // Nothing more in this segment although `end` says otherwise: stop.
            }
            let limit = seg.visible_len.load(Ordering::Acquire);
            // A segment serves only its own offsets, below the next segment's base, even if
            // it holds batches past them (a sealed segment kept although damaged can).
            let seg_end = seg.end_offset.load(Ordering::Acquire);
            let (pos, indexed) = seg.position_for(self.storage.as_ref(), next)?;
            let mut expect = indexed.unwrap_or(seg.base_offset);
            let mut cursor = BatchCursor::new(seg.file.as_ref(), &seg.log_path, pos, limit, chunk_for(bytes));
            loop {
                if out.len() >= max_records || (!out.is_empty() && bytes >= max_bytes) {
                    break 'segments;
                }
                cursor.set_chunk(chunk_for(bytes));
                let (pos, header, raw) = match cursor.next_batch()? {
                    Step::End => break,
                    Step::Defect { pos, defect } => {
                        return Err(StorageError::corrupt(&seg.log_path, pos, defect.to_string()));
                    }
                    Step::Batch { pos, header, bytes } => (pos, header, bytes),
                };
                if header.base_offset != expect {
                    let reason = format!("batch has base offset {}, expected {expect}", header.base_offset);
                    return Err(StorageError::corrupt(&seg.log_path, pos, reason));
                }
                expect = header.end_offset();
                if header.base_offset >= end {
                    break 'segments;
                }
                if header.base_offset >= seg_end {
                    break;
                }
                if header.end_offset() <= next {
                    continue;
                }
                let payloads = format::records(&header, &raw)
                    .map_err(|d| StorageError::corrupt(&seg.log_path, pos, d.to_string()))?;
                let timestamp = Timestamp(header.timestamp);
                // A bounded range: an unbounded one would step past `u64::MAX` after a batch
                // that ends there.
                for (offset, payload) in (header.base_offset..header.end_offset()).zip(payloads) {
                    if offset < next {
                        continue;
                    }
                    if offset >= seg_end {
                        break;
                    }
                    let too_many = out.len() >= max_records;
                    let too_big = !out.is_empty()
                        && (bytes >= max_bytes || bytes.saturating_add(payload.len()) > max_bytes);
                    if offset >= end || too_many || too_big {
                        break 'segments;
                    }
                    bytes += payload.len();
                    out.push(Record { offset, timestamp, payload });
                    next = offset + 1;
                }
            }
            previous = Some(seg);
        }
        Ok(out)
    }

    fn offset_for_time(&self, ts: Timestamp) -> Result<u64, StorageError> {
        let end = self.visible_end.load(Ordering::Acquire);
        let segments: Vec<Arc<Segment>> = self.segments.read().clone();
        for seg in segments {
            if seg.base_offset >= end {
                break;
            }
            if seg.max_timestamp.load(Ordering::Acquire) < ts.0 {
                continue;
            }
            let limit = seg.visible_len.load(Ordering::Acquire);
            let (pos, _) = seg.position_for_time(self.storage.as_ref(), ts.0)?;
            let mut cursor = BatchCursor::new(seg.file.as_ref(), &seg.log_path, pos, limit, MIN_READ_CHUNK);
            loop {
                match cursor.next_batch()? {
                    Step::End => break,
                    Step::Defect { pos, defect } => {
                        return Err(StorageError::corrupt(&seg.log_path, pos, defect.to_string()));
                    }
                    Step::Batch { header, .. } => {
                        if header.base_offset >= end {
                            return Ok(end);
                        }
                        if header.timestamp >= ts.0 {
                            return Ok(header.base_offset);
                        }
                    }
                }
            }
        }
        Ok(end)
    }

    /// Deletes sealed segments from the front while `deletable(segment, remaining_bytes)`.
    fn delete_prefix(
        &self,
        mut deletable: impl FnMut(&Segment, u64) -> bool,
    ) -> Result<RetentionReport, StorageError> {
        let _one_at_a_time = self.retention_lock.lock();
        // Choose under the append lock (so no roll or fsync failure changes the picture), but
        // remove files outside it, so appends do not wait for the file system. A segment that
        // is sealed, durable and visible stays so: nothing can make it busy again.
        let victims: Vec<Arc<Segment>> = {
            let st = self.state.lock();
            let visible = self.visible_end.load(Ordering::Acquire);
            let always = self.config.fsync == FsyncPolicy::Always;
            let segs = self.segments.read();
            let mut remaining: u64 = segs.iter().map(|s| s.size.load(Ordering::Acquire)).sum();
            let mut victims = Vec::new();
            // Never the active (last) segment, nor one not wholly visible; under `Always`,
            // nor one a failed fsync may still need to cut back into.
            for seg in &segs[..segs.len().saturating_sub(1)] {
                let busy = Arc::ptr_eq(seg, &st.active)
                    || seg.end_offset.load(Ordering::Acquire) > visible
                    || (always
                        && (Arc::ptr_eq(seg, &st.durable.segment)
                            || st.pending_sealed.iter().any(|s| Arc::ptr_eq(s, seg))));
                if busy || !deletable(seg, remaining) {
                    break;
                }
                remaining = remaining.saturating_sub(seg.size.load(Ordering::Acquire));
                victims.push(seg.clone());
            }
            victims
        };
        let mut report = RetentionReport::default();
        let mut result = Ok(());
        for seg in victims {
            // The log file first: if that fails, nothing changed. Readers that already hold
            // the segment keep reading through their open handle.
            if let Err(e) = crate::segment::remove_if_exists(self.storage.as_ref(), &seg.log_path) {
                result = Err(e);
                break;
            }
            {
                let mut segs = self.segments.write();
                if segs.len() > 1 && Arc::ptr_eq(&segs[0], &seg) {
                    segs.remove(0);
                    self.start_offset.store(segs[0].base_offset, Ordering::Release);
                }
            }
            if let Err(error) = seg.remove_index_files(self.storage.as_ref()) {
                warn!(%error, "Could not remove the index of a deleted segment; it is cleaned up at the next open.");
            }
            report.segments_deleted += 1;
            report.bytes_deleted += seg.size.load(Ordering::Acquire);
        }
        report.start_offset = self.start_offset.load(Ordering::Acquire);
        if report.segments_deleted > 0 {
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| StorageError::io("fsync directory", &self.dir, e))?;
        }
        result.map(|()| report)
    }
}
