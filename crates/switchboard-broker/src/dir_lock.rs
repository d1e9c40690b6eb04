//! One process per data directory: an exclusive lock on `<dir>/switchboard.lock`, released
//! when the process exits (even by SIGKILL), so two brokers never write the same files.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::error::{BrokerError, Result};

/// Holds the data directory's lock until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Takes the lock of data directory `dir` (created if missing).
///
/// # Errors
/// [`BrokerError::DataDirInUse`] if another process holds it; storage errors otherwise.
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock> {
    let io = |e: std::io::Error| {
        BrokerError::from(switchboard_storage::StorageError::Io {
            op: "lock data directory",
            path: dir.to_owned(),
            source: e,
        })
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let path = dir.join("switchboard.lock");
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(BrokerError::DataDirInUse(dir.display().to_string())),
        Err(TryLockError::Error(e)) => Err(io(e)),
    }
}
