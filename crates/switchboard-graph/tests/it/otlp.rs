use switchboard_graph::otlp::{DecodeError, Encoding, decode};
use switchboard_graph::{Kind, ServiceGraph, Window};

const JSON: &str = r#"{
  "resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
    "scopeSpans": [{
      "scope": {"name": "curl"},
      "spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": "send orders",
        "kind": 4,
        "startTimeUnixNano": "1800000000000000000",
        "endTimeUnixNano": "1800000000002000000",
        "attributes": [{"key": "messaging.destination.name", "value": {"stringValue": "orders"}}],
        "someFutureField": {"ignored": true}
      }]
    }]
  }]
}"#;

#[test]
fn otlp_json_as_the_specification_writes_it() {
    let spans = decode(JSON.as_bytes(), Encoding::Json).unwrap();
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(
        (s.kind, s.service.as_str(), s.destination.as_deref()),
        (Kind::Producer, "checkout", Some("orders"))
    );
    assert_eq!(s.end_ns - s.start_ns, 2_000_000);
    let mut g = ServiceGraph::default();
    g.ingest(spans, 1_800_000_000);
    let view = g.view(Window::OneMinute, 1_800_000_000);
    assert_eq!(view.edges[0].id, "publish service:checkout -> topic:orders");
}

#[test]
fn malformed_documents_and_ids_are_refused_with_what_is_wrong() {
    assert!(matches!(decode(b"{not json", Encoding::Json), Err(DecodeError::Json(_))));
    assert!(matches!(decode(b"\xff\xff\xff", Encoding::Protobuf), Err(DecodeError::Protobuf(_))));
    let short = JSON.replace("5b8efff798038103d269b633813fc60c", "5b8e");
    let err = decode(short.as_bytes(), Encoding::Json).unwrap_err();
    assert!(err.to_string().contains("traceId must be 16 bytes"), "{err}");
    let nothex = JSON.replace("eee19b7ec3c1b174", "zzz19b7ec3c1b174");
    assert!(matches!(decode(nothex.as_bytes(), Encoding::Json), Err(DecodeError::InvalidId { .. })));
}

#[test]
fn protobuf_and_json_of_the_same_spans_decode_alike() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message as _;
    let s = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![s("service.name", "checkout")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![
                        0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f,
                        0xc6, 0x0c,
                    ],
                    span_id: vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74],
                    name: "send orders".into(),
                    kind: 4,
                    start_time_unix_nano: 1_800_000_000_000_000_000,
                    end_time_unix_nano: 1_800_000_000_002_000_000,
                    attributes: vec![s("messaging.destination.name", "orders")],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let from_proto = decode(&request.encode_to_vec(), Encoding::Protobuf).unwrap();
    assert_eq!(from_proto, decode(JSON.as_bytes(), Encoding::Json).unwrap());
}
