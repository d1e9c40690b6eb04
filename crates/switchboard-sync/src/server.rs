//! [`IncomingContextLayer`]: the server side of propagation, for any `http::Request`
//! service (a tonic server, an axum router, plain hyper).

use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{KeyValue, global};
use switchboard_core::TRACER_NAME;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::deadline;
use crate::propagation::{extract_context, incoming_timeout};

/// Runs each request inside the caller's deadline and trace: reads `grpc-timeout` or
/// [`REQUEST_TIMEOUT_HEADER`](crate::REQUEST_TIMEOUT_HEADER) and `traceparent`/
/// `tracestate`, starts a server span (kind server, `rpc.*` attributes for gRPC requests,
/// `http.*` for others) whose parent is the caller's span, and runs the inner service with
/// that span as the current OpenTelemetry context and the deadline as the ambient one. Calls
/// the handler makes through [`CallPolicy::call`](crate::CallPolicy::call) then continue the
/// trace and get no more than the time the caller has left.
///
/// The deadline is not enforced here (tonic enforces `grpc-timeout` itself; add a timeout
/// layer to an HTTP router if it should give up). The context covers the service's response
/// future; a streaming body polled after it is not covered.
///
/// ```no_run
/// # async fn run(routes: axum::Router) {
/// let app = routes.layer(switchboard_sync::IncomingContextLayer::new());
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct IncomingContextLayer {
    _private: (),
}

impl IncomingContextLayer {
    /// The layer.
    pub fn new() -> IncomingContextLayer {
        IncomingContextLayer { _private: () }
    }
}

impl<S> Layer<S> for IncomingContextLayer {
    type Service = IncomingContext<S>;
    fn layer(&self, inner: S) -> IncomingContext<S> {
        IncomingContext { inner }
    }
}

/// The service of [`IncomingContextLayer`].
#[derive(Clone, Debug)]
pub struct IncomingContext<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for IncomingContext<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let deadline = incoming_timeout(req.headers()).map(|t| Instant::now() + t);
        let parent = extract_context(req.headers());
        let grpc = is_grpc(&req);
        let (name, attributes) = span_name_and_attributes(&req, grpc);
        let tracer = global::tracer(TRACER_NAME);
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&tracer, &parent);
        let cx = parent.with_span(span);

        let fut = {
            let _attached = cx.clone().attach();
            match deadline {
                Some(d) => deadline::sync_with_deadline(d, || self.inner.call(req)),
                None => self.inner.call(req),
            }
        };
        Box::pin(async move {
            let fut = fut.with_context(cx.clone());
            let result = match deadline {
                Some(d) => deadline::with_deadline(d, fut).await,
                None => fut.await,
            };
            let span = cx.span();
            match &result {
                Ok(response) if grpc => {
                    // A trailers-only answer (an error, typically) has its status in the headers.
                    let code = response.headers().get("grpc-status").and_then(|v| v.to_str().ok());
                    if let Some(code) = code.and_then(|c| c.parse::<i64>().ok()) {
                        span.set_attribute(KeyValue::new("rpc.grpc.status_code", code));
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    span.set_attribute(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status.as_u16()),
                    ));
                    if status.is_server_error() {
                        span.set_status(Status::error(status.to_string()));
                    }
                }
                Err(_) => span.set_status(Status::error("the service failed")),
            }
            span.end();
            result
        })
    }
}

fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Semantic-convention span names: `service/method` for gRPC, the method for HTTP (the
/// route template is not known at this layer, and raw paths would make names unbounded).
fn span_name_and_attributes<B>(req: &http::Request<B>, grpc: bool) -> (String, Vec<KeyValue>) {
    let path = req.uri().path();
    if grpc {
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
        let attributes = vec![
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", service.to_string()),
            KeyValue::new("rpc.method", method.to_string()),
        ];
        (format!("{service}/{method}"), attributes)
    } else {
        let method = req.method().to_string();
        let attributes = vec![
            KeyValue::new("http.request.method", method.clone()),
            KeyValue::new("url.path", path.to_string()),
        ];
        (method, attributes)
    }
}
