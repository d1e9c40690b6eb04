//! What a case ends with, and how the test functions report it.

use std::future::Future;
use std::sync::Arc;

use crate::Harness;

/// The result of a case that did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything the case checks held.
    Passed,
    /// The case did not run: the backend lacks a capability it needs, or the harness cannot
    /// do something (restart the broker).
    Skipped {
        /// Why, e.g. `needs per_key_order`.
        reason: String,
    },
}

impl Outcome {
    /// A skip with `reason`.
    pub fn skipped(reason: impl Into<String>) -> Outcome {
        Outcome::Skipped { reason: reason.into() }
    }
}

/// Runs one case against a fresh harness, bounded by its
/// [`case_limit`](crate::Timing::case_limit): prints the outcome to stderr (a skip says why)
/// and panics on a failure, so it fits a `#[test]` function. Used by
/// [`conformance_tests!`](crate::conformance_tests).
///
/// # Panics
/// When the case fails or does not finish in time.
pub async fn run_case<F, Fut>(case: &str, harness: Arc<dyn Harness>, run: F)
where
    F: FnOnce(Arc<dyn Harness>) -> Fut,
    Fut: Future<Output = anyhow::Result<Outcome>>,
{
    let limit = harness.timing().case_limit;
    let backend = harness.name().to_owned();
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(limit, run(harness.clone())).await;
    delete_created(case, &*harness).await;
    harness.shutdown().await;
    let took = started.elapsed();
    match result {
        Err(_) => panic!("[{backend}] {case}: did not finish within {limit:?} (hung?)"),
        Ok(Err(e)) => panic!("[{backend}] {case}: FAILED after {took:.1?}: {e:?}"),
        Ok(Ok(Outcome::Skipped { reason })) => eprintln!("[{backend}] {case}: SKIPPED: {reason}"),
        Ok(Ok(Outcome::Passed)) => eprintln!("[{backend}] {case}: passed in {took:.1?}"),
    }
}

/// Deletes the subscriptions and topics the case made (best effort: a broker that is gone
/// keeps nothing).
async fn delete_created(case: &str, harness: &dyn Harness) {
    let created = crate::util::take_created(case);
    if created.topics.is_empty() && created.subscriptions.is_empty() {
        return;
    }
    let wait = harness.timing().wait;
    if let Ok(Ok(bus)) = tokio::time::timeout(wait, harness.connect()).await {
        for (topic, sub) in &created.subscriptions {
            let _ = tokio::time::timeout(wait, bus.delete_subscription(topic, sub)).await;
        }
        for topic in &created.topics {
            let _ = tokio::time::timeout(wait, bus.delete_topic(topic)).await;
        }
        let _ = tokio::time::timeout(wait, bus.close()).await;
    }
}
