//! Helpers shared by the test modules.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use switchboard_core::ManualClock;
use switchboard_storage::{FsyncPolicy, Log, LogConfig, MemStorage, Record};

/// Where MemStorage tests keep their log.
pub fn dir() -> PathBuf {
    PathBuf::from("/data/topic-0")
}

/// Small segments and a dense index, so that a few appends exercise rolls and lookups.
pub fn small_config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig { fsync, segment_max_bytes: 1024, index_interval_bytes: 128, ..LogConfig::default() }
}

pub fn open_mem(storage: &MemStorage, config: &LogConfig, clock: &ManualClock) -> Log {
    Log::open(Arc::new(storage.clone()), dir(), config.clone(), Arc::new(clock.clone())).unwrap()
}

/// `n` distinct payloads of `size` bytes, tagged with `tag`.
pub fn payloads(tag: u8, n: usize, size: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            let mut v = vec![tag; size];
            for (j, b) in (i as u32).to_le_bytes().iter().enumerate() {
                if j < size {
                    v[j] = *b;
                }
            }
            Bytes::from(v)
        })
        .collect()
}

/// Everything from `from` to the end, in one call.
pub fn read_all(log: &Log, from: u64) -> Vec<Record> {
    log.read(from, usize::MAX, usize::MAX).unwrap()
}

pub fn payloads_of(records: &[Record]) -> Vec<Bytes> {
    records.iter().map(|r| r.payload.clone()).collect()
}

/// Path of segment `base`'s file with extension `ext` in [`dir`].
pub fn seg_path(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// Bases of the `.log` files in `dir`, sorted.
pub fn mem_segment_bases(storage: &MemStorage, dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = storage
        .paths()
        .iter()
        .filter(|p| p.parent() == Some(dir) && p.extension().is_some_and(|e| e == "log"))
        .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap())
        .collect();
    v.sort();
    v
}
