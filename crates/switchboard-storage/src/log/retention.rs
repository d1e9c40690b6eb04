//! Retention: deleting whole sealed segments from the front, by offset (what every
//! consumer is done with), by age or by size. Choosing victims takes the append lock so that
//! no roll or failed fsync changes the picture, but removing files does not, so appends do
//! not wait for the file system.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::warn;

use super::{Inner, Log, RetentionReport};
use crate::config::{FsyncPolicy, Retention};
use crate::error::StorageError;
use crate::segment::Segment;

impl Log {
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
}

impl Inner {
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
