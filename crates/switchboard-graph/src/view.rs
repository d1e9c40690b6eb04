//! What the APIs return: the graph over a window, and the figures of one edge or node over
//! time.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::congestion::{self, Congestion};
use crate::graph::{Edge, Gauges, ServiceGraph};
use crate::model::{Dropped, EdgeKey, EdgeKind, NodeId, NodeKind};
use crate::window::{Sample, Window, Windowed};

/// Latency quantiles, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Quantiles {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

impl Quantiles {
    fn of(s: &Sample) -> Option<Quantiles> {
        let q = |q| s.latency.quantile(q).map(|v| v * 1e3);
        Some(Quantiles { p50_ms: q(0.5)?, p95_ms: q(0.95)?, p99_ms: q(0.99)? })
    }
}

/// A node over the window.
#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    /// `service:order`, `topic:orders`, `subscription:orders/shipping`.
    pub id: String,
    /// Its kind.
    pub kind: NodeKind,
    /// Its name.
    pub name: String,
    /// Per second, over the edges into it.
    pub rate_in: f64,
    /// Per second, over the edges out of it.
    pub rate_out: f64,
    /// Failures per second of what it handled (calls it served, messages it consumed) or,
    /// for a topic, of publishes to it.
    pub errors_per_second: f64,
    /// Named only by a client's `peer.service` or `server.address`: it reports no spans.
    pub virtual_node: bool,
    /// Its latest reading, for a subscription.
    pub subscription: Option<Gauges>,
    /// What is congested here.
    pub congested: Vec<Congestion>,
}

/// An edge over the window.
#[derive(Clone, Debug, Serialize)]
pub struct EdgeView {
    /// `<kind> <from> -> <to>`.
    pub id: String,
    /// Its kind.
    pub kind: EdgeKind,
    /// The node it starts at.
    pub source: String,
    /// The node it ends at.
    pub target: String,
    /// Calls, messages or deliveries per second.
    pub rate: f64,
    /// The share that failed (0 to 1).
    pub error_rate: f64,
    /// Redeliveries per second (deliver edges).
    pub redelivery_rate: f64,
    /// How long a call, a publish, or a handler took.
    pub latency: Option<Quantiles>,
    /// Consume edges: from publish to handled.
    pub end_to_end: Option<Quantiles>,
    /// Tempo's `connection_type`.
    pub connection_type: &'static str,
    /// What is congested here (a deliver or consume edge shares its subscription's).
    pub congested: Vec<Congestion>,
}

/// The graph over a window.
#[derive(Clone, Debug, Serialize)]
pub struct GraphView {
    /// The window.
    pub window: Window,
    /// When, in seconds since the Unix epoch.
    pub at_s: u64,
    /// The nodes, by id.
    pub nodes: Vec<NodeView>,
    /// The edges, by id.
    pub edges: Vec<EdgeView>,
    /// What the limits turned away since start.
    pub dropped: Dropped,
    /// Spans waiting for their other half.
    pub pending_spans: usize,
}

/// One slot of an edge's history.
#[derive(Clone, Debug, Serialize)]
pub struct EdgePoint {
    /// The slot's start, in seconds since the Unix epoch.
    pub at_s: u64,
    /// Per second over the slot.
    pub rate: f64,
    /// The share that failed.
    pub error_rate: f64,
    /// Latency in the slot.
    pub latency: Option<Quantiles>,
    /// Publish to handled, in the slot.
    pub end_to_end: Option<Quantiles>,
}

/// An edge's or a node's figures over time.
#[derive(Clone, Debug, Serialize)]
pub struct History {
    /// The edge or node.
    pub id: String,
    /// The window, whose slots the points are.
    pub window: Window,
    /// Slot length in seconds.
    pub slot_seconds: u64,
    /// The edge's points, oldest first (empty for a node).
    pub points: Vec<EdgePoint>,
    /// The subscription's readings, oldest first (empty for an edge or another node).
    pub readings: Vec<Gauges>,
}

/// The windowed value that speaks for an edge's count: the broker's where it saw any.
fn counted(edge: &Edge, window: Window, now_s: u64) -> &Windowed {
    if edge.observed.any(window, now_s) { &edge.observed } else { &edge.traced }
}

fn rate(s: &Sample, covered: u64) -> f64 {
    s.count as f64 / covered.max(1) as f64
}

fn error_rate(s: &Sample) -> f64 {
    if s.count == 0 { 0.0 } else { s.failed as f64 / s.count as f64 }
}

impl ServiceGraph {
    fn live(&self, edge: &Edge, key: &EdgeKey, window: Window, now_s: u64) -> bool {
        edge.traced.any(window, now_s)
            || edge.observed.any(window, now_s)
            || (key.kind == EdgeKind::Deliver && self.nodes.get(&key.to).is_some_and(|n| n.on_broker))
    }

