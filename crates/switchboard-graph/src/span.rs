//! The part of a span the graph reads, whatever format it arrived in.

/// A trace id.
pub type TraceId = [u8; 16];
/// A span id.
pub type SpanId = [u8; 8];

/// The OpenTelemetry span kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Inside a service: not an edge.
    Internal,
    /// Serves a synchronous call.
    Server,
    /// Makes a synchronous call.
    Client,
    /// Sends messages.
    Producer,
    /// Receives or processes messages.
    Consumer,
}

/// One span, reduced to what derives edges.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRecord {
    /// Its trace.
    pub trace_id: TraceId,
    /// Its id.
    pub span_id: SpanId,
    /// Its parent, if any.
    pub parent_span_id: Option<SpanId>,
    /// Its kind.
    pub kind: Kind,
    /// `service.name` of the resource that reported it.
    pub service: String,
    /// Start, nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_ns: u64,
    /// Whether its status is an error.
    pub error: bool,
    /// `messaging.destination.name`: the topic.
    pub destination: Option<String>,
    /// `messaging.consumer.group.name` (or the older `messaging.kafka.consumer.group` style
    /// names are not read): the subscription.
    pub consumer_group: Option<String>,
    /// `peer.service`, else `server.address`: whom a client span calls, for calls whose
    /// server reports no span.
    pub peer: Option<String>,
    /// `error.type`, which says why a call failed (`circuit_open` when a breaker refused it).
    pub error_type: Option<String>,
    /// Spans it links to (`trace id`, `span id`): a consumer links to the producers of the
    /// messages it handles.
    pub links: Vec<(TraceId, SpanId)>,
}

impl SpanRecord {
    /// Its duration in seconds (zero if it ends before it starts).
    pub fn seconds(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9
    }
}
