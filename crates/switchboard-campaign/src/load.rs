//! The load campaign: many topics and many concurrent connections at once. Each simulated
//! client has a TCP connection of its own, publishes batches round-robin to its share of
//! the topics, and consumes (and acks) a queue subscription on each of them over the same
//! connection. The server's memory, threads and open files are sampled from `/proc`.
//!
//! Every topic holds files (segments, indexes, the subscription's journal) and every client
//! a socket, so the server may need more open files than a default soft limit; the campaign
//! starts it with `ulimit -n` raised (`nofile`) and reports the limit it ran with.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use switchboard_proto::switchboard::v1 as api;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;

use crate::grpc::{self, Client, In, Out};
use crate::procfs;
use crate::report::{Report, verdict};
use crate::server::ServerSpec;

/// Concurrent calls that create the topics and subscriptions.
const CREATORS: usize = 16;
/// Time consumers get after the last publish to catch up.
const CATCH_UP: Duration = Duration::from_secs(3);
const ERROR_SAMPLES: usize = 5;

/// Settings of the load campaign.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The `switchboard` binary under test.
    pub server_bin: PathBuf,
    /// Topics, each with a queue subscription.
    pub topics: usize,
    /// Concurrent clients, each on its own connection.
    pub clients: usize,
    /// How long the clients publish.
    pub duration: Duration,
    /// Size of each message's data, bytes.
    pub message_bytes: usize,
    /// Messages per publish.
    pub batch: usize,
    /// The server's open-files limit, if it should be raised.
    pub nofile: Option<u64>,
}

impl LoadConfig {
    /// Defaults: 1000 topics, 200 clients, 20 s, batches of 10 messages of 256 bytes, the
    /// open-files limit raised to 65536.
    pub fn new(server_bin: PathBuf) -> LoadConfig {
        LoadConfig {
            server_bin,
            topics: 1000,
            clients: 200,
            duration: Duration::from_secs(20),
            message_bytes: 256,
            batch: 10,
            nofile: Some(65_536),
        }
    }
}

/// What the load campaign found.
#[derive(Debug, Default, Serialize)]
pub struct LoadReport {
    /// Topics.
    pub topics: usize,
    /// Clients (connections).
    pub clients: usize,
    /// Time to create the topics and subscriptions, s.
    pub setup_s: f64,
    /// Time clients published, s.
    pub duration_s: f64,
    /// Messages published.
    pub published: u64,
    /// Publish calls, failed ones included.
    pub publish_calls: u64,
    /// Failed publish calls.
    pub publish_errors: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Acks confirmed by the server.
    pub acked: u64,
    /// Failed acks and broken consume streams.
    pub consume_errors: u64,
    /// Failed operations over all operations (publish calls, acks, streams).
    pub error_rate: f64,
    /// Examples of errors.
    pub error_samples: Vec<String>,
    /// Published messages per second.
    pub publish_per_s: f64,
    /// Delivered messages per second.
    pub delivered_per_s: f64,
    /// Publish latency percentiles (p50, p99, max), ms.
    pub publish_latency_ms: (f64, f64, f64),
    /// Peak RSS of the server, KiB.
    pub peak_rss_kib: u64,
    /// Peak open files of the server.
    pub peak_fds: usize,
    /// Open files of the server after the clients left.
    pub final_fds: usize,
    /// Peak threads of the server.
    pub peak_threads: u64,
    /// The server's soft open-files limit.
    pub nofile_limit: String,
}

impl Report for LoadReport {
    fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.error_rate > 0.0 {
            v.push(format!("error rate {:.4}% (e.g. {:?})", self.error_rate * 100.0, self.error_samples));
        }
        if self.published == 0 || self.delivered == 0 {
            v.push("nothing was published or delivered, so nothing was measured".into());
        }
        v
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "load campaign: {} topics, {} clients (one connection each)", self.topics, self.clients)?;
        writeln!(f, "  setup {:.1} s; load {:.1} s", self.setup_s, self.duration_s)?;
        writeln!(
            f,
            "  published {} ({:.0}/s), delivered {} ({:.0}/s), acked {}",
            self.published, self.publish_per_s, self.delivered, self.delivered_per_s, self.acked
        )?;
        let (p50, p99, max) = self.publish_latency_ms;
        writeln!(f, "  publish latency p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms")?;
        writeln!(
            f,
            "  errors: {} publish calls of {}, {} consume; error rate {:.4}%",
            self.publish_errors,
            self.publish_calls,
            self.consume_errors,
            self.error_rate * 100.0
        )?;
        writeln!(
            f,
            "  server: peak RSS {} MiB, peak fds {} (after: {}), peak threads {}, open-files limit {}",
            self.peak_rss_kib / 1024,
            self.peak_fds,
            self.final_fds,
            self.peak_threads,
            self.nofile_limit
        )?;
        verdict(f, &self.violations())
    }
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    publish_calls: AtomicU64,
    publish_errors: AtomicU64,
    delivered: AtomicU64,
    acked: AtomicU64,
    consume_errors: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Counters {
    async fn error(&self, counter: &AtomicU64, what: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().await;
        if samples.len() < ERROR_SAMPLES {
            samples.push(what);
        }
    }
}

