//! Fault injection with `MemStorage`: torn and corrupt tails, corrupt sealed data, failed
//! writes and fsyncs, a full device, power cuts and damaged indexes.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchboard_core::{ManualClock, Timestamp};
use switchboard_storage::{
    Durability, FsyncPolicy, Log, LogConfig, MemStorage, Storage, StorageError, StorageFile,
};

use crate::common::*;

fn log_file(base: u64) -> std::path::PathBuf {
    seg_path(&dir(), base, "log")
}

/// Precondition: one segment holding three batches (2, 3 and 2 records of 20 bytes).
async fn three_batches(storage: &MemStorage, config: &LogConfig, clock: &ManualClock) -> (Log, Vec<u64>) {
    let log = open_mem(storage, config, clock);
    let mut ends = Vec::new();
    for (tag, n) in [(1u8, 2usize), (2, 3), (3, 2)] {
        log.append(&payloads(tag, n, 20)).await.unwrap();
        ends.push(storage.file_len(&log_file(0)).unwrap());
    }
    assert_eq!(log.segment_count(), 1);
    (log, ends)
}

#[tokio::test]
async fn torn_tail_recovers_to_last_whole_batch() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let config = LogConfig::default();
    let (log, ends) = three_batches(&storage, &config, &clock).await;
    drop(log);
    // Cut in the middle of the last batch, as a crash during its write would.
    storage.truncate_raw(&log_file(0), (ends[1] + ends[2]) / 2);
    let log = open_mem(&storage, &config, &clock);
    assert_eq!(log.end_offset(), 5);
    assert_eq!(storage.file_len(&log_file(0)), Some(ends[1]), "torn tail cut off");
    let mut expected = payloads(1, 2, 20);
    expected.extend(payloads(2, 3, 20));
    assert_eq!(payloads_of(&read_all(&log, 0)), expected);
    // Appends continue at the right offset, and survive another reopen.
    let a = log.append(&payloads(9, 1, 5)).await.unwrap();
    assert_eq!(a.base_offset, 5);
    drop(log);
    let log = open_mem(&storage, &config, &clock);
    assert_eq!(log.end_offset(), 6);
    assert_eq!(read_all(&log, 5)[0].payload, payloads(9, 1, 5)[0]);
}

#[tokio::test]
async fn torn_header_recovers_too() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let config = LogConfig::default();
    let (log, ends) = three_batches(&storage, &config, &clock).await;
    drop(log);
    storage.truncate_raw(&log_file(0), ends[1] + 10); // only part of the third header
    let log = open_mem(&storage, &config, &clock);
    assert_eq!(log.end_offset(), 5);
}

#[tokio::test]
async fn bad_checksum_in_the_tail_is_truncated_to_the_last_good_batch() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let config = LogConfig::default();
    let (log, ends) = three_batches(&storage, &config, &clock).await;
    drop(log);
    storage.corrupt(&log_file(0), ends[2] - 3); // a payload byte of the last batch
    let log = open_mem(&storage, &config, &clock);
    assert_eq!(log.end_offset(), 5);
    assert_eq!(storage.file_len(&log_file(0)), Some(ends[1]));
    assert_eq!(read_all(&log, 0).len(), 5);
    assert_eq!(log.append(&payloads(4, 1, 1)).await.unwrap().base_offset, 5);
}

#[tokio::test]
async fn bad_magic_in_the_tail_is_truncated() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let config = LogConfig::default();
    let (log, ends) = three_batches(&storage, &config, &clock).await;
    drop(log);
    storage.corrupt(&log_file(0), ends[0]); // magic of the second batch
    let log = open_mem(&storage, &config, &clock);
    assert_eq!(log.end_offset(), 2, "everything from the damaged batch on is dropped");
}

#[tokio::test]
async fn bad_checksum_in_a_sealed_segment_is_reported_never_served() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let config = LogConfig::default();
    let log = open_mem(&storage, &config, &clock);
    log.append(&payloads(1, 3, 50)).await.unwrap();
    log.append(&payloads(2, 3, 50)).await.unwrap();
    log.roll().unwrap();
    log.append(&payloads(3, 3, 50)).await.unwrap();
    assert_eq!(log.segment_count(), 2);
    let first_batch_len = 36 + 3 * 54;
    // A payload byte of the second batch of the sealed segment.
    storage.corrupt(&log_file(0), first_batch_len + 60);

    for log in [log.clone(), open_mem(&storage, &config, &clock)] {
        // The open did not scan the sealed segment (its index is fine), so the damage is found
        // on read: the first batch is still served, the second never.
        assert_eq!(log.end_offset(), 9);
        assert_eq!(payloads_of(&log.read(0, 3, usize::MAX).unwrap()), payloads(1, 3, 50));
        for from in [0, 3, 4] {
            let got = log.read(from, 10, usize::MAX);
            match got {
                Err(StorageError::Corrupt { path, position, .. }) => {
                    assert_eq!(path, log_file(0));
                    assert_eq!(position, first_batch_len);
                }
                other => panic!("read from {from}: expected Corrupt, got {other:?}"),
            }
        }
        // The healthy segment is unaffected.
        assert_eq!(payloads_of(&read_all(&log, 6)), payloads(3, 3, 50));
    }
}

