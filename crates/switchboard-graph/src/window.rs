//! Sliding windows of 1 min, 5 min and 1 h, each a ring of time slots: 6 of 10 s, 10 of
//! 30 s and 12 of 5 min. A query covers the current slot and the full ones before it, so
//! between the window less one slot and the whole window; the rate divides by the time
//! actually covered. Each ring holds one slot more, the one the next slot overwrites. Memory per windowed value is fixed: 31 slots, whatever the traffic.

use serde::{Deserialize, Serialize};

use crate::histogram::Histogram;

/// A window the graph is read over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Window {
    /// The last minute.
    #[default]
    #[serde(rename = "1m")]
    OneMinute,
    /// The last five minutes.
    #[serde(rename = "5m")]
    FiveMinutes,
    /// The last hour.
    #[serde(rename = "1h")]
    OneHour,
}

impl Window {
    /// Every window, shortest first.
    pub const ALL: [Window; 3] = [Window::OneMinute, Window::FiveMinutes, Window::OneHour];

    /// Its length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Window::OneMinute => 60,
            Window::FiveMinutes => 300,
            Window::OneHour => 3600,
        }
    }

    /// `1m`, `5m` or `1h`.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::OneMinute => "1m",
            Window::FiveMinutes => "5m",
            Window::OneHour => "1h",
        }
    }

    /// Parses `1m`, `5m` or `1h`.
    pub fn parse(s: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.as_str() == s)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The length of one slot of the ring behind it, in seconds: the resolution of its
    /// history.
    pub fn slot_seconds(self) -> u64 {
        self.ring_shape().0
    }

    /// Slot length and slot count of the ring behind it.
    fn ring_shape(self) -> (u64, usize) {
        match self {
            Window::OneMinute => (10, 6),
            Window::FiveMinutes => (30, 10),
            Window::OneHour => (300, 12),
        }
    }
}

/// What a slot counts on an edge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Calls, messages or deliveries.
    pub count: u64,
    /// Those that failed (error status, nack, rejected publish).
    pub failed: u64,
    /// Deliveries after the first.
    pub redelivered: u64,
    /// Their latencies.
    pub latency: Histogram,
}

impl Sample {
    /// Adds another sample.
    pub fn merge(&mut self, other: &Sample) {
        self.count += other.count;
        self.failed += other.failed;
        self.redelivered += other.redelivered;
        self.latency.merge(&other.latency);
    }
}

#[derive(Clone, Debug)]
struct Ring {
    slot_seconds: u64,
    /// `(slot number since the epoch, what it holds)`; a slot whose number is not current is
    /// stale and reads as empty.
    slots: Vec<(u64, Sample)>,
}

impl Ring {
    fn new(window: Window) -> Ring {
        let (slot_seconds, n) = window.ring_shape();
        Ring { slot_seconds, slots: vec![(u64::MAX, Sample::default()); n + 1] }
    }

    fn current(&mut self, now_s: u64) -> &mut Sample {
        let epoch = now_s / self.slot_seconds;
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(epoch % len) as usize];
        if slot.0 != epoch {
            *slot = (epoch, Sample::default());
        }
        &mut slot.1
    }

    /// Slots in `(now - window, now]`, oldest first, as `(slot start in seconds, sample)`.
    fn live(&self, now_s: u64) -> impl Iterator<Item = (u64, &Sample)> {
        let epoch = now_s / self.slot_seconds;
        // The window's slots, the current one included; the ring's extra slot is the one
        // being overwritten next.
        let oldest = epoch.saturating_sub(self.slots.len() as u64 - 2);
        let mut live: Vec<_> = self
            .slots
            .iter()
            .filter(move |(e, _)| *e != u64::MAX && *e >= oldest && *e <= epoch)
            .map(|(e, s)| (e * self.slot_seconds, s))
            .collect();
        live.sort_by_key(|(start, _)| *start);
        live.into_iter()
    }

    /// How many seconds a sum over the ring covers at `now_s`.
    fn covered_seconds(&self, now_s: u64) -> u64 {
        (self.slots.len() as u64 - 2) * self.slot_seconds + now_s % self.slot_seconds
    }
}