/// Runs the load campaign.
///
/// # Errors
/// The harness failed: the server did not start, topics could not be created, a client
/// could not connect.
pub async fn run(config: LoadConfig) -> anyhow::Result<LoadReport> {
    let work = tempfile::Builder::new().prefix("switchboard-load-").tempdir()?;
    let data = work.path().join("data");
    std::fs::create_dir_all(&data)?;
    let mut spec = ServerSpec::new(config.server_bin.clone(), data, work.path().join("server.log"))?;
    spec.nofile = config.nofile;
    let server = spec.start().await?;
    let pid = server.pid();
    let (soft, hard) = procfs::nofile_limits(&pid.to_string())?;
    let nofile_limit = format!("{soft} (hard {hard}; asked for {:?})", config.nofile);
    eprintln!("load: creating {} topics (server pid {pid}, open-files limit {nofile_limit})", config.topics);

    let names: Vec<String> = (0..config.topics).map(|i| format!("load-{i:05}")).collect();
    let setup = Instant::now();
    let mut creators = JoinSet::new();
    for w in 0..CREATORS {
        let mut client = grpc::client(spec.grpc)?;
        let mine: Vec<String> = names.iter().skip(w).step_by(CREATORS).cloned().collect();
        creators.spawn(async move {
            for name in mine {
                grpc::create_topic(&mut client, &name, grpc::topic_config(1)).await?;
                grpc::create_subscription(&mut client, &name, "work", grpc::queue_config(30_000, false))
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = creators.join_next().await {
        joined.context("a creator panicked")??;
    }
    let setup_s = setup.elapsed().as_secs_f64();

    eprintln!("load: {} clients for {:?}", config.clients, config.duration);
    let counters = Arc::new(Counters::default());
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample(pid, sampling.clone()));
    let (done_tx, done) = watch::channel(false);
    let started = Instant::now();
    let until = started + config.duration;
    let mut clients = JoinSet::new();
    for c in 0..config.clients {
        let topics: Vec<String> = names.iter().skip(c).step_by(config.clients).cloned().collect();
        let client = grpc::connected_client(spec.grpc).await?;
        let data = vec![b'l'; config.message_bytes];
        clients.spawn(run_client(client, topics, until, config.batch, data, counters.clone(), done.clone()));
    }
    let mut latencies = Vec::new();
    // Publishers stop at `until`; consumers get `CATCH_UP` more, then everything ends.
    tokio::time::sleep_until((until + CATCH_UP).into()).await;
    let _ = done_tx.send(true);
    while let Some(joined) = clients.join_next().await {
        latencies.extend(joined.context("a client panicked")?);
    }
    let duration_s = config.duration.as_secs_f64();
    // Let the server notice the closed connections before counting its files again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampling.store(false, Ordering::Relaxed);
    let (peak_rss_kib, peak_fds, peak_threads) = sampler.await.context("the sampler panicked")?;
    let final_fds = procfs::open_fds(pid)?;
    server.sigterm().await?;

    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(i).map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    let c = &counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let errors = load(&c.publish_errors) + load(&c.consume_errors);
    let operations = load(&c.publish_calls) + load(&c.acked) + load(&c.consume_errors);
    Ok(LoadReport {
        topics: config.topics,
        clients: config.clients,
        setup_s,
        duration_s,
        published: load(&c.published),
        publish_calls: load(&c.publish_calls),
        publish_errors: load(&c.publish_errors),
        delivered: load(&c.delivered),
        acked: load(&c.acked),
        consume_errors: load(&c.consume_errors),
        error_rate: if operations == 0 { 0.0 } else { errors as f64 / operations as f64 },
        error_samples: c.samples.lock().await.clone(),
        publish_per_s: load(&c.published) as f64 / duration_s,
        delivered_per_s: load(&c.delivered) as f64 / duration_s,
        publish_latency_ms: (pct(0.5), pct(0.99), pct(1.0)),
        peak_rss_kib,
        peak_fds,
        final_fds,
        peak_threads,
        nofile_limit,
    })
}

/// One client: a consumer per topic and a publishing loop, on one connection. Returns the
/// publish latencies, µs.
async fn run_client(
    mut client: Client,
    topics: Vec<String>,
    until: Instant,
    batch: usize,
    data: Vec<u8>,
    counters: Arc<Counters>,
    done: watch::Receiver<bool>,
) -> Vec<u32> {
    let mut consumers = JoinSet::new();
    for topic in &topics {
        consumers.spawn(consume(client.clone(), topic.clone(), counters.clone(), done.clone()));
    }
    let mut latencies = Vec::new();
    let mut n = 0u64;
    'publishing: while Instant::now() < until {
        for topic in &topics {
            if Instant::now() >= until {
                break 'publishing;
            }
            let events = (0..batch).map(|i| grpc::event(format!("{n}-{i}"), None, data.clone())).collect();
            n += 1;
            let request = api::PublishRequest { topic: topic.clone(), events, deliver_at: None };
            let start = Instant::now();
            counters.publish_calls.fetch_add(1, Ordering::Relaxed);
            match client.publish(request).await {
                Ok(_) => {
                    latencies.push(u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX));
                    counters.published.fetch_add(batch as u64, Ordering::Relaxed);
                }
                Err(s) => counters.error(&counters.publish_errors, grpc::describe(&s)).await,
            }
        }
    }
    while consumers.join_next().await.is_some() {}
    latencies
}

/// Consumes a topic's queue subscription, acking each batch, until `done`.
async fn consume(
    mut client: Client,
    topic: String,
    counters: Arc<Counters>,
    mut done: watch::Receiver<bool>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let open = api::consume_request::Open { topic: topic.clone(), subscription: "work".into(), credits: 100 };
    let _ = tx.send(api::ConsumeRequest { request_id: 0, request: Some(In::Open(open)) }).await;
    let mut inbound = match client.consume(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            return counters
                .error(&counters.consume_errors, format!("{topic}: {}", grpc::describe(&s)))
                .await;
        }
    };
    let mut request_id = 1;
    loop {
        let message = tokio::select! {
            _ = done.wait_for(|d| *d) => return,
            m = inbound.message() => m,
        };
        match message {
            Ok(Some(api::ConsumeResponse { response: Some(Out::Deliveries(d)) })) => {
                let n = d.deliveries.len();
                counters.delivered.fetch_add(n as u64, Ordering::Relaxed);
                let receipts = d.deliveries.into_iter().map(|d| d.receipt).collect();
                let ack = In::Ack(api::consume_request::Ack { receipts });
                let credit =
                    In::Credit(api::consume_request::Credit { credits: u32::try_from(n).unwrap_or(0) });
                if tx.send(api::ConsumeRequest { request_id, request: Some(ack) }).await.is_err()
                    || tx.send(api::ConsumeRequest { request_id: 0, request: Some(credit) }).await.is_err()
                {
                    return counters
                        .error(&counters.consume_errors, format!("{topic}: request stream closed"))
                        .await;
                }
                request_id += 1;
            }
            Ok(Some(api::ConsumeResponse { response: Some(Out::Settled(s)) })) => {
                for outcome in s.outcomes {
                    match outcome.error {
                        None => counters.acked.fetch_add(1, Ordering::Relaxed),
                        Some(e) => {
                            counters
                                .error(&counters.consume_errors, format!("{topic}: ack: {}", e.message))
                                .await;
                            0
                        }
                    };
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                return counters.error(&counters.consume_errors, format!("{topic}: stream ended")).await;
            }
            Err(s) => {
                return counters
                    .error(&counters.consume_errors, format!("{topic}: {}", grpc::describe(&s)))
                    .await;
            }
        }
    }
}

/// Samples the server's memory, files and threads every 500 ms while `on`; the peaks.
async fn sample(pid: u32, on: Arc<AtomicBool>) -> (u64, usize, u64) {
    let (mut rss, mut fds, mut threads) = (0, 0, 0);
    while on.load(Ordering::Relaxed) {
        if let Ok(m) = procfs::memory(pid) {
            rss = rss.max(m.rss_kib);
            threads = threads.max(m.threads);
        }
        if let Ok(n) = procfs::open_fds(pid) {
            fds = fds.max(n);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    (rss, fds, threads)
}
