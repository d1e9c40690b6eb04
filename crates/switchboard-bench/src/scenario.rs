//! The scenarios, each driven the same way against every target.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::payload;
use crate::target::{Shape, Target};

/// One of the comparison's scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// Queue, 1 KiB messages: confirmed publishes and consume + ack at saturation.
    A,
    /// Queue, 16-byte messages.
    B,
    /// Log replay: publish N × 100 bytes, then a fresh reader reads them from the start.
    C,
    /// Latency at a fixed offered rate (1 KiB), measured from the intended send time.
    D,
    /// Fan-out: one topic, 4 subscriptions, every message to each.
    E,
}

impl Scenario {
    /// Every scenario, in order.
    pub(crate) const ALL: [Scenario; 5] = [Scenario::A, Scenario::B, Scenario::C, Scenario::D, Scenario::E];

    /// A heading for tables and the chart.
    pub(crate) fn title(self, p: &Params) -> String {
        match self {
            Scenario::A => "A: queue, 1 KiB".into(),
            Scenario::B => "B: queue, 16 B".into(),
            Scenario::C => format!("C: log replay, {} × 100 B", p.replay_count),
            Scenario::D => format!("D: latency at {} msgs/s, 1 KiB", p.rate),
            Scenario::E => "E: fan-out to 4 subscriptions, 1 KiB".into(),
        }
    }

    /// What the scenario creates.
    pub(crate) fn shape(self) -> Shape {
        match self {
            Scenario::C => Shape::Log,
            Scenario::E => Shape::Queue { subscriptions: 4 },
            _ => Shape::Queue { subscriptions: 1 },
        }
    }
}

/// How hard and how long the scenarios push.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Params {
    /// Seconds each throughput or latency measurement lasts.
    pub(crate) secs: f64,
    /// Publisher tasks (each with its own client or channel).
    pub(crate) publishers: usize,
    /// Unconfirmed publishes each publisher may have outstanding.
    pub(crate) window: usize,
    /// Consumers per subscription in the queue scenarios (A, B).
    pub(crate) consumers: usize,
    /// Unacked messages each consumer may hold.
    pub(crate) prefetch: u32,
    /// Messages in the replay scenario (C).
    pub(crate) replay_count: u64,
    /// Offered rate of the latency scenario (D), msgs/s.
    pub(crate) rate: u64,
}

/// Latency percentiles, milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
    /// Messages measured.
    pub(crate) count: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Option<Latency> {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        (!h.is_empty()).then(|| Latency {
            p50: ms(0.5),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
            count: h.len(),
        })
    }
}

/// What one run of one scenario measured.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Figures {
    /// Confirmed publishes per second.
    pub(crate) publish_per_sec: Option<f64>,
    /// Messages received and settled per second (all subscriptions together).
    pub(crate) consume_per_sec: Option<f64>,
    /// End-to-end latency (send, or intended send, to receipt).
    pub(crate) latency: Option<Latency>,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// A unique topic name for one run (every target accepts it: letters, digits, dashes).
pub(crate) fn topic_name(scenario: Scenario, run: usize) -> String {
    let id = switchboard_core::new_message_id();
    let suffix: String = id.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    format!("bench-{scenario:?}-{run}-{suffix}").to_lowercase()
}

/// Runs `scenario` once on a fresh topic, and deletes the topic afterwards.
pub(crate) async fn run(target: &dyn Target, scenario: Scenario, p: &Params, run: usize) -> Result<Figures> {
    let topic = topic_name(scenario, run);
    let shape = scenario.shape();
    target.create(&topic, shape).await.context("creating the topic")?;
    let figures = match scenario {
        Scenario::A => throughput(target, &topic, 1024, 1, p.consumers, p).await,
        Scenario::B => throughput(target, &topic, 16, 1, p.consumers, p).await,
        Scenario::E => throughput(target, &topic, 1024, 4, 1, p).await,
        Scenario::C => replay(target, &topic, p).await,
        Scenario::D => fixed_rate(target, &topic, p).await,
    };
    let deleted = target.delete(&topic, shape).await;
    let figures = figures?;
    deleted.context("deleting the topic")?;
    Ok(figures)
}

