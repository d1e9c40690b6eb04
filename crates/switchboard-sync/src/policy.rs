//! [`CallPolicy`]: the resilience settings of one dependency, shared by its gRPC channel or
//! HTTP client and by [`CallPolicy::call`].

use std::sync::Arc;
use std::time::Duration;

use switchboard_policy::{Backoff, Breaker, BreakerConfig, RetryPolicy};
use tower::retry::budget::TpsBudget;

/// Timeout, retries, retry budget and circuit breaker for the calls to one dependency.
///
/// The same building blocks as the SDK's handler middleware ([`RetryPolicy`], [`Backoff`],
/// [`Breaker`], from `switchboard-policy`), so a service's synchronous and asynchronous
/// edges are tuned alike; a [`Breaker`] can even be shared with the handler layer guarding
/// the same dependency (`switchboard::layers::CircuitBreakerLayer::breaker`).
///
/// Clones share the budget and the breaker: make one policy per dependency and clone it to
/// the places that call that dependency, not across dependencies.
#[derive(Clone, Debug)]
pub struct CallPolicy {
    /// Time limit of one attempt. The caller's ambient deadline
    /// ([`deadline`](crate::deadline)) shortens it when it is closer.
    pub timeout: Duration,
    /// Time limit for establishing a connection (gRPC channel, HTTP client).
    pub connect_timeout: Duration,
    /// Retries after the first attempt, and the backoff between them.
    pub retry: RetryPolicy,
    /// Longest wait a server's `Retry-After` (or gRPC pushback) is honored for; a longer one
    /// is shortened to this.
    pub max_retry_after: Duration,
    /// Caps retries to a share of the calls, so a failing dependency is not sent
    /// `max_retries + 1` times its normal load. Deposited once per call, withdrawn per retry.
    pub budget: Arc<TpsBudget>,
    /// Refuses calls for a while after repeated failures. `None`: no breaker.
    pub breaker: Option<Arc<Breaker>>,
}

impl Default for CallPolicy {
    /// - `timeout`: 2 s per attempt (a synchronous caller is usually waiting on it);
    /// - `connect_timeout`: 1 s;
    /// - `retry`: 2 retries, backoff 50 ms doubling up to 1 s with 50% jitter;
    /// - `max_retry_after`: 5 s;
    /// - `budget`: retries up to 20% of the calls of the last 10 s, plus 10 retries per
    ///   second for quiet clients (tower's `TpsBudget::default()`);
    /// - `breaker`: none (a breaker belongs to one dependency; add it with
    ///   [`CallPolicy::with_breaker`]).
    fn default() -> Self {
        CallPolicy {
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            retry: RetryPolicy {
                max_retries: 2,
                backoff: Backoff {
                    initial: Duration::from_millis(50),
                    max: Duration::from_secs(1),
                    multiplier: 2.0,
                    jitter: 0.5,
                },
            },
            max_retry_after: Duration::from_secs(5),
            budget: Arc::new(TpsBudget::default()),
            breaker: None,
        }
    }
}

impl CallPolicy {
    /// Sets the per-attempt timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the retries and backoff.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// No retries: for operations that must not be repeated.
    pub fn without_retries(mut self) -> Self {
        self.retry.max_retries = 0;
        self
    }

    /// Replaces the retry budget (e.g. `TpsBudget::new(ttl, min_per_sec, retry_percent)`).
    pub fn with_budget(mut self, budget: TpsBudget) -> Self {
        self.budget = Arc::new(budget);
        self
    }

    /// Adds a new circuit breaker.
    pub fn with_breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(Arc::new(Breaker::new(config)));
        self
    }

    /// Uses an existing breaker, e.g. the one of the handler layer guarding the same
    /// dependency, so both edges open and close together.
    pub fn with_shared_breaker(mut self, breaker: Arc<Breaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }
}
