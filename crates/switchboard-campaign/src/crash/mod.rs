//! The crash campaign: SIGKILL the server again and again under a writer and a reader, then
//! prove from their logs that nothing acknowledged was lost.
//!
//! The campaign starts `switchboard serve`, creates one topic with three subscriptions — a
//! plain queue, a queue ordered by key, and a stream — and starts the writer and reader
//! processes (module `worker`). It then SIGKILLs the server `kills` times at seeded random
//! intervals, restarting it each time on the same ports and data directory. Finally it
//! stops the writer, lets the reader drain, stops the server with SIGTERM, and runs the
//! checker (module `check`) over both logs.

mod check;
mod events;
mod reader;
mod worker;
mod writer;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use tokio::process::Child;

pub use check::{PublishFigures, SubscriptionCheck};
pub use worker::{Launcher, Role, SubKind, WORKER_ENV, WorkerSpec};

use crate::grpc;
use crate::report::{Report, epoch_ms, verdict};
use crate::server::ServerSpec;
use events::Event;

const TOPIC: &str = "crash";
/// Longer than any campaign, so every retried publish falls inside the dedup window.
const DEDUP_WINDOW_MS: u64 = 60 * 60_000;
/// Queue leases; short, so a delivery lost with a broken stream comes back soon.
const LEASE_MS: u64 = 5_000;
/// Extra time a worker gets to exit after its own deadline.
const EXIT_SLACK: Duration = Duration::from_secs(30);

/// Settings of a crash campaign.
#[derive(Clone, Debug)]
pub struct CrashConfig {
    /// The `switchboard` binary under test.
    pub server_bin: PathBuf,
    /// How to start the writer and reader processes.
    pub launcher: Launcher,
    /// SIGKILLs to survive.
    pub kills: u32,
    /// Mean time between kills; each interval is uniform in 0.5× to 1.5× of it.
    pub per_kill: Duration,
    /// Seed of the kill schedule (intervals and downtimes).
    pub seed: u64,
    /// Keys the writer publishes concurrently.
    pub keys: u32,
    /// Messages per second the writer aims for, over all keys.
    pub rate: u32,
    /// Partitions of the topic.
    pub partitions: u32,
    /// How long the reader may drain at the end.
    pub drain: Duration,
    /// Where to keep the data, logs and event logs; a temporary directory (kept only when
    /// the campaign fails) if unset.
    pub work_dir: Option<PathBuf>,
}

impl CrashConfig {
    /// Defaults: 5 kills about 5 s apart, 8 keys, 1000 messages/s, 4 partitions, a seed
    /// from the clock.
    pub fn new(server_bin: PathBuf, launcher: Launcher) -> CrashConfig {
        CrashConfig {
            server_bin,
            launcher,
            kills: 5,
            per_kill: Duration::from_secs(5),
            seed: epoch_ms(),
            keys: 8,
            rate: 1000,
            partitions: 4,
            drain: Duration::from_secs(60),
            work_dir: None,
        }
    }

    /// Sets the number of kills.
    pub fn kills(mut self, kills: u32) -> Self {
        self.kills = kills;
        self
    }

    /// Sets the mean time between kills.
    pub fn per_kill(mut self, per_kill: Duration) -> Self {
        self.per_kill = per_kill;
        self
    }

