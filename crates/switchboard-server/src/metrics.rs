//! Prometheus metrics of the server, and per-minute rates for GraphQL.
//!
//! Counters and histograms are updated at the API edges (gRPC, REST, GraphQL); subscription
//! gauges (backlog, in-flight, lag, dead-lettered) are read from the broker when scraped.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use switchboard_broker::{Broker, BrokerDelivery};

/// Which API a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// gRPC.
    Grpc,
    /// REST / CloudEvents over HTTP.
    Rest,
    /// GraphQL.
    Graphql,
}

impl Api {
    fn as_str(self) -> &'static str {
        match self {
            Api::Grpc => "grpc",
            Api::Rest => "rest",
            Api::Graphql => "graphql",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubLabels {
    topic: String,
    subscription: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~13 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// All server metrics.
pub struct Metrics {
    registry: Registry,
    messages_in: Family<TopicLabels, Counter>,
    bytes_in: Family<TopicLabels, Counter>,
    messages_out: Family<SubLabels, Counter>,
    bytes_out: Family<SubLabels, Counter>,
    redeliveries: Family<SubLabels, Counter>,
    acks: Family<SubLabels, Counter>,
    nacks: Family<SubLabels, Counter>,
    backlog: Family<SubLabels, Gauge>,
    in_flight: Family<SubLabels, Gauge>,
    lag: Family<SubLabels, Gauge>,
    dead_lettered: Family<SubLabels, Gauge>,
    publish_latency: Family<ApiLabels, Histogram, fn() -> Histogram>,
    ack_latency: Family<ApiLabels, Histogram, fn() -> Histogram>,
    end_to_end_latency: Family<SubLabels, Histogram, fn() -> Histogram>,
    connections: Family<ApiLabels, Gauge>,
    rates: Mutex<HashMap<(String, String), Rate>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("switchboard");
        let m = Metrics {
            messages_in: Family::default(),
            bytes_in: Family::default(),
            messages_out: Family::default(),
            bytes_out: Family::default(),
            redeliveries: Family::default(),
            acks: Family::default(),
            nacks: Family::default(),
            backlog: Family::default(),
            in_flight: Family::default(),
            lag: Family::default(),
            dead_lettered: Family::default(),
            publish_latency: Family::new_with_constructor(latency_histogram),
            ack_latency: Family::new_with_constructor(latency_histogram),
            end_to_end_latency: Family::new_with_constructor(latency_histogram),
            connections: Family::default(),
            rates: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register("messages_in", "Messages published, per topic", m.messages_in.clone());
        registry.register("bytes_in", "Message data bytes published, per topic", m.bytes_in.clone());
        registry.register("messages_out", "Messages delivered, per subscription", m.messages_out.clone());
        registry.register("bytes_out", "Message data bytes delivered, per subscription", m.bytes_out.clone());
        registry.register("redeliveries", "Deliveries with attempt > 1", m.redeliveries.clone());
        registry.register("acks", "Messages acked", m.acks.clone());
        registry.register("nacks", "Messages nacked", m.nacks.clone());
        registry.register("backlog_messages", "Messages not yet acked or committed", m.backlog.clone());
        registry.register(
            "in_flight_messages",
            "Deliveries leased or read but not committed",
            m.in_flight.clone(),
        );
        registry.register("lag_messages", "End offset minus floor, summed over partitions", m.lag.clone());
        registry.register(
            "dead_lettered_messages",
            "Messages moved to the dead-letter topic",
            m.dead_lettered.clone(),
        );
        registry.register("publish_latency_seconds", "Publish request latency", m.publish_latency.clone());
        registry.register("ack_latency_seconds", "Ack request latency", m.ack_latency.clone());
        registry.register(
            "end_to_end_latency_seconds",
            "Time from append to delivery",
            m.end_to_end_latency.clone(),
        );
        registry.register("connections", "Open connections / streams", m.connections.clone());
        Metrics { registry, ..m }
    }

    /// Records a publish of `messages` messages with `bytes` data bytes.
    pub fn published(&self, api: Api, topic: &str, messages: u64, bytes: u64, latency: Duration) {
        let l = TopicLabels { topic: topic.to_owned() };
        self.messages_in.get_or_create(&l).inc_by(messages);
        self.bytes_in.get_or_create(&l).inc_by(bytes);
        self.publish_latency
            .get_or_create(&ApiLabels { api: api.as_str().into() })
            .observe(latency.as_secs_f64());
        self.rate(topic, "").add(messages);
    }

    /// Records deliveries handed to a consumer.
    pub fn delivered(&self, deliveries: &[BrokerDelivery]) {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        for d in deliveries {
            let l = SubLabels { topic: d.topic.to_string(), subscription: d.subscription.to_string() };
            self.messages_out.get_or_create(&l).inc();
            self.bytes_out.get_or_create(&l).inc_by(d.message.data.len() as u64);
            if d.attempt > 1 {
                self.redeliveries.get_or_create(&l).inc();
            } else {
                let e2e = now_ms.saturating_sub(d.published_at.0) as f64 / 1000.0;
                self.end_to_end_latency.get_or_create(&l).observe(e2e);
            }
        }
        if let Some(d) = deliveries.first() {
            self.rate(d.topic.as_str(), d.subscription.as_str()).add(deliveries.len() as u64);
        }
    }

    /// Records acks.
    pub fn acked(&self, api: Api, topic: &str, subscription: &str, n: u64, latency: Duration) {
        let l = SubLabels { topic: topic.to_owned(), subscription: subscription.to_owned() };
        self.acks.get_or_create(&l).inc_by(n);
        self.ack_latency
            .get_or_create(&ApiLabels { api: api.as_str().into() })
            .observe(latency.as_secs_f64());
    }

    /// Records nacks.
    pub fn nacked(&self, topic: &str, subscription: &str, n: u64) {
        let l = SubLabels { topic: topic.to_owned(), subscription: subscription.to_owned() };
        self.nacks.get_or_create(&l).inc_by(n);
    }

    /// A connection or stream opened; the guard closes it.
    pub fn connection(&self, api: Api) -> ConnectionGuard {
        let g = self.connections.get_or_create(&ApiLabels { api: api.as_str().into() }).clone();
        g.inc();
        ConnectionGuard(g)
    }

    /// Messages per second published to `topic` (subscription `""`) or delivered through a
    /// subscription, averaged over the last minute.
    pub fn rate_per_second(&self, topic: &str, subscription: &str) -> f64 {
        self.rates.lock().get_mut(&(topic.to_owned(), subscription.to_owned())).map_or(0.0, Rate::per_second)
    }

    fn rate(&self, topic: &str, subscription: &str) -> RateHandle<'_> {
        RateHandle { metrics: self, key: (topic.to_owned(), subscription.to_owned()) }
    }

    /// The Prometheus text exposition, with subscription gauges read from `broker` now.
    pub fn render(&self, broker: &Broker) -> String {
        for t in broker.topics() {
            for (s, _) in &t.subscriptions {
                if let Ok(st) = broker.stats(&t.name, s) {
                    let l = SubLabels { topic: t.name.to_string(), subscription: s.to_string() };
                    self.backlog.get_or_create(&l).set(st.backlog as i64);
                    self.in_flight.get_or_create(&l).set(st.in_flight as i64);
                    self.lag.get_or_create(&l).set(st.lag as i64);
                    self.dead_lettered.get_or_create(&l).set(st.dead_lettered as i64);
                }
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("Failed to encode metrics.");
        }
        out
    }
}

/// The broker's stage histograms (`switchboard_broker::Stage`) as one OpenMetrics histogram,
/// labelled by stage.
pub(crate) fn render_stages(out: &mut String, stages: &[switchboard_broker::StageSnapshot]) {
    use std::fmt::Write as _;
    const NAME: &str = "switchboard_stage_latency_seconds";
    let _ = writeln!(out, "# HELP {NAME} Time messages spend in each stage of their path inside the broker.");
    let _ = writeln!(out, "# TYPE {NAME} histogram");
    for s in stages {
        let stage = s.stage.as_str();
        let mut cumulative = 0;
        for (i, n) in s.buckets.iter().enumerate() {
            cumulative += n;
            match switchboard_broker::BUCKET_BOUNDS_US.get(i) {
                Some(&us) => {
                    let le = us as f64 / 1e6;
                    let _ = writeln!(out, "{NAME}_bucket{{stage=\"{stage}\",le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{NAME}_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = s.sum_ns as f64 / 1e9;
        let _ = writeln!(out, "{NAME}_sum{{stage=\"{stage}\"}} {sum}");
        let _ = writeln!(out, "{NAME}_count{{stage=\"{stage}\"}} {cumulative}");
    }
}

/// Decrements the connection gauge when dropped.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct RateHandle<'a> {
    metrics: &'a Metrics,
    key: (String, String),
}

impl RateHandle<'_> {
    fn add(self, n: u64) {
        self.metrics.rates.lock().entry(self.key).or_default().add(n);
    }
}

/// Counts per second over the last 60 seconds.
struct Rate {
    buckets: [u64; 60],
    last_second: u64,
}

impl Default for Rate {
    fn default() -> Self {
        Rate { buckets: [0; 60], last_second: Rate::now() }
    }
}

impl Rate {
    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    fn advance(&mut self, now: u64) {
        if now > self.last_second {
            let gap = (now - self.last_second).min(60);
            for i in 1..=gap {
                self.buckets[((self.last_second + i) % 60) as usize] = 0;
            }
            self.last_second = now;
        }
    }

    fn add(&mut self, n: u64) {
        let now = Rate::now();
        self.advance(now);
        self.buckets[(now % 60) as usize] += n;
    }

    fn per_second(&mut self) -> f64 {
        self.advance(Rate::now());
        self.buckets.iter().sum::<u64>() as f64 / 60.0
    }
}
