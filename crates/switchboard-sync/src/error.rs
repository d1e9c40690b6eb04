//! How a call fails ([`CallError`]) and what a failure says about retrying ([`Retryable`]).

use std::time::Duration;

use opentelemetry::trace::SpanRef;

/// What an operation's error says about retrying it and about the dependency's health.
pub trait Retryable {
    /// A new attempt may succeed: the failure is transient (the dependency was unreachable,
    /// overloaded or briefly unavailable) and the request is safe to send again.
    fn is_retryable(&self) -> bool;

    /// The failure is the dependency's fault and counts toward opening the circuit breaker
    /// (a caller's mistake, like an invalid argument, does not). Defaults to
    /// [`is_retryable`](Retryable::is_retryable).
    fn is_dependency_failure(&self) -> bool {
        self.is_retryable()
    }

    /// How long the server asked the caller to wait before retrying (`Retry-After`,
    /// `grpc-retry-pushback-ms`), if it did.
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// Adds what the error says to the attempt's client span (e.g. `rpc.grpc.status_code`).
    fn annotate(&self, span: &SpanRef<'_>) {
        let _ = span;
    }
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError<E> {
    /// The attempt did not complete within its timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The operation failed.
    #[error("{0}")]
    Failed(E),
}

/// Why a call failed, after retries if the policy allowed them.
///
/// Every variant names the call (`service/method`, or `METHOD url` for HTTP). The `Display`
/// of the variants that wrap the operation's error includes it, so a single log line says
/// what went wrong; [`CallError::inner`] gives it back for matching.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The circuit breaker is open: the call was refused without reaching the dependency.
    #[error("{call}: circuit breaker open after repeated failures; calls refused for another {retry_in:?}")]
    CircuitOpen {
        /// The call.
        call: String,
        /// Time until the breaker lets a trial call through.
        retry_in: Duration,
    },
    /// The last attempt took longer than the policy's per-attempt timeout.
    #[error("{call}: timed out after {timeout:?} (attempt {attempts})")]
    Timeout {
        /// The call.
        call: String,
        /// Attempts made, the timed-out one included.
        attempts: u32,
        /// The last attempt's timeout.
        timeout: Duration,
    },
    /// The caller's deadline (the ambient one, see [`crate::deadline`]) passed, or left too
    /// little time for another attempt.
    #[error("{call}: the caller's deadline passed after {attempts} attempt(s)")]
    DeadlineExceeded {
        /// The call.
        call: String,
        /// Attempts made (0: the deadline had passed before the call).
        attempts: u32,
    },
    /// A retry would have been allowed but the retry budget is spent: the dependency fails
    /// for many calls, and retrying them all would multiply its load.
    #[error("{call}: retry budget exhausted after {attempts} attempt(s); last attempt: {last}")]
    BudgetExhausted {
        /// The call.
        call: String,
        /// Attempts made.
        attempts: u32,
        /// How the last attempt failed.
        last: AttemptError<E>,
    },
    /// The operation failed with an error that is not retried, or retries ran out.
    #[error("{call}: {error} (after {attempts} attempt(s))")]
    Failed {
        /// The call.
        call: String,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        error: E,
    },
}

impl<E> CallError<E> {
    /// The operation's own error, if the call ended with one.
    pub fn inner(&self) -> Option<&E> {
        match self {
            CallError::Failed { error, .. }
            | CallError::BudgetExhausted { last: AttemptError::Failed(error), .. } => Some(error),
            _ => None,
        }
    }

    /// Consumes the error, giving back the operation's own error, if any.
    pub fn into_inner(self) -> Option<E> {
        match self {
            CallError::Failed { error, .. }
            | CallError::BudgetExhausted { last: AttemptError::Failed(error), .. } => Some(error),
            _ => None,
        }
    }

    /// Attempts made before giving up (0: refused before the first).
    pub fn attempts(&self) -> u32 {
        match self {
            CallError::CircuitOpen { .. } => 0,
            CallError::Timeout { attempts, .. }
            | CallError::DeadlineExceeded { attempts, .. }
            | CallError::BudgetExhausted { attempts, .. }
            | CallError::Failed { attempts, .. } => *attempts,
        }
    }

    /// The call ran out of time: its own timeout or the caller's deadline.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            CallError::Timeout { .. }
                | CallError::DeadlineExceeded { .. }
                | CallError::BudgetExhausted { last: AttemptError::Timeout(_), .. }
        )
    }
}
