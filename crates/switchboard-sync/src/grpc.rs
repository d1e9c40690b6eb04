//! gRPC: a tonic [`Channel`] that propagates trace context and deadline
//! ([`grpc_channel`]), and what a [`tonic::Status`] says about retrying.

use std::task::{Context, Poll};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanRef;
use tonic::Code;
use tonic::transport::channel::ResponseFuture;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tower::Service;

use crate::error::Retryable;
use crate::policy::CallPolicy;
use crate::propagation::{inject_grpc_timeout, inject_trace_context};

/// A lazily connecting channel to `uri` (`http://host:port`, or `https://` with the webpki
/// roots), with the policy's connect timeout, whose requests carry the trace context and
/// the ambient deadline. Call it within a Tokio runtime; the first request connects, so
/// services can start in any order.
///
/// # Errors
/// `uri` is not a valid URI, or TLS could not be configured.
pub fn grpc_channel(uri: &str, policy: &CallPolicy) -> Result<GrpcChannel, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(uri.to_string())?;
    if endpoint.uri().scheme_str() == Some("https") {
        endpoint = endpoint.tls_config(ClientTlsConfig::new().with_enabled_roots())?;
    }
    Ok(grpc_channel_from_endpoint(endpoint, policy))
}

/// Like [`grpc_channel`], for an endpoint configured by hand (custom TLS, keep-alive…); the
/// policy's connect timeout replaces the endpoint's.
pub fn grpc_channel_from_endpoint(endpoint: Endpoint, policy: &CallPolicy) -> GrpcChannel {
    GrpcChannel::new(endpoint.connect_timeout(policy.connect_timeout).connect_lazy())
}

/// A tonic [`Channel`] whose requests get `traceparent`/`tracestate` from the current
/// OpenTelemetry context and `grpc-timeout` from the ambient deadline (keeping a shorter
/// timeout the request already has). Give it to a generated client:
/// `InventoryClient::new(channel)`. Cheap to clone.
///
/// It does not time out, retry or break circuits on its own: run calls through
/// [`CallPolicy::call`], which does, and which sets the deadline and span this channel
/// propagates.
#[derive(Clone, Debug)]
pub struct GrpcChannel {
    inner: Channel,
}

impl GrpcChannel {
    /// Wraps a channel.
    pub fn new(inner: Channel) -> GrpcChannel {
        GrpcChannel { inner }
    }

    /// The underlying channel.
    pub fn into_inner(self) -> Channel {
        self.inner
    }
}

impl Service<http::Request<tonic::body::Body>> for GrpcChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> ResponseFuture {
        inject_trace_context(req.headers_mut());
        inject_grpc_timeout(req.headers_mut());
        self.inner.call(req)
    }
}

/// The metadata key of the gRPC retry pushback (milliseconds to wait before retrying).
const PUSHBACK: &str = "grpc-retry-pushback-ms";

/// - Retried: `UNAVAILABLE` only, the canonical "try again" (connection refused or reset,
///   server shutting down, or the server saying it did not process the request), so even a
///   non-idempotent method is safe to retry on it; [`CallPolicy::call`] retries only while
///   the caller's deadline leaves time.
/// - Not retried: `DEADLINE_EXCEEDED` (a shorter deadline down the chain ran out; the outcome
///   is unknown, and our own per-attempt timeout, retried for
///   [idempotent](crate::Operation::idempotent) operations, already covers slowness),
///   `RESOURCE_EXHAUSTED` (a quota or size limit an immediate retry does not lift) and every
///   other code (the request itself is wrong, or the outcome is unknown).
/// - Dependency failures (breaker): `UNAVAILABLE`, `DEADLINE_EXCEEDED`,
///   `RESOURCE_EXHAUSTED`, `INTERNAL`, `UNKNOWN` and `DATA_LOSS`.
/// - `grpc-retry-pushback-ms` in the status metadata is honored as the retry delay.
impl Retryable for tonic::Status {
    fn is_retryable(&self) -> bool {
        self.code() == Code::Unavailable
    }

    fn is_dependency_failure(&self) -> bool {
        self.is_retryable()
            || matches!(
                self.code(),
                Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Internal
                    | Code::Unknown
                    | Code::DataLoss
            )
    }

    fn retry_after(&self) -> Option<Duration> {
        let ms = self.metadata().get(PUSHBACK)?.to_str().ok()?.trim().parse().ok()?;
        Some(Duration::from_millis(ms))
    }

    fn annotate(&self, span: &SpanRef<'_>) {
        span.set_attribute(KeyValue::new("rpc.grpc.status_code", self.code() as i64));
        span.set_attribute(KeyValue::new("error.type", format!("{:?}", self.code())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classification() {
        assert!(tonic::Status::unavailable("down").is_retryable());
        let late = tonic::Status::deadline_exceeded("late");
        assert!(!late.is_retryable() && late.is_dependency_failure());
        let exhausted = tonic::Status::resource_exhausted("quota");
        assert!(!exhausted.is_retryable() && exhausted.is_dependency_failure());
        let invalid = tonic::Status::invalid_argument("bad sku");
        assert!(!invalid.is_retryable() && !invalid.is_dependency_failure());

        let mut pushed = tonic::Status::unavailable("busy");
        pushed.metadata_mut().insert(PUSHBACK, tonic::metadata::MetadataValue::from_static("250"));
        assert_eq!(pushed.retry_after(), Some(Duration::from_millis(250)));
    }
}