/// What consumers counted inside the measured window.
#[derive(Default)]
struct Tally {
    received: u64,
    latency: Option<Histogram<u64>>,
}

/// Starts one consumer task per (subscription, consumer); each counts what arrives inside
/// `[start, end)` until `stop` turns true.
async fn start_consumers(
    target: &dyn Target,
    topic: &str,
    subscriptions: usize,
    per_subscription: usize,
    prefetch: u32,
    window: (Instant, Instant),
    stop: watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<Result<Tally>>>> {
    let mut tasks = Vec::new();
    for s in 0..subscriptions {
        for _ in 0..per_subscription {
            let mut consumer = target.consumer(topic, s, prefetch).await.context("opening a consumer")?;
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut tally = Tally { received: 0, latency: Some(histogram()) };
                while !*stop.borrow() {
                    let r = consumer.next(Duration::from_millis(100)).await?;
                    if r.at < window.0 || r.at >= window.1 {
                        continue;
                    }
                    for payload in &r.payloads {
                        tally.received += 1;
                        if let (Some(sent), Some(h)) = (payload::sent_at(payload), tally.latency.as_mut()) {
                            h.record(r.at.saturating_duration_since(sent).as_micros().max(1) as u64)?;
                        }
                    }
                }
                Ok(tally)
            }));
        }
    }
    Ok(tasks)
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Result<Tally>>>) -> Result<Tally> {
    let mut all = Tally { received: 0, latency: Some(histogram()) };
    for t in tasks {
        let tally = t.await??;
        all.received += tally.received;
        if let (Some(a), Some(b)) = (all.latency.as_mut(), tally.latency.as_ref()) {
            a.add(b)?;
        }
    }
    Ok(all)
}

/// Publishers and consumers at full speed for `p.secs`: scenarios A, B and E.
async fn throughput(
    target: &dyn Target,
    topic: &str,
    size: usize,
    subscriptions: usize,
    consumers_per_subscription: usize,
    p: &Params,
) -> Result<Figures> {
    let mut publishers = Vec::new();
    for _ in 0..p.publishers {
        publishers.push(target.publisher(topic).await.context("opening a publisher")?);
    }
    // The window opens once everything is connected.
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(p.secs);
    let (stop_tx, stop) = watch::channel(false);
    let consumers = start_consumers(
        target,
        topic,
        subscriptions,
        consumers_per_subscription,
        p.prefetch,
        (start, end),
        stop,
    )
    .await?;
    let window = p.window;
    let publishing: Vec<_> = publishers
        .into_iter()
        .map(|mut publisher| {
            tokio::spawn(async move {
                tokio::time::sleep_until(start.into()).await;
                let mut inflight = FuturesUnordered::new();
                let mut confirmed = 0u64;
                while Instant::now() < end {
                    while inflight.len() >= window {
                        if let Some(done) = inflight.next().await {
                            let () = done?;
                            if Instant::now() < end {
                                confirmed += 1;
                            }
                        }
                    }
                    let confirm = publisher.send(payload::stamped(Instant::now(), size)).await?;
                    inflight.push(confirm);
                }
                while let Some(done) = inflight.next().await {
                    done?;
                }
                anyhow::Ok(confirmed)
            })
        })
        .collect();
    let mut confirmed = 0;
    for t in publishing {
        confirmed += t.await??;
    }
    // Let consumers count what was published inside the window, then stop them.
    tokio::time::sleep_until(end.into()).await;
    let _ = stop_tx.send(true);
    let tally = collect(consumers).await?;
    let secs = p.secs;
    Ok(Figures {
        publish_per_sec: Some(confirmed as f64 / secs),
        consume_per_sec: Some(tally.received as f64 / secs),
        latency: tally.latency.as_ref().and_then(Latency::of),
    })
}

