//! The router's middleware, each a tower [`Layer`] over handler services, and
//! [`Middleware`]: the standard stack in the order that makes each layer see what it must,
//! itself a [`Layer`].
//!
//! ```
//! use std::time::Duration;
//! use switchboard::{Handled, Incoming, Middleware};
//! use tower::Layer;
//!
//! let handler = tower::service_fn(|_: Incoming| async { Handled::Ok(vec![]) });
//! let service = Middleware::default().with_timeout(Some(Duration::from_secs(5))).layer(handler);
//! # let _ = service;
//! ```

mod around;
mod catch_panic;
mod circuit_breaker;
mod correlation;
mod dead_letter;
mod inbox;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod inbox_sql;
mod key_order;
mod metrics;
mod retry;
mod timeout;
mod tracing;

use std::sync::Arc;
use std::time::Duration;

use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder};

pub use around::{Around, Wrapped};
pub use catch_panic::{CatchPanic, CatchPanicLayer};
pub use circuit_breaker::{Breaker, CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer};
pub use correlation::{Correlation, CorrelationLayer, EXT_CAUSATION_ID, EXT_CORRELATION_ID, correlation_id};
pub use dead_letter::{DeadLetter, DeadLetterLayer};
pub use inbox::{Inbox, InboxLayer, InboxStore, MemoryInbox};
#[cfg(feature = "postgres")]
pub use inbox_sql::PostgresInbox;
#[cfg(feature = "sqlite")]
pub use inbox_sql::SqliteInbox;
pub use key_order::{KeyOrder, KeyOrderLayer};
pub use metrics::{Metrics, MetricsLayer};
pub use retry::{Backoff, Retry, RetryLayer, RetryPolicy};
pub use timeout::{Timeout, TimeoutLayer};
pub use tracing::{Trace, TraceLayer};

use crate::router::{HandlerError, Incoming, Outgoing, RouteService};

/// The settings of the standard middleware stack; `None` leaves a layer out. Set them with
/// the `with_*` methods; as a [`Layer`] it wraps a handler in the whole stack.
#[non_exhaustive]
#[derive(Clone)]
pub struct Middleware {
    /// Deadline per handler call (per attempt).
    pub timeout: Option<Duration>,
    /// In-process retries of transient failures.
    pub retry: Option<RetryPolicy>,
    /// Stop calling a failing dependency for a while.
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// Handler calls at once, keeping per-key order (`None`: as many as the prefetch).
    pub key_ordered_concurrency: Option<usize>,
    /// Skip message ids already processed.
    pub inbox: Option<Arc<dyn InboxStore>>,
    /// Move rejected (poison) messages to the dead-letter topic at once.
    pub dead_letter: bool,
}

impl std::fmt::Debug for Middleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Middleware")
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("circuit_breaker", &self.circuit_breaker)
            .field("key_ordered_concurrency", &self.key_ordered_concurrency)
            .field("inbox", &self.inbox.is_some())
            .field("dead_letter", &self.dead_letter)
            .finish()
    }
}

impl Default for Middleware {
    /// 30 s timeout, 3 retries, a breaker opening after 5 failures for 10 s, dead-lettering
    /// of rejected messages; no inbox, no key ordering.
    fn default() -> Self {
        Middleware {
            timeout: Some(Duration::from_secs(30)),
            retry: Some(RetryPolicy::default()),
            circuit_breaker: Some(CircuitBreakerConfig::default()),
            key_ordered_concurrency: None,
            inbox: None,
            dead_letter: true,
        }
    }
}

impl Middleware {
    /// Sets the deadline per handler call (per attempt).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Middleware {
        self.timeout = timeout;
        self
    }

    /// Sets the in-process retries.
    #[must_use]
    pub fn with_retry(mut self, retry: Option<RetryPolicy>) -> Middleware {
        self.retry = retry;
        self
    }

    /// Sets the circuit breaker.
    #[must_use]
    pub fn with_circuit_breaker(mut self, breaker: Option<CircuitBreakerConfig>) -> Middleware {
        self.circuit_breaker = breaker;
        self
    }

    /// Sets the handler calls at once that keep per-key order.
    #[must_use]
    pub fn with_key_ordered_concurrency(mut self, limit: Option<usize>) -> Middleware {
        self.key_ordered_concurrency = limit;
        self
    }

    /// Sets the idempotent-consumer inbox.
    #[must_use]
    pub fn with_inbox(mut self, inbox: Option<Arc<dyn InboxStore>>) -> Middleware {
        self.inbox = inbox;
        self
    }

    /// Turns dead-lettering of rejected messages on or off.
    #[must_use]
    pub fn with_dead_letter(mut self, on: bool) -> Middleware {
        self.dead_letter = on;
        self
    }
}

/// Wraps a handler in the stack, outermost first:
///
/// 1. tracing: the consumer span covers everything below, retries included;
/// 2. metrics: one observation per delivery, with its final outcome;
/// 3. correlation ids on the output;
/// 4. dead-lettering: sees a rejection only after retries could not help;
/// 5. inbox: a duplicate is skipped before it takes a concurrency slot or a trial call;
/// 6. per-key ordered concurrency: one call per key at a time, retries included;
/// 7. circuit breaker: counts a delivery's failure once, after its retries;
/// 8. retry with backoff and jitter;
/// 9. timeout, per attempt;
/// 10. panic recovery, innermost, so every layer above sees a panic as an error.
impl<S> Layer<S> for Middleware
where
    S: Service<Incoming, Response = Vec<Outgoing>, Error = HandlerError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Service = RouteService;

    fn layer(&self, handler: S) -> RouteService {
        let stack = ServiceBuilder::new()
            .layer(TraceLayer::new())
            .layer(MetricsLayer)
            .layer(CorrelationLayer)
            .option_layer(self.dead_letter.then(DeadLetterLayer::new))
            .option_layer(self.inbox.clone().map(InboxLayer::new))
            .option_layer(self.key_ordered_concurrency.map(KeyOrderLayer::new))
            .option_layer(self.circuit_breaker.map(CircuitBreakerLayer::new))
            .option_layer(self.retry.map(RetryLayer::new))
            .option_layer(self.timeout.map(TimeoutLayer::new))
            .layer(CatchPanicLayer)
            .service(handler);
        BoxCloneSyncService::new(stack)
    }
}