#[tokio::test]
async fn failed_fsync_under_always_discards_the_batch_and_rewinds() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let config = LogConfig::default();
    let log = open_mem(&storage, &config, &clock);
    let mut end_rx = log.watch_end();
    log.append(&payloads(1, 2, 10)).await.unwrap();
    assert!(end_rx.has_changed().unwrap());
    assert_eq!(*end_rx.borrow_and_update(), 2);
    let len_before = storage.file_len(&log_file(0)).unwrap();

    storage.fail_next_sync();
    let err = log.append(&payloads(2, 3, 10)).await.unwrap_err();
    assert!(matches!(err, StorageError::Io { op: "fsync", .. }), "{err:?}");
    assert_eq!(log.end_offset(), 2);
    assert!(read_all(&log, 0).iter().all(|r| r.offset < 2));
    assert!(log.read(2, 10, 1000).unwrap().is_empty());
    assert_eq!(storage.file_len(&log_file(0)), Some(len_before), "file cut back to the durable length");
    assert!(!end_rx.has_changed().unwrap(), "readers were never told about it");

    // The next append works and gets the rewound offset.
    let a = log.append(&payloads(3, 1, 10)).await.unwrap();
    assert_eq!((a.base_offset, a.durability), (2, Durability::Fsynced));
    assert_eq!(payloads_of(&read_all(&log, 2)), payloads(3, 1, 10));

    // After a crash, the failed batch is not there either.
    storage.power_cut();
    drop(log);
    let log = open_mem(&storage, &config, &clock);
    assert_eq!(log.end_offset(), 3);
    assert_eq!(payloads_of(&read_all(&log, 2)), payloads(3, 1, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsync_fails_every_waiter_of_the_lost_data() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let log = open_mem(&storage, &LogConfig::default(), &clock);
    log.append(&payloads(0, 1, 8)).await.unwrap();
    storage.fail_next_sync();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8u8 {
        let log = log.clone();
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for i in 0..20u8 {
                if let Ok(a) = log.append(&[Bytes::from(vec![t, i])]).await {
                    acked.push((a.base_offset, vec![t, i]));
                }
            }
            acked
        });
    }
    let mut acked = Vec::new();
    while let Some(r) = tasks.join_next().await {
        acked.extend(r.unwrap());
    }
    assert!(acked.len() < 160, "the failed fsync failed some appends");
    // Everything acknowledged is there, at its offset, and nothing else is.
    let all = read_all(&log, 1);
    assert_eq!(all.len(), acked.len());
    acked.sort();
    for (rec, (offset, bytes)) in all.iter().zip(&acked) {
        assert_eq!((rec.offset, &rec.payload[..]), (*offset, &bytes[..]));
    }
}

#[tokio::test]
async fn enospc_fails_cleanly_and_appends_resume_when_space_returns() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let config = LogConfig::default();
    let log = open_mem(&storage, &config, &clock);
    log.append(&payloads(1, 4, 100)).await.unwrap();
    let len_before = storage.file_len(&log_file(0)).unwrap();
    storage.set_capacity(Some(storage.total_bytes() + 100));
    let err = log.append(&payloads(2, 4, 100)).await.unwrap_err();
    match &err {
        StorageError::NoSpace { path } => assert_eq!(path, &log_file(0)),
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(err.to_string().contains("no space left on device"));
    assert_eq!(storage.file_len(&log_file(0)), Some(len_before));
    assert_eq!(log.end_offset(), 4);
    assert_eq!(payloads_of(&read_all(&log, 0)), payloads(1, 4, 100));
    // A small one still fits.
    assert_eq!(log.append(&payloads(3, 1, 10)).await.unwrap().base_offset, 4);
    storage.set_capacity(None);
    assert_eq!(log.append(&payloads(2, 4, 100)).await.unwrap().base_offset, 5);
    assert_eq!(read_all(&log, 0).len(), 9);
}

