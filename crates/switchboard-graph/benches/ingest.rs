//! Spans ingested per second: OTLP protobuf decoded and added to the graph, on one thread,
//! with the shop's mix (sync client/server pairs, producers, consumers linked to them) over
//! 100 services and about 1,000 edges; and the resident memory the graph adds, read from
//! `/proc/self/status` before and after.
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
/// A trace id naming the round, the service whose span starts the trace, and the index.
fn trace(round: u64, svc: u64, i: u64) -> Vec<u8> {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&(round as u32).to_be_bytes());
    id[4..8].copy_from_slice(&(svc as u32).to_be_bytes());
    id[8..].copy_from_slice(&i.to_be_bytes());
    id.to_vec()
}

/// One export request from service `svc` in round `round` (every service exports once a
/// round). A quarter each: client spans calling one of 7 other services; server spans
/// answering the client spans other services sent in this round; producer spans on the
/// service's topic (one of 50); consumer spans, linked to another service's producer. About
/// 1,000 edges over 100 services, and every pair's halves in different requests, as they
/// are from real services.
fn request(round: u64, svc: u64, now_ns: u64) -> Vec<u8> {
    let spans = (0..SPANS_PER_REQUEST as u64)
        .map(|i| {
            let (trace_id, kind, span_id, parent, attributes, links) = match i % 4 {
                0 => {
                    let peer = (svc + 1 + i % 7) % SERVICES;
                    (
                        trace(round, svc, i),
                        3,
                        1u64,
                        0u64,
                        vec![attr("server.address", format!("svc-{peer}"))],
                        vec![],
                    )
                }
                1 => {
                    // The client at index i - 1 of the service that calls this one there.
                    let caller = (svc + SERVICES - 1 - (i - 1) % 7) % SERVICES;
                    (trace(round, caller, i - 1), 2, 2, 1, vec![], vec![])
                }
                2 => (
                    trace(round, svc, i),
                    4,
                    3,
                    0,
                    vec![attr("messaging.destination.name", format!("topic-{}", svc % 50))],
                    vec![],
                ),
                _ => {
                    let producer = (svc + SERVICES - 1) % SERVICES;
                    let link = Link {
                        trace_id: trace(round, producer, i - 1),
                        span_id: 3u64.to_be_bytes().to_vec(),
                        ..Default::default()
                    };
                    let attributes = vec![
                        attr("messaging.destination.name", format!("topic-{}", producer % 50)),
                        attr("messaging.consumer.group.name", format!("g{}", svc % 4)),
                    ];
                    (trace(round, svc, i), 5, 4, 0, attributes, vec![link])
                }
            };
            Span {
                trace_id,
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

/// Resident memory in KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn ingest(c: &mut Criterion) {
    let now_s = 1_800_000_000u64;
    // Ten rounds: 10 simulated seconds at 100 requests a second, the wait of a half for its
    // partner, so ids repeat only once their halves have expired.
    let bodies: Vec<Vec<u8>> =
        (0..10 * SERVICES).map(|n| request(n / SERVICES, n % SERVICES, now_s * 1_000_000_000)).collect();
    let rss_before = rss_kib();
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
        "graph after the run: {nodes} nodes, {edges} edges, {} pending spans, dropped {:?}; resident memory grew {} KiB",
        graph.pending(),
        graph.dropped(),
        rss_kib().saturating_sub(rss_before)
    );
}

criterion_group!(benches, ingest);
criterion_main!(benches);
