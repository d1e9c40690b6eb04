//! [`CallPolicy::call`]: one synchronous call, with timeout, retries, retry budget, circuit
//! breaker, deadline propagation and a client span per attempt.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, global};
use switchboard_core::TRACER_NAME;
use switchboard_policy::Breaker;
use tokio::time::Instant;
use tower::retry::budget::Budget;

use crate::deadline;
use crate::error::{AttemptError, CallError, Retryable};
use crate::operation::{Operation, Protocol};
use crate::policy::CallPolicy;

impl CallPolicy {
    /// Runs `attempt` under the policy. `attempt` is called once per try with that try's
    /// timeout, inside a client span and an ambient deadline ending with the try, so the
    /// gRPC channel and the HTTP client of this crate propagate both without being told.
    ///
    /// - Each try gets `min(timeout, caller's remaining time)`; an error arriving once that
    ///   time is up counts as a timeout (the server gave up on the deadline we sent it).
    /// - A try that failed with a [retryable](Retryable::is_retryable) error, or timed out
    ///   when the operation is [idempotent](Operation::idempotent), is retried, up to `retry.max_retries` times, after the backoff (or the server's
    ///   `retry_after`, capped at `max_retry_after`), if the retry budget allows it and the
    ///   caller's deadline leaves time for it. A try cut short by the caller's deadline is
    ///   not retried: [`CallError::DeadlineExceeded`].
    /// - With a breaker, an open circuit fails fast with [`CallError::CircuitOpen`]; the
    ///   call's outcome (after its retries, as in the SDK's handler stack) is recorded once:
    ///   a timeout or a [dependency failure](Retryable::is_dependency_failure) counts
    ///   against the dependency, anything else (success, the caller's own error or deadline,
    ///   cancellation) for it.
    ///
    /// # Errors
    /// [`CallError`]: the last attempt's failure, or why no (further) attempt was made.
    pub async fn call<T, E, F, Fut>(
        &self,
        operation: impl Into<Operation>,
        mut attempt: F,
    ) -> Result<T, CallError<E>>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Retryable + Display,
    {
        let op = operation.into();
        if deadline::remaining() == Some(Duration::ZERO) {
            return Err(CallError::DeadlineExceeded { call: op.name, attempts: 0 });
        }
        let admission = Admission::new(self.breaker.as_deref()).map_err(|retry_in| {
            refused_span(&op);
            CallError::CircuitOpen { call: op.name.clone(), retry_in }
        })?;
        self.budget.deposit();

        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            let now = Instant::now();
            let caller_deadline = deadline::current();
            let left = caller_deadline.map(|d| d.saturating_duration_since(now));
            let timeout = left.map_or(self.timeout, |left| left.min(self.timeout));
            let cut_by_caller = left.is_some_and(|left| left <= self.timeout);

            let failure = match self.attempt(&op, attempts, timeout, now + timeout, &mut attempt).await {
                Ok(value) => break Ok(value),
                Err(failure) => failure,
            };
            let (retryable, retry_after) = match &failure {
                AttemptError::Timeout(_) if cut_by_caller => {
                    break Err(CallError::DeadlineExceeded { call: op.name.clone(), attempts });
                }
                AttemptError::Timeout(_) => (op.idempotent, None),
                AttemptError::Failed(e) => (e.is_retryable(), e.retry_after()),
            };
            let delay = retry_after
                .map_or_else(|| self.retry.backoff.delay(attempts), |d| d.min(self.max_retry_after));
            let no_time_left = caller_deadline.is_some_and(|d| Instant::now() + delay >= d);
            if !retryable || attempts > self.retry.max_retries || no_time_left {
                break Err(give_up(&op, attempts, failure));
            }
            if !self.budget.withdraw() {
                break Err(CallError::BudgetExhausted { call: op.name.clone(), attempts, last: failure });
            }
            tracing::debug!(call = %op.name, attempt = attempts, ?delay, error = %failure, "Retrying the call.");
            tokio::time::sleep(delay).await;
        };

