//! What `Log::open` does to a directory before the log serves anything.
//!
//! 1. Leftover temporary files and index files without a segment are removed.
//! 2. Sealed segments are trusted if their `.index` header (one 64-byte read) describes the
//!    file as it is: same length, same base, and an end offset equal to the next segment's
//!    base. Their data is verified when read, not here, so opening a big log stays fast.
//! 3. A sealed segment without a trustworthy index is scanned. If it simply ends early (it
//!    lost its tail in a crash before it was durable), the offsets after it are gone, so the
//!    later segments are removed and it becomes the last segment. If it is damaged in the
//!    middle, it is kept as is: reads of the damaged part return `StorageError::Corrupt`.
//! 4. The last segment is scanned batch by batch (checksum, magic, version, and offsets that
//!    follow on); the file is cut at the first bad or short batch and its indexes are rebuilt
//!    in memory. What survives is fsynced, so that it is durable before anyone reads it.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use tracing::{info, warn};

use crate::config::LogConfig;
use crate::error::StorageError;
use crate::index::{IndexBuilder, SegmentSummary};
use crate::segment::{self, INDEX_EXT, LOG_EXT, Segment, TIME_EXT, remove_if_exists, scan};
use crate::storage::Storage;

/// The log as recovery left it.
pub(crate) struct Recovered {
    pub(crate) sealed: Vec<Arc<Segment>>,
    pub(crate) active: Arc<Segment>,
    pub(crate) write_pos: u64,
    pub(crate) next_offset: u64,
    pub(crate) builder: IndexBuilder,
    pub(crate) last_timestamp: u64,
}

fn remove_segment_files(storage: &dyn Storage, dir: &Path, base: u64) -> Result<(), StorageError> {
    for ext in [LOG_EXT, INDEX_EXT, TIME_EXT] {
        remove_if_exists(storage, &segment::segment_path(dir, base, ext))?;
    }
    Ok(())
}

pub(crate) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    config: &LogConfig,
) -> Result<Recovered, StorageError> {
    storage.create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
    let listing = storage.list_dir(dir).map_err(|e| StorageError::io("list directory", dir, e))?;
    let mut dir_changed = false;
    let mut logs = BTreeSet::new();
    let mut indexes = Vec::new();
    for path in listing {
        let is_tmp = path.extension().is_some_and(|e| e == "tmp");
        if is_tmp {
            remove_if_exists(storage, &path)?;
            dir_changed = true;
            continue;
        }
        match segment::parse_segment_name(&path) {
            Some((base, LOG_EXT)) => {
                logs.insert(base);
            }
            Some((base, _)) => indexes.push((base, path)),
            None => {}
        }
    }
    for (base, path) in indexes {
        if !logs.contains(&base) {
            info!(path = %path.display(), "Removing an index file whose segment is gone.");
            remove_if_exists(storage, &path)?;
            dir_changed = true;
        }
    }
    let mut bases: Vec<u64> = logs.into_iter().collect();
    if bases.is_empty() {
        bases.push(0);
        dir_changed = true;
    }
    let interval = config.index_interval_bytes;

    let mut sealed: Vec<Arc<Segment>> = Vec::new();
    let mut i = 0;
    while i + 1 < bases.len() {
        let (base, next) = (bases[i], bases[i + 1]);
        let seg = Segment::open(storage, dir, base, false, interval)?;
        let reason = match seg.read_summary(storage, next) {
            Ok(summary) => {
                seg.set_summary(&summary);
                sealed.push(Arc::new(seg));
                i += 1;
                continue;
            }
            Err(reason) => reason,
        };
        info!(segment = %seg.log_path.display(), %reason, "Scanning a sealed segment without a usable index.");
        let len = seg.file.len().map_err(|e| StorageError::io("stat", &seg.log_path, e))?;
        let s = scan(seg.file.as_ref(), &seg.log_path, base, len, interval)?;
        let damaged = s.stop.as_ref().is_some_and(|stop| !stop.torn);
        if !damaged && s.stop.is_none() && s.end_offset == next {
            seg.set_summary(&SegmentSummary {
                log_len: len,
                base_offset: base,
                end_offset: next,
                max_timestamp: s.max_timestamp,
                first_timestamp: s.first_timestamp.unwrap_or(0),
            });
            seg.set_entries(s.entries);
            seg.write_index_files(storage);
            sealed.push(Arc::new(seg));
            i += 1;
            continue;
        }
        if !damaged {
            // The segment ends before the next one starts: it lost its tail in a crash before
            // it was durable. Offsets are dense, so nothing after the gap can be kept.
            warn!(
                segment = %seg.log_path.display(),
                ends_at = s.end_offset,
                next_segment_starts_at = next,
                dropped_segments = bases.len() - i - 1,
                "A sealed segment lost its tail; removing the segments after it."
            );
            for &b in &bases[i + 1..] {
                remove_segment_files(storage, dir, b)?;
            }
            bases.truncate(i + 1);
            dir_changed = true;
            break;
        }
        // Damaged in the middle: keep everything; reads of the damaged part report it.
        if let Some(stop) = &s.stop {
            warn!(
                segment = %seg.log_path.display(),
                position = stop.pos,
                reason = %stop.reason,
                "A sealed segment is corrupt; reads of the damaged part will fail."
            );
        }
        seg.set_summary(&SegmentSummary {
            log_len: len,
            base_offset: base,
            end_offset: next,
            max_timestamp: s.max_timestamp,
            first_timestamp: s.first_timestamp.unwrap_or(0),
        });
        seg.set_entries(s.entries);
        sealed.push(Arc::new(seg));
        i += 1;
    }

    let base = bases[bases.len() - 1];
    let seg = Segment::open(storage, dir, base, true, interval)?;
    let len = seg.file.len().map_err(|e| StorageError::io("stat", &seg.log_path, e))?;
    let s = scan(seg.file.as_ref(), &seg.log_path, base, len, interval)?;
    if let Some(stop) = &s.stop {
        warn!(
            segment = %seg.log_path.display(),
            position = stop.pos,
            reason = %stop.reason,
            dropped_bytes = len - s.valid_len,
            "Truncating a torn or corrupt tail of the log."
        );
        seg.file.set_len(s.valid_len).map_err(|e| StorageError::io("truncate", &seg.log_path, e))?;
    }
    seg.set_summary(&SegmentSummary {
        log_len: s.valid_len,
        base_offset: base,
        end_offset: s.end_offset,
        max_timestamp: s.max_timestamp,
        first_timestamp: s.first_timestamp.unwrap_or(0),
    });
    seg.set_entries(s.entries);
    // What survived may still be only in the page cache (a process crash, not a power loss):
    // make it durable before it is served, since `Always` promises readers durable data.
    seg.file.sync_data().map_err(|e| StorageError::io("fsync", &seg.log_path, e))?;
    if dir_changed {
        storage.sync_dir(dir).map_err(|e| StorageError::io("fsync directory", dir, e))?;
    }
    let last_timestamp = sealed
        .iter()
        .map(|s| s.summary().max_timestamp)
        .chain(std::iter::once(s.max_timestamp))
        .max()
        .unwrap_or(0);
    Ok(Recovered {
        sealed,
        active: Arc::new(seg),
        write_pos: s.valid_len,
        next_offset: s.end_offset,
        builder: s.builder,
        last_timestamp,
    })
}
