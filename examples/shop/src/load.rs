//! The load generator behind `shop load`: places orders on a storefront at a rate, follows
//! each until it is confirmed or canceled (one long poll at a time, `Prefer: wait`), and
//! measures checkout from the request to the final state.
//!
//! Open loop: when a rate is given, order `n` is due at `n / rate` seconds and its latency
//! counts from then, so a shop that falls behind shows it in the latency instead of
//! slowing the generator down (no coordinated omission). `--concurrency` bounds the
//! checkouts in flight.
//!
//! A request that fails in transport (the service is restarting) or answers 5xx is retried
//! with the same `Idempotency-Key` until the settle timeout: the generator is a well-behaved
//! client, and the test that kills the order service relies on exactly that.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

/// Products that a long run does not sell out of, so outcomes stay about checkout.
const PLENTIFUL: [&str; 4] = ["gift-card-25", "infuser-steel", "tea-earl-grey", "tea-sencha"];

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The storefront's base URL.
    pub storefront: String,
    /// How many orders to place.
    pub orders: u64,
    /// Orders per second (0: as fast as `concurrency` allows).
    pub rate: f64,
    /// The most checkouts in flight.
    pub concurrency: usize,
    /// The share of orders whose payment the simulated provider declines.
    pub decline_share: f64,
    /// How long an order may take to become final before it counts as unsettled.
    pub settle_timeout: Duration,
    /// Tells the keys of this run apart from other runs' (the same run retried reuses them).
    pub run_id: String,
}

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// Orders asked for.
    pub requested: u64,
    /// Orders the storefront accepted.
    pub placed: u64,
    /// Refused at once, by problem type (`out-of-stock`, …).
    pub rejected: BTreeMap<String, u64>,
    /// Confirmed.
    pub confirmed: u64,
    /// Canceled, by reason.
    pub canceled: BTreeMap<String, u64>,
    /// Still pending when the settle timeout passed.
    pub unsettled: u64,
    /// Requests retried after a transport error or a 5xx (placements and polls).
    pub retries: u64,
    /// The run's wall time, in seconds.
    pub seconds: f64,
    /// Checkouts that reached a final state per second of the run.
    pub checkouts_per_second: f64,
    /// Checkout latency, request to final state, in milliseconds.
    pub latency_ms: Latency,
}

/// Latency percentiles, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// The slowest.
    pub max: f64,
}

/// How one order ended.
enum Outcome {
    Rejected(String),
    Confirmed,
    Canceled(String),
    Unsettled,
}

struct Run {
    http: reqwest::Client,
    config: LoadConfig,
    retries: AtomicU64,
}

/// Runs `config`, calling `progress(done)` as orders finish.
///
/// # Errors
/// The storefront answers something that is not the order API.
pub async fn run(
    config: LoadConfig,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> anyhow::Result<LoadReport> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(config.concurrency.max(1)).build()?;
    let run = Arc::new(Run { http, config: config.clone(), retries: AtomicU64::new(0) });
    let latencies = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new(Vec::new()));
    let permits = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    let progress = Arc::new(progress);
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..config.orders {
        let due = if config.rate > 0.0 {
            started + Duration::from_secs_f64(n as f64 / config.rate)
        } else {
            Instant::now()
        };
        tokio::time::sleep_until(due).await;
        let permit = permits.clone().acquire_owned().await?;
        let (run, latencies, outcomes, progress, done) =
            (run.clone(), latencies.clone(), outcomes.clone(), progress.clone(), done.clone());
        tasks.spawn(async move {
            let outcome = run.checkout(n).await;
            drop(permit);
            if matches!(outcome, Ok(Outcome::Confirmed | Outcome::Canceled(_))) {
                let micros = due.elapsed().as_micros().max(1) as u64;
                let _ = latencies.lock().record(micros.min(600_000_000));
            }
            let outcome = outcome.unwrap_or_else(|e| Outcome::Rejected(format!("error: {e}")));
            outcomes.lock().push(outcome);
            progress(done.fetch_add(1, Ordering::Relaxed) + 1);
        });
    }
    while tasks.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();

    let mut report = LoadReport { requested: config.orders, seconds, ..LoadReport::default() };
    for outcome in outcomes.lock().drain(..) {
        match outcome {
            Outcome::Rejected(kind) => *report.rejected.entry(kind).or_default() += 1,
            Outcome::Confirmed => report.confirmed += 1,
            Outcome::Canceled(reason) => *report.canceled.entry(reason).or_default() += 1,
            Outcome::Unsettled => report.unsettled += 1,
        }
    }
    report.placed = report.confirmed + report.canceled.values().sum::<u64>() + report.unsettled;
    report.retries = run.retries.load(Ordering::Relaxed);
    let settled = report.confirmed + report.canceled.values().sum::<u64>();
    report.checkouts_per_second = if seconds > 0.0 { settled as f64 / seconds } else { 0.0 };
    let histogram = latencies.lock();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    report.latency_ms =
        Latency { p50: ms(0.5), p90: ms(0.9), p99: ms(0.99), max: histogram.max() as f64 / 1000.0 };
    Ok(report)
}

