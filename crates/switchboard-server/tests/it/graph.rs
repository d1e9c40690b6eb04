//! The service graph on a real server: OTLP in (JSON and protobuf, as `curl` and an
//! exporter send it), the broker's own observations, and the graph out over REST and
//! `/metrics`; bad input refused without disturbing anything.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard_testkit::{ADMIN_TOKEN, ORDERS_ADMIN_TOKEN, TestServer};

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// One OTLP/JSON request from `service` with the given spans.
fn otlp(service: &str, spans: Vec<Value>) -> Value {
    json!({ "resourceSpans": [{
        "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": service } }] },
        "scopeSpans": [{ "scope": { "name": "test" }, "spans": spans }],
    }]})
}

fn span(trace: &str, id: &str, parent: Option<&str>, kind: u8, attributes: Value) -> Value {
    let start = now_ns();
    let mut s = json!({
        "traceId": trace, "spanId": id, "name": "op", "kind": kind,
        "startTimeUnixNano": start.to_string(), "endTimeUnixNano": (start + 3_000_000).to_string(),
        "attributes": attributes,
    });
    if let Some(p) = parent {
        s["parentSpanId"] = json!(p);
    }
    s
}

async fn send_json(s: &TestServer, token: Option<&str>, body: &[u8]) -> (StatusCode, Value) {
    let mut req = client().post(format!("{}/v1/traces", s.http())).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.body(body.to_vec()).send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn graph(s: &TestServer, token: Option<&str>) -> Value {
    let mut req = client().get(format!("{}/v1/graph?window=1m", s.http()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

fn edge_ids(g: &Value) -> Vec<String> {
    g["edges"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
}

const TRACE: &str = "5b8efff798038103d269b633813fc60c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_sent_as_otlp_json_appear_on_the_map() {
    let s = TestServer::start().await;
    let client_span = span(TRACE, "eee19b7ec3c1b174", None, 3, json!([]));
    let server_span = span(TRACE, "1111111111111111", Some("eee19b7ec3c1b174"), 2, json!([]));
    let (status, body) = send_json(&s, None, otlp("order", vec![client_span]).to_string().as_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}), "full success has no partial success");
    send_json(&s, None, otlp("inventory", vec![server_span]).to_string().as_bytes()).await;
    let g = graph(&s, None).await;
    assert_eq!(edge_ids(&g), ["sync service:order -> service:inventory"]);
    assert!(g["edges"][0]["latency"]["p99_ms"].as_f64().unwrap() > 0.0);

    let metrics = client().get(format!("{}/metrics", s.http())).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"traces_service_graph_request_total{client="service:order",server="service:inventory",connection_type=""} 1"#),
        "{metrics}"
    );
    assert!(metrics.trim_end().ends_with("# EOF"));
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_draws_publishers_and_consumers_that_export_no_spans() {
    let s = TestServer::start().await;
    let http = client();
    let base = s.http();
    http.post(format!("{base}/v1/topics")).json(&json!({"name": "orders"})).send().await.unwrap();
    http.post(format!("{base}/v1/topics/orders/subscriptions"))
        .json(&json!({"name": "email", "config": {"mode": "queue"}}))
        .send()
        .await
        .unwrap();
    for i in 0..5 {
        let event = json!({"specversion": "1.0", "id": format!("e{i}"), "source": "/order", "type": "order.created", "data": i});
        let resp = http
            .post(format!("{base}/v1/topics/orders/events"))
            .header("content-type", "application/cloudevents+json")
            .header("switchboard-service", "order")
            .body(event.to_string())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
    let got: Value = http
        .post(format!("{base}/v1/topics/orders/subscriptions/email/receive?max=10"))
        .header("switchboard-service", "email")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let receipts: Vec<Value> =
        got["messages"].as_array().unwrap().iter().map(|m| m["receipt"].clone()).collect();
    assert_eq!(receipts.len(), 5);
    let acked = http
        .post(format!("{base}/v1/topics/orders/subscriptions/email/ack"))
        .header("switchboard-service", "email")
        .json(&json!({"receipts": receipts}))
        .send()
        .await
        .unwrap();
    assert!(acked.status().is_success());

    let g = graph(&s, None).await;
    assert_eq!(
        edge_ids(&g),
        [
            "consume subscription:orders/email -> service:email",
            "deliver topic:orders -> subscription:orders/email",
            "publish service:order -> topic:orders",
        ]
    );
    for e in g["edges"].as_array().unwrap() {
        assert!(e["rate"].as_f64().unwrap() > 0.0, "{e}");
        assert_eq!(e["connection_type"], "messaging_system");
    }
    let publish = &g["edges"][2];
    assert!(publish["latency"]["p50_ms"].as_f64().is_some(), "the broker times each publish: {publish}");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_otlp_is_refused_clearly_and_changes_nothing() {
    let s = TestServer::start_with(|c| {
        c.limits.max_request_bytes = 64 * 1024;
        c.service_graph.max_nodes = 20;
    })
    .await;
    let good = otlp("order", vec![span(TRACE, "eee19b7ec3c1b174", None, 2, json!([]))]).to_string();
    assert_eq!(send_json(&s, None, good.as_bytes()).await.0, StatusCode::OK);
    let before = edge_ids(&graph(&s, None).await);

    let (status, body) = send_json(&s, None, b"{\"resourceSpans\": [").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], 3, "a google.rpc.Status, as OTLP/HTTP asks: {body}");
    assert!(body["message"].as_str().unwrap().contains("malformed OTLP/JSON"), "{body}");

    let short_id = good.replace(TRACE, "abcd");
    let (status, body) = send_json(&s, None, short_id.as_bytes()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("traceId must be 16 bytes"), "{body}");

    let resp = client()
        .post(format!("{}/v1/traces", s.http()))
        .header("content-type", "application/x-protobuf")
        .body(vec![0xff, 0xff, 0xff, 0xff])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");

    let resp = client()
        .post(format!("{}/v1/traces", s.http()))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let resp = client()
        .post(format!("{}/v1/traces", s.http()))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let oversized = otlp(
        "order",
        vec![span(
            TRACE,
            "eee19b7ec3c1b174",
            None,
            2,
            json!([{"key": "x", "value": {"stringValue": "y".repeat(70_000)}}]),
        )],
    );
    let (status, _) = send_json(&s, None, oversized.to_string().as_bytes()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // A flood of service names: the graph keeps its node limit, says how many spans it
    // refused, and still serves what it had.
    let flood: Vec<Value> = (0..150)
        .map(|i| {
            let mut r =
                otlp(&format!("svc-{i}"), vec![span(TRACE, &format!("{:016x}", i + 1), None, 2, json!([]))]);
            r["resourceSpans"][0].take()
        })
        .collect();
    let (status, body) = send_json(&s, None, json!({ "resourceSpans": flood }).to_string().as_bytes()).await;
    assert_eq!(status, StatusCode::OK);
    let rejected: u64 = body["partialSuccess"]["rejectedSpans"].as_str().unwrap().parse().unwrap();
    assert!(rejected >= 120, "{body}");
    assert!(body["partialSuccess"]["errorMessage"].as_str().unwrap().contains("too many services"));
    let after = graph(&s, None).await;
    assert!(after["nodes"].as_array().unwrap().len() <= 20);
    assert!(after["dropped"]["nodes"].as_u64().unwrap() >= 120);
    for id in &before {
        assert!(edge_ids(&after).contains(id), "{id} survived the flood");
    }
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_spans_and_reading_the_graph_need_their_permissions() {
    let s = TestServer::start_with_auth().await;
    let good = otlp("order", vec![span(TRACE, "eee19b7ec3c1b174", None, 2, json!([]))]).to_string();
    assert_eq!(send_json(&s, None, good.as_bytes()).await.0, StatusCode::UNAUTHORIZED);
    // The orders admin has `telemetry` only on `orders*`, not on every topic.
    assert_eq!(send_json(&s, Some(ORDERS_ADMIN_TOKEN), good.as_bytes()).await.0, StatusCode::FORBIDDEN);
    assert_eq!(send_json(&s, Some(ADMIN_TOKEN), good.as_bytes()).await.0, StatusCode::OK);
    let resp =
        client().get(format!("{}/v1/graph", s.http())).bearer_auth(ORDERS_ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let g = graph(&s, Some(ADMIN_TOKEN)).await;
    assert_eq!(edge_ids(&g), ["sync service:user -> service:order"]);
    let resp = client()
        .get(format!("{}/v1/graph?window=2m", s.http()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = client()
        .get(format!("{}/v1/graph/history?id=sync%20service:user%20-%3E%20service:order", s.http()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h: Value = resp.json().await.unwrap();
    assert_eq!(h["points"].as_array().unwrap().len(), 1);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_header_that_is_not_a_name_is_refused() {
    let s = TestServer::start().await;
    let resp = client()
        .get(format!("{}/v1/topics", s.http()))
        .header("switchboard-service", "two words")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    s.shutdown().await.unwrap();
}

/// One telemetry path: the same OTLP export sent to two receivers makes the same edges on
/// both, in JSON on one and protobuf on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_spans_sent_to_a_second_receiver_make_the_same_edges() {
    let (a, b) = (TestServer::start().await, TestServer::start().await);
    let spans = otlp(
        "order",
        vec![
            span(TRACE, "eee19b7ec3c1b174", None, 2, json!([])),
            span(
                TRACE,
                "2222222222222222",
                Some("eee19b7ec3c1b174"),
                4,
                json!([{"key": "messaging.destination.name", "value": {"stringValue": "orders"}}]),
            ),
        ],
    )
    .to_string();
    assert_eq!(send_json(&a, None, spans.as_bytes()).await.0, StatusCode::OK);
    // The receiver's own decoder turns the JSON into the protobuf a second exporter sends.
    let decoded =
        switchboard_graph::otlp::decode(spans.as_bytes(), switchboard_graph::otlp::Encoding::Json).unwrap();
    assert_eq!(decoded.len(), 2);
    let protobuf = proto_of(&spans);
    let resp = client()
        .post(format!("{}/v1/traces", b.http()))
        .header("content-type", "application/x-protobuf")
        .body(protobuf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (ga, gb) = (graph(&a, None).await, graph(&b, None).await);
    assert_eq!(
        edge_ids(&ga),
        ["publish service:order -> topic:orders", "sync service:user -> service:order"]
    );
    assert_eq!(edge_ids(&ga), edge_ids(&gb));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// The protobuf form of an OTLP/JSON document of the shape `otlp` writes.
fn proto_of(json_text: &str) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message as _;
    let doc: Value = serde_json::from_str(json_text).unwrap();
    let hex = |s: &str| {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect::<Vec<u8>>()
    };
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
    };
    let rs = &doc["resourceSpans"][0];
    let service = rs["resource"]["attributes"][0]["value"]["stringValue"].as_str().unwrap();
    let spans = rs["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Span {
            trace_id: hex(s["traceId"].as_str().unwrap()),
            span_id: hex(s["spanId"].as_str().unwrap()),
            parent_span_id: s["parentSpanId"].as_str().map(hex).unwrap_or_default(),
            name: "op".into(),
            kind: s["kind"].as_i64().unwrap() as i32,
            start_time_unix_nano: s["startTimeUnixNano"].as_str().unwrap().parse().unwrap(),
            end_time_unix_nano: s["endTimeUnixNano"].as_str().unwrap().parse().unwrap(),
            attributes: s["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| kv(a["key"].as_str().unwrap(), a["value"]["stringValue"].as_str().unwrap()))
                .collect(),
            status: Some(Status::default()),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// OTLP over gRPC on the server's gRPC port: the same graph, the same permission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_over_grpc_lands_in_the_same_graph() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use prost::Message as _;
    let s = TestServer::start_with_auth().await;
    let spans = otlp("order", vec![span(TRACE, "eee19b7ec3c1b174", None, 2, json!([]))]).to_string();
    let request = ExportTraceServiceRequest::decode(proto_of(&spans).as_slice()).unwrap();
    let channel = tonic::transport::Endpoint::from_shared(s.grpc()).unwrap().connect().await.unwrap();
    let mut client = TraceServiceClient::new(channel);
    let refused = client.export(request.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut authorized = tonic::Request::new(request);
    authorized.metadata_mut().insert("authorization", format!("Bearer {ADMIN_TOKEN}").parse().unwrap());
    let answer = client.export(authorized).await.unwrap().into_inner();
    assert!(answer.partial_success.is_none());
    assert_eq!(edge_ids(&graph(&s, Some(ADMIN_TOKEN)).await), ["sync service:user -> service:order"]);
    s.shutdown().await.unwrap();
}
