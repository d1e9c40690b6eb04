//! Handler metrics through the `metrics` facade (export them with any recorder, e.g.
//! `metrics-exporter-prometheus`):
//!
//! - `switchboard_handler_duration_seconds` (histogram), per handler, topic and outcome;
//! - `switchboard_handler_processed_total` / `switchboard_handler_failed_total` (by error
//!   kind), per handler and topic;
//! - `switchboard_handler_retries_total` (from the retry layer) and
//!   `switchboard_handler_dead_lettered_total` (from the dead-letter layer).

use std::future::Future;
use std::time::Instant;

use futures::future::BoxFuture;
use tower::Layer;

use super::{Around, Wrapped};
use crate::router::{Handled, Incoming};

/// Records latency and outcome of every handler call.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsLayer;

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;
    fn layer(&self, inner: S) -> Metrics<S> {
        Wrapped::new(inner, *self)
    }
}

/// The service of [`MetricsLayer`].
pub type Metrics<S> = Wrapped<S, MetricsLayer>;

impl Around for MetricsLayer {
    fn around<F>(&self, req: Incoming, next: impl FnOnce(Incoming) -> F) -> BoxFuture<'static, Handled>
    where
        F: Future<Output = Handled> + Send + 'static,
    {
        let handler = req.handler.to_string();
        let topic = req.info.topic.to_string();
        let start = Instant::now();
        let fut = next(req);
        Box::pin(async move {
            let result = fut.await;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.kind(),
            };
            metrics::histogram!("switchboard_handler_duration_seconds",
                "handler" => handler.clone(), "topic" => topic.clone(), "outcome" => outcome)
            .record(start.elapsed().as_secs_f64());
            match &result {
                Ok(_) => metrics::counter!("switchboard_handler_processed_total",
                    "handler" => handler, "topic" => topic)
                .increment(1),
                Err(e) => metrics::counter!("switchboard_handler_failed_total",
                    "handler" => handler, "topic" => topic, "kind" => e.kind())
                .increment(1),
            }
            result
        })
    }
}
