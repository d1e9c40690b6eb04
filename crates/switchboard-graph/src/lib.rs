//! # switchboard-graph
//!
//! The live map behind `switchboard serve`'s dashboard and `switchboard top`: which service
//! calls which, which publishes to which topic, which consumes which subscription, with
//! request rate, error rate, latency quantiles, end-to-end latency of a hop, backlog, lag
//! and in-flight counts over 1 min, 5 min and 1 h, and congestion flagged.
//!
//! Edges come from two sources that complement each other:
//!
//! - **spans** ([`otlp::decode`] then [`ServiceGraph::ingest`]): client/server pairs make sync
//!   edges, as Tempo's service graphs do; producer and consumer spans name their topic and
//!   subscription, and a consumer's parent **or link** pairs it with its producer for the
//!   end-to-end latency;
//! - **the broker** ([`ServiceGraph::observe_publish`], [`observe_deliveries`],
//!   [`observe_settled`], [`observe_topology`]): who published and consumed under which
//!   service name, acks, nacks, redeliveries and each subscription's readings — so async
//!   edges appear for services that export no spans at all.
//!
//! Memory is bounded: [`Limits`] caps nodes, edges and spans waiting for their other half,
//! every windowed value has a fixed size, and [`Dropped`] counts what the limits refused.
//!
//! [`observe_deliveries`]: ServiceGraph::observe_deliveries
//! [`observe_settled`]: ServiceGraph::observe_settled
//! [`observe_topology`]: ServiceGraph::observe_topology

pub mod congestion;
mod graph;
pub mod histogram;
mod model;
pub mod otlp;
mod pending;
mod prometheus;
pub mod span;
mod view;
pub mod window;

pub use congestion::{Congestion, CongestionKind};
pub use graph::{Gauges, Ingested, ServiceGraph, TopicReading, USER};
pub use model::{Dropped, EdgeKey, EdgeKind, Limits, NodeId, NodeKind};
pub use prometheus::BUCKETS as PROMETHEUS_BUCKETS;
pub use span::{Kind, SpanRecord};
pub use view::{EdgePoint, EdgeView, GraphView, History, NodeView, Quantiles};
pub use window::Window;
