//! `FileStorage` on a temporary directory: the real file system end to end.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchboard_core::{ManualClock, Timestamp};
use switchboard_storage::{FileStorage, FsyncPolicy, Log, LogConfig, Retention, StorageError};

use crate::common::*;

fn open_file_log(dir: &std::path::Path, config: &LogConfig, clock: &ManualClock) -> Log {
    Log::open(Arc::new(FileStorage::new()), dir, config.clone(), Arc::new(clock.clone())).unwrap()
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("sb-storage-it").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn log_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn roundtrip_and_reopen() {
    let tmp = temp_dir();
    let dir = tmp.path().join("orders-0");
    let clock = ManualClock::default();
    for policy in [FsyncPolicy::Always, FsyncPolicy::Interval { ms: 10 }, FsyncPolicy::Never] {
        let _ = std::fs::remove_dir_all(&dir);
        let config = LogConfig { fsync: policy, ..LogConfig::default() };
        let log = open_file_log(&dir, &config, &clock);
        assert_eq!((log.start_offset(), log.end_offset()), (0, 0));
        assert!(log.read(0, 10, 100).unwrap().is_empty());
        let a = log.append(&[Bytes::from("hello"), Bytes::from(""), Bytes::from("world")]).await.unwrap();
        assert_eq!((a.base_offset, a.count, a.policy), (0, 3, policy));
        let b = log.append(&payloads(7, 10, 1000)).await.unwrap();
        assert_eq!(b.base_offset, 3);
        assert!(b.timestamp >= a.timestamp);
        log.sync().await.unwrap();
        let all = read_all(&log, 0);
        assert_eq!(all.len(), 13);
        assert_eq!(all[0].payload, Bytes::from("hello"));
        assert_eq!(all[1].payload, Bytes::new());
        // Starting inside a batch, and the limits.
        let some = log.read(4, 3, usize::MAX).unwrap();
        assert_eq!(some.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![4, 5, 6]);
        assert_eq!(log.read(4, 100, 2500).unwrap().len(), 2);
        assert_eq!(log.read(4, 100, 1).unwrap().len(), 1, "at least one record");
        drop(log);
        let log = open_file_log(&dir, &config, &clock);
        assert_eq!(log.end_offset(), 13);
        assert_eq!(payloads_of(&read_all(&log, 3)), payloads(7, 10, 1000));
        assert_eq!(log.append(&payloads(1, 1, 1)).await.unwrap().base_offset, 13);
    }
}

#[tokio::test]
async fn rolls_by_size_and_age() {
    let tmp = temp_dir();
    let clock = ManualClock::default();
    let config = LogConfig {
        segment_max_bytes: 4 * 1044,
        segment_max_age_ms: 60_000,
        index_interval_bytes: 512,
        ..LogConfig::default()
    };
    let log = open_file_log(tmp.path(), &config, &clock);
    for i in 0..20u8 {
        log.append(&payloads(i, 2, 500)).await.unwrap(); // ~1 KiB per batch
    }
    // 4 batches of 1044 bytes fill a segment, so 20 batches make 5 segments.
    assert_eq!(log.segment_count(), 5);
    assert_eq!(
        log_files(tmp.path()),
        [
            "00000000000000000000.log",
            "00000000000000000008.log",
            "00000000000000000016.log",
            "00000000000000000024.log",
            "00000000000000000032.log"
        ]
    );
    // A batch bigger than a segment goes alone into a fresh one.
    log.append(&payloads(99, 1, 10_000)).await.unwrap();
    log.append(&payloads(98, 1, 10)).await.unwrap();
    assert_eq!(log.segment_count(), 7);
    // Age: the active segment's first record is older than 60 s.
    clock.advance(Duration::from_secs(61));
    log.append(&payloads(97, 1, 10)).await.unwrap();
    assert_eq!(log.segment_count(), 8);
    log.roll().unwrap();
    log.roll().unwrap(); // no-op: the active segment is empty
    assert_eq!(log.segment_count(), 9);
    drop(log);
    let log = open_file_log(tmp.path(), &config, &clock);
    assert_eq!(log.segment_count(), 9);
    assert_eq!(log.end_offset(), 43);
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 43);
    for (i, r) in all.iter().take(40).enumerate() {
        assert_eq!(r.payload, payloads((i / 2) as u8, 2, 500)[i % 2]);
    }
    assert_eq!(all[40].payload.len(), 10_000);
    for from in 0..43 {
        assert_eq!(log.read(from, 1, 0).unwrap()[0].offset, from);
    }
}

