//! Nodes, edges and the limits that bound them.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A service: it reports spans, or calls the broker under a name.
    Service,
    /// A topic of the broker.
    Topic,
    /// A subscription of the broker (`topic/subscription`).
    Subscription,
}

impl NodeKind {
    fn prefix(self) -> &'static str {
        match self {
            NodeKind::Service => "service",
            NodeKind::Topic => "topic",
            NodeKind::Subscription => "subscription",
        }
    }
}

/// A node: its kind and name. Displayed as `service:order`, `topic:orders`,
/// `subscription:orders/shipping`, which is also its id in every API.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Its kind.
    pub kind: NodeKind,
    /// Its name (`topic/subscription` for a subscription).
    pub name: Arc<str>,
}

impl NodeId {
    /// A service.
    pub fn service(name: &str) -> NodeId {
        NodeId { kind: NodeKind::Service, name: name.into() }
    }

    /// A topic.
    pub fn topic(name: &str) -> NodeId {
        NodeId { kind: NodeKind::Topic, name: name.into() }
    }

    /// A subscription of a topic.
    pub fn subscription(topic: &str, subscription: &str) -> NodeId {
        NodeId { kind: NodeKind::Subscription, name: format!("{topic}/{subscription}").into() }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.prefix(), self.name)
    }
}

/// What an edge is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// A synchronous call, service to service (REST, gRPC, GraphQL).
    Sync,
    /// A service publishing to a topic.
    Publish,
    /// A topic delivering to one of its subscriptions.
    Deliver,
    /// A subscription's messages handled by a service.
    Consume,
}

impl EdgeKind {
    /// `sync`, `publish`, `deliver`, `consume`.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Sync => "sync",
            EdgeKind::Publish => "publish",
            EdgeKind::Deliver => "deliver",
            EdgeKind::Consume => "consume",
        }
    }

    /// Tempo's `connection_type` label: empty for a call, `messaging_system` for a hop
    /// through the broker, `virtual_node` for a call to a service that reports no spans.
    pub fn connection_type(self, virtual_server: bool) -> &'static str {
        match self {
            EdgeKind::Sync if virtual_server => "virtual_node",
            EdgeKind::Sync => "",
            _ => "messaging_system",
        }
    }
}

/// An edge: its kind and ends.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    /// Its kind.
    pub kind: EdgeKind,
    /// Where it starts (the caller, the publisher, the topic, the subscription).
    pub from: NodeId,
    /// Where it ends.
    pub to: NodeId,
}

impl fmt::Display for EdgeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.kind.as_str(), self.from, self.to)
    }
}

/// What the graph may hold, so that no input can make it grow without bound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Nodes (services, and topics and subscriptions named only by spans); the broker's own
    /// topics and subscriptions are always admitted.
    pub max_nodes: usize,
    /// Edges.
    pub max_edges: usize,
    /// Spans waiting for their other half (a client for its server, a consumer for its
    /// producer).
    pub max_pending: usize,
    /// How long a span waits for its other half, in seconds (Tempo's default is 10 s).
    pub pending_wait_seconds: u64,
    /// The longest service, topic or subscription name, in bytes.
    pub max_name_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_nodes: 1_000,
            max_edges: 10_000,
            max_pending: 200_000,
            pending_wait_seconds: 10,
            max_name_bytes: 128,
        }
    }
}

impl Limits {
    /// Whether `name` may name a node: not empty, not too long, no control characters.
    pub fn valid_name(&self, name: &str) -> bool {
        !name.is_empty() && name.len() <= self.max_name_bytes && !name.chars().any(char::is_control)
    }
}

/// Counts of what the limits turned away.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// Spans refused because their service (or topic) would be a node past `max_nodes`.
    pub nodes: u64,
    /// Observations refused because their edge would be past `max_edges`.
    pub edges: u64,
    /// Spans that could not wait for their other half (`max_pending`).
    pub pending: u64,
    /// Spans whose other half never came within the wait.
    pub unpaired: u64,
    /// Spans with an empty, overlong or unprintable service or topic name.
    pub invalid_names: u64,
}
