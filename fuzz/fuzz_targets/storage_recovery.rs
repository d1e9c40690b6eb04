//! Log recovery for real: a log directory (in memory, `MemStorage`) holding arbitrary
//! segment, index and leftover files is opened, read from start to end, searched by time,
//! appended to and opened again. See `switchboard_fuzz::RecoveryInput` for the input format.
//!
//! Never panics; errors are fine (a corrupt sealed segment is reported on read), but what is
//! read has dense offsets inside the log's range, an append lands at the end and is read
//! back, and a second open sees what the first one served plus the append.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchboard_core::{ManualClock, Timestamp};
use switchboard_fuzz::{
    FileKind, RECOVERY_FSYNC_ALWAYS, RECOVERY_RESEAL_INDEXES, RECOVERY_RESEAL_LOGS, RECOVERY_SMALL,
    RecoveryInput,
};
use switchboard_storage::fuzzing::{reseal_batches, reseal_index};
use switchboard_storage::{FsyncPolicy, Log, LogConfig, MemStorage, Record, Storage};

const DIR: &str = "/log";

fn open(storage: &MemStorage, config: &LogConfig, clock: &ManualClock) -> Option<Log> {
    Log::open(Arc::new(storage.clone()), DIR, config.clone(), Arc::new(clock.clone())).ok()
}

/// Everything from the start, or `None` if a read failed (corrupt data is reported, not
/// returned). Checks what it reads.
fn read_all(log: &Log) -> Option<Vec<Record>> {
    let (start, end) = (log.start_offset(), log.end_offset());
    assert!(start <= end);
    let mut out: Vec<Record> = Vec::new();
    let mut next = start;
    loop {
        let got = log.read(next, 64, 64 * 1024).ok()?;
        let Some(last) = got.last() else { break };
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.offset, next + i as u64, "offsets are dense");
            assert!(r.offset < end);
        }
        next = last.offset + 1;
        out.extend(got);
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let input = RecoveryInput::decode(data);
    let storage = MemStorage::new();
    let dir = PathBuf::from(DIR);
    if storage.create_dir_all(&dir).is_err() {
        return;
    }
    for f in &input.files {
        let mut bytes = f.data.clone();
        match f.kind {
            FileKind::Log if input.flags & RECOVERY_RESEAL_LOGS != 0 => reseal_batches(&mut bytes),
            FileKind::Index | FileKind::TimeIndex if input.flags & RECOVERY_RESEAL_INDEXES != 0 => {
                reseal_index(&mut bytes);
            }
            _ => {}
        }
        let path = dir.join(format!("{:020}.{}", f.base, f.kind.ext()));
        write(&storage, &path, &bytes);
    }
    let small = input.flags & RECOVERY_SMALL != 0;
    let config = LogConfig {
        fsync: if input.flags & RECOVERY_FSYNC_ALWAYS != 0 {
            FsyncPolicy::Always
        } else {
            FsyncPolicy::Never
        },
        segment_max_bytes: if small { 256 } else { LogConfig::default().segment_max_bytes },
        index_interval_bytes: if small { 64 } else { 4096 },
        ..LogConfig::default()
    };
    let clock = ManualClock::new(Timestamp(input.clock_ms));

    let Some(log) = open(&storage, &config, &clock) else { return };
    let first = read_all(&log);
    let found = log.offset_for_time(Timestamp(input.lookup_ms));
    if let Ok(offset) = found {
        assert!(offset <= log.end_offset());
    }
    let end = log.end_offset();
    let payload = Bytes::from(input.append.clone());
    let appended = log.append_unsynced(std::slice::from_ref(&payload));
    if let Ok(a) = &appended {
        assert_eq!(a.base_offset, end, "an append lands at the end");
        if config.fsync == FsyncPolicy::Never {
            let back = log.read(a.base_offset, 1, usize::MAX).expect("read back an append");
            assert_eq!(back.first().map(|r| &r.payload), Some(&payload));
        }
    }
    drop(log);

    let Some(log) = open(&storage, &config, &clock) else { return };
    let second = read_all(&log);
    if let (Some(first), Some(second), Ok(_)) = (first, second, &appended) {
        assert_eq!(second.len(), first.len() + 1, "reopening keeps what was served, plus the append");
        assert_eq!(second[..first.len()], first[..]);
        assert_eq!(second[first.len()].payload, payload);
    }
});

fn write(storage: &MemStorage, path: &Path, bytes: &[u8]) {
    if let Ok(file) = storage.open_file(path, true) {
        let _ = file.write_at(bytes, 0);
    }
}
