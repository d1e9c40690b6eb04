//! The read path: records by offset and the offset for a time. Readers never take the
//! append lock: they load the visible end (an atomic that only moves forward, and under
//! `always` only after an fsync), take the segment list under a short read lock, and read
//! files, which never change below the visible end. Every batch read is checksummed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use switchboard_core::Timestamp;
use tokio::sync::watch;

use super::{Inner, Log, Record};
use crate::error::StorageError;
use crate::format;
use crate::segment::{BatchCursor, Segment, Step};

/// Chunk size for reads: at least this much per read call.
const MIN_READ_CHUNK: usize = 64 * 1024;
/// Chunk size for reads: at most this much per read call (bigger batches are read whole).
const MAX_READ_CHUNK: usize = 16 * 1024 * 1024;

impl Log {
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
}

impl Inner {
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
                    // Offsets are dense, so a segment holds every offset up to the next one's
                    // base (the log's end for the last). Data that ends short of that means a
                    // sealed segment's index promised records that are not there (found by the
                    // `storage_recovery` fuzz target): serving nothing would leave a reader
                    // waiting at `next` forever, so what was read is returned and the gap is
                    // reported.
                    Step::End if expect < seg_end.min(end) && next < seg_end.min(end) => {
                        if !out.is_empty() {
                            break 'segments;
                        }
                        let reason = format!(
                            "the segment's records end at offset {expect}, but it should hold offsets up to {}",
                            seg_end.min(end)
                        );
                        return Err(StorageError::corrupt(&seg.log_path, limit, reason));
                    }
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
}
