//! Correlation ids: every message a handler publishes carries the `correlationid` of the
//! conversation it belongs to (the incoming message's, or its id if it has none) and a
//! `causationid` naming the message that caused it, so one business flow can be followed
//! through every service and topic.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::router::{Handled, HandlerError, Incoming, Outgoing};

/// The extension carrying the conversation's id.
pub const EXT_CORRELATION_ID: &str = "correlationid";
/// The extension naming the message that caused this one.
pub const EXT_CAUSATION_ID: &str = "causationid";

/// Stamps correlation and causation ids on handler output.
#[derive(Clone, Copy, Debug, Default)]
pub struct CorrelationLayer;

impl<S> Layer<S> for CorrelationLayer {
    type Service = Correlation<S>;
    fn layer(&self, inner: S) -> Correlation<S> {
        Correlation { inner }
    }
}

/// The service of [`CorrelationLayer`].
#[derive(Clone, Debug)]
pub struct Correlation<S> {
    inner: S,
}

/// The correlation id of a message: its own `correlationid`, else its id.
pub fn correlation_id(message: &switchboard_core::Message) -> &str {
    message.extensions.get(EXT_CORRELATION_ID).map_or(message.id.as_str(), String::as_str)
}

impl<S> Service<Incoming> for Correlation<S>
where
    S: Service<Incoming, Response = Vec<Outgoing>, Error = HandlerError>,
    S::Future: Send + 'static,
{
    type Response = Vec<Outgoing>;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Handled>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Incoming) -> Self::Future {
        let correlation = correlation_id(&req.message).to_owned();
        let causation = req.message.id.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut outputs = fut.await?;
            for out in &mut outputs {
                out.message
                    .extensions
                    .entry(EXT_CORRELATION_ID.into())
                    .or_insert_with(|| correlation.clone());
                out.message.extensions.entry(EXT_CAUSATION_ID.into()).or_insert_with(|| causation.clone());
            }
            Ok(outputs)
        })
    }
}
