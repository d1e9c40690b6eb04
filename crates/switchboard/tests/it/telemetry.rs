//! The SDK's OTLP exporter delivers spans to `switchboard serve`'s service graph.

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _};
use switchboard_graph::Window;
use switchboard_testkit::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlp_exporter_delivers_producer_and_consumer_spans_to_the_broker() {
    let server = TestServer::start().await;
    let endpoint = format!("{}/v1/traces", server.http());
    // Not the global provider: other tests in this binary install their own.
    let producer = switchboard::telemetry::init(&endpoint, "checkout", false).expect("exporter");
    let consumer = switchboard::telemetry::init(&endpoint, "shipping", false).expect("exporter");

    let tracer = producer.provider().tracer(switchboard::trace::TRACER_NAME);
    let send = tracer
        .span_builder("send orders")
        .with_kind(SpanKind::Producer)
        .with_attributes([KeyValue::new("messaging.destination.name", "orders")])
        .start(&tracer);
    let sent = send.span_context().clone();
    drop(send);
    let tracer = consumer.provider().tracer(switchboard::trace::TRACER_NAME);
    let parent = opentelemetry::Context::new().with_remote_span_context(sent);
    let process = tracer
        .span_builder("process orders")
        .with_kind(SpanKind::Consumer)
        .with_attributes([
            KeyValue::new("messaging.destination.name", "orders"),
            KeyValue::new("messaging.consumer.group.name", "shipping"),
        ])
        .start_with_context(&tracer, &parent);
    drop(process);

    // The batch processor's thread makes a blocking HTTP call to the server on this runtime.
    tokio::task::spawn_blocking(move || {
        producer.flush().expect("producer spans exported");
        consumer.flush().expect("consumer spans exported");
    })
    .await
    .expect("flush");

    let view = server.server().state().telemetry.view(Window::OneMinute);
    let ids: Vec<&str> = view.edges.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "consume subscription:orders/shipping -> service:shipping",
            "deliver topic:orders -> subscription:orders/shipping",
            "publish service:checkout -> topic:orders",
        ]
    );
    assert!(view.edges[0].end_to_end.is_some(), "the consumer paired with its producer across the broker");
    server.shutdown().await.expect("shutdown");
}

#[test]
fn without_an_endpoint_nothing_is_installed() {
    // The test process sets no OTEL_EXPORTER_OTLP_* variable.
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        assert!(switchboard::telemetry::init_from_env("test").expect("no error").is_none());
    }
}
