//! One segment: a `.log` file of batches plus its two sparse indexes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;
use tracing::warn;

use crate::error::StorageError;
use crate::format::{self, BatchDefect, BatchHeader, HEADER_LEN};
use crate::index::{self, Entries, IndexBuilder, IndexKind, SegmentSummary};
use crate::storage::{Storage, StorageFile, read_full_at};

/// Extension of segment data files.
pub(crate) const LOG_EXT: &str = "log";
/// Extension of offset index files.
pub(crate) const INDEX_EXT: &str = "index";
/// Extension of time index files.
pub(crate) const TIME_EXT: &str = "timeindex";

/// `00000000000000000042.log` and friends.
pub(crate) fn segment_path(dir: &Path, base_offset: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// Parses a segment-family file name into `(base_offset, extension)`.
pub(crate) fn parse_segment_name(path: &Path) -> Option<(u64, &str)> {
    let name = path.file_name()?.to_str()?;
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let base = stem.parse().ok()?;
    matches!(ext, LOG_EXT | INDEX_EXT | TIME_EXT).then_some((base, ext))
}

/// A segment. The append path mutates it only under the log's append lock; readers use the
/// atomics and the index lock.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base_offset: u64,
    pub(crate) log_path: PathBuf,
    pub(crate) index_path: PathBuf,
    pub(crate) time_path: PathBuf,
    pub(crate) file: Arc<dyn StorageFile>,
    /// Bytes readers may look at: everything below is whole, checksummed batches (and, under
    /// `FsyncPolicy::Always`, durable).
    pub(crate) visible_len: AtomicU64,
    /// Bytes written.
    pub(crate) size: AtomicU64,
    /// One past the last offset written.
    pub(crate) end_offset: AtomicU64,
    /// Newest record timestamp (0 if empty).
    pub(crate) max_timestamp: AtomicU64,
    /// Oldest record timestamp (0 if empty).
    pub(crate) first_timestamp: AtomicU64,
    index_interval: u32,
    /// `None` until a sealed segment's index is first needed.
    index: RwLock<Option<Entries>>,
}

impl Segment {
    /// Opens (or creates) the segment file with base `base_offset` in `dir`. The caller sets
    /// the extent.
    pub(crate) fn open(
        storage: &dyn Storage,
        dir: &Path,
        base_offset: u64,
        create: bool,
        index_interval: u32,
    ) -> Result<Segment, StorageError> {
        let log_path = segment_path(dir, base_offset, LOG_EXT);
        let file =
            storage.open_file(&log_path, create).map_err(|e| StorageError::io("open", &log_path, e))?;
        Ok(Segment {
            base_offset,
            index_path: segment_path(dir, base_offset, INDEX_EXT),
            time_path: segment_path(dir, base_offset, TIME_EXT),
            log_path,
            file,
            visible_len: AtomicU64::new(0),
            size: AtomicU64::new(0),
            end_offset: AtomicU64::new(base_offset),
            max_timestamp: AtomicU64::new(0),
            first_timestamp: AtomicU64::new(0),
            index_interval,
            index: RwLock::new(None),
        })
    }

    /// Sets the extent of a sealed segment from its index header (entries load lazily).
    pub(crate) fn set_summary(&self, s: &SegmentSummary) {
        self.size.store(s.log_len, Ordering::Release);
        self.visible_len.store(s.log_len, Ordering::Release);
        self.end_offset.store(s.end_offset, Ordering::Release);
        self.max_timestamp.store(s.max_timestamp, Ordering::Release);
        self.first_timestamp.store(s.first_timestamp, Ordering::Release);
    }

    /// What the index headers should say about this segment.
    pub(crate) fn summary(&self) -> SegmentSummary {
        SegmentSummary {
            log_len: self.size.load(Ordering::Acquire),
            base_offset: self.base_offset,
            end_offset: self.end_offset.load(Ordering::Acquire),
            max_timestamp: self.max_timestamp.load(Ordering::Acquire),
            first_timestamp: self.first_timestamp.load(Ordering::Acquire),
        }
    }

