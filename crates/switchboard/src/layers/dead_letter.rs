//! Poison messages: a handler that rejects a message ([`HandlerError::Permanent`]) has it
//! moved to the route's dead-letter topic at once, with metadata saying why, instead of
//! burning every redelivery on a message that cannot succeed.
//!
//! The layer turns the rejection into an output for the dead-letter topic; the router
//! publishes it (and waits for the confirmation) before it acks the original, as for any
//! output, so a crash in between leaves a duplicate dead letter at worst, never a lost
//! message. The layer needs no bus of its own for that.

use std::future::Future;

use futures::future::BoxFuture;
use switchboard_core::backend::DeadLetterStamp;
use switchboard_core::contract::DeadLetterReason;
use tower::Layer;

use super::{Around, Wrapped};
use crate::router::{Handled, HandlerError, Incoming, Outgoing};

/// Dead-letters rejected messages.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeadLetterLayer;

impl DeadLetterLayer {
    /// The layer.
    pub fn new() -> DeadLetterLayer {
        DeadLetterLayer
    }
}

impl<S> Layer<S> for DeadLetterLayer {
    type Service = DeadLetter<S>;
    fn layer(&self, inner: S) -> DeadLetter<S> {
        Wrapped::new(inner, *self)
    }
}

/// The service of [`DeadLetterLayer`].
pub type DeadLetter<S> = Wrapped<S, DeadLetterLayer>;

/// The message as it goes to the dead-letter topic.
pub(crate) fn dead_letter_message(req: &Incoming, error: &HandlerError) -> switchboard_core::Message {
    let mut m = req.message.clone();
    let info = &req.info;
    DeadLetterStamp {
        reason: DeadLetterReason::Rejected,
        topic: &info.topic,
        subscription: &info.subscription,
        attempts: info.attempt,
        partition: info.partition,
        offset: info.offset,
        error: Some(&error.to_string()),
        handler: Some(&req.handler),
    }
    .stamp(&mut m);
    m
}

impl Around for DeadLetterLayer {
    fn around<F>(&self, req: Incoming, next: impl FnOnce(Incoming) -> F) -> BoxFuture<'static, Handled>
    where
        F: Future<Output = Handled> + Send + 'static,
    {
        let fut = next(req.clone());
        Box::pin(async move {
            match fut.await {
                Err(e) if e.is_permanent() => {
                    let letter = dead_letter_message(&req, &e);
                    tracing::warn!(handler = %req.handler, topic = %req.info.topic, id = %req.message.id,
                        dead_letter_topic = %req.dead_letter_topic, error = %e, "Dead-lettering a rejected message.");
                    metrics::counter!("switchboard_handler_dead_lettered_total",
                        "handler" => req.handler.to_string(), "topic" => req.info.topic.to_string())
                    .increment(1);
                    // The router publishes the dead letter, then acks the original.
                    Ok(vec![Outgoing::new(req.dead_letter_topic.clone(), letter)])
                }
                other => other,
            }
        })
    }
}
