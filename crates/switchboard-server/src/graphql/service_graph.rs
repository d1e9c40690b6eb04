//! The service graph in GraphQL: `serviceGraph(window)` as a query, and as a subscription
//! that sends the graph again after each of the broker's samples (every 5 s). Typed objects
//! mirroring `GET /v1/graph`; reading it takes `admin` on every topic, as there.

use async_graphql::{Context, Enum, SimpleObject};
use futures::Stream;
use switchboard_graph as g;

use super::access::{principal, state};
use super::error::GqlResult;
use crate::auth::Action;

/// A window of the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum, Default)]
pub(super) enum GraphWindow {
    /// The last minute.
    #[default]
    OneMinute,
    /// The last five minutes.
    FiveMinutes,
    /// The last hour.
    OneHour,
}

impl From<GraphWindow> for g::Window {
    fn from(w: GraphWindow) -> g::Window {
        match w {
            GraphWindow::OneMinute => g::Window::OneMinute,
            GraphWindow::FiveMinutes => g::Window::FiveMinutes,
            GraphWindow::OneHour => g::Window::OneHour,
        }
    }
}

/// Latency quantiles in milliseconds.
#[derive(SimpleObject)]
pub(super) struct Quantiles {
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
}

impl From<g::Quantiles> for Quantiles {
    fn from(q: g::Quantiles) -> Quantiles {
        Quantiles { p50_ms: q.p50_ms, p95_ms: q.p95_ms, p99_ms: q.p99_ms }
    }
}

/// A congestion finding.
#[derive(SimpleObject)]
pub(super) struct Congestion {
    /// `backlog_growing`, `lag_growing`, `no_consumers`, `in_flight_cap`,
    /// `latency_climbing`, `errors_climbing` or `breaker_open`.
    kind: String,
    /// The figures behind it.
    detail: String,
}

fn congestion(c: Vec<g::Congestion>) -> Vec<Congestion> {
    c.into_iter().map(|c| Congestion { kind: kind_name(c.kind), detail: c.detail }).collect()
}

/// A subscription's latest reading.
#[derive(SimpleObject)]
pub(super) struct SubscriptionReading {
    at_s: u64,
    backlog: u64,
    lag: u64,
    in_flight: u64,
    dead_lettered: u64,
    consumers: u64,
    credits: Option<u64>,
}

/// A node: a service, a topic or a subscription.
#[derive(SimpleObject)]
pub(super) struct GraphNode {
    /// `service:order`, `topic:orders`, `subscription:orders/email`.
    id: String,
    /// `service`, `topic` or `subscription`.
    kind: String,
    name: String,
    rate_in: f64,
    rate_out: f64,
    errors_per_second: f64,
    virtual_node: bool,
    subscription: Option<SubscriptionReading>,
    congested: Vec<Congestion>,
}

/// An edge: a sync call, a publish, a delivery or a consume.
#[derive(SimpleObject)]
pub(super) struct GraphEdge {
    /// `<kind> <source> -> <target>`.
    id: String,
    /// `sync`, `publish`, `deliver` or `consume`.
    kind: String,
    source: String,
    target: String,
    rate: f64,
    error_rate: f64,
    redelivery_rate: f64,
    latency: Option<Quantiles>,
    end_to_end: Option<Quantiles>,
    connection_type: String,
    congested: Vec<Congestion>,
}

/// What the graph's limits turned away.
#[derive(SimpleObject)]
pub(super) struct GraphDropped {
    nodes: u64,
    edges: u64,
    pending: u64,
    unpaired: u64,
    invalid_names: u64,
}

/// The graph over a window.
#[derive(SimpleObject)]
pub(super) struct ServiceGraph {
    window: GraphWindow,
    at_s: u64,
    nodes: Vec<GraphNode>,
    edges: Vec<GraphEdge>,
    dropped: GraphDropped,
    pending_spans: u64,
}

fn kind_name(v: impl serde::Serialize) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn convert(view: g::GraphView, window: GraphWindow) -> ServiceGraph {
    let nodes = view
        .nodes
        .into_iter()
        .map(|n| GraphNode {
            id: n.id,
            kind: kind_name(n.kind),
            name: n.name,
            rate_in: n.rate_in,
            rate_out: n.rate_out,
            errors_per_second: n.errors_per_second,
            virtual_node: n.virtual_node,
            subscription: n.subscription.map(|s| SubscriptionReading {
                at_s: s.at_s,
                backlog: s.backlog,
                lag: s.lag,
                in_flight: s.in_flight,
                dead_lettered: s.dead_lettered,
                consumers: s.consumers,
                credits: s.credits,
            }),
            congested: congestion(n.congested),
        })
        .collect();
    let edges = view
        .edges
        .into_iter()
        .map(|e| GraphEdge {
            id: e.id,
            kind: kind_name(e.kind),
            source: e.source,
            target: e.target,
            rate: e.rate,
            error_rate: e.error_rate,
            redelivery_rate: e.redelivery_rate,
            latency: e.latency.map(Into::into),
            end_to_end: e.end_to_end.map(Into::into),
            connection_type: e.connection_type.to_owned(),
            congested: congestion(e.congested),
        })
        .collect();
    let d = view.dropped;
    ServiceGraph {
        window,
        at_s: view.at_s,
        nodes,
        edges,
        dropped: GraphDropped {
            nodes: d.nodes,
            edges: d.edges,
            pending: d.pending,
            unpaired: d.unpaired,
            invalid_names: d.invalid_names,
        },
        pending_spans: view.pending_spans as u64,
    }
}

/// The graph now, for `admin` on every topic.
pub(super) fn query(ctx: &Context<'_>, window: GraphWindow) -> async_graphql::Result<ServiceGraph> {
    principal(ctx)?.check(Action::Admin, None).gql()?;
    Ok(convert(state(ctx)?.telemetry.view(window.into()), window))
}

/// The graph now and after every sample.
pub(super) fn subscribe(
    ctx: &Context<'_>,
    window: GraphWindow,
) -> async_graphql::Result<impl Stream<Item = ServiceGraph> + use<>> {
    principal(ctx)?.check(Action::Admin, None).gql()?;
    let telemetry = state(ctx)?.telemetry.clone();
    Ok(futures::stream::unfold((telemetry, true), move |(t, first)| async move {
        if !first {
            t.next_sample().await;
        }
        let graph = convert(t.view(window.into()), window);
        Some((graph, (t, false)))
    }))
}
