//! `IncomingContextLayer` on an axum router: the caller's deadline and trace become the
//! handler's, and carry on to the handler's own calls.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use opentelemetry::Context;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::TraceContextExt;
use switchboard_sync::{
    CallPolicy, HttpClient, IncomingContextLayer, REQUEST_TIMEOUT_HEADER, remaining, with_deadline,
};
use tokio::time::Instant;

use crate::support::{TRACE_ID, parent, serve};

/// Answers `<trace id> <remaining ms>` as the handler sees them.
async fn whoami() -> String {
    let trace_id = Context::current().span().span_context().trace_id();
    let left = remaining().map_or("none".to_string(), |r| r.as_millis().to_string());
    format!("{trace_id} {left}")
}

#[tokio::test]
async fn the_callers_deadline_and_trace_are_the_handlers() {
    let app = Router::new().route("/whoami", get(whoami)).layer(IncomingContextLayer::new());
    let base = format!("http://{}", serve(app).await);
    let plain = reqwest::Client::new();
    let body = plain
        .get(format!("{base}/whoami"))
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .header(REQUEST_TIMEOUT_HEADER, "700")
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("body");
    let (trace_id, left) = body.split_once(' ').expect("two fields");
    assert_eq!(trace_id, TRACE_ID);
    assert!(left.parse::<u64>().is_ok_and(|ms| ms <= 700), "{body}");

    let body = plain.get(format!("{base}/whoami")).send().await.expect("sent").text().await.expect("body");
    assert!(body.ends_with(" none"), "no deadline header, no ambient deadline: {body}");
}

#[tokio::test]
async fn nested_calls_inherit_the_deadline_and_the_trace() {
    // backend records what it receives; frontend calls it while serving a request.
    let received: Arc<Mutex<Option<HeaderMap>>> = Arc::default();
    let backend = Router::new()
        .route(
            "/leaf",
            get(|State(r): State<Arc<Mutex<Option<HeaderMap>>>>, h: HeaderMap| async move {
                *r.lock().expect("lock") = Some(h);
                "leaf"
            }),
        )
        .with_state(received.clone());
    let backend = format!("http://{}/leaf", serve(backend).await);
    let http = HttpClient::new(CallPolicy::default().with_timeout(Duration::from_secs(10))).expect("client");
    let frontend = Router::new()
        .route(
            "/front",
            get(move || {
                let http = http.clone();
                let backend = backend.clone();
                async move { http.send(http.get(&backend)).await.expect("leaf").text().await.expect("body") }
            }),
        )
        .layer(IncomingContextLayer::new());
    let front = format!("http://{}/front", serve(frontend).await);

    // The test is a traced caller with 3 s left, calling the frontend through the client.
    let caller =
        HttpClient::new(CallPolicy::default().with_timeout(Duration::from_secs(10))).expect("client");
    let call = caller.send(caller.get(&front)).with_context(parent());
    let body = with_deadline(Instant::now() + Duration::from_secs(3), call).await.expect("front");
    assert_eq!(body.text().await.expect("body"), "leaf");

    let headers = received.lock().expect("lock").take().expect("leaf called");
    let traceparent = headers["traceparent"].to_str().expect("ascii");
    assert_eq!(traceparent.split('-').nth(1), Some(TRACE_ID), "{traceparent}");
    let left: u64 = headers[REQUEST_TIMEOUT_HEADER].to_str().expect("ascii").parse().expect("ms");
    assert!(left <= 3000, "the leaf got no more than the first caller had: {left} ms");
}