    fn edge_view(
        &self,
        key: &EdgeKey,
        edge: &Edge,
        window: Window,
        now_s: u64,
        subs: &HashMap<&NodeId, Vec<Congestion>>,
    ) -> EdgeView {
        let covered = |w: &Windowed| w.sum(window, now_s);
        let (count, secs) = covered(counted(edge, window, now_s));
        let (traced, _) = covered(&edge.traced);
        let (observed, _) = covered(&edge.observed);
        let age = now_s.saturating_sub(edge.first_seen_s) + 1;
        let secs = secs.min(age);
        let (latency, end_to_end) = match key.kind {
            EdgeKind::Consume => {
                let e2e = if observed.latency.count() > 0 {
                    Some(observed)
                } else {
                    edge.end_to_end.as_ref().map(|w| w.sum(window, now_s).0)
                };
                (Quantiles::of(&traced), e2e.as_ref().and_then(Quantiles::of))
            }
            _ if traced.latency.count() > 0 => (Quantiles::of(&traced), None),
            _ => (Quantiles::of(&observed), None),
        };
        let mut congested = match key.kind {
            EdgeKind::Sync => congestion::sync_edge(edge, now_s),
            EdgeKind::Deliver => subs.get(&key.to).cloned().unwrap_or_default(),
            EdgeKind::Consume => subs.get(&key.from).cloned().unwrap_or_default(),
            EdgeKind::Publish => Vec::new(),
        };
        congested.dedup_by_key(|c| c.kind);
        EdgeView {
            id: key.to_string(),
            kind: key.kind,
            source: key.from.to_string(),
            target: key.to.to_string(),
            rate: rate(&count, secs),
            error_rate: error_rate(&count),
            redelivery_rate: count.redelivered as f64 / secs.max(1) as f64,
            latency,
            end_to_end,
            connection_type: key.kind.connection_type(edge.virtual_server),
            congested,
        }
    }

    /// The graph over `window` at `now_s`: every node and edge with traffic in the window,
    /// and every topic and subscription the broker holds.
    pub fn view(&self, window: Window, now_s: u64) -> GraphView {
        let subs: HashMap<&NodeId, Vec<Congestion>> = self
            .nodes
            .iter()
            .filter(|(id, _)| id.kind == NodeKind::Subscription)
            .map(|(id, n)| (id, congestion::subscription(&n.gauges, now_s)))
            .collect();
        let mut edges: Vec<EdgeView> = self
            .edges
            .iter()
            .filter(|(k, e)| self.live(e, k, window, now_s))
            .map(|(k, e)| self.edge_view(k, e, window, now_s, &subs))
            .collect();
        edges.sort_by(|a, b| a.id.cmp(&b.id));

        let ends: HashSet<&str> = edges.iter().flat_map(|e| [e.source.as_str(), e.target.as_str()]).collect();
        let virtual_nodes: HashSet<&NodeId> =
            self.edges.iter().filter(|(_, e)| e.virtual_server).map(|(k, _)| &k.to).collect();
        let mut nodes: BTreeMap<String, NodeView> = BTreeMap::new();
        for (id, node) in &self.nodes {
            let name = id.to_string();
            if !node.on_broker && !ends.contains(name.as_str()) {
                continue;
            }
            let virtual_node = virtual_nodes.contains(id);
            nodes.insert(
                name.clone(),
                NodeView {
                    id: name,
                    kind: id.kind,
                    name: id.name.to_string(),
                    rate_in: 0.0,
                    rate_out: 0.0,
                    errors_per_second: 0.0,
                    virtual_node,
                    subscription: node.gauges.back().cloned(),
                    congested: subs.get(id).cloned().unwrap_or_default(),
                },
            );
        }
        for e in &edges {
            if let Some(n) = nodes.get_mut(&e.source) {
                n.rate_out += e.rate;
            }
            if let Some(n) = nodes.get_mut(&e.target) {
                n.rate_in += e.rate;
                n.errors_per_second += e.rate * e.error_rate;
            }
        }
        GraphView {
            window,
            at_s: now_s,
            nodes: nodes.into_values().collect(),
            edges,
            dropped: self.dropped.clone(),
            pending_spans: self.pending(),
        }
    }

    /// The figures over time of the edge or node with this id (as a view names it), over
    /// `window`'s slots; `None` if there is none.
    pub fn history(&self, id: &str, window: Window, now_s: u64) -> Option<History> {
        let slot_seconds = window.slot_seconds();
        if let Some((key, node)) = self.nodes.iter().find(|(k, _)| k.to_string() == id) {
            let cutoff = now_s.saturating_sub(window.seconds());
            let readings = if key.kind == NodeKind::Subscription {
                node.gauges.iter().filter(|g| g.at_s >= cutoff).cloned().collect()
            } else {
                Vec::new()
            };
            return Some(History { id: id.to_owned(), window, slot_seconds, points: Vec::new(), readings });
        }
        let (key, edge) = self.edges.iter().find(|(k, _)| k.to_string() == id)?;
        let source = counted(edge, window, now_s).series(window, now_s);
        let traced: HashMap<u64, Sample> = edge.traced.series(window, now_s).into_iter().collect();
        let e2e: HashMap<u64, Sample> = match (&key.kind, edge.observed.any(window, now_s)) {
            (EdgeKind::Consume, true) => edge.observed.series(window, now_s).into_iter().collect(),
            (EdgeKind::Consume, false) => edge
                .end_to_end
                .as_ref()
                .map(|w| w.series(window, now_s).into_iter().collect())
                .unwrap_or_default(),
            _ => HashMap::new(),
        };
        let points = source
            .into_iter()
            .map(|(at_s, s)| {
                let latency_source = traced.get(&at_s).filter(|t| t.latency.count() > 0).unwrap_or(&s);
                let latency = if key.kind == EdgeKind::Consume {
                    traced.get(&at_s).and_then(Quantiles::of)
                } else {
                    Quantiles::of(latency_source)
                };
                EdgePoint {
                    at_s,
                    rate: s.count as f64 / slot_seconds as f64,
                    error_rate: error_rate(&s),
                    latency,
                    end_to_end: e2e.get(&at_s).and_then(Quantiles::of),
                }
            })
            .collect();
        Some(History { id: id.to_owned(), window, slot_seconds, points, readings: Vec::new() })
    }
}
