//! Exponential backoff with jitter, shared by the router's redeliveries, the retry layer and
//! the sync-call helpers, so every edge of a service backs off the same way.

use std::time::Duration;

/// `initial × multiplier^(n-1)`, capped at `max`, with "full jitter" (a uniform draw
/// between half and all of it) so a crowd of failing consumers does not retry in lockstep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Growth per retry.
    pub multiplier: f64,
    /// Fraction of the delay drawn at random (0: none, 0.5: between 50% and 100%).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// The delay before retry number `retry` (1 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let exp = self.multiplier.max(1.0).powi(retry.saturating_sub(1).min(64) as i32);
        let base = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter * rand::random::<f64>();
        Duration::from_secs_f64((base * factor).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_and_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.5,
        };
        for _ in 0..100 {
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400), "{d3:?}");
            assert!(b.delay(30) <= Duration::from_secs(1));
        }
        let exact = Backoff { jitter: 0.0, ..b };
        assert_eq!(exact.delay(1), Duration::from_millis(100));
        assert_eq!(exact.delay(2), Duration::from_millis(200));
    }
}