        admission.finish(match &result {
            Ok(_) => true,
            Err(e) => !against_dependency(e),
        });
        result
    }

    /// One try, in its client span, its deadline and its timeout.
    async fn attempt<T, E, F, Fut>(
        &self,
        op: &Operation,
        attempt: u32,
        timeout: Duration,
        attempt_deadline: Instant,
        f: &mut F,
    ) -> Result<T, AttemptError<E>>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Retryable + Display,
    {
        let tracer = global::tracer(TRACER_NAME);
        let mut attributes = op.attributes.clone();
        if op.protocol == Protocol::Http && attempt > 1 {
            attributes.push(KeyValue::new("http.request.resend_count", i64::from(attempt - 1)));
        }
        let span = tracer
            .span_builder(op.span_name())
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start(&tracer);
        let cx = Context::current_with_span(span);

        // Both the closure's synchronous part and its future see the span and the deadline.
        let fut = {
            let _attached = cx.clone().attach();
            deadline::sync_with_deadline(attempt_deadline, || f(timeout))
        };
        let fut = deadline::with_deadline(attempt_deadline, fut.with_context(cx.clone()));
        let outcome = match tokio::time::timeout_at(attempt_deadline, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) if Instant::now() >= attempt_deadline => Err(AttemptError::Timeout(timeout)),
            Ok(Err(e)) => Err(AttemptError::Failed(e)),
            Err(_elapsed) => Err(AttemptError::Timeout(timeout)),
        };

        let span = cx.span();
        match &outcome {
            Ok(_) if op.protocol == Protocol::Grpc => {
                span.set_attribute(KeyValue::new("rpc.grpc.status_code", 0))
            }
            Ok(_) => {}
            Err(AttemptError::Timeout(_)) => {
                span.set_attribute(KeyValue::new("error.type", "timeout"));
                span.set_status(Status::error(format!("timed out after {timeout:?}")));
            }
            Err(AttemptError::Failed(e)) => {
                e.annotate(&span);
                span.set_status(Status::error(e.to_string()));
            }
        }
        span.end();
        outcome
    }
}

/// A client span for a call the open breaker refused (`error.type = circuit_open`), so the
/// refusal shows on the service graph as the edge's errors and its breaker opening, though
/// no request left.
fn refused_span(op: &Operation) {
    let tracer = global::tracer(TRACER_NAME);
    let mut attributes = op.attributes.clone();
    attributes.push(KeyValue::new("error.type", "circuit_open"));
    let mut span = tracer
        .span_builder(op.span_name())
        .with_kind(SpanKind::Client)
        .with_attributes(attributes)
        .start(&tracer);
    span.set_status(Status::error("the circuit breaker is open"));
    span.end();
}

fn give_up<E>(op: &Operation, attempts: u32, failure: AttemptError<E>) -> CallError<E> {
    let call = op.name.clone();
    match failure {
        AttemptError::Timeout(timeout) => CallError::Timeout { call, attempts, timeout },
        AttemptError::Failed(error) => CallError::Failed { call, attempts, error },
    }
}

/// Whether a failed call says the dependency is unhealthy.
fn against_dependency<E: Retryable>(e: &CallError<E>) -> bool {
    match e {
        CallError::Timeout { .. } | CallError::BudgetExhausted { last: AttemptError::Timeout(_), .. } => true,
        CallError::Failed { error, .. }
        | CallError::BudgetExhausted { last: AttemptError::Failed(error), .. } => {
            error.is_dependency_failure()
        }
        CallError::CircuitOpen { .. } | CallError::DeadlineExceeded { .. } => false,
    }
}

/// A call the breaker let through. Its outcome must be recorded, or a half-open breaker would
/// wait for its trial forever: a call dropped midway (cancelled by its caller) records a
/// success, since a cancellation says nothing against the dependency.
struct Admission<'a> {
    breaker: Option<&'a Breaker>,
}

impl<'a> Admission<'a> {
    fn new(breaker: Option<&'a Breaker>) -> Result<Admission<'a>, Duration> {
        if let Some(b) = breaker {
            b.admit()?;
        }
        Ok(Admission { breaker })
    }

    fn finish(mut self, healthy: bool) {
        if let Some(b) = self.breaker.take() {
            b.record(healthy);
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.breaker.take() {
            b.record(true);
        }
    }
}