/// Scenario C: publish `p.replay_count` × 100 bytes, then read them all from the start.
async fn replay(target: &dyn Target, topic: &str, p: &Params) -> Result<Figures> {
    const WINDOW: usize = 1000;
    let mut publisher = target.publisher(topic).await?;
    let started = Instant::now();
    let mut inflight = FuturesUnordered::new();
    for _ in 0..p.replay_count {
        if inflight.len() >= WINDOW
            && let Some(done) = inflight.next().await
        {
            let () = done?;
        }
        let confirm = publisher.send(payload::stamped(Instant::now(), 100)).await?;
        inflight.push(confirm);
    }
    while let Some(done) = inflight.next().await {
        done?;
    }
    let publish_secs = started.elapsed().as_secs_f64();

    let mut reader = target.reader(topic).await?;
    let started = Instant::now();
    let mut read = 0u64;
    while read < p.replay_count {
        let r = reader.next(Duration::from_secs(10)).await?;
        if r.payloads.is_empty() {
            bail!("the reader stalled after {read} of {} messages", p.replay_count);
        }
        read += r.payloads.len() as u64;
    }
    let replay_secs = started.elapsed().as_secs_f64();
    Ok(Figures {
        publish_per_sec: Some(p.replay_count as f64 / publish_secs),
        consume_per_sec: Some(read as f64 / replay_secs),
        latency: None,
    })
}

/// Scenario D: `p.rate` msgs/s offered for `p.secs`, each stamped with its intended send
/// time; latency counts from that time, so a stall delays every later message's figure
/// instead of hiding it (no coordinated omission).
async fn fixed_rate(target: &dyn Target, topic: &str, p: &Params) -> Result<Figures> {
    let total = (p.rate as f64 * p.secs) as u64;
    let mut publisher = target.publisher(topic).await?;
    let mut consumer = target.consumer(topic, 0, p.prefetch).await?;
    let origin = Instant::now() + Duration::from_millis(200);
    let interval = Duration::from_nanos(1_000_000_000 / p.rate.max(1));
    // The pacer is an OS thread: tokio's timer rounds sleeps up to the millisecond, which
    // would count the client's own lateness against the broker.
    let (intended_tx, mut intended_rx) = mpsc::unbounded_channel::<Instant>();
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let at = origin + interval.saturating_mul(i as u32);
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if intended_tx.send(at).is_err() {
                return;
            }
        }
    });
    let publishing = tokio::spawn(async move {
        let mut inflight = FuturesUnordered::new();
        loop {
            tokio::select! {
                next = intended_rx.recv() => match next {
                    Some(at) => {
                        let confirm = publisher.send(payload::stamped(at, 1024)).await?;
                        inflight.push(confirm);
                    }
                    None => break,
                },
                Some(done) = inflight.next(), if !inflight.is_empty() => done?,
            }
        }
        while let Some(done) = inflight.next().await {
            done?;
        }
        anyhow::Ok(())
    });
    let mut hist = histogram();
    let mut got = 0u64;
    let deadline = origin + Duration::from_secs_f64(p.secs) + Duration::from_secs(30);
    while got < total && Instant::now() < deadline {
        let r = consumer.next(Duration::from_millis(500)).await?;
        for payload in &r.payloads {
            if let Some(sent) = payload::sent_at(payload) {
                hist.record(r.at.saturating_duration_since(sent).as_micros().max(1) as u64)?;
            }
        }
        got += r.payloads.len() as u64;
    }
    publishing.await??;
    let _ = pacer.join();
    if got < total {
        bail!("only {got} of {total} messages arrived within 30 s of the last send");
    }
    Ok(Figures {
        publish_per_sec: Some(total as f64 / p.secs),
        consume_per_sec: Some(got as f64 / p.secs),
        latency: Latency::of(&hist),
    })
}
