//! Group commit: concurrent appenders under `Always` share fsyncs.

use std::sync::Arc;

use bytes::Bytes;
use switchboard_core::ManualClock;
use switchboard_storage::{Durability, LogConfig, MemStorage};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let config = LogConfig { segment_max_bytes: 64 * 1024, ..LogConfig::default() };
    let log = open_mem(&storage, &config, &clock);
    let syncs_before = storage.sync_count();
    const TASKS: u64 = 8;
    const PER_TASK: u64 = 200;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let log = log.clone();
        tasks.spawn(async move {
            // Each task keeps 16 appends in flight.
            let mut inflight = futures::stream::FuturesUnordered::new();
            let mut acked = Vec::new();
            for i in 0..PER_TASK {
                let log = log.clone();
                inflight.push(async move {
                    let payload = Bytes::from(format!("{t}:{i}"));
                    let a = log.append(std::slice::from_ref(&payload)).await.unwrap();
                    assert_eq!(a.durability, Durability::Fsynced);
                    assert!(log.end_offset() > a.base_offset, "visible once acknowledged");
                    (a.base_offset, payload)
                });
                if inflight.len() >= 16 {
                    acked.push(futures::StreamExt::next(&mut inflight).await.unwrap());
                }
            }
            while let Some(x) = futures::StreamExt::next(&mut inflight).await {
                acked.push(x);
            }
            acked
        });
    }
    let mut acked = Vec::new();
    while let Some(r) = tasks.join_next().await {
        acked.extend(r.unwrap());
    }
    let appends = TASKS * PER_TASK;
    let syncs = storage.sync_count() - syncs_before;
    assert!(syncs < appends, "{syncs} fsyncs for {appends} appends");
    // Offsets are dense and unique, and each holds what its append wrote.
    acked.sort();
    let all = read_all(&log, 0);
    assert_eq!(all.len() as u64, appends);
    for (rec, (offset, payload)) in all.iter().zip(&acked) {
        assert_eq!((rec.offset, &rec.payload), (*offset, payload));
    }
    eprintln!("group commit: {appends} appends, {syncs} fsyncs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_end_follows_appends() {
    let storage = MemStorage::new();
    let log = open_mem(&storage, &LogConfig::default(), &ManualClock::default());
    let mut rx = log.watch_end();
    let reader = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut seen = 0u64;
            let mut next = 0;
            while next < 100 {
                rx.wait_for(|end| *end > next).await.unwrap();
                let recs = log.read(next, usize::MAX, usize::MAX).unwrap();
                next = recs.last().unwrap().offset + 1;
                seen += recs.len() as u64;
            }
            seen
        })
    };
    for i in 0..100u32 {
        log.append(&[Bytes::from(i.to_le_bytes().to_vec())]).await.unwrap();
    }
    assert_eq!(reader.await.unwrap(), 100);
    let _ = Arc::strong_count(&Arc::new(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_after_concurrent_appends_across_rolls_loses_nothing_acknowledged() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    // Tiny segments: concurrent appends roll segments that are not yet durable, so the
    // fsync rounds must cover sealed segments too.
    let config = small_config(switchboard_storage::FsyncPolicy::Always);
    let log = open_mem(&storage, &config, &clock);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..4u8 {
        let log = log.clone();
        tasks.spawn(async move {
            let mut inflight = futures::stream::FuturesUnordered::new();
            for i in 0..100u8 {
                let log = log.clone();
                inflight.push(async move {
                    let payload = Bytes::from(vec![t, i, 0, 0, 0, 0, 0, 0, 0, 0]);
                    (log.append(std::slice::from_ref(&payload)).await.unwrap().base_offset, payload)
                });
            }
            let mut acked = Vec::new();
            while let Some(x) = futures::StreamExt::next(&mut inflight).await {
                acked.push(x);
            }
            acked
        });
    }
    let mut acked = Vec::new();
    while let Some(r) = tasks.join_next().await {
        acked.extend(r.unwrap());
    }
    assert!(log.segment_count() > 10);
    storage.power_cut();
    drop(log);
    let log = open_mem(&storage, &config, &clock);
    acked.sort();
    let all = read_all(&log, 0);
    assert_eq!(all.len(), acked.len());
    for (rec, (offset, payload)) in all.iter().zip(&acked) {
        assert_eq!((rec.offset, &rec.payload), (*offset, payload));
    }
}

/// Under `Always`, whatever a reader saw and whatever an append acknowledged is in a crash
/// image taken at any later instant, while appends are still in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_and_acks_only_ever_see_durable_data() {
    use std::sync::Mutex;
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let config = small_config(switchboard_storage::FsyncPolicy::Always);
    let log = open_mem(&storage, &config, &clock);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut appenders = tokio::task::JoinSet::new();
    for t in 0..4u8 {
        let log = log.clone();
        let acked = acked.clone();
        appenders.spawn(async move {
            let mut inflight = futures::stream::FuturesUnordered::new();
            for i in 0..150u8 {
                let log = log.clone();
                inflight.push(async move {
                    let payload = Bytes::from(vec![t, i, 7, 7, 7, 7]);
                    (log.append(std::slice::from_ref(&payload)).await.unwrap().base_offset, payload)
                });
                if inflight.len() >= 8 {
                    let done = futures::StreamExt::next(&mut inflight).await.unwrap();
                    acked.lock().unwrap().push(done);
                }
            }
            while let Some(done) = futures::StreamExt::next(&mut inflight).await {
                acked.lock().unwrap().push(done);
            }
        });
    }
    let mut images = Vec::new();
    let mut seen = Vec::new();
    while seen.len() < 600 {
        let mut rx = log.watch_end();
        let next = seen.len() as u64;
        rx.wait_for(|end| *end > next).await.unwrap();
        seen.extend(log.read(next, 50, usize::MAX).unwrap());
        if images.len() < 20 {
            // What was seen or acknowledged so far must be in an image taken now.
            let acked_now = acked.lock().unwrap().clone();
            images.push((storage.crash_image(), seen.len(), acked_now));
        }
    }
    while let Some(r) = appenders.join_next().await {
        r.unwrap();
    }
    for (image, seen_len, acked_then) in images {
        let recovered = open_mem(&image, &config, &clock);
        let all = read_all(&recovered, 0);
        assert!(all.len() >= seen_len, "a reader saw data a crash lost");
        for r in &seen[..seen_len] {
            assert_eq!(all[r.offset as usize].payload, r.payload);
        }
        for (offset, payload) in &acked_then {
            assert_eq!(&all[*offset as usize].payload, payload, "an acknowledged append was lost");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsynced_append_rides_on_the_next_group_commit() {
    let storage = MemStorage::new();
    let clock = ManualClock::default();
    let log = open_mem(&storage, &LogConfig::default(), &clock);
    let a = log.append_unsynced(&[Bytes::from_static(b"counter")]).unwrap();
    assert_eq!(a.durability, Durability::Written, "it did not wait for the fsync");
    let b = log.append(&[Bytes::from_static(b"ack")]).await.unwrap();
    assert_eq!((a.base_offset, b.base_offset), (0, 1));
    // The fsync that acknowledged the second append covers the first: both survive.
    storage.power_cut();
    let log = open_mem(&storage, &LogConfig::default(), &clock);
    assert_eq!(payloads_of(&read_all(&log, 0)), [Bytes::from_static(b"counter"), Bytes::from_static(b"ack")]);
}