#[tokio::test]
async fn retention_by_bytes_and_age() {
    let tmp = temp_dir();
    let clock = ManualClock::default();
    let config = LogConfig { segment_max_bytes: 4 * 1044, ..LogConfig::default() };
    let log = open_file_log(tmp.path(), &config, &clock);
    for i in 0..20u8 {
        clock.advance(Duration::from_secs(60));
        log.append(&payloads(i, 2, 500)).await.unwrap();
    }
    assert_eq!(log.segment_count(), 5);
    let seg_bytes = 4 * (36 + 2 * 504) as u64;
    assert_eq!(log.size_bytes(), 5 * seg_bytes);

    // Bytes: keep at most 3 segments' worth; keep_from protects offset 8 and up.
    let r = log
        .apply_retention(&Retention { max_age_ms: None, max_bytes: Some(3 * seg_bytes) }, Some(8))
        .unwrap();
    assert_eq!((r.segments_deleted, r.bytes_deleted, r.start_offset), (1, seg_bytes, 8));
    let r =
        log.apply_retention(&Retention { max_age_ms: None, max_bytes: Some(3 * seg_bytes) }, None).unwrap();
    assert_eq!((r.segments_deleted, r.start_offset), (1, 16));
    assert_eq!(log.size_bytes(), 3 * seg_bytes);
    assert!(!tmp.path().join("00000000000000000000.log").exists());
    assert!(!tmp.path().join("00000000000000000000.index").exists());
    assert!(!tmp.path().join("00000000000000000008.timeindex").exists());
    assert!(matches!(
        log.read(15, 1, 1),
        Err(StorageError::OffsetOutOfRange { requested: 15, start: 16, end: 40 })
    ));
    assert_eq!(log.read(16, 1, 1).unwrap()[0].payload, payloads(8, 2, 500)[0]);

    // Age: segment 16..24 has its newest record at minute 12, segment 24..32 at minute 16;
    // now is minute 20.
    let r = log.apply_retention(&Retention { max_age_ms: Some(5 * 60_000), max_bytes: None }, None).unwrap();
    assert_eq!((r.segments_deleted, r.start_offset), (1, 24));
    // The active segment is never deleted, however old.
    clock.advance(Duration::from_secs(86_400 * 365));
    let r = log.apply_retention(&Retention { max_age_ms: Some(1), max_bytes: Some(0) }, None).unwrap();
    assert_eq!((r.segments_deleted, r.start_offset), (1, 32));
    assert_eq!(log.segment_count(), 1);

    // delete_segments_before, and an empty log keeps its next offset across reopen.
    log.roll().unwrap();
    let r = log.delete_segments_before(40).unwrap();
    assert_eq!((r.segments_deleted, r.start_offset), (1, 40));
    assert_eq!((log.start_offset(), log.end_offset(), log.size_bytes()), (40, 40, 0));
    drop(log);
    let log = open_file_log(tmp.path(), &config, &clock);
    assert_eq!((log.start_offset(), log.end_offset()), (40, 40));
    assert_eq!(log.append(&payloads(1, 1, 1)).await.unwrap().base_offset, 40);
}

#[tokio::test]
async fn offset_for_time_finds_the_first_record_at_or_after() {
    let tmp = temp_dir();
    let clock = ManualClock::new(Timestamp(1_000_000));
    let config = LogConfig { segment_max_bytes: 2048, index_interval_bytes: 256, ..LogConfig::default() };
    let log = open_file_log(tmp.path(), &config, &clock);
    assert_eq!(log.offset_for_time(Timestamp(0)).unwrap(), 0);
    let mut stamps = Vec::new();
    for i in 0..50u8 {
        clock.advance(Duration::from_millis(10));
        let a = log.append(&payloads(i, 3, 60)).await.unwrap();
        stamps.push((a.base_offset, a.timestamp));
    }
    // The clock going back does not make timestamps go back.
    clock.set(Timestamp(5));
    let back = log.append(&payloads(0, 1, 1)).await.unwrap();
    assert_eq!(back.timestamp, stamps[49].1);
    assert!(log.segment_count() > 5);
    for (base, ts) in &stamps {
        assert_eq!(log.offset_for_time(*ts).unwrap(), *base);
        assert_eq!(log.offset_for_time(Timestamp(ts.0 - 5)).unwrap(), *base);
    }
    assert_eq!(log.offset_for_time(Timestamp(0)).unwrap(), 0);
    assert_eq!(log.offset_for_time(Timestamp(stamps[49].1.0 + 1)).unwrap(), log.end_offset());
    let r = log.delete_segments_before(60).unwrap();
    assert!(r.segments_deleted > 0);
    assert_eq!(log.offset_for_time(Timestamp(0)).unwrap(), log.start_offset());
}
