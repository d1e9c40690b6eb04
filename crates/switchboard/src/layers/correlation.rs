//! Correlation ids: every message a handler publishes carries the `correlationid` of the
//! conversation it belongs to (the incoming message's, or its id if it has none) and a
//! `causationid` naming the message that caused it, so one business flow can be followed
//! through every service and topic.

use std::future::Future;

use futures::future::BoxFuture;
use tower::Layer;

use super::{Around, Wrapped};
use crate::router::{Handled, Incoming};

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
        Wrapped::new(inner, *self)
    }
}

/// The service of [`CorrelationLayer`].
pub type Correlation<S> = Wrapped<S, CorrelationLayer>;

/// The correlation id of a message: its own `correlationid`, else its id.
pub fn correlation_id(message: &switchboard_core::Message) -> &str {
    message.extensions.get(EXT_CORRELATION_ID).map_or(message.id.as_str(), String::as_str)
}

impl Around for CorrelationLayer {
    fn around<F>(&self, req: Incoming, next: impl FnOnce(Incoming) -> F) -> BoxFuture<'static, Handled>
    where
        F: Future<Output = Handled> + Send + 'static,
    {
        let correlation = correlation_id(&req.message).to_owned();
        let causation = req.message.id.clone();
        let fut = next(req);
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
