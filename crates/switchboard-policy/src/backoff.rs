//! Exponential backoff with jitter: the one formula behind the router's redeliveries, the
//! retry layer, the sync-call helpers and the backends' reconnect loops, so every edge of a
//! service backs off the same way.

use std::time::Duration;

/// Delays that grow exponentially, up to a cap, each shortened by a random share.
///
/// Before retry `n` (1 for the first retry) the ceiling is
/// `d = min(initial × multiplier^(n-1), max)`, and with `jitter = j` the delay is drawn
/// uniformly from `[(1-j)·d, d]`:
///
/// - `j = 0`: no randomness, exactly `d`;
/// - `j = 0.5`: "equal jitter", between half of `d` and all of it (the default);
/// - `j = 1`: AWS's "full jitter", anywhere between zero and `d`.
///
/// The randomness is what keeps a crowd of clients that failed together (every consumer of
/// a broker that restarted) from retrying together, in lockstep, and failing together again.
/// Equal jitter keeps a floor under the delay, so a retry never follows the failure at once.
///
/// ```
/// use std::time::Duration;
/// use switchboard_policy::Backoff;
///
/// let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1), ..Backoff::default() };
/// assert_eq!(b.ceiling(3), Duration::from_millis(400));
/// // The draw is injected: 0 keeps the ceiling, 1 takes the whole jitter share off.
/// assert_eq!(b.delay_with(3, 0.0), Duration::from_millis(400));
/// assert_eq!(b.delay_with(3, 1.0), Duration::from_millis(200));
/// assert!(b.delay(3) >= Duration::from_millis(200) && b.delay(3) <= Duration::from_millis(400));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Ceiling of the delay before the first retry.
    pub initial: Duration,
    /// Largest ceiling.
    pub max: Duration,
    /// Growth of the ceiling per retry (values below 1 count as 1: the delay never shrinks).
    pub multiplier: f64,
    /// Share of the ceiling that may be taken off at random, clamped to `[0, 1]`.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 100 ms doubling up to 30 s, equal jitter (0.5).
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
    /// The ceiling `d` of the delay before retry number `retry` (1 for the first retry; 0
    /// counts as 1): `min(initial × multiplier^(retry-1), max)`, before jitter.
    pub fn ceiling(&self, retry: u32) -> Duration {
        // Capping the exponent keeps `powi` finite-or-infinite and cheap; either way the
        // result is capped at `max` below.
        let exponent = retry.saturating_sub(1).min(1024) as i32;
        let grown = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        if grown >= self.max.as_secs_f64() {
            return self.max;
        }
        // `grown` is below `max` here, so it fits a `Duration`.
        Duration::try_from_secs_f64(grown).unwrap_or(self.max)
    }

    /// The delay before retry number `retry`, with a fresh random draw (the thread-local
    /// generator): uniform in `[(1-jitter)·d, d]` for the [ceiling](Backoff::ceiling) `d`.
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_with(retry, rand::random::<f64>())
    }

    /// The delay before retry number `retry` for a given `draw` in `[0, 1]`:
    /// `d × (1 - jitter × draw)`. Draw 0 gives the ceiling `d`, draw 1 the shortest delay
    /// `(1-jitter)·d`; a uniform draw gives a uniform delay. Values outside `[0, 1]` are
    /// clamped and NaN counts as 0, so a bad draw or setting never panics or exceeds `d`.
    ///
    /// For tests and for callers with their own source of randomness (a seeded simulation).
    pub fn delay_with(&self, retry: u32, draw: f64) -> Duration {
        let ceiling = self.ceiling(retry);
        let share = unit(self.jitter) * unit(draw);
        if share == 0.0 {
            return ceiling;
        }
        // Never above the ceiling; the fallback covers a ceiling too large for `f64`
        // seconds to map back onto a `Duration` (`max: Duration::MAX`).
        Duration::try_from_secs_f64(ceiling.as_secs_f64() * (1.0 - share)).unwrap_or(ceiling).min(ceiling)
    }
}

/// `x` clamped to `[0, 1]`, NaN as 0.
fn unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn b(jitter: f64) -> Backoff {
        Backoff { initial: ms(100), max: ms(1000), multiplier: 2.0, jitter }
    }

    #[test]
    fn the_ceiling_grows_by_the_multiplier_up_to_the_cap() {
        let b = b(0.5);
        let ceilings: Vec<_> = (0..=6).map(|n| b.ceiling(n)).collect();
        assert_eq!(ceilings, [ms(100), ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
        assert_eq!(b.ceiling(u32::MAX), ms(1000), "huge retry counts stay capped");
        let shrinking = Backoff { multiplier: 0.5, ..b };
        assert_eq!(shrinking.ceiling(5), ms(100), "a multiplier below 1 never shrinks the delay");
    }

    #[test]
    fn the_draw_maps_linearly_onto_the_jitter_share() {
        // Equal jitter: [d/2, d].
        assert_eq!(b(0.5).delay_with(3, 0.0), ms(400));
        assert_eq!(b(0.5).delay_with(3, 0.5), ms(300));
        assert_eq!(b(0.5).delay_with(3, 1.0), ms(200));
        // Full jitter: [0, d].
        assert_eq!(b(1.0).delay_with(3, 1.0), Duration::ZERO);
        assert_eq!(b(1.0).delay_with(3, 0.25), ms(300));
        // No jitter: the draw does not matter.
        assert_eq!(b(0.0).delay_with(3, 0.9), ms(400));
    }

    #[test]
    fn out_of_range_settings_and_draws_are_clamped() {
        assert_eq!(b(2.0).delay_with(3, 1.0), Duration::ZERO, "jitter above 1 is full jitter");
        assert_eq!(b(-1.0).delay_with(3, 1.0), ms(400), "negative jitter is none");
        assert_eq!(b(f64::NAN).delay_with(3, 1.0), ms(400));
        assert_eq!(b(0.5).delay_with(3, f64::NAN), ms(400));
        assert_eq!(b(0.5).delay_with(3, 7.0), ms(200));
        let unbounded = Backoff { max: Duration::MAX, multiplier: f64::INFINITY, ..b(0.5) };
        assert_eq!(unbounded.delay_with(3, 0.0), Duration::MAX, "no overflow panic");
    }

    #[test]
    fn random_delays_stay_within_the_drawn_range() {
        for _ in 0..200 {
            let d = b(0.5).delay(3);
            assert!((ms(200)..=ms(400)).contains(&d), "{d:?}");
        }
    }
}
