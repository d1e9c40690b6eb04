//! The graph as Prometheus metrics under Tempo's service-graph names, so a Grafana Node
//! Graph panel built for Tempo works unchanged:
//!
//! - `traces_service_graph_request_total` and `…_request_failed_total` (counters),
//! - `traces_service_graph_request_server_seconds` and `…_request_client_seconds`
//!   (histograms),
//!
//! labelled `client`, `server` and `connection_type` (empty for a call, `messaging_system`
//! for a hop through the broker, `virtual_node` for a server that reports no spans). Nodes
//! are named as everywhere else (`service:order`, `topic:orders`, …) so a service and a
//! topic of the same name stay apart. The bucket bounds are finer than Tempo's defaults
//! (which start at 100 ms), since calls between services here take milliseconds.

use std::fmt::Write as _;

use crate::graph::ServiceGraph;

/// Histogram bucket upper bounds, in seconds.
pub const BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone, Debug, Default)]
pub(crate) struct PromHistogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl PromHistogram {
    fn record(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(self.buckets) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Since-start counters of one edge.
#[derive(Clone, Debug, Default)]
pub(crate) struct PromEdge {
    total: u64,
    failed: u64,
    server: PromHistogram,
    client: PromHistogram,
}

impl PromEdge {
    pub(crate) fn record(&mut self, failed: bool, server: Option<f64>, client: Option<f64>) {
        self.total += 1;
        self.failed += u64::from(failed);
        if let Some(s) = server {
            self.server.record(s);
        }
        if let Some(c) = client {
            self.client.record(c);
        }
    }

    /// Acks measured from publish (the client's view of a hop) and nacks.
    pub(crate) fn record_many(&mut self, end_to_end: &[f64], untimed: u64, nacked: u64) {
        self.total += end_to_end.len() as u64 + untimed + nacked;
        self.failed += nacked;
        end_to_end.iter().for_each(|s| self.client.record(*s));
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl ServiceGraph {
    /// Appends the service-graph metrics in the OpenMetrics text format (without `# EOF`).
    pub fn render_prometheus(&self, out: &mut String) {
        let mut edges: Vec<_> = self.edges.iter().filter(|(_, e)| e.prom.total > 0).collect();
        edges.sort_by(|a, b| a.0.cmp(b.0));
        let labels: Vec<String> = edges
            .iter()
            .map(|(k, e)| {
                format!(
                    "client=\"{}\",server=\"{}\",connection_type=\"{}\"",
                    escape(&k.from.to_string()),
                    escape(&k.to.to_string()),
                    k.kind.connection_type(e.virtual_server)
                )
            })
            .collect();
        let counter = |out: &mut String, name: &str, help: &str, value: &dyn Fn(&PromEdge) -> u64| {
            let _ = writeln!(out, "# TYPE {name} counter\n# HELP {name} {help}");
            for ((_, e), l) in edges.iter().zip(&labels) {
                let _ = writeln!(out, "{name}_total{{{l}}} {}", value(&e.prom));
            }
        };
        counter(out, "traces_service_graph_request", "Requests between two nodes.", &|p| p.total);
        counter(out, "traces_service_graph_request_failed", "Failed requests between two nodes.", &|p| {
            p.failed
        });
        for (name, help, pick) in [
            ("traces_service_graph_request_server_seconds", "Time the server (or consumer) took.", true),
            (
                "traces_service_graph_request_client_seconds",
                "Time the client waited (for a hop: publish to handled).",
                false,
            ),
        ] {
            let _ = writeln!(out, "# TYPE {name} histogram\n# HELP {name} {help}\n# UNIT {name} seconds");
            for ((_, e), l) in edges.iter().zip(&labels) {
                let h = if pick { &e.prom.server } else { &e.prom.client };
                h.render(out, name, l);
            }
        }
        let d = &self.dropped;
        let _ = writeln!(
            out,
            "# TYPE switchboard_service_graph_dropped counter\n# HELP switchboard_service_graph_dropped What the service graph's limits turned away, by reason."
        );
        for (reason, n) in [
            ("nodes", d.nodes),
            ("edges", d.edges),
            ("pending", d.pending),
            ("unpaired", d.unpaired),
            ("invalid_names", d.invalid_names),
        ] {
            let _ = writeln!(out, "switchboard_service_graph_dropped_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# TYPE switchboard_service_graph_spans counter\n# HELP switchboard_service_graph_spans Spans the service graph accepted.\nswitchboard_service_graph_spans_total {}",
            self.spans_total
        );
    }
}
