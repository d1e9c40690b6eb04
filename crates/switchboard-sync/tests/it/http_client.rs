//! `HttpClient` against an axum server on a loopback socket.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use opentelemetry::context::FutureExt as _;
use switchboard_policy::{Backoff, RetryPolicy};
use switchboard_sync::{CallError, CallPolicy, HttpClient, HttpError, REQUEST_TIMEOUT_HEADER, with_deadline};
use tokio::time::Instant;

use crate::support::{TRACE_ID, closed_port, parent, serve};

/// What the server saw.
#[derive(Default)]
struct Seen {
    hits: AtomicU32,
    requests: Mutex<Vec<(Instant, HeaderMap)>>,
}

impl Seen {
    /// Records a request; returns how many came before it.
    fn record(&self, headers: HeaderMap) -> u32 {
        self.requests.lock().expect("lock").push((Instant::now(), headers));
        self.hits.fetch_add(1, Ordering::SeqCst)
    }
}

type Shared = State<Arc<Seen>>;

async fn unavailable_once(State(seen): Shared, headers: HeaderMap) -> impl IntoResponse {
    if seen.record(headers) == 0 { (StatusCode::SERVICE_UNAVAILABLE, "busy") } else { (StatusCode::OK, "ok") }
}

async fn retry_after_once(
    State(seen): Shared,
    Path(secs): Path<u64>,
    headers: HeaderMap,
) -> axum::response::Response {
    if seen.record(headers) == 0 {
        (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", secs.to_string())], "later").into_response()
    } else {
        "ok".into_response()
    }
}

async fn always_unavailable(State(seen): Shared, headers: HeaderMap) -> StatusCode {
    seen.record(headers);
    StatusCode::SERVICE_UNAVAILABLE
}

async fn echo(State(seen): Shared, headers: HeaderMap) -> &'static str {
    seen.record(headers);
    "ok"
}

async fn start() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/unavailable-once", any(unavailable_once))
        .route("/retry-after-once/{secs}", get(retry_after_once))
        .route("/down", any(always_unavailable))
        .route("/echo", get(echo))
        .with_state(seen.clone());
    (format!("http://{}", serve(app).await), seen)
}

/// Quick backoff, so the tests wait on `Retry-After` only when they mean to.
fn policy() -> CallPolicy {
    let backoff =
        Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(5), ..Backoff::default() };
    CallPolicy::default()
        .with_timeout(Duration::from_secs(5))
        .with_retry(RetryPolicy { max_retries: 2, backoff })
}

fn client(policy: CallPolicy) -> HttpClient {
    HttpClient::new(policy).expect("client")
}

#[tokio::test]
async fn a_503_is_retried_then_succeeds() {
    let (base, seen) = start().await;
    let http = client(policy());
    let response = http.send(http.get(format!("{base}/unavailable-once"))).await.expect("retried");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("body"), "ok");
    assert_eq!(seen.hits.load(Ordering::SeqCst), 2);
    let requests = seen.requests.lock().expect("lock");
    assert!(requests.iter().all(|(_, h)| h.contains_key(REQUEST_TIMEOUT_HEADER)));
}

#[tokio::test]
async fn a_post_is_not_retried() {
    let (base, seen) = start().await;
    let http = client(policy());
    let err = http.send(http.post(format!("{base}/unavailable-once")).body("order")).await.expect_err("503");
    assert!(matches!(err, CallError::Failed { attempts: 1, .. }), "{err}");
    assert_eq!(err.inner().and_then(HttpError::status), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_persistent_503_fails_after_the_retries() {
    let (base, seen) = start().await;
    let http = client(policy());
    let err = http.send(http.put(format!("{base}/down"))).await.expect_err("down");
    assert!(matches!(err, CallError::Failed { attempts: 3, .. }), "{err}");
    assert!(err.to_string().contains("503 Service Unavailable"), "{err}");
    assert_eq!(seen.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retry_after_is_honored() {
    let (base, seen) = start().await;
    let http = client(policy());
    let response = http.send(http.get(format!("{base}/retry-after-once/1"))).await.expect("retried");
    assert_eq!(response.status(), StatusCode::OK);
    let requests = seen.requests.lock().expect("lock");
    assert_eq!(requests.len(), 2);
    // The backoff alone would be a few milliseconds; a sleep never ends early.
    let gap = requests[1].0 - requests[0].0;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
}

#[tokio::test]
async fn a_long_retry_after_is_capped() {
    let (base, seen) = start().await;
    let http = client(CallPolicy { max_retry_after: Duration::from_millis(20), ..policy() });
    let send = http.send(http.get(format!("{base}/retry-after-once/3600")));
    // Generous: the cap makes it immediate; without it the test would wait an hour.
    let response =
        tokio::time::timeout(Duration::from_secs(30), send).await.expect("capped").expect("retried");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn deadline_and_trace_context_are_sent() {
    let (base, seen) = start().await;
    let http = client(policy().with_timeout(Duration::from_secs(2)));

    // The caller's deadline is sooner than the policy's timeout: it is what is sent.
    let deadline = Instant::now() + Duration::from_millis(1500);
    let send = http.send(http.get(format!("{base}/echo")));
    with_deadline(deadline, send.with_context(parent())).await.expect("ok");
    // Without one, the policy's timeout is.
    http.send(http.get(format!("{base}/echo"))).await.expect("ok");

    let requests = seen.requests.lock().expect("lock");
    let timeout_ms = |h: &HeaderMap| -> u64 {
        h[REQUEST_TIMEOUT_HEADER].to_str().expect("ascii").parse().expect("milliseconds")
    };
    let (_, traced) = &requests[0];
    assert!((1..=1500).contains(&timeout_ms(traced)), "{:?}", traced[REQUEST_TIMEOUT_HEADER]);
    let traceparent = traced["traceparent"].to_str().expect("ascii");
    assert_eq!(traceparent.split('-').nth(1), Some(TRACE_ID), "{traceparent}");
    let (_, untraced) = &requests[1];
    assert!((1..=2000).contains(&timeout_ms(untraced)));
    assert!(!untraced.contains_key("traceparent"), "no current span, nothing to propagate");
}

#[tokio::test]
async fn an_unreachable_server_is_retried_then_reported_clearly() {
    let addr = closed_port().await;
    let http = client(policy());
    // Nothing was sent, so even a POST is retried on a refused connection.
    let err = http.send(http.post(format!("http://{addr}/orders"))).await.expect_err("refused");
    assert!(matches!(err, CallError::Failed { attempts: 3, .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&addr.to_string()) && text.to_lowercase().contains("connect"), "{text}");
}
