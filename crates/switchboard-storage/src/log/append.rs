//! The write path: encoding a batch, the one `write_at` under the append lock, and rolling
//! to a new segment. What happens after the write (the fsync, visibility under `always`) is
//! group commit's business (`group`, `commit`); this file only joins the right batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use switchboard_core::Timestamp;
use tracing::warn;

use super::commit::launch_driver;
use super::group::Batch;
use super::{Appended, Durability, Inner, Log, Point, State};
use crate::config::FsyncPolicy;
use crate::error::StorageError;
use crate::format::{self, EncodedBatch};
use crate::index::{Entries, IndexBuilder};
use crate::segment::Segment;

impl Log {
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

    /// Starts a new segment now (no-op if the active one is empty).
    ///
    /// # Errors
    /// I/O errors creating the new segment file; [`StorageError::Poisoned`].
    pub fn roll(&self) -> Result<(), StorageError> {
        let launch = {
            let mut st = self.inner.state.lock();
            st.check_poisoned()?;
            self.inner.roll_locked(&mut st)?;
            st.commit.claim_driver()
        };
        if launch {
            launch_driver(&self.inner);
        }
        Ok(())
    }
}

impl Inner {
    /// The append path: one write under the append lock.
    fn write_batch(
        self: &Arc<Self>,
        batch: &mut EncodedBatch,
        count: u32,
    ) -> Result<(Appended, Option<Arc<Batch>>), StorageError> {
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
            written_at: std::time::Instant::now(),
        };
        let group = if policy == FsyncPolicy::Always {
            appended.durability = Durability::Fsynced;
            Some(st.commit.join())
        } else {
            None
        };
        // Publish outside the lock (for `Interval` and `Never`): the bytes are in the file
        // already, and `publish` only ever moves the visible end forward.
        let published = group.is_none().then(|| seg.clone());
        let launch = st.commit.claim_driver();
        drop(guard);
        if let Some(seg) = published {
            self.publish(&seg, new_pos, end);
        }
        if launch {
            launch_driver(self);
        }
        Ok((appended, group))
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
        st.commit.request();
        Ok(())
    }
}
