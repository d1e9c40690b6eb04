//! [`Breaker`]: a circuit breaker. After repeated failures, calls to a dependency are refused
//! for a while, so a dead dependency is not hammered and callers fail fast (or wait) instead
//! of spending their time and retries on it.
//!
//! Closed → (`failure_threshold` consecutive failures) → open for `open_for` → half-open:
//! one trial call; its success closes the circuit, its failure opens it again.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use switchboard_core::{SharedClock, SystemClock, Timestamp};

/// When a [`Breaker`] opens and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit (0 counts as 1).
    pub failure_threshold: u32,
    /// How long it stays open before a trial call, at the clock's millisecond resolution.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    /// Opens after 5 consecutive failures, for 10 s.
    fn default() -> Self {
        BreakerConfig { failure_threshold: 5, open_for: Duration::from_secs(10) }
    }
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Timestamp,
    },
    /// The one trial call is out; everything else is refused until it is recorded.
    HalfOpen,
}

/// The state of one circuit breaker, shared (in an `Arc`) by everything that calls the
/// dependency it guards, and observable.
///
/// Every call [admitted](Breaker::admit) must be [recorded](Breaker::record), also when it
/// is cancelled midway (record it from a drop guard): a half-open breaker refuses every call
/// until its trial call is recorded.
///
/// Time comes from a [`Clock`](switchboard_core::Clock), so tests open and close a breaker
/// without sleeping:
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use switchboard_core::ManualClock;
/// use switchboard_policy::{Breaker, BreakerConfig};
///
/// let clock = ManualClock::default();
/// let config = BreakerConfig { failure_threshold: 1, open_for: Duration::from_secs(10) };
/// let breaker = Breaker::with_clock(config, Arc::new(clock.clone()));
/// breaker.admit().expect("closed");
/// breaker.record(false);
/// assert_eq!(breaker.admit(), Err(Duration::from_secs(10)));
/// clock.advance(Duration::from_secs(10));
/// breaker.admit().expect("the trial call");
/// breaker.record(true);
/// assert!(!breaker.is_open());
/// ```
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    clock: SharedClock,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker on the system clock.
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker::with_clock(config, Arc::new(SystemClock))
    }

    /// A closed breaker on `clock`.
    pub fn with_clock(config: BreakerConfig, clock: SharedClock) -> Breaker {
        Breaker { config, clock, state: Mutex::new(State::Closed { failures: 0 }) }
    }

    /// Its settings.
    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    /// True while calls are refused for the open period (not during a half-open trial).
    pub fn is_open(&self) -> bool {
        matches!(*self.state.lock(), State::Open { until } if self.clock.now() < until)
    }

    /// Admits a call, or says how long until the next trial. Every admitted call must be
    /// followed by [`Breaker::record`].
    ///
    /// # Errors
    /// The circuit is open, or half-open with its trial call out: roughly how long until a
    /// call may be admitted.
    pub fn admit(&self) -> Result<(), Duration> {
        let mut state = self.state.lock();
        match &mut *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } => {
                let now = self.clock.now();
                if now >= *until {
                    *state = State::HalfOpen;
                    return Ok(());
                }
                let left = until.duration_since(now);
                if left > self.config.open_for {
                    // The wall clock went back (an NTP step): start the open period over
                    // from now, so the jump cannot keep the circuit open longer than that.
                    *until = now.saturating_add(self.config.open_for);
                    return Err(self.config.open_for);
                }
                Err(left)
            }
            // The trial's outcome decides; its duration is unknown, so suggest a short wait.
            State::HalfOpen => Err(self.config.open_for.min(Duration::from_secs(1))),
        }
    }

    /// Records the outcome of an admitted call: `success` is false when the call says the
    /// dependency is unhealthy.
    pub fn record(&self, success: bool) {
        let mut state = self.state.lock();
        let failures = match &*state {
            State::Closed { failures } => *failures,
            State::HalfOpen if success => {
                tracing::info!("Circuit breaker closed: the trial call succeeded.");
                *state = State::Closed { failures: 0 };
                return;
            }
            State::HalfOpen => {
                tracing::warn!(open_for = ?self.config.open_for, "Circuit breaker opened again: the trial call failed.");
                *state = State::Open { until: self.clock.now().saturating_add(self.config.open_for) };
                return;
            }
            // A call admitted before the circuit opened: the opening already counted it.
            State::Open { .. } => return,
        };
        *state = if success {
            State::Closed { failures: 0 }
        } else if failures.saturating_add(1) >= self.config.failure_threshold {
            tracing::warn!(failures = failures.saturating_add(1), open_for = ?self.config.open_for, "Circuit breaker opened after repeated failures.");
            State::Open { until: self.clock.now().saturating_add(self.config.open_for) }
        } else {
            State::Closed { failures: failures + 1 }
        };
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::{Clock, ManualClock};

    use super::*;

    fn breaker(failure_threshold: u32, open_for: Duration) -> (Breaker, ManualClock) {
        let clock = ManualClock::default();
        let config = BreakerConfig { failure_threshold, open_for };
        (Breaker::with_clock(config, Arc::new(clock.clone())), clock)
    }

    fn fail(b: &Breaker) {
        b.admit().expect("admitted");
        b.record(false);
    }

    #[test]
    fn opens_after_threshold_then_half_opens_for_one_trial() {
        let (b, clock) = breaker(2, Duration::from_millis(30));
        fail(&b);
        assert!(!b.is_open(), "one failure is below the threshold");
        fail(&b);
        assert!(b.is_open());
        assert_eq!(b.admit(), Err(Duration::from_millis(30)));
        clock.advance(Duration::from_millis(20));
        assert_eq!(b.admit(), Err(Duration::from_millis(10)), "the remaining open time");
        clock.advance(Duration::from_millis(10));
        assert!(b.admit().is_ok(), "trial admitted");
        assert!(!b.is_open(), "half-open is not open");
        assert!(b.admit().is_err(), "only one trial at a time");
        b.record(true);
        assert!(b.admit().is_ok() && !b.is_open());
    }

    #[test]
    fn a_failed_trial_opens_the_circuit_again_for_a_full_period() {
        let (b, clock) = breaker(3, Duration::from_secs(10));
        (0..3).for_each(|_| fail(&b));
        clock.advance(Duration::from_secs(10));
        fail(&b);
        assert_eq!(b.admit(), Err(Duration::from_secs(10)));
    }

    #[test]
    fn a_success_resets_the_count_of_consecutive_failures() {
        let (b, _clock) = breaker(2, Duration::from_secs(1));
        fail(&b);
        b.admit().expect("closed");
        b.record(true);
        fail(&b);
        assert!(!b.is_open(), "the failures were not consecutive");
    }

    #[test]
    fn a_straggler_recorded_while_open_changes_nothing() {
        let (b, clock) = breaker(1, Duration::from_secs(1));
        b.admit().expect("closed");
        fail(&b);
        b.record(true); // the first call, admitted before the circuit opened
        assert!(b.is_open());
        clock.advance(Duration::from_secs(1));
        assert!(b.admit().is_ok(), "the trial is still due on time");
    }

    #[test]
    fn a_clock_stepping_back_cannot_hold_the_circuit_open_longer_than_its_period() {
        let (b, clock) = breaker(1, Duration::from_secs(10));
        fail(&b);
        clock.set(clock.now().saturating_sub(Duration::from_secs(3600)));
        assert_eq!(b.admit(), Err(Duration::from_secs(10)));
        clock.advance(Duration::from_secs(10));
        assert!(b.admit().is_ok(), "the trial after one open period, not after an hour");
    }

    #[test]
    fn a_zero_threshold_opens_on_the_first_failure() {
        let (b, _clock) = breaker(0, Duration::from_secs(1));
        fail(&b);
        assert!(b.is_open());
    }
}
