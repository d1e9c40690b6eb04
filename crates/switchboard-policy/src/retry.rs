//! [`RetryPolicy`]: how often and how patiently to retry. Which failures deserve a retry is
//! the caller's call (the SDK's handler errors, a sync client's status codes), not the
//! policy's.

use crate::Backoff;

/// How often and how patiently to retry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first call (0: no retry).
    pub max_retries: u32,
    /// Delay between attempts: retry `n` waits `backoff.delay(n)`.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    /// 3 retries, [`Backoff::default`].
    fn default() -> Self {
        RetryPolicy { max_retries: 3, backoff: Backoff::default() }
    }
}
