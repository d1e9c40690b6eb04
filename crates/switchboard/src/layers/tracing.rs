//! A consumer span per handler call, named and attributed by the OpenTelemetry messaging
//! semantic conventions (`process <topic>`, kind consumer, `messaging.*` attributes), whose
//! parent is the `traceparent` the message carries; the handler's output carries this
//! span's context on, so a trace crosses every hop.

use std::future::Future;

use futures::future::BoxFuture;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{KeyValue, global};
use tower::Layer;
use tracing::Instrument;

use super::{Around, Wrapped};
use crate::router::{Handled, Incoming, Outgoing};
use crate::trace::{TRACER_NAME, extract, inject};

/// Starts a consumer span around every handler call; `messaging.system` is the backend the
/// delivery came through ([`Incoming::system`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceLayer;

impl TraceLayer {
    /// The layer.
    pub fn new() -> TraceLayer {
        TraceLayer
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Trace<S> {
        Wrapped::new(inner, *self)
    }
}

/// The service of [`TraceLayer`].
pub type Trace<S> = Wrapped<S, TraceLayer>;

impl Around for TraceLayer {
    fn around<F>(&self, req: Incoming, next: impl FnOnce(Incoming) -> F) -> BoxFuture<'static, Handled>
    where
        F: Future<Output = Handled> + Send + 'static,
    {
        let parent = extract(&req.message);
        let tracer = global::tracer(TRACER_NAME);
        let info = &req.info;
        let span = tracer
            .span_builder(format!("process {}", info.topic))
            .with_kind(SpanKind::Consumer)
            .with_attributes([
                KeyValue::new("messaging.system", req.system),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.operation.name", "process"),
                KeyValue::new("messaging.destination.name", info.topic.to_string()),
                KeyValue::new("messaging.destination.partition.id", info.partition.to_string()),
                KeyValue::new("messaging.consumer.group.name", info.subscription.to_string()),
                KeyValue::new("messaging.message.id", req.message.id.clone()),
                KeyValue::new("messaging.message.body.size", req.message.data.len() as i64),
                KeyValue::new("switchboard.handler", req.handler.to_string()),
                KeyValue::new("switchboard.delivery.attempt", i64::from(info.attempt)),
            ])
            .start_with_context(&tracer, &parent);
        let cx = parent.with_span(span);
        let log_span = tracing::info_span!("process", handler = %req.handler, topic = %info.topic,
            subscription = %info.subscription, id = %req.message.id, attempt = info.attempt);
        let fut = {
            let _attached = cx.clone().attach();
            next(req)
        };
        Box::pin(async move {
            let result = fut.with_context(cx.clone()).instrument(log_span).await;
            let span = cx.span();
            let result = match result {
                Ok(outputs) => {
                    span.set_status(Status::Ok);
                    Ok(outputs
                        .into_iter()
                        .map(|o| Outgoing { topic: o.topic, message: inject(&cx, o.message) })
                        .collect())
                }
                Err(e) => {
                    span.set_status(Status::error(e.to_string()));
                    span.set_attribute(KeyValue::new("error.type", e.kind()));
                    Err(e)
                }
            };
            span.end();
            result
        })
    }
}
