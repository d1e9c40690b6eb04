//! Regressions found by the fuzz targets in `fuzz/` (`storage_recovery`): log directories
//! whose segment names put offsets at the very top of the `u64` range, damaged sealed
//! segments, and an index that promises more than its segment holds.

use std::sync::Arc;

use bytes::Bytes;
use switchboard_core::ManualClock;
use switchboard_storage::fuzzing::{encode_batch, offset_index_file};
use switchboard_storage::{FsyncPolicy, Log, LogConfig, MemStorage, Storage, StorageError};

use crate::common::{dir, seg_path};

fn log_with_segment(base: u64, data: &[u8]) -> (MemStorage, Log) {
    let storage = MemStorage::new();
    storage.create_dir_all(&dir()).unwrap();
    let file = storage.open_file(&seg_path(&dir(), base, "log"), true).unwrap();
    file.write_at(data, 0).unwrap();
    let config = LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::default() };
    let log = Log::open(Arc::new(storage.clone()), dir(), config, Arc::new(ManualClock::default())).unwrap();
    (storage, log)
}

/// Reading a batch that ends exactly at `u64::MAX` stepped an unbounded offset range past it
/// (an overflow panic in debug builds).
#[test]
fn a_batch_ending_at_the_largest_offset_reads_back() {
    let base = u64::MAX - 3;
    let (_storage, log) =
        log_with_segment(base, &encode_batch(&[Bytes::from("a"), Bytes::from("b")], base, 5));
    assert_eq!(log.end_offset(), u64::MAX - 1);
    log.append_unsynced(&[Bytes::from("c")]).unwrap();
    assert_eq!(log.end_offset(), u64::MAX);
    let records = log.read(base, 10, usize::MAX).unwrap();
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![u64::MAX - 3, u64::MAX - 2, u64::MAX - 1]);
    assert_eq!(records[2].payload, Bytes::from("c"));
}

/// An append whose offsets would pass `u64::MAX` overflowed (a panic under the append lock
/// in debug builds); it is refused instead.
#[test]
fn an_append_past_the_largest_offset_is_refused() {
    let (_storage, log) = log_with_segment(u64::MAX - 1, &[]);
    let err = log.append_unsynced(&[Bytes::from("a"), Bytes::from("b")]).unwrap_err();
    assert!(
        matches!(err, StorageError::OffsetsExhausted { next, count: 2 } if next == u64::MAX - 1),
        "{err}"
    );
    assert_eq!(log.append_unsynced(&[Bytes::from("a")]).unwrap().base_offset, u64::MAX - 1);
    assert!(matches!(log.append_unsynced(&[Bytes::from("b")]), Err(StorageError::OffsetsExhausted { .. })));
    assert_eq!(log.read(u64::MAX - 1, 10, usize::MAX).unwrap().len(), 1);
}

/// A checksummed batch whose offsets pass `u64::MAX` overflowed in recovery's scan; it is a
/// bad batch, cut off like any corrupt tail.
#[test]
fn a_batch_whose_offsets_pass_the_largest_is_cut_off_at_open() {
    let (storage, log) = log_with_segment(u64::MAX, &encode_batch(&[Bytes::from("x")], u64::MAX, 5));
    assert_eq!((log.start_offset(), log.end_offset()), (u64::MAX, u64::MAX));
    assert_eq!(storage.file_len(&seg_path(&dir(), u64::MAX, "log")), Some(0));
}

/// A sealed segment that recovery keeps although damaged in the middle may hold batches past
/// the next segment's base; reads served those stale records instead of the next segment's
/// (found as "a second open serves something else than the first plus the append").
#[test]
fn a_damaged_sealed_segment_serves_only_its_own_offsets() {
    let storage = MemStorage::new();
    storage.create_dir_all(&dir()).unwrap();
    let mut first = encode_batch(&[Bytes::from("a")], 0, 5);
    first.extend(encode_batch(&[Bytes::from("stale-1"), Bytes::from("stale-2")], 1, 5));
    first.extend([0x46; 40]); // not a batch: damage, not a torn tail
    storage.open_file(&seg_path(&dir(), 0, "log"), true).unwrap().write_at(&first, 0).unwrap();
    storage.open_file(&seg_path(&dir(), 1, "log"), true).unwrap();
    let config = LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::default() };
    let log = Log::open(Arc::new(storage), dir(), config, Arc::new(ManualClock::default())).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (0, 1));
    log.append_unsynced(&[Bytes::from("b")]).unwrap();
    let records = log.read(0, 10, usize::MAX).unwrap();
    let got: Vec<(u64, Bytes)> = records.into_iter().map(|r| (r.offset, r.payload)).collect();
    assert_eq!(got, vec![(0, Bytes::from("a")), (1, Bytes::from("b"))]);
}

/// A sealed segment whose index header promises offsets its data does not hold (the index
/// says 0..15, the records end at 9): reads returned nothing at offset 9, so a reader waited
/// there forever, and the fuzz target saw an append vanish behind the gap on reopen
/// (its input is the seed `corpus/storage_recovery/seed-index-promises-more-than-its-segment`
/// of `fuzz/`). Now what is there is served and the gap is an error naming the segment.
#[test]
fn a_sealed_segment_short_of_what_its_index_promises_is_reported_not_skipped() {
    let storage = MemStorage::new();
    storage.create_dir_all(&dir()).unwrap();
    let rec = |o: u64| Bytes::from(format!("r{o}"));
    let mut first = encode_batch(&[rec(0), rec(1), rec(2)], 0, 5);
    first.extend(encode_batch(&(3..9).map(rec).collect::<Vec<_>>(), 3, 5));
    let len = first.len() as u64;
    storage.open_file(&seg_path(&dir(), 0, "log"), true).unwrap().write_at(&first, 0).unwrap();
    let index = offset_index_file(len, 0, 15);
    storage.open_file(&seg_path(&dir(), 0, "index"), true).unwrap().write_at(&index, 0).unwrap();
    let second = encode_batch(&[rec(15)], 15, 6);
    storage.open_file(&seg_path(&dir(), 15, "log"), true).unwrap().write_at(&second, 0).unwrap();
    let config = LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::default() };
    let log = Log::open(Arc::new(storage), dir(), config, Arc::new(ManualClock::default())).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (0, 16));

    let served: Vec<u64> = log.read(0, 100, usize::MAX).unwrap().iter().map(|r| r.offset).collect();
    assert_eq!(served, (0..9).collect::<Vec<_>>(), "what the segment holds is served");
    match log.read(9, 100, usize::MAX) {
        Err(StorageError::Corrupt { .. }) => {}
        other => panic!("the gap at offset 9 must be an error, not {other:?}"),
    }
    assert_eq!(log.read(15, 1, usize::MAX).unwrap()[0].payload, rec(15), "the next segment still reads");
}
