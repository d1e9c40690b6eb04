//! Poison messages: a handler that rejects a message ([`HandlerError::Permanent`]) has it
//! moved to the route's dead-letter topic at once, with metadata saying why, instead of
//! burning every redelivery on a message that cannot succeed.
//!
//! The dead letter is published (and confirmed) before the original is acked, so a crash in
//! between leaves a duplicate dead letter at worst, never a lost message.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use switchboard_core::contract::{DeadLetter as DeadLetterMetadata, DeadLetterReason, PublishOptions};
use tower::{Layer, Service};

use crate::Bus;
use crate::router::{Handled, HandlerError, Incoming, Outgoing};

/// Dead-letters rejected messages through `bus`.
#[derive(Clone, Debug)]
pub struct DeadLetterLayer {
    bus: Bus,
}

impl DeadLetterLayer {
    /// Publishes dead letters through `bus`.
    pub fn new(bus: Bus) -> DeadLetterLayer {
        DeadLetterLayer { bus }
    }
}

impl<S> Layer<S> for DeadLetterLayer {
    type Service = DeadLetter<S>;
    fn layer(&self, inner: S) -> DeadLetter<S> {
        DeadLetter { inner, bus: self.bus.clone() }
    }
}

/// The service of [`DeadLetterLayer`].
#[derive(Clone, Debug)]
pub struct DeadLetter<S> {
    inner: S,
    bus: Bus,
}

/// The message as it goes to the dead-letter topic.
pub(crate) fn dead_letter_message(req: &Incoming, error: &HandlerError) -> switchboard_core::Message {
    let mut m = req.message.clone();
    let info = &req.info;
    DeadLetterMetadata {
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

impl<S> Service<Incoming> for DeadLetter<S>
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
        let bus = self.bus.clone();
        let fut = self.inner.call(req.clone());
        Box::pin(async move {
            match fut.await {
                Err(e) if e.is_permanent() => {
                    let letter = dead_letter_message(&req, &e);
                    bus.backend()
                        .publish(&req.dead_letter_topic, vec![letter], &PublishOptions::default())
                        .await
                        .map_err(HandlerError::Publish)?;
                    tracing::warn!(handler = %req.handler, topic = %req.info.topic, id = %req.message.id,
                        dead_letter_topic = %req.dead_letter_topic, error = %e, "Dead-lettered a rejected message.");
                    metrics::counter!("switchboard_handler_dead_lettered_total",
                        "handler" => req.handler.to_string(), "topic" => req.info.topic.to_string())
                    .increment(1);
                    // Handled: the router acks the original.
                    Ok(Vec::new())
                }
                other => other,
            }
        })
    }
}
