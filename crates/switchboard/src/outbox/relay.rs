//! The relay: claims committed rows, publishes them in order per key, records what
//! happened, and keeps the table small.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::TopicName;
use switchboard_core::contract::BusError;
use switchboard_policy::{Backoff, Reconnect};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::database::{Outcome, Store};
use super::row::Row;
use super::{Outbox, OutboxDatabase, now_ms};
use crate::Bus;

/// How a relay works.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Rows claimed per round.
    pub batch: u32,
    /// Most messages in one publish call (consecutive rows for one topic go as one batch).
    pub publish_batch: usize,
    /// How often the relay looks for rows when nothing woke it.
    pub poll_interval: Duration,
    /// How long sent rows are kept (for audit and for replaying by hand) before deletion.
    pub retention: Duration,
    /// How often sent rows past the retention are deleted.
    pub purge_every: Duration,
    /// How often the depth and age gauges are refreshed.
    pub stats_every: Duration,
    /// Delay before a row whose publish failed is tried again, by its attempt count.
    pub backoff: Backoff,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch: 512,
            publish_batch: 256,
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(24 * 3600),
            purge_every: Duration::from_secs(60),
            stats_every: Duration::from_secs(5),
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(30),
                ..Backoff::default()
            },
        }
    }
}

impl RelayConfig {
    /// With `retention` for sent rows.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Polling every `interval` when nothing wakes the relay.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Claiming `rows` per round.
    pub fn with_batch(mut self, rows: u32) -> Self {
        self.batch = rows.max(1);
        self
    }

    /// Backing off failed rows by `backoff`.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows published.
    pub sent: usize,
    /// Rows that failed and wait for a retry.
    pub retried: usize,
    /// Rows parked for good.
    pub parked: usize,
    /// When the earliest row held back by a backoff is due (ms), if any.
    pub next_due: Option<i64>,
}

/// Publishes an outbox's committed rows to a bus.
pub struct Relay<DB: OutboxDatabase> {
    outbox: Outbox<DB>,
    bus: Bus,
    config: RelayConfig,
}

impl<DB: OutboxDatabase> std::fmt::Debug for Relay<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("outbox", &self.outbox).field("config", &self.config).finish()
    }
}

impl<DB: OutboxDatabase> Relay<DB> {
    /// A relay from `outbox` to `bus` with the default config.
    pub fn new(outbox: Outbox<DB>, bus: Bus) -> Self {
        Relay { outbox, bus, config: RelayConfig::default() }
    }

    /// With `config`.
    pub fn with_config(mut self, config: RelayConfig) -> Self {
        self.config = config;
        self
    }

    /// Runs one round now: claims, publishes, records. For tests and tools; a service
    /// [`spawn`](Relay::spawn)s the relay.
    ///
    /// # Errors
    /// The database failed; nothing was marked, so the rows stay pending.
    pub async fn run_once(&self) -> Result<RoundReport, sqlx::Error> {
        round(self.outbox.store(), &self.bus, &self.config).await
    }

    /// Runs the relay on the current runtime until [`RunningRelay::shutdown`].
    pub fn spawn(self) -> RunningRelay {
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::spawn(self.run(stopped));
        RunningRelay { stop, handle }
    }

    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let store = self.outbox.store().clone();
        let mut wake = self.outbox.wakeups();
        store.listen(self.outbox.wake_sender());
        let mut failures = Reconnect::up_to(Duration::from_secs(5));
        let mut last_purge = tokio::time::Instant::now();
        let mut last_stats: Option<tokio::time::Instant> = None;
        loop {
            if *stopped.borrow() {
                return;
            }
            wake.borrow_and_update();
            let pause = match round(&store, &self.bus, &self.config).await {
                Ok(report) => {
                    failures.reset();
                    if report.claimed >= self.config.batch as usize && report.sent + report.parked > 0 {
                        // A full round: there is probably more right behind it.
                        Duration::ZERO
                    } else {
                        let due = report
                            .next_due
                            .map(|at| Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)));
                        due.map_or(self.config.poll_interval, |d| d.min(self.config.poll_interval))
                    }
                }
                Err(e) => {
                    let delay = failures.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "The outbox relay could not reach its database.");
                    delay
                }
            };
            if last_purge.elapsed() >= self.config.purge_every {
                last_purge = tokio::time::Instant::now();
                purge(&store, self.config.retention).await;
            }
            if last_stats.is_none_or(|at| at.elapsed() >= self.config.stats_every) {
                last_stats = Some(tokio::time::Instant::now());
                publish_gauges(&store).await;
            }
            if pause.is_zero() {
                continue;
            }
            // An idle relay still purges on time (it would otherwise wait for its next poll).
            let pause = pause.min(
                self.config.purge_every.saturating_sub(last_purge.elapsed()).max(Duration::from_millis(1)),
            );
            tokio::select! {
                _ = wake.changed() => {}
                _ = stopped.changed() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// A spawned relay.
#[derive(Debug)]
pub struct RunningRelay {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl RunningRelay {
    /// Finishes the round in progress (its rows are recorded) and stops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.handle.await {
            tracing::warn!(error = %e, "The outbox relay task failed.");
        }
    }
}

