//! [`ServiceGraph`]: nodes and edges with their windows, fed by spans and by what the broker
//! sees.
//!
//! Spans make edges the way Tempo's service graphs do, by pairing halves: a client span with
//! the server span whose parent it is (a sync edge), a producer span with every consumer
//! span whose parent **or link** it is (the end-to-end latency of a hop). Unlike Tempo, a
//! hop through the broker is drawn through its topic and subscription (`service → topic →
//! subscription → service`), which a producer or consumer span names on its own, so the
//! publish and consume edges need no pairing at all.
//!
//! The broker adds what only it knows, for services that report no spans too: who published
//! to which topic, who consumes which subscription, deliveries, acks and nacks, and each
//! subscription's backlog, lag and in-flight count.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::model::{Dropped, EdgeKey, EdgeKind, Limits, NodeId, NodeKind};
use crate::pending::{ClientHalf, Half, Pending};
use crate::prometheus::PromEdge;
use crate::span::{Kind, SpanRecord};
use crate::window::Windowed;

/// The virtual node of callers that report no spans (Tempo's `user`): a root server span is
/// a request from outside.
pub const USER: &str = "user";
/// How many subscription readings a node keeps: an hour at the broker's 5-second sampling.
const GAUGE_HISTORY: usize = 720;
/// An edge or node unseen for this long leaves the graph.
const IDLE_SECONDS: u64 = 3_900;
/// Remembered `(client, peer) → server` pairs, which name the server of a failed call that
/// never reached it.
const MAX_PEERS: usize = 4_096;

/// One reading of a subscription, taken by the broker.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Gauges {
    /// When, in seconds since the Unix epoch.
    pub at_s: u64,
    /// Messages not yet acked or committed.
    pub backlog: u64,
    /// Distance from the oldest unfinished message to the newest.
    pub lag: u64,
    /// Deliveries whose lease is running.
    pub in_flight: u64,
    /// Moved to the dead-letter topic so far.
    pub dead_lettered: u64,
    /// Consumers attached.
    pub consumers: u64,
    /// Credits the attached consumers hold in total (how many deliveries they accept at
    /// once); `None` when the broker does not know (consumers that poll).
    pub credits: Option<u64>,
}

/// One topic and its subscriptions as the broker lists them.
#[derive(Clone, Debug, Default)]
pub struct TopicReading {
    /// The topic.
    pub topic: String,
    /// Each subscription and its reading.
    pub subscriptions: Vec<(String, Gauges)>,
}

/// What an ingest accepted and refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Spans that counted (an internal span counts and adds nothing).
    pub accepted: u64,
    /// Spans refused by a limit or an invalid name.
    pub rejected: u64,
    /// Why the first refused span was refused.
    pub reason: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) last_seen_s: u64,
    /// Listed by the broker in its latest reading (never evicted while it is).
    pub(crate) on_broker: bool,
    pub(crate) gauges: VecDeque<Gauges>,
}

#[derive(Debug, Default)]
pub(crate) struct Edge {
    pub(crate) first_seen_s: u64,
    pub(crate) last_seen_s: u64,
    /// From spans.
    pub(crate) traced: Windowed,
    /// From the broker.
    pub(crate) observed: Windowed,
    /// Publish to handled (consume edges).
    pub(crate) end_to_end: Option<Box<Windowed>>,
    /// The server reports no spans: it is named by the client's `peer.service` or
    /// `server.address`.
    pub(crate) virtual_server: bool,
    /// When a call on it was last refused by an open circuit breaker.
    pub(crate) breaker_open_s: Option<u64>,
    pub(crate) prom: PromEdge,
}

/// The service graph. Not thread-safe on its own: the broker holds it behind a lock, and
/// every method is short.
#[derive(Debug)]
pub struct ServiceGraph {
    pub(crate) limits: Limits,
    pub(crate) nodes: HashMap<NodeId, Node>,
    pub(crate) edges: HashMap<EdgeKey, Edge>,
    pending: PendingStore,
    peers: HashMap<(Arc<str>, Arc<str>), Arc<str>>,
    pub(crate) dropped: Dropped,
    pub(crate) spans_total: u64,
    evicted_at_s: u64,
}

/// `Pending` is not `Debug`; the graph's `Debug` shows its size.
struct PendingStore(Pending);

impl std::fmt::Debug for PendingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({})", self.0.len())
    }
}