    /// Installs entries (the active segment's, or rebuilt ones).
    pub(crate) fn set_entries(&self, entries: Entries) {
        *self.index.write() = Some(entries);
    }

    /// Runs `f` on the in-memory entries (which must be loaded: active segment).
    pub(crate) fn with_entries_mut<R>(&self, f: impl FnOnce(&mut Entries) -> R) -> R {
        let mut guard = self.index.write();
        f(guard.get_or_insert_with(Entries::default))
    }

    /// Reads the `.index` header and checks that it describes this file as it is.
    pub(crate) fn read_summary(
        &self,
        storage: &dyn Storage,
        next_base: u64,
    ) -> Result<SegmentSummary, String> {
        let f = storage.open_file(&self.index_path, false).map_err(|e| format!("cannot open index: {e}"))?;
        let mut head = [0u8; index::HEADER_LEN];
        let n = read_full_at(f.as_ref(), &mut head, 0).map_err(|e| format!("cannot read index: {e}"))?;
        let (summary, _, _) = index::decode_header(&head[..n], IndexKind::Offset)?;
        let log_len = self.file.len().map_err(|e| format!("cannot stat segment: {e}"))?;
        if summary.log_len != log_len {
            return Err(format!("index describes {} log bytes, file has {log_len}", summary.log_len));
        }
        if summary.base_offset != self.base_offset || summary.end_offset != next_base {
            return Err(format!(
                "index describes offsets {}..{}, expected {}..{next_base}",
                summary.base_offset, summary.end_offset, self.base_offset
            ));
        }
        Ok(summary)
    }

    /// Writes both index files of a sealed segment. They are a cache: failures are logged,
    /// not returned, and the files are not synced (they are validated before use).
    pub(crate) fn write_index_files(&self, storage: &dyn Storage) {
        let summary = self.summary();
        let guard = self.index.read();
        let Some(entries) = guard.as_ref() else { return };
        let files = [
            (&self.index_path, index::encode(IndexKind::Offset, &summary, &entries.offsets)),
            (&self.time_path, index::encode(IndexKind::Time, &summary, &entries.times)),
        ];
        drop(guard);
        for (path, data) in files {
            let written = storage.open_file(path, true).and_then(|f| {
                f.set_len(0)?;
                f.write_at(&data, 0)
            });
            if let Err(error) = written {
                warn!(path = %path.display(), %error, "Could not write a segment index; it will be rebuilt when needed.");
            }
        }
    }

    /// Loads a sealed segment's index on first use, validating it and rebuilding it from the
    /// log if it is missing or damaged.
    fn ensure_index(&self, storage: &dyn Storage) -> Result<(), StorageError> {
        if self.index.read().is_some() {
            return Ok(());
        }
        let summary = self.summary();
        let load = || -> Result<Entries, String> {
            let raw = storage.read_file(&self.index_path).map_err(|e| format!("cannot read index: {e}"))?;
            let offsets = index::decode(&raw, IndexKind::Offset, &summary)?;
            let raw =
                storage.read_file(&self.time_path).map_err(|e| format!("cannot read time index: {e}"))?;
            let times = index::decode(&raw, IndexKind::Time, &summary)?;
            Ok(Entries { offsets, times })
        };
        let entries = match load() {
            Ok(entries) => entries,
            Err(reason) => {
                warn!(segment = %self.log_path.display(), %reason, "Rebuilding a segment index from the log.");
                let scan = scan(
                    self.file.as_ref(),
                    &self.log_path,
                    self.base_offset,
                    summary.log_len,
                    self.index_interval,
                )?;
                let complete = scan.stop.is_none() && scan.end_offset == summary.end_offset;
                let entries = scan.entries;
                if complete {
                    self.set_entries(entries.clone());
                    self.write_index_files(storage);
                }
                entries
            }
        };
        let mut guard = self.index.write();
        if guard.is_none() {
            *guard = Some(entries);
        }
        Ok(())
    }

