//! The one error type of the crate.

use std::io;
use std::path::{Path, PathBuf};

/// What can go wrong when using a [`Log`](crate::Log).
///
/// The `Display` text names the file and the operation; the underlying [`io::Error`], when
/// there is one, is the [`source`](std::error::Error::source), so print the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file-system operation failed.
    #[error("could not {op} {}", path.display())]
    Io {
        /// The operation, e.g. `"write"`, `"fsync"`, `"open"`.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// What the operating system (or the [`Storage`](crate::Storage)) reported.
        #[source]
        source: io::Error,
    },
    /// The device is full (`ENOSPC`). Nothing of the failed append was kept; appends work
    /// again once space is freed.
    #[error("no space left on device while writing {}", path.display())]
    NoSpace {
        /// The file that could not grow.
        path: PathBuf,
    },
    /// Data that recovery could not repair, e.g. a bad checksum in the middle of a sealed
    /// segment. The log never returns such data.
    #[error("corrupt data in {} at byte {position}: {reason}", path.display())]
    Corrupt {
        /// The segment or index file.
        path: PathBuf,
        /// Byte position of the damaged batch in that file.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// A read asked for an offset that the log no longer (or does not yet) hold.
    #[error("offset {requested} is out of range: the log holds offsets {start}..{end}")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: u64,
        /// The first retained offset.
        start: u64,
        /// One past the last visible offset.
        end: u64,
    },
    /// The encoded batch is larger than [`LogConfig::max_batch_bytes`](crate::LogConfig).
    #[error("a batch of {size} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge {
        /// Encoded size of the rejected batch.
        size: usize,
        /// The configured limit.
        max: u32,
    },
    /// The batch's offsets would pass `u64::MAX` (only a log directory whose segment names
    /// say so gets there).
    #[error("no offsets left: the next offset is {next}, and {count} more records would pass the largest")]
    OffsetsExhausted {
        /// The log's next offset.
        next: u64,
        /// Records in the refused batch.
        count: u32,
    },
    /// `append` was called with no records.
    #[error("cannot append an empty batch")]
    EmptyBatch,
    /// The log hit an error it could not undo (e.g. rolling back a failed write failed).
    /// Every later write fails with this error; reopen the log to recover.
    #[error("the log is unusable after an error it could not undo ({reason}); reopen it")]
    Poisoned {
        /// What happened.
        reason: String,
    },
}

/// `ENOSPC` on Linux and most Unixes.
const ENOSPC: i32 = 28;

impl StorageError {
    /// Wraps an I/O error, mapping "device full" to [`StorageError::NoSpace`].
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> StorageError {
        if is_no_space(&source) {
            StorageError::NoSpace { path: path.to_path_buf() }
        } else {
            StorageError::Io { op, path: path.to_path_buf(), source }
        }
    }

    /// A corruption report.
    pub(crate) fn corrupt(path: &Path, position: u64, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt { path: path.to_path_buf(), position, reason: reason.into() }
    }

    /// A copy of this error for another waiter of the same failed operation (`io::Error` is
    /// not `Clone`; the copy keeps the kind, the OS code and the message).
    pub(crate) fn duplicate(&self) -> StorageError {
        match self {
            StorageError::Io { op, path, source } => {
                StorageError::Io { op, path: path.clone(), source: duplicate_io(source) }
            }
            StorageError::NoSpace { path } => StorageError::NoSpace { path: path.clone() },
            StorageError::Corrupt { path, position, reason } => {
                StorageError::Corrupt { path: path.clone(), position: *position, reason: reason.clone() }
            }
            StorageError::OffsetOutOfRange { requested, start, end } => {
                StorageError::OffsetOutOfRange { requested: *requested, start: *start, end: *end }
            }
            StorageError::BatchTooLarge { size, max } => {
                StorageError::BatchTooLarge { size: *size, max: *max }
            }
            StorageError::OffsetsExhausted { next, count } => {
                StorageError::OffsetsExhausted { next: *next, count: *count }
            }
            StorageError::EmptyBatch => StorageError::EmptyBatch,
            StorageError::Poisoned { reason } => StorageError::Poisoned { reason: reason.clone() },
        }
    }
}

fn duplicate_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// Whether `e` means "no space left on device".
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ENOSPC) || e.kind() == io::ErrorKind::StorageFull
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_maps_to_no_space() {
        let e = StorageError::io("write", Path::new("/x/0.log"), io::Error::from_raw_os_error(28));
        assert!(matches!(e, StorageError::NoSpace { .. }));
        assert_eq!(e.to_string(), "no space left on device while writing /x/0.log");
    }

    #[test]
    fn duplicate_keeps_os_code() {
        let e = StorageError::io("fsync", Path::new("/x"), io::Error::from_raw_os_error(5));
        match e.duplicate() {
            StorageError::Io { op, source, .. } => {
                assert_eq!(op, "fsync");
                assert_eq!(source.raw_os_error(), Some(5));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