impl Default for ServiceGraph {
    fn default() -> Self {
        ServiceGraph::new(Limits::default())
    }
}

impl ServiceGraph {
    /// An empty graph under `limits`.
    pub fn new(limits: Limits) -> ServiceGraph {
        ServiceGraph {
            limits,
            nodes: HashMap::new(),
            edges: HashMap::new(),
            pending: PendingStore(Pending::default()),
            peers: HashMap::new(),
            dropped: Dropped::default(),
            spans_total: 0,
            evicted_at_s: 0,
        }
    }

    /// The limits it runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// What the limits turned away so far.
    pub fn dropped(&self) -> &Dropped {
        &self.dropped
    }

    /// Spans waiting for their other half.
    pub fn pending(&self) -> usize {
        self.pending.0.len()
    }

    /// Nodes and edges held.
    pub fn size(&self) -> (usize, usize) {
        (self.nodes.len(), self.edges.len())
    }

    fn admit_node(&mut self, id: &NodeId, now_s: u64, broker: bool) -> bool {
        if let Some(node) = self.nodes.get_mut(id) {
            node.last_seen_s = now_s;
            node.on_broker |= broker;
            return true;
        }
        if !broker && self.nodes.len() >= self.limits.max_nodes {
            self.dropped.nodes += 1;
            return false;
        }
        self.nodes
            .insert(id.clone(), Node { last_seen_s: now_s, on_broker: broker, gauges: VecDeque::new() });
        true
    }

    /// The edge, created if the limits allow (both ends must be nodes already).
    fn edge(&mut self, kind: EdgeKind, from: &NodeId, to: &NodeId, now_s: u64) -> Option<&mut Edge> {
        let key = EdgeKey { kind, from: from.clone(), to: to.clone() };
        if !self.edges.contains_key(&key) {
            if self.edges.len() >= self.limits.max_edges {
                self.dropped.edges += 1;
                return None;
            }
            self.edges.insert(key.clone(), Edge { first_seen_s: now_s, ..Edge::default() });
        }
        let edge = self.edges.get_mut(&key)?;
        edge.last_seen_s = now_s;
        if let Some(n) = self.nodes.get_mut(from) {
            n.last_seen_s = now_s;
        }
        if let Some(n) = self.nodes.get_mut(to) {
            n.last_seen_s = now_s;
        }
        Some(edge)
    }

    fn name_ok(&mut self, name: &str) -> bool {
        let ok = self.limits.valid_name(name);
        if !ok {
            self.dropped.invalid_names += 1;
        }
        ok
    }

    /// Adds spans (one export request's worth); `now_s` is the time in seconds since the
    /// Unix epoch they count at.
    pub fn ingest(&mut self, spans: impl IntoIterator<Item = SpanRecord>, now_s: u64) -> Ingested {
        self.expire(now_s);
        let mut out = Ingested::default();
        for span in spans {
            match self.ingest_one(span, now_s) {
                Ok(()) => out.accepted += 1,
                Err(reason) => {
                    out.rejected += 1;
                    out.reason.get_or_insert(reason);
                }
            }
        }
        self.spans_total += out.accepted;
        out
    }

    fn ingest_one(&mut self, span: SpanRecord, now_s: u64) -> Result<(), String> {
        if span.kind == Kind::Internal {
            return Ok(());
        }
        if !self.name_ok(&span.service) {
            return Err(format!(
                "invalid service.name {:?}: 1 to {} printable bytes",
                truncate(&span.service),
                self.limits.max_name_bytes
            ));
        }
        let service = NodeId::service(&span.service);
        if !self.admit_node(&service, now_s, false) {
            return Err(format!(
                "too many services: the graph holds at most {} nodes",
                self.limits.max_nodes
            ));
        }
        match span.kind {
            Kind::Internal => Ok(()),
            Kind::Server => self.server_span(&span, &service, now_s),
            Kind::Client => self.client_span(&span, &service, now_s),
            Kind::Producer => self.producer_span(&span, &service, now_s),
            Kind::Consumer => self.consumer_span(&span, &service, now_s),
        }
    }