#[tokio::test]
async fn torn_and_failed_writes_are_rolled_back() {
    for policy in [FsyncPolicy::Always, FsyncPolicy::Never] {
        let storage = MemStorage::new();
        let clock = ManualClock::default();
        let config = LogConfig { fsync: policy, ..LogConfig::default() };
        let log = open_mem(&storage, &config, &clock);
        log.append(&payloads(1, 2, 30)).await.unwrap();
        let len = storage.file_len(&log_file(0)).unwrap();

        storage.tear_next_write(40);
        assert!(matches!(log.append(&payloads(2, 2, 30)).await, Err(StorageError::Io { op: "write", .. })));
        assert_eq!(storage.file_len(&log_file(0)), Some(len), "torn part removed");
        storage.fail_next_write();
        assert!(log.append(&payloads(2, 2, 30)).await.is_err());
        assert_eq!(log.end_offset(), 2);

        assert_eq!(log.append(&payloads(3, 1, 30)).await.unwrap().base_offset, 2);
        log.sync().await.unwrap();
        drop(log);
        let log = open_mem(&storage, &config, &clock);
        assert_eq!(log.end_offset(), 3);
        let mut expected = payloads(1, 2, 30);
        expected.extend(payloads(3, 1, 30));
        assert_eq!(payloads_of(&read_all(&log, 0)), expected);
    }
}

#[tokio::test]
async fn power_cut_under_always_loses_nothing_acknowledged() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let config = small_config(FsyncPolicy::Always);
    let log = open_mem(&storage, &config, &clock);
    let mut expected = Vec::new();
    for i in 0..30u8 {
        let batch = payloads(i, 1 + usize::from(i % 4), 40);
        log.append(&batch).await.unwrap();
        expected.extend(batch);
    }
    assert!(log.segment_count() > 3);
    storage.power_cut();
    drop(log);
    let log = open_mem(&storage, &config, &clock);
    assert_eq!(payloads_of(&read_all(&log, 0)), expected);
}

#[tokio::test]
async fn power_cut_under_never_may_lose_recent_appends() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let config = LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::default() };
    let log = open_mem(&storage, &config, &clock);
    let a = log.append(&payloads(1, 3, 10)).await.unwrap();
    assert_eq!(a.durability, Durability::Written);
    log.sync().await.unwrap();
    log.append(&payloads(2, 3, 10)).await.unwrap();
    assert_eq!(log.end_offset(), 6, "visible at once");
    storage.power_cut();
    drop(log);
    let log = open_mem(&storage, &config, &clock);
    assert_eq!(log.end_offset(), 3, "what was not synced is gone");
    assert_eq!(payloads_of(&read_all(&log, 0)), payloads(1, 3, 10));
    assert_eq!(log.append(&payloads(3, 1, 1)).await.unwrap().base_offset, 3);
}

#[tokio::test]
async fn power_cut_under_never_with_unsynced_sealed_segments_keeps_a_dense_prefix() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let config = small_config(FsyncPolicy::Never);
    let log = open_mem(&storage, &config, &clock);
    for i in 0..20u8 {
        log.append(&payloads(i, 2, 100)).await.unwrap();
    }
    log.sync().await.unwrap();
    let durable_end = log.end_offset();
    for i in 20..40u8 {
        log.append(&payloads(i, 2, 100)).await.unwrap();
    }
    storage.power_cut();
    drop(log);
    let log = open_mem(&storage, &config, &clock);
    let end = log.end_offset();
    assert!(end >= durable_end, "what sync() covered survives");
    let all = read_all(&log, 0);
    assert_eq!(all.len() as u64, end);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.payload, payloads((i / 2) as u8, 2, 100)[i % 2]);
    }
}

#[tokio::test]
async fn missing_or_damaged_indexes_are_rebuilt() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let config = small_config(FsyncPolicy::Always);
    let log = open_mem(&storage, &config, &clock);
    let mut times = Vec::new();
    for i in 0..40u8 {
        clock.advance(Duration::from_millis(10));
        let a = log.append(&payloads(i, 1, 100)).await.unwrap();
        times.push(a.timestamp);
    }
    let bases = mem_segment_bases(&storage, &dir());
    assert!(bases.len() >= 4, "{bases:?}");
    let check = |log: &Log| {
        for from in [0u64, 1, 7, 13, 22, 39] {
            let r = log.read(from, 2, usize::MAX).unwrap();
            assert_eq!(r[0].offset, from);
            assert_eq!(r[0].payload, payloads(from as u8, 1, 100)[0]);
        }
        for (i, t) in times.iter().enumerate() {
            assert_eq!(log.offset_for_time(*t).unwrap(), i as u64);
        }
        assert_eq!(log.offset_for_time(Timestamp(0)).unwrap(), 0);
        assert_eq!(log.offset_for_time(Timestamp(u64::MAX)).unwrap(), 40);
    };
    check(&log);
    drop(log);

    // Segment 0: no .index; segment 1: damaged .index entries; segment 2: damaged header;
    // segment 3: damaged .timeindex.
    storage.remove_file(&seg_path(&dir(), bases[0], "index")).unwrap();
    let idx1 = seg_path(&dir(), bases[1], "index");
    storage.corrupt(&idx1, storage.file_len(&idx1).unwrap() - 3);
    storage.corrupt(&seg_path(&dir(), bases[2], "index"), 20);
    let t3 = seg_path(&dir(), bases[3], "timeindex");
    storage.corrupt(&t3, storage.file_len(&t3).unwrap() - 9);
    let log = open_mem(&storage, &config, &clock);
    check(&log);
    assert!(storage.exists(&seg_path(&dir(), bases[0], "index")), "rebuilt index written back");
    drop(log);
    // And the rewritten files are good.
    let log = open_mem(&storage, &config, &clock);
    check(&log);
}

