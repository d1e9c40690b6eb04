//! `CallPolicy::call` on plain futures: retries, timeouts, deadlines, budget, breaker.
//! Tokio's clock is paused, so the sleeps are instant and exact.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use switchboard_policy::{Backoff, BreakerConfig, RetryPolicy};
use switchboard_sync::{
    AttemptError, CallError, CallPolicy, Operation, Retryable, TpsBudget, remaining, with_deadline,
};
use tokio::time::Instant;

#[derive(Debug)]
struct Flaky {
    retryable: bool,
}

impl fmt::Display for Flaky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flaky (retryable: {})", self.retryable)
    }
}

impl Retryable for Flaky {
    fn is_retryable(&self) -> bool {
        self.retryable
    }
}

fn policy(max_retries: u32) -> CallPolicy {
    let backoff = Backoff { initial: Duration::from_millis(10), ..Backoff::default() };
    CallPolicy::default()
        .with_timeout(Duration::from_millis(100))
        .with_retry(RetryPolicy { max_retries, backoff })
}

/// Fails with `error` the first `failures` times, then answers `"ok"`.
async fn run(
    policy: &CallPolicy,
    calls: &AtomicU32,
    failures: u32,
    retryable: bool,
) -> Result<&'static str, CallError<Flaky>> {
    policy
        .call("test/op", |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n < failures { Err(Flaky { retryable }) } else { Ok("ok") } }
        })
        .await
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_until_success() {
    let calls = AtomicU32::new(0);
    assert_eq!(run(&policy(2), &calls, 2, true).await.expect("third attempt succeeds"), "ok");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_max_retries_and_report_the_last_error() {
    let calls = AtomicU32::new(0);
    let err = run(&policy(2), &calls, 10, true).await.expect_err("keeps failing");
    assert!(matches!(err, CallError::Failed { attempts: 3, .. }), "{err}");
    assert_eq!(err.to_string(), "test/op: flaky (retryable: true) (after 3 attempt(s))");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_are_not_retried() {
    let calls = AtomicU32::new(0);
    let err = run(&policy(2), &calls, 10, false).await.expect_err("fails");
    assert!(matches!(err, CallError::Failed { attempts: 1, .. }), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn slow_attempts_of_idempotent_operations_time_out_and_are_retried() {
    let calls = AtomicU32::new(0);
    let err = policy(1)
        .call(Operation::new("test/slow").idempotent(true), |timeout| {
            calls.fetch_add(1, Ordering::SeqCst);
            assert_eq!(timeout, Duration::from_millis(100));
            async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<(), Flaky>(())
            }
        })
        .await
        .expect_err("times out");
    assert!(
        matches!(err, CallError::Timeout { attempts: 2, timeout, .. } if timeout == Duration::from_millis(100))
    );
    assert!(err.is_timeout());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_attempt_of_a_non_idempotent_operation_is_not_retried() {
    let calls = AtomicU32::new(0);
    let err = policy(3)
        .call("test/charge", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<(), Flaky>(())
            }
        })
        .await
        .expect_err("times out");
    assert!(matches!(err, CallError::Timeout { attempts: 1, .. }), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "it may have been applied");
}

#[tokio::test(start_paused = true)]
async fn the_callers_deadline_bounds_attempts_and_is_ambient_inside_them() {
    let policy = policy(3).with_timeout(Duration::from_secs(10));
    let seen = Mutex::new(Vec::new());
    let start = Instant::now();
    let err = with_deadline(start + Duration::from_millis(250), async {
        policy
            .call("test/slow", |timeout| {
                seen.lock().expect("lock").push((timeout, remaining()));
                async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok::<(), Flaky>(())
                }
            })
            .await
    })
    .await
    .expect_err("deadline");
    assert!(matches!(err, CallError::DeadlineExceeded { attempts: 1, .. }), "{err}");
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 1, "an attempt cut by the caller's deadline is not retried");
    let (timeout, ambient) = seen[0];
    assert!(timeout <= Duration::from_millis(250));
    assert!(ambient.is_some_and(|a| a <= timeout), "{ambient:?}");
}

#[tokio::test(start_paused = true)]
async fn a_passed_deadline_fails_without_calling() {
    let calls = AtomicU32::new(0);
    let err = with_deadline(Instant::now(), run(&policy(2), &calls, 0, true)).await.expect_err("late");
    assert!(matches!(err, CallError::DeadlineExceeded { attempts: 0, .. }), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_stops_retries() {
    // No reserve and no share of calls: not a single retry.
    let policy = policy(5).with_budget(TpsBudget::new(Duration::from_secs(1), 0, 0.0));
    let calls = AtomicU32::new(0);
    let err = run(&policy, &calls, 10, true).await.expect_err("no retry");
    assert!(
        matches!(err, CallError::BudgetExhausted { attempts: 1, last: AttemptError::Failed(_), .. }),
        "{err}"
    );
    assert!(err.to_string().contains("retry budget exhausted"), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn repeated_failures_open_the_breaker_and_calls_fail_fast() {
    let open_for = Duration::from_secs(5);
    let policy = policy(0).with_breaker(BreakerConfig { failure_threshold: 2, open_for });
    let calls = AtomicU32::new(0);
    for _ in 0..2 {
        assert!(matches!(run(&policy, &calls, 100, true).await, Err(CallError::Failed { .. })));
    }
    let err = run(&policy, &calls, 100, true).await.expect_err("open");
    assert!(matches!(err, CallError::CircuitOpen { .. }), "{err}");
    assert!(err.to_string().contains("circuit breaker open"), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "an open breaker does not call");

    // Caller mistakes do not count against the dependency.
    let fresh = policy.clone().with_breaker(BreakerConfig { failure_threshold: 1, open_for });
    let _ = run(&fresh, &calls, 100, false).await;
    assert!(!fresh.breaker.as_ref().expect("breaker").is_open());
}
