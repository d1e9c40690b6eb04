//! [`Reconnect`]: the attempt counter of one reconnect loop (a consume stream, a health
//! watch, a channel to a broker), so the backends back off with one formula instead of each
//! doubling a `Duration` by hand.

use std::time::Duration;

use crate::Backoff;

/// How long a reconnect loop waits before its next attempt.
///
/// One per loop: call [`next_delay`](Reconnect::next_delay) after each failed attempt and
/// sleep that long, and [`reset`](Reconnect::reset) once connected, so the next outage
/// starts again from the short delay.
///
/// The delays are jittered, and that matters more here than anywhere: when a server
/// restarts, every subscription of every client loses its stream at the same instant.
/// Without jitter they would all come back at 100 ms, then 300 ms, then 700 ms…, in
/// lockstep, each wave hitting a server that is still starting up; with jitter the
/// attempts spread over each interval.
///
/// ```
/// use std::time::Duration;
/// use switchboard_policy::Reconnect;
///
/// let mut reconnect = Reconnect::up_to(Duration::from_secs(2));
/// let first = reconnect.next_delay(); // after the first failure
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// let second = reconnect.next_delay();
/// assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200));
/// reconnect.reset(); // connected again
/// assert_eq!(reconnect.failures(), 0);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Reconnect {
    backoff: Backoff,
    failures: u32,
}

impl Reconnect {
    /// The backoff of [`Reconnect::default`]: 100 ms doubling up to 5 s, equal jitter (each
    /// delay between half and all of its ceiling). The bounds are those the backends'
    /// reconnect loops used before they shared this type; 5 s caps how long a restarted
    /// broker waits for its consumers to come back.
    pub const DEFAULT_BACKOFF: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
        multiplier: 2.0,
        jitter: 0.5,
    };

    /// A loop backing off by `backoff`.
    pub const fn new(backoff: Backoff) -> Reconnect {
        Reconnect { backoff, failures: 0 }
    }

    /// [`Reconnect::DEFAULT_BACKOFF`] with a different cap, for a loop that must notice a
    /// recovery sooner (or may wait longer).
    pub const fn up_to(max: Duration) -> Reconnect {
        Reconnect::new(Backoff { max, ..Reconnect::DEFAULT_BACKOFF })
    }

    /// Counts a failed attempt and returns how long to wait before the next one: the
    /// backoff's delay for the number of failures since the last [`reset`](Reconnect::reset).
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.backoff.delay(self.failures)
    }

    /// Starts over after a success: the next failure waits the shortest delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failed attempts since the last [`reset`](Reconnect::reset) (for logs).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The backoff this loop follows.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }
}

impl Default for Reconnect {
    /// Backs off by [`Reconnect::DEFAULT_BACKOFF`].
    fn default() -> Self {
        Reconnect::new(Reconnect::DEFAULT_BACKOFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_up_to_the_cap_and_restart_after_a_reset() {
        let mut r = Reconnect::new(Backoff { jitter: 0.0, ..Reconnect::up_to(ms(1500)).backoff });
        let delays: Vec<_> = (0..6).map(|_| r.next_delay()).collect();
        assert_eq!(delays, [ms(100), ms(200), ms(400), ms(800), ms(1500), ms(1500)]);
        assert_eq!(r.failures(), 6);
        r.reset();
        assert_eq!(r.next_delay(), ms(100));
    }

    #[test]
    fn the_default_keeps_the_backends_bounds_with_equal_jitter() {
        let mut r = Reconnect::default();
        assert_eq!(r.backoff().ceiling(1), ms(100));
        assert_eq!(r.backoff().ceiling(u32::MAX), Duration::from_secs(5));
        for _ in 0..100 {
            r.reset();
            let first = r.next_delay();
            assert!((ms(50)..=ms(100)).contains(&first), "{first:?}");
        }
        for _ in 0..100 {
            let later = r.next_delay();
            assert!(later <= Duration::from_secs(5), "{later:?}");
        }
        let last = r.next_delay();
        assert!((ms(2500)..=ms(5000)).contains(&last), "{last:?}");
    }

    #[test]
    fn failures_saturate_instead_of_overflowing() {
        let mut r = Reconnect { failures: u32::MAX, ..Reconnect::default() };
        assert!(r.next_delay() <= Duration::from_secs(5));
        assert_eq!(r.failures(), u32::MAX);
    }
}
