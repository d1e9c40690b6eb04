//! The slow-consumer campaign: DESIGN.md §6 says "slow consumers never grow the broker's
//! memory without bound". A queue consumer takes deliveries with a short lease and never
//! acks (its leases run out and the same messages come back, again and again), a stream
//! subscription is never read at all, and publishing goes on until the backlog on disk
//! reaches `backlog_mib`. The server's resident memory is sampled from `/proc` throughout.
//!
//! Pass: the peak RSS once the backlog is past 10% of its target exceeds the peak before
//! that point by no more than `bound_mib`, while the backlog grows tenfold. Publishing pauses
//! for a second at the first tenth, so the baseline has samples on any disk.
//!
//! The topic uses fsync `never`: what is measured is memory, and a disk's fsync rate would
//! only make the run longer.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use switchboard_proto::switchboard::v1 as api;
use tokio_stream::wrappers::ReceiverStream;

use crate::grpc::{self, Client, In, Out};
use crate::procfs;
use crate::report::{Report, verdict};
use crate::server::ServerSpec;

const TOPIC: &str = "backlog";
const QUEUE: &str = "laggard";
const STREAM: &str = "idle";
const PUBLISHERS: usize = 2;
/// Sampling continues this long after the last publish, while the consumer keeps cycling.
const TAIL: Duration = Duration::from_secs(3);

/// Settings of the slow-consumer campaign.
#[derive(Clone, Debug)]
pub struct SlowConsumerConfig {
    /// The `switchboard` binary under test.
    pub server_bin: PathBuf,
    /// Backlog to build on disk, MiB.
    pub backlog_mib: u64,
    /// Size of each message's data, KiB.
    pub message_kib: u64,
    /// Messages per publish.
    pub batch: usize,
    /// The consumer's lease, ms.
    pub lease_ms: u64,
    /// Allowed RSS growth after the first 10% of the backlog, MiB.
    pub bound_mib: u64,
    /// Time between samples, ms.
    pub sample_ms: u64,
}

impl SlowConsumerConfig {
    /// Defaults: a 1 GiB backlog of 64 KiB messages in batches of 16, 2 s leases, a 64 MiB
    /// bound, a sample every 50 ms.
    pub fn new(server_bin: PathBuf) -> SlowConsumerConfig {
        SlowConsumerConfig {
            server_bin,
            backlog_mib: 1024,
            message_kib: 64,
            batch: 16,
            lease_ms: 2_000,
            bound_mib: 64,
            sample_ms: 50,
        }
    }
}

/// One sample of the server.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    /// Taken before the backlog passed its first tenth (publishing pauses there, so the
    /// baseline has samples however fast the disk is).
    pub baseline: bool,
    /// Since the first publish, ms.
    pub t_ms: u64,
    /// Bytes of the topic on disk.
    pub backlog_bytes: u64,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Peak resident memory so far, KiB.
    pub hwm_kib: u64,
    /// Anonymous resident memory, KiB.
    pub anon_kib: u64,
    /// File-backed resident memory, KiB.
    pub file_kib: u64,
}

/// What the slow-consumer campaign found.
#[derive(Debug, Default, Serialize)]
pub struct SlowConsumerReport {
    /// The backlog aimed for, MiB.
    pub backlog_target_mib: u64,
    /// Messages published.
    pub published: u64,
    /// Bytes of the topic on disk at the end.
    pub backlog_bytes: u64,
    /// Deliveries the slow consumer took (none acked).
    pub deliveries: u64,
    /// The queue subscription's backlog at the end, from `Stats`.
    pub queue_backlog: u64,
    /// The stream subscription's backlog at the end, from `Stats`.
    pub stream_backlog: u64,
    /// Peak RSS while the backlog was under 10% of its target, KiB.
    pub baseline_rss_kib: u64,
    /// Samples taken while the backlog was under 10% of its target.
    pub baseline_samples: usize,
    /// Peak RSS after that, KiB.
    pub peak_rss_kib: u64,
    /// The bound on the difference, KiB.
    pub bound_kib: u64,
    /// `VmHWM` at the end, KiB.
    pub final_hwm_kib: u64,
    /// Publish throughput, MiB/s.
    pub publish_mib_per_s: f64,
    /// Every sample.
    pub samples: Vec<Sample>,
}

impl SlowConsumerReport {
    /// RSS growth after the first 10% of the backlog, KiB.
    pub fn growth_kib(&self) -> i64 {
        i64::try_from(self.peak_rss_kib).unwrap_or(i64::MAX)
            - i64::try_from(self.baseline_rss_kib).unwrap_or(0)
    }
}

