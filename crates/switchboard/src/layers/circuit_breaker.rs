//! A circuit breaker: after repeated failures the handler is not called for a while, so a
//! dead dependency is not hammered and messages wait (nacked with the remaining open time)
//! instead of burning their delivery attempts.
//!
//! Closed → (`failure_threshold` consecutive failures) → open for `open_for` → half-open:
//! one trial call; success closes, failure opens again.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use tower::Layer;

pub use switchboard_policy::Breaker;
/// The breaker's settings, under the SDK's name for them.
pub use switchboard_policy::BreakerConfig as CircuitBreakerConfig;

use super::{Around, Wrapped};
use crate::router::{Handled, HandlerError, Incoming};

/// Wraps a service in a [`Breaker`].
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer {
    breaker: Arc<Breaker>,
}

impl CircuitBreakerLayer {
    /// A layer with its own breaker.
    pub fn new(config: CircuitBreakerConfig) -> CircuitBreakerLayer {
        CircuitBreakerLayer { breaker: Arc::new(Breaker::new(config)) }
    }

    /// The breaker, to observe it or share it with a sync client of the same dependency.
    pub fn breaker(&self) -> Arc<Breaker> {
        self.breaker.clone()
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;
    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        Wrapped::new(inner, self.clone())
    }
}

/// The service of [`CircuitBreakerLayer`].
pub type CircuitBreaker<S> = Wrapped<S, CircuitBreakerLayer>;

impl Around for CircuitBreakerLayer {
    fn around<F>(&self, req: Incoming, next: impl FnOnce(Incoming) -> F) -> BoxFuture<'static, Handled>
    where
        F: Future<Output = Handled> + Send + 'static,
    {
        if let Err(wait) = self.breaker.admit() {
            return Box::pin(async move { Err(HandlerError::CircuitOpen(wait)) });
        }
        let admitted = Admitted(Some(self.breaker.clone()));
        let fut = next(req);
        Box::pin(async move {
            let result = fut.await;
            // A poison message says nothing about the dependency's health.
            admitted.record(match &result {
                Err(e) if e.is_permanent() => true,
                r => r.is_ok(),
            });
            result
        })
    }
}

/// A call the breaker let through. A half-open breaker refuses everything until its trial
/// call is recorded, so a call dropped midway (the router shutting down, a caller giving up)
/// records a success: a cancellation says nothing against the dependency.
struct Admitted(Option<Arc<Breaker>>);

impl Admitted {
    fn record(mut self, healthy: bool) {
        if let Some(b) = self.0.take() {
            b.record(healthy);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.record(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt as _;
    use switchboard_core::contract::DeliveryInfo;
    use switchboard_core::{Message, SubscriptionName, TopicName};
    use tower::{Service, service_fn};

    use super::*;

    fn incoming() -> Incoming {
        let info = DeliveryInfo::new(TopicName::from_static("t"), SubscriptionName::from_static("s"), 0, 0);
        Incoming::new(Message::new("/t", "t", "x"), info, "h")
    }

    #[test]
    fn a_trial_call_dropped_midway_does_not_leave_the_circuit_half_open() {
        let layer =
            CircuitBreakerLayer::new(CircuitBreakerConfig { failure_threshold: 1, open_for: Duration::ZERO });
        let breaker = layer.breaker();
        breaker.admit().expect("closed");
        breaker.record(false);
        // The open period is over: the next call is the trial. It never finishes.
        let mut svc = layer.layer(service_fn(|_: Incoming| futures::future::pending::<Handled>()));
        let trial = svc.call(incoming());
        assert!(trial.now_or_never().is_none(), "the trial is pending, then dropped");
        assert!(breaker.admit().is_ok(), "the dropped trial was recorded");
    }
}
