//! The service graph as `GET /v1/graph` returns it: the fields `top` shows.

use serde::Deserialize;

#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct Graph {
    pub(crate) window: String,
    pub(crate) nodes: Vec<Node>,
    pub(crate) edges: Vec<Edge>,
    #[serde(default)]
    pub(crate) dropped: Dropped,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct Dropped {
    pub(crate) nodes: u64,
    pub(crate) edges: u64,
    pub(crate) pending: u64,
    pub(crate) invalid_names: u64,
}

impl Dropped {
    pub(crate) fn any(&self) -> bool {
        self.nodes + self.edges + self.pending + self.invalid_names > 0
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Node {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) rate_in: f64,
    pub(crate) subscription: Option<Reading>,
    #[serde(default)]
    pub(crate) congested: Vec<Congestion>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Reading {
    pub(crate) backlog: u64,
    pub(crate) lag: u64,
    pub(crate) in_flight: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) consumers: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Congestion {
    pub(crate) kind: String,
    pub(crate) detail: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Quantiles {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Edge {
    pub(crate) kind: String,
    pub(crate) source: String,
    pub(crate) target: String,
    pub(crate) rate: f64,
    pub(crate) error_rate: f64,
    pub(crate) latency: Option<Quantiles>,
    pub(crate) end_to_end: Option<Quantiles>,
    #[serde(default)]
    pub(crate) congested: Vec<Congestion>,
}

/// A node id without its kind prefix, for narrow columns (`service:order` → `order`).
pub(crate) fn short(id: &str) -> &str {
    id.split_once(':').map_or(id, |(_, name)| name)
}

/// The rows `top` shows, in the order it shows them: congested first, then by rate.
pub(crate) fn edges_by_attention(graph: &Graph) -> Vec<&Edge> {
    let mut edges: Vec<&Edge> = graph.edges.iter().collect();
    edges.sort_by(|a, b| {
        b.congested.is_empty().cmp(&a.congested.is_empty()).reverse().then(b.rate.total_cmp(&a.rate))
    });
    edges
}

/// Subscriptions, congested first, then by backlog.
pub(crate) fn subscriptions(graph: &Graph) -> Vec<&Node> {
    let mut subs: Vec<&Node> = graph.nodes.iter().filter(|n| n.kind == "subscription").collect();
    subs.sort_by(|a, b| {
        let backlog = |n: &Node| n.subscription.as_ref().map_or(0, |r| r.backlog);
        b.congested.is_empty().cmp(&a.congested.is_empty()).reverse().then(backlog(b).cmp(&backlog(a)))
    });
    subs
}

pub(crate) fn ms(q: Option<&Quantiles>, pick: fn(&Quantiles) -> f64) -> String {
    q.map_or_else(|| "-".into(), |q| format!("{:.1}", pick(q)))
}