impl Run {
    /// Places order `n` and follows it to its end.
    async fn checkout(&self, n: u64) -> anyhow::Result<Outcome> {
        let deadline = Instant::now() + self.config.settle_timeout;
        let declines = self.config.decline_share > 0.0
            && (n as f64 * self.config.decline_share).floor()
                != ((n + 1) as f64 * self.config.decline_share).floor();
        let customer =
            if declines { format!("decline-{n}@load.example") } else { format!("c{n}@load.example") };
        let sku = PLENTIFUL[(n % PLENTIFUL.len() as u64) as usize];
        let body = serde_json::json!({
            "customer": customer,
            "lines": [{ "sku": sku, "quantity": 1 + n % 3 }],
        });
        let key = format!("load-{}-{n}", self.config.run_id);
        let url = format!("{}/orders", self.config.storefront);
        let placed = loop {
            let sent = self.http.post(&url).header("idempotency-key", &key).json(&body).send().await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    break response.json::<serde_json::Value>().await?;
                }
                Ok(response) => {
                    let server_error = response.status().is_server_error();
                    let problem: serde_json::Value = response.json().await.unwrap_or_default();
                    let kind =
                        problem["type"].as_str().and_then(|t| t.rsplit('/').next()).unwrap_or("unknown");
                    // A 5xx, or the first attempt still being handled (or dead): the same
                    // key, later. Any other refusal is the answer.
                    if !server_error && kind != "request-in-progress" {
                        return Ok(Outcome::Rejected(kind.to_owned()));
                    }
                }
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                return Ok(Outcome::Unsettled);
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let id = placed["id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("the storefront answered no order id: {placed}"))?;
        let order_url = format!("{}/orders/{id}", self.config.storefront);
        // One long poll at a time (`Prefer: wait`): the storefront answers when the order is
        // final, so latency is measured without polling's granularity or cost.
        loop {
            let answer = self.http.get(&order_url).header("prefer", "wait=10").send().await;
            let answer_failed = !answer.as_ref().is_ok_and(|r| r.status().is_success());
            if answer_failed {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            if let Ok(response) = answer
                && response.status().is_success()
            {
                let order: serde_json::Value = response.json().await?;
                match order["status"].as_str() {
                    Some("confirmed") => return Ok(Outcome::Confirmed),
                    Some("canceled") => {
                        let reason = order["cancel_reason"].as_str().unwrap_or("unknown");
                        return Ok(Outcome::Canceled(reason.to_owned()));
                    }
                    _ => {}
                }
            }
            if Instant::now() >= deadline {
                return Ok(Outcome::Unsettled);
            }
            if answer_failed {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
