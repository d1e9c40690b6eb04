//! A scripted inventory, servers on loopback ports, a traced caller, test policies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use example_request_reply::inventory::{InventoryService, serve};
use example_request_reply::proto::{Inventory, ReserveReply, ReserveRequest};
use opentelemetry::Context;
use opentelemetry::trace::{TraceContextExt, TraceId};
use parking_lot::Mutex;
use switchboard::layers::Backoff;
use switchboard::layers::RetryPolicy;
use switchboard::trace::parse_traceparent;
use switchboard_sync::CallPolicy;
use switchboard_sync::propagation::parse_grpc_timeout;
use tonic::{Request, Response, Status};

/// The trace id of [`traced_caller`].
pub(crate) const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A remote parent span, as if the test were serving a traced request.
pub(crate) fn traced_caller() -> Context {
    let tp = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    Context::new().with_remote_span_context(parse_traceparent(&tp, None).expect("valid traceparent"))
}

/// What the inventory saw of one call.
#[derive(Clone, Debug)]
pub(crate) struct Observed {
    /// The `traceparent` metadata.
    pub(crate) traceparent: Option<String>,
    /// The `grpc-timeout` metadata.
    pub(crate) grpc_timeout: Option<Duration>,
    /// The trace the handler ran in.
    pub(crate) trace_id: TraceId,
    /// The handler's ambient deadline.
    pub(crate) remaining: Option<Duration>,
}

/// A real inventory that first answers `UNAVAILABLE` a number of times, or answers late.
#[derive(Default)]
pub(crate) struct Script {
    real: InventoryService,
    unavailable: AtomicU32,
    delay: Duration,
    /// Calls that reached the server.
    pub(crate) hits: AtomicU32,
    /// What each call carried.
    pub(crate) seen: Mutex<Vec<Observed>>,
}

impl Script {
    /// Stocked with 10 apples.
    pub(crate) fn new() -> Script {
        Script { real: InventoryService::new([("apple", 10)]), ..Script::default() }
    }

    /// Answers `UNAVAILABLE` to the first `n` calls.
    pub(crate) fn unavailable(self, n: u32) -> Script {
        Script { unavailable: AtomicU32::new(n), ..self }
    }

    /// Answers after `delay`.
    pub(crate) fn slow(self, delay: Duration) -> Script {
        Script { delay, ..self }
    }

    pub(crate) fn hits(&self) -> u32 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The [`Inventory`] server of a shared [`Script`].
struct Scripted(Arc<Script>);

#[tonic::async_trait]
impl Inventory for Scripted {
    async fn reserve(&self, request: Request<ReserveRequest>) -> Result<Response<ReserveReply>, Status> {
        let script = &self.0;
        script.hits.fetch_add(1, Ordering::SeqCst);
        let metadata = |key| request.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::to_string);
        script.seen.lock().push(Observed {
            traceparent: metadata("traceparent"),
            grpc_timeout: metadata("grpc-timeout").as_deref().and_then(parse_grpc_timeout),
            trace_id: Context::current().span().span_context().trace_id(),
            remaining: switchboard_sync::remaining(),
        });
        let failures_left = script.unavailable.load(Ordering::SeqCst);
        if failures_left > 0 {
            script.unavailable.store(failures_left - 1, Ordering::SeqCst);
            return Err(Status::unavailable("inventory warming up"));
        }
        tokio::time::sleep(script.delay).await;
        script.real.take(request.get_ref()).map(Response::new)
    }
}

/// Serves `script` on a loopback port until the test ends; gives its URI.
pub(crate) async fn serve_script(script: Script) -> (String, Arc<Script>) {
    let script = Arc::new(script);
    (serve_on_loopback(Scripted(script.clone())).await, script)
}

/// Serves a plain inventory on a loopback port; gives its URI.
pub(crate) async fn serve_inventory(inventory: InventoryService) -> String {
    serve_on_loopback(inventory).await
}

async fn serve_on_loopback(service: impl Inventory) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let uri = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { serve(listener, service, std::future::pending()).await.expect("serve") });
    uri
}

/// A URI nobody listens on.
pub(crate) async fn unreachable_uri() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    format!("http://{}", listener.local_addr().expect("addr"))
}

/// A generous timeout (correctness, not speed, is tested), 2 retries with a short backoff.
pub(crate) fn policy() -> CallPolicy {
    let backoff =
        Backoff { initial: Duration::from_millis(5), max: Duration::from_millis(20), ..Backoff::default() };
    CallPolicy::default()
        .with_timeout(Duration::from_secs(5))
        .with_retry(RetryPolicy { max_retries: 2, backoff })
}
