//! # switchboard-policy
//!
//! The resilience policies every Switchboard edge shares, in a crate small enough to sit
//! below all of them: the backends' reconnect loops, the SDK's handler middleware and the
//! synchronous clients of `switchboard-sync`. Pure decisions, no I/O and no async runtime:
//! the caller sleeps, calls and reports; time comes from a
//! [`Clock`](switchboard_core::Clock) and randomness can be injected, so every decision is
//! testable without waiting.
//!
//! ## Tour
//!
//! - [`Backoff`]: exponential delays with jitter (uniform in `[(1-j)·d, d]`).
//! - [`Reconnect`]: the attempt counter of one reconnect loop, on a [`Backoff`] with bounds
//!   suited to reconnecting to a broker.
//! - [`RetryPolicy`]: how many retries, with which [`Backoff`]. Which errors are worth a
//!   retry is for the caller to say.
//! - [`Breaker`] and [`BreakerConfig`]: a circuit breaker, shared by every caller of one
//!   dependency.
//!
//! ## Example
//!
//! A retry loop guarded by a breaker, on a manual clock (a real caller sleeps `delay`):
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use switchboard_core::{Clock, ManualClock};
//! use switchboard_policy::{Backoff, Breaker, BreakerConfig, RetryPolicy};
//!
//! let clock = ManualClock::default();
//! let breaker = Breaker::with_clock(BreakerConfig::default(), Arc::new(clock.clone()));
//! let policy = RetryPolicy { max_retries: 2, backoff: Backoff { jitter: 0.0, ..Backoff::default() } };
//!
//! let mut outcomes = [Err("unavailable"), Err("unavailable"), Ok("done")].into_iter();
//! breaker.admit().expect("the circuit is closed");
//! let mut retry = 0;
//! let result = loop {
//!     match outcomes.next().expect("an outcome per attempt") {
//!         Ok(v) => break Ok(v),
//!         Err(e) if retry == policy.max_retries => break Err(e),
//!         Err(_) => {
//!             retry += 1;
//!             let delay = policy.backoff.delay(retry);
//!             clock.advance(delay); // tokio::time::sleep(delay).await
//!         }
//!     }
//! };
//! breaker.record(result.is_ok());
//! assert_eq!(result, Ok("done"));
//! assert_eq!(clock.now().duration_since(ManualClock::default().now()), Duration::from_millis(300));
//! ```

mod backoff;
mod breaker;
mod reconnect;
mod retry;

pub use backoff::Backoff;
pub use breaker::{Breaker, BreakerConfig};
pub use reconnect::Reconnect;
pub use retry::RetryPolicy;
