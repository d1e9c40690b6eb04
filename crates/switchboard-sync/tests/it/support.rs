//! A small axum server on a loopback port, and a fixed trace parent.

use std::net::SocketAddr;

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

/// The trace id of [`parent`].
pub(crate) const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A remote parent span, as if this test were serving a traced request.
pub(crate) fn parent() -> Context {
    let trace_id = TraceId::from_hex(TRACE_ID).expect("hex");
    let span_id = SpanId::from_hex("00f067aa0ba902b7").expect("hex");
    let sc = SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, true, TraceState::default());
    Context::new().with_remote_span_context(sc)
}

/// Serves `router` on a fresh loopback port until the test's runtime ends.
pub(crate) async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    addr
}

/// A loopback address nobody listens on.
pub(crate) async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}
