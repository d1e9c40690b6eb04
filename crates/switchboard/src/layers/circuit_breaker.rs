//! A circuit breaker: after repeated failures the handler is not called for a while, so a
//! dead dependency is not hammered and messages wait (nacked with the remaining open time)
//! instead of burning their delivery attempts.
//!
//! Closed → (`failure_threshold` consecutive failures) → open for `open_for` → half-open:
//! one trial call; success closes, failure opens again.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tower::{Layer, Service};

use crate::router::{Handled, HandlerError, Incoming, Outgoing};

/// When the breaker opens and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long it stays open before a trial call.
    pub open_for: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig { failure_threshold: 5, open_for: Duration::from_secs(10) }
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_running: bool },
}

/// The state of one breaker, shared by every clone of the service (and observable).
#[derive(Debug)]
pub struct Breaker {
    config: CircuitBreakerConfig,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: CircuitBreakerConfig) -> Breaker {
        Breaker { config, state: Mutex::new(State::Closed { failures: 0 }) }
    }

    /// True while calls are refused.
    pub fn is_open(&self) -> bool {
        matches!(*self.state.lock(), State::Open { until } if Instant::now() < until)
    }

    /// Admits a call, or says how long until the next trial. Every admitted call must be
    /// followed by [`Breaker::record`].
    ///
    /// # Errors
    /// The circuit is open: the time until a trial call is allowed.
    pub fn admit(&self) -> Result<(), Duration> {
        let mut state = self.state.lock();
        match &mut *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } => {
                let now = Instant::now();
                if now < *until {
                    return Err(*until - now);
                }
                *state = State::HalfOpen { trial_running: true };
                Ok(())
            }
            State::HalfOpen { trial_running } => {
                if *trial_running {
                    Err(self.config.open_for.min(Duration::from_secs(1)))
                } else {
                    *trial_running = true;
                    Ok(())
                }
            }
        }
    }

    /// Records the outcome of an admitted call.
    pub fn record(&self, success: bool) {
        let mut state = self.state.lock();
        let failures = match &*state {
            State::Closed { failures } => *failures,
            State::HalfOpen { .. } => self.config.failure_threshold.saturating_sub(1),
            State::Open { .. } => return,
        };
        *state = if success {
            State::Closed { failures: 0 }
        } else if failures + 1 >= self.config.failure_threshold {
            tracing::warn!(open_for = ?self.config.open_for, "Circuit breaker opened after repeated failures.");
            State::Open { until: Instant::now() + self.config.open_for }
        } else {
            State::Closed { failures: failures + 1 }
        };
    }
}

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
        CircuitBreaker { inner, breaker: self.breaker.clone() }
    }
}

/// The service of [`CircuitBreakerLayer`].
#[derive(Clone, Debug)]
pub struct CircuitBreaker<S> {
    inner: S,
    breaker: Arc<Breaker>,
}

impl<S> Service<Incoming> for CircuitBreaker<S>
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
        if let Err(wait) = self.breaker.admit() {
            return Box::pin(async move { Err(HandlerError::CircuitOpen(wait)) });
        }
        let breaker = self.breaker.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            // A poison message says nothing about the dependency's health.
            match &result {
                Err(e) if e.is_permanent() => breaker.record(true),
                r => breaker.record(r.is_ok()),
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_half_opens_for_one_trial() {
        let b =
            Breaker::new(CircuitBreakerConfig { failure_threshold: 2, open_for: Duration::from_millis(30) });
        assert!(b.admit().is_ok());
        b.record(false);
        assert!(b.admit().is_ok());
        b.record(false);
        assert!(b.is_open() && b.admit().is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok(), "trial admitted");
        assert!(b.admit().is_err(), "only one trial at a time");
        b.record(true);
        assert!(b.admit().is_ok() && !b.is_open());
    }
}