impl Report for SlowConsumerReport {
    fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.growth_kib() > i64::try_from(self.bound_kib).unwrap_or(i64::MAX) {
            v.push(format!(
                "RSS grew by {} MiB after the first 10% of the backlog (bound {} MiB)",
                self.growth_kib() / 1024,
                self.bound_kib / 1024
            ));
        }
        if self.deliveries == 0 {
            v.push("the slow consumer received nothing, so it was no consumer at all".into());
        }
        if self.queue_backlog < self.published || self.stream_backlog < self.published {
            v.push(format!(
                "backlogs {} (queue) and {} (stream) are below the {} messages published, none acked",
                self.queue_backlog, self.stream_backlog, self.published
            ));
        }
        if self.baseline_samples < 3 || self.samples.len() < 10 {
            v.push(format!(
                "{} samples, {} before 10% of the backlog: too few to judge",
                self.samples.len(),
                self.baseline_samples
            ));
        }
        v
    }
}

impl std::fmt::Display for SlowConsumerReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "slow-consumer campaign")?;
        writeln!(
            f,
            "  backlog {} MiB on disk ({} messages, {:.0} MiB/s); consumer took {} deliveries, acked none; \
             subscription backlogs: queue {}, stream {}",
            self.backlog_bytes >> 20,
            self.published,
            self.publish_mib_per_s,
            self.deliveries,
            self.queue_backlog,
            self.stream_backlog
        )?;
        writeln!(
            f,
            "  {:>8} {:>12} {:>9} {:>9} {:>9} {:>9}",
            "t ms", "backlog MiB", "RSS MiB", "HWM MiB", "anon", "file"
        )?;
        let step = (self.samples.len() / 12).max(1);
        let last = self.samples.len().saturating_sub(1);
        for (_, s) in self.samples.iter().enumerate().filter(|(i, _)| i % step == 0 || *i == last) {
            writeln!(
                f,
                "  {:>8} {:>12} {:>9} {:>9} {:>9} {:>9}",
                s.t_ms,
                s.backlog_bytes >> 20,
                s.rss_kib / 1024,
                s.hwm_kib / 1024,
                s.anon_kib / 1024,
                s.file_kib / 1024
            )?;
        }
        writeln!(
            f,
            "  RSS peak before 10% of the backlog ({} samples) {} MiB, after {} MiB: growth {} MiB (bound {} MiB); final VmHWM {} MiB",
            self.baseline_samples,
            self.baseline_rss_kib / 1024,
            self.peak_rss_kib / 1024,
            self.growth_kib() / 1024,
            self.bound_kib / 1024,
            self.final_hwm_kib / 1024
        )?;
        verdict(f, &self.violations())
    }
}

/// Runs the slow-consumer campaign.
///
/// # Errors
/// The harness failed: the server did not start, a publish failed, `/proc` is unreadable.
pub async fn run(config: SlowConsumerConfig) -> anyhow::Result<SlowConsumerReport> {
    let work = tempfile::Builder::new().prefix("switchboard-slow-").tempdir()?;
    let data = work.path().join("data");
    std::fs::create_dir_all(&data)?;
    let spec = ServerSpec::new(config.server_bin.clone(), data, work.path().join("server.log"))?;
    let server = spec.start().await?;
    let pid = server.pid();
    let mut client = grpc::client(spec.grpc)?;
    let mut topic = grpc::topic_config(4);
    topic.fsync = api::FsyncPolicy::Never as i32;
    grpc::create_topic(&mut client, TOPIC, topic).await?;
    let mut queue = grpc::queue_config(config.lease_ms, false);
    queue.max_in_flight_per_consumer = Some(1000);
    grpc::create_subscription(&mut client, TOPIC, QUEUE, queue).await?;
    grpc::create_subscription(&mut client, TOPIC, STREAM, grpc::stream_config()).await?;
    eprintln!("slow-consumer: building a {} MiB backlog (server pid {pid})", config.backlog_mib);

    let deliveries = Arc::new(AtomicU64::new(0));
    let consumer = tokio::spawn(slow_consumer(client.clone(), deliveries.clone()));
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let baseline = Arc::new(AtomicBool::new(true));
    let sampler =
        tokio::spawn(sample(client.clone(), pid, started, config.sample_ms, baseline.clone(), done.clone()));

    let target = config.backlog_mib << 20;
    let sent = Arc::new(AtomicU64::new(0));
    let published = Arc::new(AtomicU64::new(0));
    let load = Load { client: client.clone(), sent, published: published.clone(), config: &config };
    // The first tenth, then a pause: on a fast disk the backlog would pass its first tenth
    // within a sample or two, leaving no baseline to compare with.
    load.publish_up_to(target / 10).await?;
    tokio::time::sleep(BASELINE_PAUSE).await;
    baseline.store(false, Ordering::Relaxed);
    load.publish_up_to(target).await?;
    let publish_time = started.elapsed();
    tokio::time::sleep(TAIL).await;
    done.store(true, Ordering::Relaxed);
    let samples = sampler.await.context("the sampler panicked")??;
    consumer.abort();

    let stats = |sub: &str| api::StatsRequest { topic: TOPIC.into(), subscription: sub.into() };
    let queue_backlog = client.stats(stats(QUEUE)).await.context("queue stats")?.into_inner().backlog;
    let stream_backlog = client.stats(stats(STREAM)).await.context("stream stats")?.into_inner().backlog;
    let final_hwm_kib = procfs::memory(pid)?.hwm_kib;
    server.sigterm().await?;

    let (before, after): (Vec<&Sample>, Vec<&Sample>) = samples.iter().partition(|s| s.baseline);
    let backlog_bytes = samples.last().map_or(0, |s| s.backlog_bytes);
    Ok(SlowConsumerReport {
        backlog_target_mib: config.backlog_mib,
        published: published.load(Ordering::Relaxed),
        backlog_bytes,
        deliveries: deliveries.load(Ordering::Relaxed),
        queue_backlog,
        stream_backlog,
        baseline_samples: before.len(),
        baseline_rss_kib: before.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        peak_rss_kib: after.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        bound_kib: config.bound_mib << 10,
        final_hwm_kib,
        publish_mib_per_s: backlog_bytes as f64 / 1_048_576.0 / publish_time.as_secs_f64().max(0.001),
        samples,
    })
}

