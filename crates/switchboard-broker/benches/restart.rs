//! How long the broker takes to open against how much it retains: the restart time after a
//! crash. Not a criterion bench: each point fills a data directory (which takes far longer
//! than the open it measures) and opens it a few times.
//!
//! `cargo bench -p switchboard-broker --bench restart` (counts: `RESTART_COUNTS=100000,1000000`)
//!
//! Three directories grow side by side, one topic each, 100-byte messages, all published just
//! before the opens (so every id is inside the 5-minute dedup window, capped at 1M ids):
//!
//! - `plain`: dedup off, no subscription: opening the partition logs alone;
//! - `dedup`: the default dedup window, no subscription: the logs and the window's rebuild;
//! - `journal`: dedup off, a queue subscription that took and acked a tenth of the messages:
//!   the logs and the replay of its journal.
//!
//! Prints, per retained count, the median of three opens of each directory.

use std::path::Path;
use std::time::{Duration, Instant};

use switchboard_broker::{Broker, FsyncPolicy, PublishOptions, SubscriptionConfig, TopicConfig};
use switchboard_core::{Message, SubscriptionName, TopicName};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 1000;

fn topic() -> TopicName {
    TopicName::from_static("retained")
}

fn sub() -> SubscriptionName {
    SubscriptionName::from_static("workers")
}

/// What a directory holds besides the partition log.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Dedup,
    Journal,
}

async fn create(dir: &Path, kind: Kind) {
    let broker = Broker::open(dir).await.expect("open");
    let config = TopicConfig {
        fsync: FsyncPolicy::Never,
        dedup_window_ms: if kind == Kind::Dedup { TopicConfig::default().dedup_window_ms } else { 0 },
        ..TopicConfig::default()
    };
    broker.create_topic(&topic(), config).await.expect("topic");
    if kind == Kind::Journal {
        broker.create_subscription(&topic(), &sub(), SubscriptionConfig::queue()).await.expect("sub");
    }
    broker.close().await.expect("close");
}

/// Publishes up to `total` messages in all; the subscription takes and acks a tenth of them.
async fn grow(dir: &Path, from: u64, total: u64, kind: Kind) {
    let broker = Broker::open(dir).await.expect("open");
    let consumer =
        (kind == Kind::Journal).then(|| broker.queue_consumer(&topic(), &sub()).expect("consumer"));
    let mut n = from;
    while n < total {
        let count = BATCH.min((total - n) as usize);
        let batch = (0..count)
            .map(|i| Message::new("/b", "b", vec![b'x'; 100]).with_id(format!("m-{}", n + i as u64)))
            .collect();
        broker.publish_batch(&topic(), batch, PublishOptions::default()).await.expect("publish");
        n += count as u64;
        if let Some(c) = &consumer {
            let got = c.receive(count / 10, Duration::ZERO).await.expect("receive");
            let receipts: Vec<_> = got.iter().filter_map(|d| d.receipt).collect();
            c.ack_many(&receipts).await.expect("ack");
        }
    }
    broker.close().await.expect("close");
}

async fn open_median(dir: &Path) -> Duration {
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let broker = Broker::open(dir).await.expect("open");
        times.push(started.elapsed());
        broker.close().await.expect("close");
    }
    times.sort();
    times[1]
}

fn main() {
    let counts: Vec<u64> = std::env::var("RESTART_COUNTS")
        .unwrap_or_else(|_| "100000,1000000,3000000,10000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("a count"))
        .collect();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    // Under target/ (a real disk) rather than /tmp, which may be a tmpfs.
    let root = tempfile::tempdir_in(std::env::current_dir().expect("cwd")).expect("tempdir");
    let kinds = [("plain", Kind::Plain), ("dedup", Kind::Dedup), ("journal", Kind::Journal)];
    rt.block_on(async {
        for (name, kind) in kinds {
            create(&root.path().join(name), kind).await;
        }
        println!("retained messages | open: logs only (ms) | logs + dedup window (ms) | logs + subscription journal (ms)");
        let mut had = 0;
        for &count in &counts {
            let mut cells = Vec::new();
            for (name, kind) in kinds {
                let dir = root.path().join(name);
                grow(&dir, had, count, kind).await;
                cells.push(format!("{:.1}", open_median(&dir).await.as_secs_f64() * 1e3));
            }
            had = count;
            println!("{count} | {}", cells.join(" | "));
        }
    });
}