/// One value over the three windows.
#[derive(Clone, Debug)]
pub struct Windowed {
    rings: [Ring; 3],
}

impl Default for Windowed {
    fn default() -> Self {
        Windowed { rings: Window::ALL.map(Ring::new) }
    }
}

impl Windowed {
    /// Counts into the current slot of every window.
    pub fn record(&mut self, now_s: u64, f: impl Fn(&mut Sample)) {
        for ring in &mut self.rings {
            f(ring.current(now_s));
        }
    }

    /// The sum over `window`, and the seconds it covers.
    pub fn sum(&self, window: Window, now_s: u64) -> (Sample, u64) {
        let ring = &self.rings[window.index()];
        let mut total = Sample::default();
        ring.live(now_s).for_each(|(_, s)| total.merge(s));
        (total, ring.covered_seconds(now_s))
    }

    /// The sum over the part of the 5-minute window before the last minute: the baseline a
    /// climbing latency or error rate is measured against.
    pub fn baseline(&self, now_s: u64) -> Sample {
        let ring = &self.rings[Window::FiveMinutes.index()];
        let cutoff = now_s.saturating_sub(60);
        let mut total = Sample::default();
        ring.live(now_s)
            .filter(|(start, _)| start + ring.slot_seconds <= cutoff)
            .for_each(|(_, s)| total.merge(s));
        total
    }

    /// The slots of `window`'s ring, oldest first, with their start times in seconds: the
    /// figures over time a dashboard plots.
    pub fn series(&self, window: Window, now_s: u64) -> Vec<(u64, Sample)> {
        self.rings[window.index()].live(now_s).map(|(t, s)| (t, s.clone())).collect()
    }

    /// Whether anything was counted within `window`.
    pub fn any(&self, window: Window, now_s: u64) -> bool {
        self.rings[window.index()].live(now_s).any(|(_, s)| s.count > 0 || s.failed > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &mut Sample) {
        s.count += 1;
    }

    #[test]
    fn a_count_leaves_the_minute_window_after_a_minute_and_the_hour_after_an_hour() {
        let mut w = Windowed::default();
        w.record(1_000, one);
        assert_eq!(w.sum(Window::OneMinute, 1_000).0.count, 1);
        assert_eq!(w.sum(Window::OneMinute, 1_059).0.count, 1);
        assert_eq!(w.sum(Window::OneMinute, 1_075).0.count, 0);
        assert_eq!(w.sum(Window::FiveMinutes, 1_250).0.count, 1);
        assert_eq!(w.sum(Window::FiveMinutes, 1_340).0.count, 0);
        assert_eq!(w.sum(Window::OneHour, 4_000).0.count, 1);
        assert_eq!(w.sum(Window::OneHour, 5_000).0.count, 0);
    }

    #[test]
    fn a_slot_reused_after_a_lap_starts_empty() {
        let mut w = Windowed::default();
        w.record(0, one);
        // 70 s later the same slot index comes round again.
        w.record(70, one);
        assert_eq!(w.sum(Window::OneMinute, 70).0.count, 1);
        assert_eq!(w.sum(Window::FiveMinutes, 70).0.count, 2);
    }

    #[test]
    fn the_covered_time_is_at_least_the_window_less_one_slot() {
        let w = Windowed::default();
        for now in [0, 9, 10, 55, 3599, 7200] {
            let (_, covered) = w.sum(Window::OneMinute, now);
            assert!((50..=60).contains(&covered), "{now}: {covered}");
        }
    }

    #[test]
    fn the_baseline_leaves_out_the_last_minute() {
        let mut w = Windowed::default();
        w.record(1_000, one);
        w.record(1_100, one);
        assert_eq!(w.baseline(1_100).count, 1);
    }
}