#[tokio::test]
async fn interval_policy_syncs_in_the_background_and_retries_failures() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let config = LogConfig { fsync: FsyncPolicy::Interval { ms: 100 }, ..LogConfig::default() };
    let log = open_mem(&storage, &config, &clock);
    let syncs_at_open = storage.sync_count();
    log.append(&payloads(1, 1, 1)).await.unwrap();
    log.sync_if_due();
    assert_eq!(storage.sync_count(), syncs_at_open, "not due yet");
    clock.advance(Duration::from_millis(100));
    storage.fail_next_sync();
    log.sync_if_due();
    // The background round fails (and logs it); wait until it ran.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while storage.sync_count() == syncs_at_open {
        assert!(std::time::Instant::now() < deadline, "background fsync never ran");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // A later sync succeeds and covers the data.
    log.sync().await.unwrap();
    assert!(storage.sync_count() >= syncs_at_open + 2);
    // Explicit sync reports failures.
    log.append(&payloads(2, 1, 1)).await.unwrap();
    storage.fail_next_sync();
    assert!(log.sync().await.is_err());
    assert_eq!(log.end_offset(), 2, "under Interval the data stays");
    log.sync().await.unwrap();
    storage.power_cut();
    drop(log);
    assert_eq!(open_mem(&storage, &config, &clock).end_offset(), 2);
}

#[tokio::test]
async fn empty_and_oversized_batches_are_rejected() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let config = LogConfig { max_batch_bytes: 1000, ..LogConfig::default() };
    let log = open_mem(&storage, &config, &clock);
    assert!(matches!(log.append(&[]).await, Err(StorageError::EmptyBatch)));
    let err = log.append(&payloads(0, 1, 1000)).await.unwrap_err();
    assert!(matches!(err, StorageError::BatchTooLarge { size: 1040, max: 1000 }), "{err:?}");
    assert_eq!(storage.file_len(&log_file(0)), Some(0));
    assert_eq!(log.append(&payloads(0, 1, 960)).await.unwrap().base_offset, 0);
}

/// A storage whose files refuse `set_len`, to make a rollback fail.
#[derive(Debug)]
struct NoTruncate(MemStorage);

#[derive(Debug)]
struct NoTruncateFile(Arc<dyn StorageFile>);

impl StorageFile for NoTruncateFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_at(data, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn set_len(&self, _: u64) -> io::Result<()> {
        Err(io::Error::other("set_len refused"))
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Storage for NoTruncate {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.0.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<std::path::PathBuf>> {
        self.0.list_dir(path)
    }
    fn open_file(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(NoTruncateFile(self.0.open_file(path, create)?)))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.0.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.0.remove_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn exists(&self, path: &Path) -> bool {
        self.0.exists(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.0.sync_dir(path)
    }
}

#[tokio::test]
async fn a_failure_that_cannot_be_undone_poisons_the_log_until_reopened() {
    let mem = MemStorage::new();
    let clock = ManualClock::default();
    let log =
        Log::open(Arc::new(NoTruncate(mem.clone())), dir(), LogConfig::default(), Arc::new(clock.clone()))
            .unwrap();
    log.append(&payloads(1, 1, 10)).await.unwrap();
    mem.tear_next_write(5);
    assert!(matches!(log.append(&payloads(2, 1, 10)).await, Err(StorageError::Poisoned { .. })));
    let err = log.append(&payloads(3, 1, 10)).await.unwrap_err();
    assert!(err.to_string().contains("reopen"), "{err}");
    assert_eq!(payloads_of(&read_all(&log, 0)), payloads(1, 1, 10), "reads still work");
    drop(log);
    // Reopening cuts the torn bytes off.
    let log = open_mem(&mem, &LogConfig::default(), &clock);
    assert_eq!(log.end_offset(), 1);
    assert_eq!(log.append(&payloads(4, 1, 10)).await.unwrap().base_offset, 1);
}
