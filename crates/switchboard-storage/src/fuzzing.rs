//! Entry points for the fuzz targets in `fuzz/` at the repository root. Not a stable API:
//! hidden from the docs and free to change with the targets.
//!
//! They run the crate's own decoding code on raw bytes (nothing here re-implements the
//! format), and help the fuzzer past checksums, which it cannot guess.

use std::io;
use std::path::Path;

use bytes::Bytes;

use crate::error::StorageError;
use crate::format::{self, EncodedBatch, HEADER_LEN};
use crate::index;
use crate::segment::{BatchCursor, Step, scan};
use crate::storage::StorageFile;

/// What the recovery scan and the read path make of one segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedSegment {
    /// Bytes of whole, valid, consecutive batches from the start (what recovery keeps).
    pub valid_len: u64,
    /// One past the last offset of those batches.
    pub end_offset: u64,
    /// Why the scan stopped before the end of the bytes, if it did.
    pub stop: Option<String>,
    /// The kept batches, in order.
    pub batches: Vec<DecodedBatch>,
}

/// One batch as the read path decodes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedBatch {
    /// Byte position in the segment.
    pub position: u64,
    /// Offset of the first record.
    pub base_offset: u64,
    /// Append time, ms since the epoch.
    pub timestamp: u64,
    /// The payloads, in offset order.
    pub payloads: Vec<Bytes>,
}

/// Runs recovery's scan over `bytes` as the segment file with base `base_offset`, then reads
/// the batches it kept as the read path does (batch cursor, checksum, record framing).
///
/// # Errors
/// Only what the scan reports as an error rather than a defect (none for in-memory bytes);
/// a read-path defect in what the scan kept is reported as [`StorageError::Corrupt`].
pub fn decode_segment(bytes: &[u8], base_offset: u64) -> Result<DecodedSegment, StorageError> {
    let file = SliceFile(bytes);
    let path = Path::new("fuzz.log");
    let s = scan(&file, path, base_offset, bytes.len() as u64, 4096)?;
    let mut batches = Vec::new();
    let mut cursor = BatchCursor::new(&file, path, 0, s.valid_len, 64 * 1024);
    loop {
        match cursor.next_batch()? {
            Step::End => break,
            Step::Defect { pos, defect } => return Err(StorageError::corrupt(path, pos, defect.to_string())),
            Step::Batch { pos, header, bytes } => {
                let payloads = format::records(&header, &bytes)
                    .map_err(|d| StorageError::corrupt(path, pos, d.to_string()))?;
                batches.push(DecodedBatch {
                    position: pos,
                    base_offset: header.base_offset,
                    timestamp: header.timestamp,
                    payloads: payloads.collect(),
                });
            }
        }
    }
    Ok(DecodedSegment {
        valid_len: s.valid_len,
        end_offset: s.end_offset,
        stop: s.stop.map(|stop| stop.reason),
        batches,
    })
}

/// One batch as [`Log::append`](crate::Log::append) writes it, for seed corpora.
///
/// # Panics
/// If `records` is empty or the batch does not fit the format's `u32` length.
pub fn encode_batch(records: &[Bytes], base_offset: u64, timestamp: u64) -> Vec<u8> {
    let len = format::encoded_len(records);
    assert!(!records.is_empty() && u32::try_from(len).is_ok(), "not an encodable batch");
    EncodedBatch::new(records, len).seal(base_offset, timestamp).to_vec()
}

/// Rewrites the checksum of every batch of a segment whose header parses, walking from the
/// start by each header's `total_len`, so that the fuzzer reaches the checks behind it.
pub fn reseal_batches(bytes: &mut [u8]) {
    let mut pos = 0usize;
    while let Some(rest) = bytes.get_mut(pos..) {
        let Ok(header) = format::parse_header(rest) else { return };
        let Some(batch) = rest.get_mut(..header.total_len as usize) else { return };
        format::reseal(batch);
        pos += header.total_len as usize;
        debug_assert!(header.total_len as usize >= HEADER_LEN);
    }
}

/// An `.index` file with no entries whose header describes a segment of `log_len` bytes holding
/// offsets `base_offset..end_offset`, whether or not the segment does (for regression tests of
/// an index that lies).
pub fn offset_index_file(log_len: u64, base_offset: u64, end_offset: u64) -> Vec<u8> {
    let summary =
        index::SegmentSummary { log_len, base_offset, end_offset, max_timestamp: 0, first_timestamp: 0 };
    index::encode(index::IndexKind::Offset, &summary, &[])
}

/// Rewrites both checksums of an `.index` / `.timeindex` file that is at least a header long.
pub fn reseal_index(bytes: &mut [u8]) {
    index::reseal(bytes);
}

/// Read-only file over a byte slice.
#[derive(Debug)]
struct SliceFile<'a>(&'a [u8]);

impl StorageFile for SliceFile<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, _data: &[u8], _offset: u64) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }

    fn set_len(&self, _len: u64) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
}
