//! Model-based test: random appends, reads, rolls, reopens, retention, damaged indexes and
//! power cuts on `MemStorage`, checked against a plain `Vec`.
//!
//! Under `Always` nothing an append acknowledged is ever lost, even across power cuts; under
//! `Never` a power cut may lose a suffix, but what remains is a dense prefix of the model.

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use switchboard_core::{Clock, ManualClock, Timestamp};
use switchboard_storage::{FsyncPolicy, Log, LogConfig, MemStorage, Retention, StorageError};

use crate::common::*;

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<usize>),
    Read { at: u16, max_records: usize, max_bytes: usize },
    Roll,
    Reopen,
    Retention { max_bytes: Option<u64>, max_age_ms: Option<u64>, keep_from: Option<u16> },
    DeleteBefore(u16),
    PowerCut,
    Advance(u64),
    OffsetForTime(u16),
    DamageIndex(u16, u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec(0usize..300, 1..20).prop_map(Op::Append),
        4 => (any::<u16>(), 1usize..40, 0usize..3000)
            .prop_map(|(at, max_records, max_bytes)| Op::Read { at, max_records, max_bytes }),
        1 => Just(Op::Roll),
        1 => Just(Op::Reopen),
        1 => (
            proptest::option::of(0u64..20_000),
            proptest::option::of(0u64..60_000),
            proptest::option::of(any::<u16>())
        )
            .prop_map(|(max_bytes, max_age_ms, keep_from)| Op::Retention { max_bytes, max_age_ms, keep_from }),
        1 => any::<u16>().prop_map(Op::DeleteBefore),
        1 => Just(Op::PowerCut),
        2 => (1u64..8_000).prop_map(Op::Advance),
        1 => any::<u16>().prop_map(Op::OffsetForTime),
        1 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Op::DamageIndex(a, b)),
    ]
}

#[derive(Default)]
struct Model {
    /// Every record ever appended and not lost, by offset: (payload, timestamp).
    records: Vec<(Bytes, Timestamp)>,
    start: u64,
}

impl Model {
    fn end(&self) -> u64 {
        self.records.len() as u64
    }

    /// An offset from a little below the start to a little past the end.
    fn pick(&self, at: u16) -> u64 {
        let lo = self.start.saturating_sub(2);
        let span = self.end() + 3 - lo;
        lo + u64::from(at) % span
    }
}

struct Harness {
    storage: MemStorage,
    clock: ManualClock,
    config: LogConfig,
    log: Log,
    model: Model,
}

impl Harness {
    fn reopen(&mut self) {
        self.log = open_mem(&self.storage, &self.config, &self.clock);
    }

    fn check_invariants(&self) {
        assert_eq!(self.log.end_offset(), self.model.end(), "end offset");
        assert_eq!(self.log.start_offset(), self.model.start, "start offset");
        assert!(self.log.segment_count() >= 1);
    }

    fn check_read(&self, from: u64, max_records: usize, max_bytes: usize) {
        let got = self.log.read(from, max_records, max_bytes);
        if from < self.model.start {
            match got {
                Err(StorageError::OffsetOutOfRange { requested, start, end }) => {
                    assert_eq!((requested, start, end), (from, self.model.start, self.model.end()));
                }
                other => panic!("read({from}) below start {}: {other:?}", self.model.start),
            }
            return;
        }
        let got = got.unwrap();
        let mut expected = Vec::new();
        let mut bytes = 0;
        for offset in from..self.model.end() {
            let (payload, ts) = &self.model.records[offset as usize];
            if expected.len() >= max_records
                || (!expected.is_empty() && (bytes >= max_bytes || bytes + payload.len() > max_bytes))
            {
                break;
            }
            bytes += payload.len();
            expected.push((offset, payload.clone(), *ts));
        }
        let got: Vec<_> = got.into_iter().map(|r| (r.offset, r.payload, r.timestamp)).collect();
        assert_eq!(got, expected, "read({from}, {max_records}, {max_bytes})");
    }