    /// Byte position to start scanning at for `offset`, and the offset of the batch there.
    pub(crate) fn position_for(
        &self,
        storage: &dyn Storage,
        offset: u64,
    ) -> Result<(u64, Option<u64>), StorageError> {
        self.ensure_index(storage)?;
        Ok(self.index.read().as_ref().map(|e| e.position_for(offset)).unwrap_or((0, None)))
    }

    /// Byte position to start scanning at to find the first batch with timestamp >= `ts`.
    pub(crate) fn position_for_time(
        &self,
        storage: &dyn Storage,
        ts: u64,
    ) -> Result<(u64, Option<u64>), StorageError> {
        self.ensure_index(storage)?;
        let guard = self.index.read();
        let Some(entries) = guard.as_ref() else { return Ok((0, None)) };
        Ok(match entries.offset_before_time(ts) {
            Some(offset) => entries.position_for(offset),
            None => (0, None),
        })
    }

    /// Removes the segment's files (the log first: an orphaned index is cleaned up at open,
    /// an orphaned log would come back as data).
    pub(crate) fn remove_files(&self, storage: &dyn Storage) -> Result<(), StorageError> {
        remove_if_exists(storage, &self.log_path)?;
        remove_if_exists(storage, &self.index_path)?;
        remove_if_exists(storage, &self.time_path)?;
        Ok(())
    }

    /// Removes the index files only (when a sealed segment becomes active again).
    pub(crate) fn remove_index_files(&self, storage: &dyn Storage) -> Result<(), StorageError> {
        remove_if_exists(storage, &self.index_path)?;
        remove_if_exists(storage, &self.time_path)
    }
}

pub(crate) fn remove_if_exists(storage: &dyn Storage, path: &Path) -> Result<(), StorageError> {
    match storage.remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("remove", path, e)),
    }
}

/// One step of a [`BatchCursor`].
pub(crate) enum Step {
    /// A whole batch whose checksum is right.
    Batch { pos: u64, header: BatchHeader, bytes: Bytes },
    /// The limit was reached exactly.
    End,
    /// Bytes at `pos` are not a valid batch.
    Defect { pos: u64, defect: BatchDefect },
}

/// Walks the batches of a segment from a batch boundary, reading large chunks.
pub(crate) struct BatchCursor<'a> {
    file: &'a dyn StorageFile,
    path: &'a Path,
    pos: u64,
    limit: u64,
    chunk: usize,
    buf: Bytes,
    buf_start: u64,
}

impl<'a> BatchCursor<'a> {
    /// A cursor over bytes `pos..limit` of `file`, reading `chunk` bytes at a time (more if a
    /// batch is bigger).
    pub(crate) fn new(file: &'a dyn StorageFile, path: &'a Path, pos: u64, limit: u64, chunk: usize) -> Self {
        BatchCursor { file, path, pos, limit, chunk, buf: Bytes::new(), buf_start: pos }
    }

    /// Changes how much the next refill reads (at least one batch is always read whole).
    pub(crate) fn set_chunk(&mut self, chunk: usize) {
        self.chunk = chunk;
    }

    /// The next batch.
    pub(crate) fn next_batch(&mut self) -> Result<Step, StorageError> {
        let pos = self.pos;
        if pos >= self.limit {
            return Ok(Step::End);
        }
        let avail = self.limit - pos;
        if avail < HEADER_LEN as u64 {
            return Ok(Step::Defect { pos, defect: BatchDefect::Short });
        }
        let Some(head) = self.get(pos, HEADER_LEN)? else {
            return Ok(Step::Defect { pos, defect: BatchDefect::Short });
        };
        let header = match format::parse_header(&head) {
            Ok(h) => h,
            Err(defect) => return Ok(Step::Defect { pos, defect }),
        };
        if u64::from(header.total_len) > avail {
            return Ok(Step::Defect { pos, defect: BatchDefect::Short });
        }
        let Some(bytes) = self.get(pos, header.total_len as usize)? else {
            return Ok(Step::Defect { pos, defect: BatchDefect::Short });
        };
        if let Err(defect) = format::verify(&header, &bytes) {
            return Ok(Step::Defect { pos, defect });
        }
        self.pos = pos + u64::from(header.total_len);
        Ok(Step::Batch { pos, header, bytes })
    }