async fn purge(store: &Arc<dyn Store>, retention: Duration) {
    let before = now_ms().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    match store.purge(before).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(rows = n, "Deleted sent outbox rows past their retention."),
        Err(e) => tracing::warn!(error = %e, "Could not delete sent outbox rows."),
    }
}

async fn publish_gauges(store: &Arc<dyn Store>) {
    match store.stats(now_ms()).await {
        Ok(stats) => {
            metrics::gauge!("switchboard_outbox_pending").set(stats.pending as f64);
            metrics::gauge!("switchboard_outbox_parked").set(stats.parked as f64);
            metrics::gauge!("switchboard_outbox_oldest_pending_seconds")
                .set(stats.oldest_pending.map_or(0.0, |d| d.as_secs_f64()));
        }
        Err(e) => tracing::debug!(error = %e, "Could not read the outbox's depth."),
    }
}

/// One round: claim, publish, record.
async fn round(store: &Arc<dyn Store>, bus: &Bus, config: &RelayConfig) -> Result<RoundReport, sqlx::Error> {
    let mut claim = store.claim(config.batch).await?;
    let now = now_ms();
    let claimed = claim.rows.len();
    let enqueued: HashMap<i64, i64> = claim.rows.iter().map(|r| (r.id, r.enqueued_at)).collect();
    // The rows move into the publish: only their ids and enqueue times are needed after it.
    let (outcomes, next_due) = publish_rows(bus, std::mem::take(&mut claim.rows), now, config).await;
    let mut report = RoundReport { claimed, next_due, ..RoundReport::default() };
    for (_, outcome) in &outcomes {
        match outcome {
            Outcome::Sent => report.sent += 1,
            Outcome::Retry { .. } => report.retried += 1,
            Outcome::Park { .. } => report.parked += 1,
        }
    }
    let sent_latencies: Vec<i64> = outcomes
        .iter()
        .filter(|(_, o)| *o == Outcome::Sent)
        .filter_map(|(id, _)| enqueued.get(id).copied())
        .collect();
    claim.finish(outcomes, now_ms()).await?;
    // Only once the rows are marked: a latency is counted for a publish that stays done.
    let done = now_ms();
    for at in sent_latencies {
        metrics::histogram!("switchboard_outbox_publish_latency_seconds")
            .record((done - at).max(0) as f64 / 1000.0);
    }
    metrics::counter!("switchboard_outbox_published_total").increment(report.sent as u64);
    if report.parked > 0 {
        metrics::counter!("switchboard_outbox_parked_total").increment(report.parked as u64);
    }
    Ok(report)
}