    /// Sets the writer's rate, messages per second.
    pub fn rate(mut self, rate: u32) -> Self {
        self.rate = rate;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// What a crash campaign found.
#[derive(Debug, Serialize)]
pub struct CrashReport {
    /// Seed of the kill schedule: the same seed replays the same schedule.
    pub seed: u64,
    /// Kills asked for.
    pub kills_requested: u32,
    /// Kills after which the server came back.
    pub kills_survived: u32,
    /// Restart times after each kill (recovery included), ms.
    pub restart_ms: Vec<u64>,
    /// Fewest publishes acknowledged between a restart and the next kill (or the end).
    pub min_acks_between_kills: u64,
    /// Wall time of the campaign, s.
    pub elapsed_s: f64,
    /// The writer's figures.
    pub publishes: PublishFigures,
    /// Times the reader's streams broke and were opened again.
    pub reader_reconnects: u64,
    /// Whether the final drain emptied every subscription.
    pub drained: bool,
    /// Backlog per subscription at the end of the drain.
    pub final_backlogs: Vec<(String, u64)>,
    /// Whether the server exited cleanly on the final SIGTERM.
    pub clean_shutdown: bool,
    /// Per subscription: lost, duplicates, redeliveries, order.
    pub subscriptions: Vec<SubscriptionCheck>,
    /// Where the data and logs are, when kept.
    pub work_dir: Option<PathBuf>,
}

impl CrashReport {
    /// Acknowledged publishes checked, over all subscriptions.
    pub fn messages_checked(&self) -> u64 {
        self.publishes.acked * self.subscriptions.len() as u64
    }
}

impl Report for CrashReport {
    fn violations(&self) -> Vec<String> {
        let mut v: Vec<String> = self.subscriptions.iter().flat_map(SubscriptionCheck::violations).collect();
        if self.kills_survived < self.kills_requested {
            v.push(format!("survived {} of {} kills", self.kills_survived, self.kills_requested));
        }
        if self.publishes.acked == 0 {
            v.push("no publish was acknowledged, so nothing was checked".into());
        }
        if !self.drained {
            v.push(format!("the reader could not drain the subscriptions: {:?}", self.final_backlogs));
        }
        if !self.clean_shutdown {
            v.push("the server did not exit cleanly on SIGTERM after the campaign".into());
        }
        v
    }
}

impl std::fmt::Display for CrashReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.publishes;
        writeln!(f, "crash campaign (seed {})", self.seed)?;
        writeln!(
            f,
            "  kills survived: {}/{} in {:.1} s; restart ms: {:?}",
            self.kills_survived, self.kills_requested, self.elapsed_s, self.restart_ms
        )?;
        writeln!(
            f,
            "  publishes acknowledged: {} ({} retried, {} absorbed by dedup, {} failed attempts); \
             fewest between kills: {}",
            p.acked, p.retried, p.dedup_absorbed, p.failed_attempts, self.min_acks_between_kills
        )?;
        writeln!(
            f,
            "  messages checked: {} ({} acked × {} subscriptions); reader reconnects: {}; drained: {}",
            self.messages_checked(),
            p.acked,
            self.subscriptions.len(),
            self.reader_reconnects,
            self.drained
        )?;
        for s in &self.subscriptions {
            writeln!(
                f,
                "  {:<8} deliveries {:>7}  distinct {:>7}  lost {}  duplicates beyond at-least-once {}  \
                 redeliveries {}  reordered {}{}  stored twice {}",
                s.name,
                s.deliveries,
                s.distinct,
                s.lost,
                s.duplicates_beyond_at_least_once,
                s.redeliveries,
                s.reordered,
                if s.order_promised { " (order promised)" } else { " (order not promised)" },
                s.stored_twice
            )?;
            if !s.samples.is_empty() {
                writeln!(f, "           e.g. {}", s.samples.join(", "))?;
            }
        }
        if let Some(dir) = &self.work_dir {
            writeln!(f, "  data and logs kept in {}", dir.display())?;
        }
        verdict(f, &self.violations())
    }
}

/// The subscriptions every crash campaign consumes.
fn subscriptions() -> Vec<(String, SubKind)> {
    vec![
        ("queue".to_owned(), SubKind::Queue),
        ("ordered".to_owned(), SubKind::OrderedQueue),
        ("stream".to_owned(), SubKind::Stream),
    ]
}

