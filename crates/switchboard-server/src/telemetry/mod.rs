//! The broker's side of the service graph: spans arrive over OTLP ([`otlp`]), and the
//! broker adds what it sees itself — who publishes to which topic, who consumes which
//! subscription, deliveries, acks, nacks — plus a reading of every subscription every
//! [`SAMPLE_INTERVAL`]. The graph is read over REST ([`routes`]), GraphQL, `/metrics` and
//! the dashboard.

pub(crate) mod otlp;
pub(crate) mod routes;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use switchboard_broker::{Broker, BrokerDelivery};
use switchboard_graph::{Gauges, GraphView, Limits, ServiceGraph, TopicReading, Window};
use tokio::sync::watch;

/// How often every subscription is read, and the graph's pending spans expired.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Seconds since the Unix epoch: the graph's clock.
pub(crate) fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The service graph and what feeds it.
#[derive(Debug)]
pub struct Telemetry {
    graph: Mutex<ServiceGraph>,
    /// Credits of the open consume streams, by `(topic, subscription)`: the in-flight cap
    /// of their consumers.
    credits: Mutex<HashMap<(String, String), u64>>,
    /// Bumped after every sample, so live views know when to read again.
    sampled: watch::Sender<u64>,
}

/// Holds a consume stream's credits in the count until dropped.
pub(crate) struct CreditGuard<'a> {
    telemetry: &'a Telemetry,
    key: (String, String),
    credits: u64,
}

impl Drop for CreditGuard<'_> {
    fn drop(&mut self) {
        let mut credits = self.telemetry.credits.lock();
        if let Some(c) = credits.get_mut(&self.key) {
            *c = c.saturating_sub(self.credits);
            if *c == 0 {
                credits.remove(&self.key);
            }
        }
    }
}

impl Telemetry {
    /// An empty graph under `limits`.
    pub fn new(limits: Limits) -> Telemetry {
        Telemetry {
            graph: Mutex::new(ServiceGraph::new(limits)),
            credits: Mutex::default(),
            sampled: watch::Sender::new(0),
        }
    }

    /// The graph over `window`, now.
    pub fn view(&self, window: Window) -> GraphView {
        self.graph.lock().view(window, now_s())
    }

    /// Runs `f` on the graph (for ingest and reads that need more than a view).
    pub fn with_graph<T>(&self, f: impl FnOnce(&mut ServiceGraph) -> T) -> T {
        f(&mut self.graph.lock())
    }

    /// Resolves after the next sample.
    pub async fn next_sample(&self) {
        let mut rx = self.sampled.subscribe();
        let _ = rx.changed().await;
    }

    pub(crate) fn published(&self, service: &str, topic: &str, messages: u64, failed: bool, took: Duration) {
        self.graph.lock().observe_publish(service, topic, messages, failed, took.as_secs_f64(), now_s());
    }

    pub(crate) fn delivered(&self, deliveries: &[BrokerDelivery]) {
        let Some(first) = deliveries.first() else { return };
        let redelivered = deliveries.iter().filter(|d| d.attempt > 1).count() as u64;
        self.graph.lock().observe_deliveries(
            first.topic.as_str(),
            first.subscription.as_str(),
            deliveries.len() as u64,
            redelivered,
            now_s(),
        );
    }

    /// `end_to_end`: seconds from publish to ack of each acked message whose publish time
    /// is known; `acked_untimed`: acks without it.
    pub(crate) fn settled(
        &self,
        at: (&str, &str),
        service: &str,
        end_to_end: &[f64],
        acked_untimed: u64,
        nacked: u64,
    ) {
        if end_to_end.is_empty() && acked_untimed == 0 && nacked == 0 {
            return;
        }
        let (topic, subscription) = at;
        self.graph.lock().observe_settled(
            topic,
            subscription,
            service,
            end_to_end,
            acked_untimed,
            nacked,
            now_s(),
        );
    }

    /// Counts a consume stream's credits until the guard drops.
    pub(crate) fn attach(&self, topic: &str, subscription: &str, credits: u64) -> CreditGuard<'_> {
        let key = (topic.to_owned(), subscription.to_owned());
        *self.credits.lock().entry(key.clone()).or_default() += credits;
        CreditGuard { telemetry: self, key, credits }
    }

    /// Reads every subscription into the graph and expires what waited too long.
    pub(crate) fn sample(&self, broker: &Broker) {
        let credits = self.credits.lock().clone();
        let readings: Vec<TopicReading> = broker
            .topics()
            .into_iter()
            .map(|t| TopicReading {
                topic: t.name.to_string(),
                subscriptions: t
                    .subscriptions
                    .iter()
                    .filter_map(|(name, _)| {
                        let stats = broker.stats(&t.name, name).ok()?;
                        let gauges = Gauges {
                            at_s: 0,
                            backlog: stats.backlog,
                            lag: stats.lag,
                            in_flight: stats.in_flight,
                            dead_lettered: stats.dead_lettered,
                            consumers: stats.consumers as u64,
                            credits: credits.get(&(t.name.to_string(), name.to_string())).copied(),
                        };
                        Some((name.to_string(), gauges))
                    })
                    .collect(),
            })
            .collect();
        let now = now_s();
        let mut graph = self.graph.lock();
        graph.observe_topology(&readings, now);
        graph.expire(now);
        drop(graph);
        self.sampled.send_modify(|n| *n += 1);
    }

    /// The service-graph metrics for `/metrics`.
    pub(crate) fn render_prometheus(&self, out: &mut String) {
        self.graph.lock().render_prometheus(out);
    }
}

/// Samples the broker every [`SAMPLE_INTERVAL`] until the server stops.
pub(crate) async fn sample_until_stopped(state: crate::state::AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => state.telemetry.sample(&state.broker),
            () = crate::stopped(&mut stop) => return,
        }
    }
}
