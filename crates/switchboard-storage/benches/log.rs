//! Log benchmarks on the real file system (a directory under the target dir, not tmpfs).
//!
//! - `append_always_8x64_1KiB`: `FsyncPolicy::Always`, 8 publisher tasks each keeping 64
//!   appends of one 1 KiB record in flight (group commit), on a multi-thread runtime.
//! - `append_never_batch100x100B`: `FsyncPolicy::Never`, batches of 100 records of 100 bytes.
//! - `replay_256MiB_1MiB_reads`: reads a 256 MiB log from the start in 1 MiB reads.
//!
//! Run with `cargo bench -p switchboard-storage --bench log`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use switchboard_core::SystemClock;
use switchboard_storage::{FileStorage, FsyncPolicy, Log, LogConfig, Retention};

const PUBLISHERS: usize = 8;
const IN_FLIGHT: usize = 64;
/// Appends per publisher per iteration of the `Always` benchmark.
const PER_PUBLISHER: usize = 512;
const RECORD: usize = 1024;

fn bench_dir(name: &str) -> tempfile::TempDir {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&root).expect("create bench dir");
    tempfile::Builder::new().prefix(name).tempdir_in(root).expect("create bench dir")
}

fn open(dir: &std::path::Path, fsync: FsyncPolicy) -> Log {
    let config = LogConfig { fsync, ..LogConfig::default() };
    Log::open(Arc::new(FileStorage::new()), dir, config, Arc::new(SystemClock)).expect("open log")
}

/// Keeps the log from filling the disk between measured stretches.
fn trim(log: &Log) {
    let retention = Retention { max_age_ms: None, max_bytes: Some(512 * 1024 * 1024) };
    log.apply_retention(&retention, None).expect("retention");
}

fn append_always(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("runtime");
    let dir = bench_dir("always");
    let log = open(dir.path(), FsyncPolicy::Always);
    let payload = Bytes::from(vec![0x5a; RECORD]);
    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Bytes((PUBLISHERS * PER_PUBLISHER * RECORD) as u64));
    group.bench_function("append_always_8x64_1KiB", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                rt.block_on(async {
                    let mut publishers = tokio::task::JoinSet::new();
                    for _ in 0..PUBLISHERS {
                        let log = log.clone();
                        let payload = payload.clone();
                        publishers.spawn(async move {
                            let mut inflight = FuturesUnordered::new();
                            for _ in 0..PER_PUBLISHER {
                                if inflight.len() >= IN_FLIGHT {
                                    let appended: Result<_, _> = inflight.next().await.expect("in flight");
                                    appended.expect("append");
                                }
                                let log = log.clone();
                                let payload = payload.clone();
                                inflight
                                    .push(async move { log.append(std::slice::from_ref(&payload)).await });
                            }
                            while let Some(appended) = inflight.next().await {
                                appended.expect("append");
                            }
                        });
                    }
                    while let Some(done) = publishers.join_next().await {
                        done.expect("publisher");
                    }
                });
                total += start.elapsed();
                trim(&log);
            }
            total
        })
    });
    group.finish();
}

fn append_never(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let dir = bench_dir("never");
    let log = open(dir.path(), FsyncPolicy::Never);
    let batch: Vec<Bytes> = (0..100).map(|i| Bytes::from(vec![i as u8; 100])).collect();
    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("append_never_batch100x100B", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(10_000);
                left -= n;
                let start = Instant::now();
                rt.block_on(async {
                    for _ in 0..n {
                        black_box(log.append(&batch).await.expect("append"));
                    }
                });
                total += start.elapsed();
                trim(&log);
            }
            total
        })
    });
    group.finish();
}

fn replay(c: &mut Criterion) {
    const LOG_BYTES: usize = 256 * 1024 * 1024;
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let dir = bench_dir("replay");
    let log = open(dir.path(), FsyncPolicy::Never);
    let batch: Vec<Bytes> = (0..64).map(|i| Bytes::from(vec![i as u8; RECORD])).collect();
    rt.block_on(async {
        while (log.size_bytes() as usize) < LOG_BYTES {
            log.append(&batch).await.expect("append");
        }
        log.sync().await.expect("sync");
    });
    let end = log.end_offset();
    let payload_bytes = end * RECORD as u64;
    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Bytes(payload_bytes));
    group.bench_function("replay_256MiB_1MiB_reads", |b| {
        b.iter(|| {
            let mut next = 0;
            let mut bytes = 0usize;
            while next < end {
                let records = log.read(next, usize::MAX, 1024 * 1024).expect("read");
                next = records.last().expect("records").offset + 1;
                bytes += records.iter().map(|r| r.payload.len()).sum::<usize>();
            }
            assert_eq!(bytes as u64, payload_bytes);
            black_box(bytes)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = append_always, append_never, replay
}
criterion_main!(benches);