/// How long publishing pauses once the backlog reaches its first tenth.
const BASELINE_PAUSE: Duration = Duration::from_secs(1);

/// Publishers filling the backlog.
struct Load<'a> {
    client: Client,
    sent: Arc<AtomicU64>,
    published: Arc<AtomicU64>,
    config: &'a SlowConsumerConfig,
}

impl Load<'_> {
    /// Publishes from several clients until `target` bytes have been sent in all.
    async fn publish_up_to(&self, target: u64) -> anyhow::Result<()> {
        let mut publishers = tokio::task::JoinSet::new();
        for p in 0..PUBLISHERS {
            let (mut client, sent, published) =
                (self.client.clone(), self.sent.clone(), self.published.clone());
            let data = vec![b'b'; usize::try_from(self.config.message_kib << 10)?];
            let batch = self.config.batch;
            publishers.spawn(async move {
                let mut n = 0u64;
                while sent.fetch_add(data.len() as u64 * batch as u64, Ordering::Relaxed) < target {
                    let id = |i| format!("p{p}-{target}-{n}-{i}");
                    let events = (0..batch).map(|i| grpc::event(id(i), None, data.clone())).collect();
                    n += 1;
                    client
                        .publish(api::PublishRequest { topic: TOPIC.into(), events, deliver_at: None })
                        .await
                        .map_err(|s| anyhow::anyhow!("publishing: {}", grpc::describe(&s)))?;
                    published.fetch_add(batch as u64, Ordering::Relaxed);
                }
                anyhow::Ok(())
            });
        }
        while let Some(joined) = publishers.join_next().await {
            joined.context("a publisher panicked")??;
        }
        Ok(())
    }
}

/// Samples the server until `done`.
async fn sample(
    mut client: Client,
    pid: u32,
    started: Instant,
    every_ms: u64,
    baseline: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(every_ms));
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        let topic = client
            .get_topic(api::GetTopicRequest { name: TOPIC.into() })
            .await
            .map_err(|s| anyhow::anyhow!("reading the topic: {}", grpc::describe(&s)))?
            .into_inner();
        let m = procfs::memory(pid).context("reading the server's memory")?;
        samples.push(Sample {
            baseline: baseline.load(Ordering::Relaxed),
            t_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            backlog_bytes: topic.partitions.iter().map(|p| p.size_bytes).sum(),
            rss_kib: m.rss_kib,
            hwm_kib: m.hwm_kib,
            anon_kib: m.anon_kib,
            file_kib: m.file_kib,
        });
    }
    Ok(samples)
}

/// Takes deliveries slowly (10 credits every 100 ms) and never acks; reopens its stream if it
/// breaks. Runs until aborted.
async fn slow_consumer(mut client: Client, deliveries: Arc<AtomicU64>) {
    loop {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let open =
            api::consume_request::Open { topic: TOPIC.into(), subscription: QUEUE.into(), credits: 100 };
        let _ = tx.send(api::ConsumeRequest { request_id: 0, request: Some(In::Open(open)) }).await;
        if let Ok(response) = client.consume(ReceiverStream::new(rx)).await {
            let mut inbound = response.into_inner();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let credit = In::Credit(api::consume_request::Credit { credits: 10 });
                        if tx.send(api::ConsumeRequest { request_id: 0, request: Some(credit) }).await.is_err() {
                            break;
                        }
                    }
                    m = inbound.message() => match m {
                        Ok(Some(api::ConsumeResponse { response: Some(Out::Deliveries(d)) })) => {
                            deliveries.fetch_add(d.deliveries.len() as u64, Ordering::Relaxed);
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    },
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