    /// `n` bytes at `pos`, from the buffer or from a fresh read; `None` if the file ends first.
    fn get(&mut self, pos: u64, n: usize) -> Result<Option<Bytes>, StorageError> {
        let buf_end = self.buf_start + self.buf.len() as u64;
        if pos >= self.buf_start && pos + n as u64 <= buf_end {
            let s = (pos - self.buf_start) as usize;
            return Ok(Some(self.buf.slice(s..s + n)));
        }
        let want = (n.max(self.chunk) as u64).min(self.limit - pos).max(n as u64) as usize;
        let mut v = vec![0u8; want];
        let got = read_full_at(self.file, &mut v, pos).map_err(|e| StorageError::io("read", self.path, e))?;
        v.truncate(got);
        self.buf = Bytes::from(v);
        self.buf_start = pos;
        if got < n {
            return Ok(None);
        }
        Ok(Some(self.buf.slice(0..n)))
    }
}

/// Chunk size for sequential scans (recovery, index rebuilds).
const SCAN_CHUNK: usize = 1024 * 1024;

/// Result of scanning a segment from its start.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Bytes of whole, valid, consecutive batches from the start.
    pub(crate) valid_len: u64,
    /// One past the last offset of those batches.
    pub(crate) end_offset: u64,
    pub(crate) first_timestamp: Option<u64>,
    pub(crate) max_timestamp: u64,
    pub(crate) entries: Entries,
    /// The index builder positioned after the last valid batch (to continue appending).
    pub(crate) builder: IndexBuilder,
    /// Where and why the scan stopped before `len`, if it did.
    pub(crate) stop: Option<ScanStop>,
}

/// Why a scan stopped early.
#[derive(Debug)]
pub(crate) struct ScanStop {
    /// Byte position of the first bad batch.
    pub(crate) pos: u64,
    /// What was wrong with it.
    pub(crate) reason: String,
    /// The batch was cut short by the end of the file (a torn write), as opposed to damaged.
    pub(crate) torn: bool,
}

/// Scans `file` (`len` bytes, segment base `base_offset`) batch by batch, verifying every
/// checksum and that offsets follow on, and rebuilds its sparse indexes.
pub(crate) fn scan(
    file: &dyn StorageFile,
    path: &Path,
    base_offset: u64,
    len: u64,
    index_interval: u32,
) -> Result<Scan, StorageError> {
    let mut cursor = BatchCursor::new(file, path, 0, len, SCAN_CHUNK);
    let mut s = Scan {
        valid_len: 0,
        end_offset: base_offset,
        first_timestamp: None,
        max_timestamp: 0,
        entries: Entries::default(),
        builder: IndexBuilder::new(index_interval),
        stop: None,
    };
    loop {
        match cursor.next_batch()? {
            Step::End => break,
            Step::Defect { pos, defect } => {
                let torn = defect == BatchDefect::Short;
                s.stop = Some(ScanStop { pos, reason: defect.to_string(), torn });
                break;
            }
            Step::Batch { pos, header, bytes } => {
                if header.base_offset != s.end_offset {
                    let reason =
                        format!("batch has base offset {}, expected {}", header.base_offset, s.end_offset);
                    s.stop = Some(ScanStop { pos, reason, torn: false });
                    break;
                }
                if let Err(defect) = format::records(&header, &bytes) {
                    s.stop = Some(ScanStop { pos, reason: defect.to_string(), torn: false });
                    break;
                }
                if s.builder.observe(u64::from(header.total_len)) {
                    s.entries.push(header.base_offset, pos, header.timestamp);
                }
                s.first_timestamp.get_or_insert(header.timestamp);
                s.max_timestamp = s.max_timestamp.max(header.timestamp);
                s.end_offset = header.end_offset();
                s.valid_len = pos + u64::from(header.total_len);
            }
        }
    }
    Ok(s)
}
