//! Spans ingested per second: OTLP protobuf decoded and added to the graph, on one thread,
//! with the shop's mix (sync client/server pairs, producers, consumers linked to them) over
//! 100 services and about 1,000 edges.
//!
//! `cargo bench -p switchboard-graph --bench ingest`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::Link};
use prost::Message as _;
use switchboard_graph::otlp::{Encoding, decode};
use switchboard_graph::{ServiceGraph, Window};

const SPANS_PER_REQUEST: usize = 512;
const SERVICES: u64 = 100;

fn attr(k: &str, v: String) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(v)) }) }
}

/// One export request from service `svc`: a quarter each of client, server, producer and
/// consumer spans, in traces numbered from `trace0`.
fn request(svc: u64, trace0: u64, now_ns: u64) -> Vec<u8> {
    let spans = (0..SPANS_PER_REQUEST as u64)
        .map(|i| {
            let trace = trace0 + i / 4;
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&trace.to_be_bytes());
            let peer = (svc + 1 + i % 9) % SERVICES;
            let topic = format!("topic-{}", (svc + i) % 50);
            let (kind, span_id, parent, attributes, links) = match i % 4 {
                0 => (3, 1u64, 0u64, vec![attr("server.address", format!("svc-{peer}"))], vec![]),
                1 => (2, 2, 1, vec![], vec![]),
                2 => (4, 3, 0, vec![attr("messaging.destination.name", topic)], vec![]),
                _ => (
                    5,
                    4,
                    0,
                    vec![
                        attr("messaging.destination.name", topic),
                        attr("messaging.consumer.group.name", format!("g{}", svc % 4)),
                    ],
                    vec![Link {
                        trace_id: trace_id.to_vec(),
                        span_id: 3u64.to_be_bytes().to_vec(),
                        ..Default::default()
                    }],
                ),
            };
            Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_be_bytes().to_vec(),
                parent_span_id: if parent == 0 { vec![] } else { parent.to_be_bytes().to_vec() },
                name: "op".into(),
                kind,
                start_time_unix_nano: now_ns,
                end_time_unix_nano: now_ns + 1_000_000 + i * 1_000,
                attributes,
                links,
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attr("service.name", format!("svc-{svc}"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn ingest(c: &mut Criterion) {
    let now_s = 1_800_000_000u64;
    let bodies: Vec<Vec<u8>> =
        (0..SERVICES).map(|s| request(s, s * 1_000_000, now_s * 1_000_000_000)).collect();
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(SPANS_PER_REQUEST as u64));
    let mut graph = ServiceGraph::default();
    let mut n = 0usize;
    group.bench_function("otlp_protobuf_decode_and_ingest", |b| {
        b.iter(|| {
            let body = &bodies[n % bodies.len()];
            n += 1;
            // A new second every 100 requests, so the windows rotate and the pending halves
            // expire as they would under a steady load.
            let spans = decode(body, Encoding::Protobuf).expect("valid");
            graph.ingest(spans, now_s + (n / 100) as u64)
        })
    });
    group.bench_function("view_1m", |b| b.iter(|| graph.view(Window::OneMinute, now_s + (n / 100) as u64)));
    group.finish();
    let (nodes, edges) = graph.size();
    eprintln!(
        "graph after the run: {nodes} nodes, {edges} edges, {} pending spans, dropped {:?}",
        graph.pending(),
        graph.dropped()
    );
}

criterion_group!(benches, ingest);
criterion_main!(benches);