    fn server_span(&mut self, span: &SpanRecord, service: &NodeId, now_s: u64) -> Result<(), String> {
        let Some(parent) = span.parent_span_id else {
            // A request from outside: from Tempo's `user` node.
            let user = NodeId::service(USER);
            if !self.admit_node(&user, now_s, false) {
                return Err("too many nodes".into());
            }
            self.sync_pair(&user, service, None, Some(span.seconds()), span.error, now_s, false);
            return Ok(());
        };
        let key = (span.trace_id, parent);
        let clients = self.pending.0.take(&key, |h| matches!(h, Half::Client(_)));
        if let Some(Half::Client(client)) = clients.into_iter().next() {
            self.pair_client_server(&client, service, span.seconds(), span.error, now_s);
            return Ok(());
        }
        let half = Half::Server { service: service.name.clone(), seconds: span.seconds(), error: span.error };
        self.wait(key, half, now_s)
    }

    fn client_span(&mut self, span: &SpanRecord, service: &NodeId, now_s: u64) -> Result<(), String> {
        let key = (span.trace_id, span.span_id);
        let peer = span.peer.as_deref().filter(|p| self.limits.valid_name(p)).map(Arc::from);
        let client = ClientHalf {
            service: service.name.clone(),
            seconds: span.seconds(),
            error: span.error,
            peer,
            circuit_open: span.error_type.as_deref() == Some("circuit_open"),
        };
        let servers = self.pending.0.take(&key, |h| matches!(h, Half::Server { .. }));
        if let Some(Half::Server { service: server, seconds, error }) = servers.into_iter().next() {
            self.pair_client_server(&client, &NodeId::service(&server), seconds, error, now_s);
            return Ok(());
        }
        self.wait(key, Half::Client(client), now_s)
    }