    async fn apply(&mut self, op: Op) {
        match op {
            Op::Append(sizes) => {
                let end = self.model.end();
                let batch: Vec<Bytes> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &size)| {
                        let offset = end + i as u64;
                        let mut v = vec![offset as u8; size];
                        if size >= 8 {
                            v[..8].copy_from_slice(&offset.to_le_bytes());
                        }
                        Bytes::from(v)
                    })
                    .collect();
                let a = self.log.append(&batch).await.unwrap();
                assert_eq!((a.base_offset, a.count as usize), (end, batch.len()));
                let last = self.model.records.last().map(|r| r.1).unwrap_or(Timestamp::ZERO);
                assert_eq!(a.timestamp, self.clock.now().max(last));
                self.model.records.extend(batch.into_iter().map(|b| (b, a.timestamp)));
            }
            Op::Read { at, max_records, max_bytes } => {
                self.check_read(self.model.pick(at), max_records, max_bytes);
            }
            Op::Roll => self.log.roll().unwrap(),
            Op::Reopen => self.reopen(),
            Op::Retention { max_bytes, max_age_ms, keep_from } => {
                let keep_from = keep_from.map(|k| self.model.pick(k));
                let old_start = self.model.start;
                let size_before = self.log.size_bytes();
                let retention = Retention { max_age_ms, max_bytes };
                let r = self.log.apply_retention(&retention, keep_from).unwrap();
                let new_start = self.log.start_offset();
                assert_eq!(r.start_offset, new_start);
                assert!(new_start >= old_start && new_start <= self.model.end());
                if let Some(k) = keep_from {
                    assert!(new_start <= old_start.max(k), "deleted offsets >= keep_from {k}");
                }
                assert_eq!(self.log.size_bytes(), size_before - r.bytes_deleted);
                if r.segments_deleted > 0 {
                    let cutoff = self.clock.now().as_millis().saturating_sub(max_age_ms.unwrap_or(0));
                    let all_old =
                        (old_start..new_start).all(|o| self.model.records[o as usize].1.as_millis() < cutoff);
                    let by_age = max_age_ms.is_some() && all_old;
                    let by_bytes = max_bytes.is_some_and(|m| self.log.size_bytes() + r.bytes_deleted > m);
                    assert!(by_age || by_bytes, "deleted without reason: {r:?}");
                } else {
                    assert_eq!(new_start, old_start);
                }
                self.model.start = new_start;
            }
            Op::DeleteBefore(at) => {
                let offset = self.model.pick(at);
                let old_start = self.model.start;
                let r = self.log.delete_segments_before(offset).unwrap();
                assert!(r.start_offset >= old_start && r.start_offset <= old_start.max(offset));
                self.model.start = r.start_offset;
            }
            Op::PowerCut => {
                self.storage.power_cut();
                self.reopen();
                let end = self.log.end_offset();
                if self.config.fsync == FsyncPolicy::Always {
                    assert_eq!(end, self.model.end(), "an acknowledged append was lost");
                } else {
                    assert!(end <= self.model.end() && end >= self.model.start, "end {end}");
                    self.model.records.truncate(end as usize);
                }
            }
            Op::Advance(ms) => self.clock.advance(Duration::from_millis(ms)),
            Op::OffsetForTime(at) => {
                let lo = self.model.start as usize;
                let retained = &self.model.records[lo..];
                let t = match retained.get(usize::from(at) % (retained.len() + 1)) {
                    Some((_, ts)) => Timestamp(ts.as_millis() - u64::from(at % 3)),
                    None => self.clock.now().saturating_add(Duration::from_millis(1)),
                };
                let expected = retained
                    .iter()
                    .position(|(_, ts)| *ts >= t)
                    .map_or(self.model.end(), |i| (lo + i) as u64);
                assert_eq!(self.log.offset_for_time(t).unwrap(), expected, "offset_for_time({t})");
            }
            Op::DamageIndex(which, at) => {
                let indexes: Vec<_> = self
                    .storage
                    .paths()
                    .into_iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "index" || e == "timeindex"))
                    .collect();
                if !indexes.is_empty() {
                    let path = &indexes[usize::from(which) % indexes.len()];
                    let len = self.storage.file_len(path).unwrap_or(0);
                    if len > 0 {
                        self.storage.corrupt(path, u64::from(at) % len);
                    }
                    self.reopen();
                }
            }
        }
        self.check_invariants();
    }
}

fn run(fsync: FsyncPolicy, segment_max_bytes: u64, index_interval_bytes: u32, ops: Vec<Op>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let storage = MemStorage::new();
        let clock = ManualClock::default();
        let config = LogConfig {
            fsync,
            segment_max_bytes,
            segment_max_age_ms: 20_000,
            index_interval_bytes,
            ..LogConfig::default()
        };
        let log = open_mem(&storage, &config, &clock);
        let mut h = Harness { storage, clock, config, log, model: Model::default() };
        for op in ops {
            h.apply(op).await;
        }
        // Finally everything retained reads back, in one go and across a reopen.
        h.check_read(h.model.start, usize::MAX, usize::MAX);
        h.reopen();
        h.check_invariants();
        h.check_read(h.model.start, usize::MAX, usize::MAX);
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn always_never_loses_acknowledged_appends(
        segment_max_bytes in 200u64..4096,
        index_interval in 1u32..600,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(FsyncPolicy::Always, segment_max_bytes, index_interval, ops);
    }

    #[test]
    fn never_keeps_a_dense_prefix(
        segment_max_bytes in 200u64..4096,
        index_interval in 1u32..600,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(FsyncPolicy::Never, segment_max_bytes, index_interval, ops);
    }

    #[test]
    fn interval_keeps_a_dense_prefix(
        segment_max_bytes in 200u64..4096,
        index_interval in 1u32..600,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(FsyncPolicy::Interval { ms: 1000 }, segment_max_bytes, index_interval, ops);
    }
}
