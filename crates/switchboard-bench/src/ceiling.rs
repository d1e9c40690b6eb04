//! The machine's own limits, measured in the same run: what no broker on this disk can beat.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

/// Disk limits of the directory the brokers write to.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Ceiling {
    /// Sequential writes of 1 MiB blocks with `O_DIRECT` (page cache bypassed), MiB/s.
    pub(crate) sequential_write_mib_s: f64,
    /// Whether `O_DIRECT` was used (a tmpfs refuses it; then the figure is buffered writes
    /// ended by one fsync).
    pub(crate) direct_io: bool,
    /// 4 KiB appends each followed by `fdatasync`, per second: what one-fsync-per-message
    /// durability is bounded by.
    pub(crate) fsyncs_per_sec: f64,
}

/// Measures the disk under `dir` (writes up to 256 MiB, then deletes it).
pub(crate) fn measure(dir: &Path) -> Result<Ceiling> {
    let (sequential_write_mib_s, direct_io) = sequential_write(dir)?;
    let fsyncs_per_sec = fsync_rate(dir)?;
    Ok(Ceiling { sequential_write_mib_s, direct_io, fsyncs_per_sec })
}

fn sequential_write(dir: &Path) -> Result<(f64, bool)> {
    const BLOCK: usize = 1 << 20;
    const TOTAL: usize = 256;
    let path = dir.join(".bench-ceiling-seq");
    // A buffer aligned to 4 KiB, as O_DIRECT requires, without unsafe code.
    let raw = vec![0x5au8; BLOCK + 4096];
    let skip = raw.as_ptr().align_offset(4096);
    let block = &raw[skip..skip + BLOCK];
    let direct =
        OpenOptions::new().write(true).create(true).truncate(true).custom_flags(libc::O_DIRECT).open(&path);
    let (mut file, direct_io) = match direct {
        Ok(f) => (f, true),
        Err(_) => (OpenOptions::new().write(true).create(true).truncate(true).open(&path)?, false),
    };
    let started = Instant::now();
    let mut written = 0;
    for _ in 0..TOTAL {
        written += file.write(block).context("sequential write")?;
    }
    file.sync_all()?;
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok((written as f64 / (1 << 20) as f64 / secs, direct_io))
}

fn fsync_rate(dir: &Path) -> Result<f64> {
    let path = dir.join(".bench-ceiling-fsync");
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
    let block = [0xa5u8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        file.write_all_at(&block, n * 4096)?;
        file.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(rate)
}