/// Runs a crash campaign.
///
/// # Errors
/// The harness failed: the server did not start or restart, a worker failed or hung, a log
/// is unreadable. What the campaign found about the broker is in the report.
pub async fn run(config: CrashConfig) -> anyhow::Result<CrashReport> {
    let started = Instant::now();
    let temp = match config.work_dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("switchboard-crash-").tempdir()?),
    };
    let dir = match (&config.work_dir, &temp) {
        (Some(dir), _) => dir.clone(),
        (None, temp) => temp.as_ref().context("no work directory")?.path().to_owned(),
    };
    let data = dir.join("data");
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let spec = ServerSpec::new(config.server_bin.clone(), data, dir.join("server.log"))?;
    eprintln!(
        "crash: seed {}; {} kills about {:?} apart; server {} (gRPC {}); work dir {}",
        config.seed,
        config.kills,
        config.per_kill,
        config.server_bin.display(),
        spec.grpc,
        dir.display()
    );
    let mut server = spec.start().await?;
    setup(&spec, config.partitions).await?;

    let worker = |role, file: &str| WorkerSpec {
        role,
        grpc: spec.grpc,
        topic: TOPIC.to_owned(),
        subscriptions: subscriptions(),
        keys: config.keys,
        rate: config.rate,
        drain_ms: u64::try_from(config.drain.as_millis()).unwrap_or(u64::MAX),
        events: dir.join(file),
    };
    let writer_spec = worker(Role::Writer, "writer.jsonl");
    let reader_spec = worker(Role::Reader, "reader.jsonl");
    let mut reader = config.launcher.command(&reader_spec)?.spawn().context("starting the reader")?;
    let mut writer = config.launcher.command(&writer_spec)?.spawn().context("starting the writer")?;

    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut restart_ms = Vec::new();
    // (restart, next kill) epoch ms of each stretch the server ran.
    let mut windows = Vec::new();
    let mut up_since = epoch_ms();
    for kill in 1..=config.kills {
        tokio::time::sleep(config.per_kill.mul_f64(rng.random_range(0.5..1.5))).await;
        for (name, child) in [("writer", &mut writer), ("reader", &mut reader)] {
            if let Some(status) = child.try_wait()? {
                bail!("the {name} exited during the campaign ({status}); see its stderr above");
            }
        }
        let at = epoch_ms();
        server.sigkill().await?;
        windows.push((up_since, at));
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        server = spec.start().await.with_context(|| format!("restarting the server after kill {kill}"))?;
        up_since = epoch_ms();
        let took = u64::try_from(server.start_time().as_millis()).unwrap_or(u64::MAX);
        restart_ms.push(took);
        eprintln!("crash: kill {kill}/{} survived (restart took {took} ms)", config.kills);
    }
    // The last stretch runs as long as the others before the writer stops.
    tokio::time::sleep(config.per_kill).await;
    windows.push((up_since, epoch_ms()));

    eprintln!("crash: stopping the writer, then draining the reader");
    stop(&mut writer, "writer", writer::STOP_GRACE + EXIT_SLACK).await?;
    stop(&mut reader, "reader", config.drain + EXIT_SLACK).await?;
    let clean_shutdown = server.sigterm().await?.success();

    let writer_log = events::read(&writer_spec.events)?;
    let reader_log = events::read(&reader_spec.events)?;
    let checks: Vec<SubscriptionCheck> = subscriptions()
        .into_iter()
        .map(|(name, kind)| check::subscription(&name, kind, &writer_log, &reader_log))
        .collect();
    let (drained, final_backlogs) = reader_log
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Finished { drained, backlogs, .. } => Some((*drained, backlogs.clone())),
            _ => None,
        })
        .context("the reader's log has no final event")?;
    let acked_at: Vec<u64> = writer_log
        .iter()
        .filter_map(|e| match e {
            Event::Acked { t_ms, .. } => Some(*t_ms),
            _ => None,
        })
        .collect();
    let min_acks_between_kills = windows
        .iter()
        .map(|(from, to)| acked_at.iter().filter(|t| (*from..*to).contains(*t)).count() as u64)
        .min()
        .unwrap_or(0);
    let mut report = CrashReport {
        seed: config.seed,
        kills_requested: config.kills,
        kills_survived: u32::try_from(restart_ms.len()).unwrap_or(u32::MAX),
        restart_ms,
        min_acks_between_kills,
        elapsed_s: started.elapsed().as_secs_f64(),
        publishes: check::publishes(&writer_log),
        reader_reconnects: reader_log.iter().filter(|e| matches!(e, Event::Reconnected { .. })).count()
            as u64,
        drained,
        final_backlogs,
        clean_shutdown,
        subscriptions: checks,
        work_dir: config.work_dir.clone(),
    };
    if !report.violations().is_empty()
        && let Some(temp) = temp
    {
        report.work_dir = Some(temp.keep());
    }
    Ok(report)
}

/// Creates the topic and its subscriptions.
async fn setup(spec: &ServerSpec, partitions: u32) -> anyhow::Result<()> {
    let mut client = grpc::client(spec.grpc)?;
    let mut topic = grpc::topic_config(partitions);
    topic.dedup_window_ms = Some(DEDUP_WINDOW_MS);
    grpc::create_topic(&mut client, TOPIC, topic).await?;
    for (name, kind) in subscriptions() {
        let config = match kind {
            SubKind::Queue => grpc::queue_config(LEASE_MS, false),
            SubKind::OrderedQueue => grpc::queue_config(LEASE_MS, true),
            SubKind::Stream => grpc::stream_config(),
        };
        grpc::create_subscription(&mut client, TOPIC, &name, config).await?;
    }
    Ok(())
}

/// Closes a worker's stdin (its signal to finish) and waits for a successful exit.
async fn stop(child: &mut Child, name: &str, within: Duration) -> anyhow::Result<()> {
    drop(child.stdin.take());
    let status = tokio::time::timeout(within, child.wait())
        .await
        .with_context(|| format!("the {name} did not finish within {within:?}"))?
        .with_context(|| format!("waiting for the {name}"))?;
    if !status.success() {
        bail!("the {name} failed ({status}); see its stderr above");
    }
    Ok(())
}