/// Publishes `rows` (in id order) in batches of one topic each, holding back every later
/// row of a key whose earlier row is waiting or failed, so a key's messages go out in
/// order. Rows for different topics interleave in commit order (a saga's commands, say);
/// they are gathered into one batch per topic, except that a key whose earlier row sits in
/// another topic's batch makes the gathered batches go out first, so per key the publish
/// order stays the commit order. Returns an outcome for each row it tried (untried rows
/// stay pending) and when the earliest held-back row is due.
async fn publish_rows(
    bus: &Bus,
    rows: Vec<Row>,
    now: i64,
    config: &RelayConfig,
) -> (Vec<(i64, Outcome)>, Option<i64>) {
    let mut blocked: HashSet<String> = HashSet::new();
    let mut outcomes = Vec::with_capacity(rows.len());
    let mut next_due: Option<i64> = None;
    let mut batches: Vec<Vec<Row>> = Vec::new();
    let mut key_topic: HashMap<String, String> = HashMap::new();
    for row in rows {
        if row.key.as_ref().is_some_and(|k| blocked.contains(k)) {
            continue;
        }
        if row.next_attempt_at > now {
            next_due = Some(next_due.map_or(row.next_attempt_at, |d| d.min(row.next_attempt_at)));
            if let Some(k) = &row.key {
                blocked.insert(k.clone());
            }
            continue;
        }
        let crosses_topics = row.key.as_ref().and_then(|k| key_topic.get(k)).is_some_and(|t| *t != row.topic);
        let full = batches.iter().any(|b| b[0].topic == row.topic && b.len() >= config.publish_batch);
        if crosses_topics || full {
            for batch in batches.drain(..) {
                publish_run(bus, batch, now, config, &mut blocked, &mut outcomes).await;
            }
            key_topic.clear();
            if row.key.as_ref().is_some_and(|k| blocked.contains(k)) {
                continue;
            }
        }
        if let Some(k) = &row.key {
            key_topic.insert(k.clone(), row.topic.clone());
        }
        match batches.iter_mut().find(|b| b[0].topic == row.topic) {
            Some(batch) => batch.push(row),
            None => batches.push(vec![row]),
        }
    }
    for batch in batches {
        publish_run(bus, batch, now, config, &mut blocked, &mut outcomes).await;
    }
    let retry_due = outcomes.iter().filter_map(|(_, o)| match o {
        Outcome::Retry { next_attempt_at, .. } => Some(*next_attempt_at),
        _ => None,
    });
    next_due = retry_due.chain(next_due).min();
    (outcomes, next_due)
}

async fn publish_run(
    bus: &Bus,
    run: Vec<Row>,
    now: i64,
    config: &RelayConfig,
    blocked: &mut HashSet<String>,
    outcomes: &mut Vec<(i64, Outcome)>,
) {
    let Some(head) = run.first() else { return };
    let topic = match TopicName::new(&head.topic) {
        Ok(topic) => topic,
        Err(e) => {
            let error = format!("the row's topic `{}` is not a valid topic name: {e}", head.topic);
            outcomes.extend(run.iter().map(|r| (r.id, Outcome::Park { error: error.clone() })));
            return;
        }
    };
    let messages = run.iter().map(|r| r.message.clone()).collect();
    match bus.publish_all(&topic, messages).await {
        Ok(()) => outcomes.extend(run.iter().map(|r| (r.id, Outcome::Sent))),
        Err(e) if e.is_retryable() || run.len() == 1 => {
            for row in &run {
                outcomes.push((row.id, failed(row, &e, now, config)));
                if let (Some(k), true) = (&row.key, e.is_retryable()) {
                    blocked.insert(k.clone());
                }
            }
        }
        Err(_) => {
            // A batch refused for good may hold one bad message: find it by sending the
            // rows one at a time, so the good ones are not parked with it.
            for row in run {
                if row.key.as_ref().is_some_and(|k| blocked.contains(k)) {
                    continue;
                }
                match bus.publish(&topic, row.message.clone()).await {
                    Ok(()) => outcomes.push((row.id, Outcome::Sent)),
                    Err(e) => {
                        if let (Some(k), true) = (&row.key, e.is_retryable()) {
                            blocked.insert(k.clone());
                        }
                        outcomes.push((row.id, failed(&row, &e, now, config)));
                    }
                }
            }
        }
    }
}

/// A transient failure is retried after the backoff for the row's attempts; anything else
/// (unknown topic, a message the backend refuses) parks the row with its error.
fn failed(row: &Row, error: &BusError, now: i64, config: &RelayConfig) -> Outcome {
    if error.is_retryable() {
        let delay = config.backoff.delay(row.attempts.saturating_add(1));
        let delay = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        tracing::debug!(row = row.id, error = %error, "An outbox publish failed; it will be retried.");
        Outcome::Retry { next_attempt_at: now.saturating_add(delay), error: error.to_string() }
    } else {
        tracing::warn!(row = row.id, topic = %row.topic, error = %error, "An outbox row was parked: its publish failed for good.");
        Outcome::Park { error: error.to_string() }
    }
}