    fn pair_client_server(
        &mut self,
        client: &ClientHalf,
        server: &NodeId,
        seconds: f64,
        error: bool,
        now_s: u64,
    ) {
        if let Some(peer) = &client.peer
            && (self.peers.len() < MAX_PEERS
                || self.peers.contains_key(&(client.service.clone(), peer.clone())))
        {
            self.peers.insert((client.service.clone(), peer.clone()), server.name.clone());
        }
        let from = NodeId::service(&client.service);
        self.sync_pair(
            &from,
            server,
            Some(client.seconds),
            Some(seconds),
            error || client.error,
            now_s,
            false,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn sync_pair(
        &mut self,
        from: &NodeId,
        to: &NodeId,
        client_seconds: Option<f64>,
        server_seconds: Option<f64>,
        error: bool,
        now_s: u64,
        virtual_server: bool,
    ) {
        let Some(edge) = self.edge(EdgeKind::Sync, from, to, now_s) else { return };
        edge.virtual_server |= virtual_server;
        let latency = server_seconds.or(client_seconds).unwrap_or(0.0);
        edge.traced.record(now_s, |s| {
            s.count += 1;
            s.failed += u64::from(error);
            s.latency.record(latency);
        });
        edge.prom.record(error, server_seconds, client_seconds);
    }

    fn producer_span(&mut self, span: &SpanRecord, service: &NodeId, now_s: u64) -> Result<(), String> {
        let Some(topic_name) = span.destination.as_deref() else { return Ok(()) };
        if !self.name_ok(topic_name) {
            return Err(format!("invalid messaging.destination.name {:?}", truncate(topic_name)));
        }
        let topic = NodeId::topic(topic_name);
        if !self.admit_node(&topic, now_s, false) {
            return Err("too many nodes".into());
        }
        let (seconds, error) = (span.seconds(), span.error);
        if let Some(edge) = self.edge(EdgeKind::Publish, service, &topic, now_s) {
            edge.traced.record(now_s, |s| {
                s.count += 1;
                s.failed += u64::from(error);
                s.latency.record(seconds);
            });
            edge.prom.record(error, Some(seconds), Some(seconds));
        }
        let key = (span.trace_id, span.span_id);
        for waiting in self.pending.0.take(&key, |h| matches!(h, Half::Consumer { .. })) {
            if let Half::Consumer { service: consumer, subscription, end_ns } = waiting {
                self.end_to_end(&subscription, &consumer, end_ns.saturating_sub(span.start_ns), now_s);
            }
        }
        self.wait(key, Half::Producer { start_ns: span.start_ns }, now_s)
    }

    fn consumer_span(&mut self, span: &SpanRecord, service: &NodeId, now_s: u64) -> Result<(), String> {
        let Some(topic_name) = span.destination.as_deref() else { return Ok(()) };
        // Without a group the consumer reads the topic directly (a stream reader with no
        // subscription), drawn as a subscription named `-`.
        let group = span.consumer_group.as_deref().unwrap_or("-");
        if !self.name_ok(topic_name) || !self.name_ok(group) {
            return Err(format!(
                "invalid messaging destination {:?}/{:?}",
                truncate(topic_name),
                truncate(group)
            ));
        }
        let topic = NodeId::topic(topic_name);
        let subscription = NodeId::subscription(topic_name, group);
        if !self.admit_node(&topic, now_s, false) || !self.admit_node(&subscription, now_s, false) {
            return Err("too many nodes".into());
        }
        let (seconds, error) = (span.seconds(), span.error);
        if let Some(edge) = self.edge(EdgeKind::Deliver, &topic, &subscription, now_s) {
            edge.traced.record(now_s, |s| s.count += 1);
        }
        if let Some(edge) = self.edge(EdgeKind::Consume, &subscription, service, now_s) {
            edge.traced.record(now_s, |s| {
                s.count += 1;
                s.failed += u64::from(error);
                s.latency.record(seconds);
            });
            edge.prom.record(error, Some(seconds), None);
        }
        // The producer is the parent, or a link (the messaging conventions prefer links,
        // which batch consumers need).
        let candidates =
            span.parent_span_id.map(|p| (span.trace_id, p)).into_iter().chain(span.links.iter().copied());
        let mut found = false;
        let mut first = None;
        for key in candidates {
            first.get_or_insert(key);
            let start = self.pending.0.peek(&key).iter().find_map(|h| match h {
                Half::Producer { start_ns, .. } => Some(*start_ns),
                _ => None,
            });
            if let Some(start_ns) = start {
                self.end_to_end(
                    &subscription.name,
                    &service.name,
                    span.end_ns.saturating_sub(start_ns),
                    now_s,
                );
                found = true;
            }
        }
        match (found, first) {
            (false, Some(key)) => {
                let half = Half::Consumer {
                    service: service.name.clone(),
                    subscription: subscription.name.clone(),
                    end_ns: span.end_ns,
                };
                self.wait(key, half, now_s)
            }
            _ => Ok(()),
        }
    }

    fn end_to_end(&mut self, subscription: &str, service: &str, nanos: u64, now_s: u64) {
        let (sub, svc) =
            (NodeId { kind: NodeKind::Subscription, name: subscription.into() }, NodeId::service(service));
        if let Some(edge) = self.edge(EdgeKind::Consume, &sub, &svc, now_s) {
            let seconds = nanos as f64 / 1e9;
            edge.end_to_end.get_or_insert_with(Default::default).record(now_s, |s| {
                s.count += 1;
                s.latency.record(seconds);
            });
        }
    }

    fn wait(&mut self, key: crate::pending::Key, half: Half, now_s: u64) -> Result<(), String> {
        if !self.pending.0.push(key, half, now_s, self.limits.max_pending) {
            self.dropped.pending += 1;
        }
        Ok(())
    }

    /// Ends the wait of every half older than the limit: a client span whose server never
    /// reported becomes an edge to the server it reached before (the same client and peer),
    /// or to a virtual node named by its peer; anything else unpaired is counted and let go.
    /// Also drops what has been idle for over an hour. The broker calls it on its sampling
    /// tick; every ingest calls it too.
    pub fn expire(&mut self, now_s: u64) {
        for half in self.pending.0.expire(now_s, self.limits.pending_wait_seconds) {
            match half {
                Half::Client(client) => self.unpaired_client(client, now_s),
                Half::Server { .. } | Half::Consumer { .. } => self.dropped.unpaired += 1,
                Half::Producer { .. } => {}
            }
        }
        // Idle eviction walks everything, so it runs once a minute, not on every ingest.
        if now_s < self.evicted_at_s + 60 {
            return;
        }
        self.evicted_at_s = now_s;
        let cutoff = now_s.saturating_sub(IDLE_SECONDS);
        self.edges.retain(|_, e| e.last_seen_s >= cutoff);
        let ends: HashSet<&NodeId> = self.edges.keys().flat_map(|k| [&k.from, &k.to]).collect();
        self.nodes.retain(|id, n| n.on_broker || n.last_seen_s >= cutoff || ends.contains(id));
    }

    fn unpaired_client(&mut self, client: ClientHalf, now_s: u64) {
        let Some(peer) = client.peer.clone() else {
            self.dropped.unpaired += 1;
            return;
        };
        let known = self.peers.get(&(client.service.clone(), peer.clone())).cloned();
        let virtual_server = known.is_none();
        let server = NodeId::service(known.as_deref().unwrap_or(&peer));
        if !self.admit_node(&server, now_s, false) {
            return;
        }
        let from = NodeId::service(&client.service);
        self.sync_pair(&from, &server, Some(client.seconds), None, client.error, now_s, virtual_server);
        if client.circuit_open
            && let Some(edge) = self.edges.get_mut(&EdgeKey { kind: EdgeKind::Sync, from, to: server })
        {
            edge.breaker_open_s = Some(now_s);
        }
    }

    /// The broker accepted (or refused) a publish of `messages` from `service` to `topic`,
    /// which took `seconds`.
    pub fn observe_publish(
        &mut self,
        service: &str,
        topic: &str,
        messages: u64,
        failed: bool,
        seconds: f64,
        now_s: u64,
    ) {
        if !self.name_ok(service) {
            return;
        }
        let (from, to) = (NodeId::service(service), NodeId::topic(topic));
        if !self.admit_node(&from, now_s, false) || !self.admit_node(&to, now_s, true) {
            return;
        }
        if let Some(edge) = self.edge(EdgeKind::Publish, &from, &to, now_s) {
            edge.observed.record(now_s, |s| {
                s.count += messages;
                s.failed += u64::from(failed);
                s.latency.record(seconds);
            });
        }
    }

    /// The broker delivered messages of `topic` through `subscription`, `redelivered` of
    /// them not for the first time.
    pub fn observe_deliveries(
        &mut self,
        topic: &str,
        subscription: &str,
        delivered: u64,
        redelivered: u64,
        now_s: u64,
    ) {
        let (from, to) = (NodeId::topic(topic), NodeId::subscription(topic, subscription));
        if !self.admit_node(&from, now_s, true) || !self.admit_node(&to, now_s, true) {
            return;
        }
        if let Some(edge) = self.edge(EdgeKind::Deliver, &from, &to, now_s) {
            edge.observed.record(now_s, |s| {
                s.count += delivered;
                s.redelivered += redelivered;
            });
        }
    }

    /// `service`, consuming `subscription` of `topic`, acked `end_to_end.len()` messages
    /// (each with the seconds from its publish to its ack) and `untimed` more whose publish
    /// time it did not keep, and nacked `nacked`.
    #[allow(clippy::too_many_arguments)]
    pub fn observe_settled(
        &mut self,
        topic: &str,
        subscription: &str,
        service: &str,
        end_to_end: &[f64],
        untimed: u64,
        nacked: u64,
        now_s: u64,
    ) {
        if !self.name_ok(service) {
            return;
        }
        let (from, to) = (NodeId::subscription(topic, subscription), NodeId::service(service));
        if !self.admit_node(&from, now_s, true) || !self.admit_node(&to, now_s, false) {
            return;
        }
        if let Some(edge) = self.edge(EdgeKind::Consume, &from, &to, now_s) {
            edge.observed.record(now_s, |s| {
                s.count += end_to_end.len() as u64 + untimed + nacked;
                s.failed += nacked;
                end_to_end.iter().for_each(|v| s.latency.record(*v));
            });
            edge.prom.record_many(end_to_end, untimed, nacked);
        }
    }

    /// The broker's topics and subscriptions now: each becomes (or stays) a node with a
    /// deliver edge, and each subscription keeps its reading for the congestion rules.
    pub fn observe_topology(&mut self, topics: &[TopicReading], now_s: u64) {
        for node in self.nodes.values_mut() {
            node.on_broker = false;
        }
        for reading in topics {
            let topic = NodeId::topic(&reading.topic);
            self.admit_node(&topic, now_s, true);
            for (name, gauges) in &reading.subscriptions {
                let sub = NodeId::subscription(&reading.topic, name);
                self.admit_node(&sub, now_s, true);
                if let Some(node) = self.nodes.get_mut(&sub) {
                    if node.gauges.len() == GAUGE_HISTORY {
                        node.gauges.pop_front();
                    }
                    node.gauges.push_back(Gauges { at_s: now_s, ..gauges.clone() });
                }
                // The edge exists while the subscription does; its rate comes from deliveries.
                let _ = self.edge(EdgeKind::Deliver, &topic, &sub, now_s);
            }
        }
    }
}

/// A name cut to 64 characters for an error message.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
