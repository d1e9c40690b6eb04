//! Congestion, flagged rather than left for a person to read off a plot:
//!
//! - a subscription whose backlog or lag keeps growing (over the last 30 s, at least 20 s
//!   of readings, it rose by at least [`MIN_GROWTH`], at four readings or more, and never
//!   fell);
//! - a subscription whose backlog grows with no consumer attached;
//! - consumers stuck at their in-flight cap (every credit used, more waiting, for three
//!   readings in a row);
//! - a sync edge whose p99 or error rate is climbing (the last minute against the four
//!   before it);
//! - a sync edge whose circuit breaker opened within the last minute.

use std::collections::VecDeque;

use serde::Serialize;

use crate::graph::{Edge, Gauges};
use crate::window::Window;

/// The least growth, in messages, that counts as a backlog or lag that keeps growing.
pub const MIN_GROWTH: u64 = 20;
/// The readings (of the broker's, every 5 s) at which it must have risen.
const MIN_RISES: usize = 4;
/// The shortest time the growth must last, in seconds.
const MIN_SPAN: u64 = 20;
/// How far back the growth rules look, in seconds.
pub const GROWTH_SECONDS: u64 = 30;
/// The fewest calls in a window for the climbing rules to judge it.
const MIN_CALLS: u64 = 20;

/// What is congested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CongestionKind {
    /// The backlog keeps growing.
    BacklogGrowing,
    /// The lag keeps growing.
    LagGrowing,
    /// Messages arrive and no consumer is attached.
    NoConsumers,
    /// Every consumer is at its in-flight cap and more messages wait.
    InFlightCap,
    /// The p99 of the last minute is over twice the baseline's.
    LatencyClimbing,
    /// The error rate of the last minute is climbing.
    ErrorsClimbing,
    /// A circuit breaker refused calls.
    BreakerOpen,
}

/// One congestion finding, with what it is based on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Congestion {
    /// What.
    pub kind: CongestionKind,
    /// The figures behind it, for a person.
    pub detail: String,
}

/// The findings on a subscription, from its latest readings.
pub(crate) fn subscription(gauges: &VecDeque<Gauges>, now_s: u64) -> Vec<Congestion> {
    let mut out = Vec::new();
    let recent: Vec<&Gauges> = gauges.iter().filter(|g| g.at_s + GROWTH_SECONDS >= now_s).collect();
    let Some(last) = recent.last() else { return out };
    // A queue that starts taking load fills to its working depth (rate × handling time) and
    // stops there; one that cannot keep up grows at every reading. So: no fall at all, a rise
    // at MIN_RISES readings or more, over at least MIN_SPAN seconds.
    let growth = |value: fn(&Gauges) -> u64| -> Option<(u64, u64)> {
        if last.at_s - recent[0].at_s < MIN_SPAN {
            return None;
        }
        let first = value(recent[0]);
        let now = value(last);
        let steps = || recent.windows(2).map(|w| (value(w[0]), value(w[1])));
        let falls = steps().filter(|(a, b)| b < a).count();
        let rises = steps().filter(|(a, b)| b > a).count();
        (now >= first + MIN_GROWTH && falls == 0 && rises >= MIN_RISES).then_some((first, now))
    };
    let backlog = growth(|g| g.backlog);
    if let Some((from, to)) = backlog {
        let span = last.at_s - recent[0].at_s;
        if last.consumers == 0 {
            out.push(Congestion {
                kind: CongestionKind::NoConsumers,
                detail: format!("backlog {from} → {to} in {span} s with no consumer attached"),
            });
        }
        out.push(Congestion {
            kind: CongestionKind::BacklogGrowing,
            detail: format!("backlog {from} → {to} in {span} s"),
        });
    }
    if let Some((from, to)) = growth(|g| g.lag) {
        out.push(Congestion {
            kind: CongestionKind::LagGrowing,
            detail: format!("lag {from} → {to} in {} s", last.at_s - recent[0].at_s),
        });
    }
    let at_cap =
        |g: &&Gauges| matches!(g.credits, Some(c) if c > 0 && g.in_flight >= c && g.backlog > g.in_flight);
    if recent.len() >= 3 && recent.iter().rev().take(3).all(at_cap) {
        out.push(Congestion {
            kind: CongestionKind::InFlightCap,
            detail: format!(
                "{} in flight of {} credits, backlog {}",
                last.in_flight,
                last.credits.unwrap_or(0),
                last.backlog
            ),
        });
    }
    out
}

/// The findings on a sync edge.
pub(crate) fn sync_edge(edge: &Edge, now_s: u64) -> Vec<Congestion> {
    let mut out = Vec::new();
    if let Some(at) = edge.breaker_open_s
        && at + 60 >= now_s
    {
        out.push(Congestion {
            kind: CongestionKind::BreakerOpen,
            detail: format!("a circuit breaker refused calls {} s ago", now_s - at),
        });
    }
    let (recent, _) = edge.traced.sum(Window::OneMinute, now_s);
    let base = edge.traced.baseline(now_s);
    if recent.count < MIN_CALLS || base.count < MIN_CALLS {
        return out;
    }
    if let (Some(p99), Some(base_p99)) = (recent.latency.quantile(0.99), base.latency.quantile(0.99))
        && p99 > 2.0 * base_p99
        && p99 - base_p99 > 0.005
    {
        out.push(Congestion {
            kind: CongestionKind::LatencyClimbing,
            detail: format!("p99 {:.1} ms in the last minute, {:.1} ms before", p99 * 1e3, base_p99 * 1e3),
        });
    }
    let rate = |s: &crate::window::Sample| s.failed as f64 / s.count as f64;
    let (now_rate, base_rate) = (rate(&recent), rate(&base));
    if now_rate >= 0.05 && now_rate > 2.0 * base_rate + 0.01 {
        out.push(Congestion {
            kind: CongestionKind::ErrorsClimbing,
            detail: format!(
                "{:.1} % errors in the last minute, {:.1} % before",
                now_rate * 100.0,
                base_rate * 100.0
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at_s: u64, backlog: u64, consumers: u64) -> Gauges {
        Gauges { at_s, backlog, lag: backlog, consumers, ..Gauges::default() }
    }

    #[test]
    fn a_backlog_that_keeps_growing_with_no_consumer_is_flagged() {
        let g: VecDeque<_> = (0..7).map(|i| reading(100 + i * 5, i * 50, 0)).collect();
        let kinds: Vec<_> = subscription(&g, 130).into_iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [CongestionKind::NoConsumers, CongestionKind::BacklogGrowing, CongestionKind::LagGrowing]
        );
    }

    #[test]
    fn a_queue_filling_to_its_working_depth_is_not() {
        // Load starts: the backlog climbs to what is in hand and stays there.
        let values = [0, 12, 25, 26, 24, 26, 25];
        let g: VecDeque<_> =
            values.iter().enumerate().map(|(i, v)| reading(100 + i as u64 * 5, *v, 2)).collect();
        assert!(subscription(&g, 130).is_empty());
    }

    #[test]
    fn a_backlog_that_rises_and_drains_is_not() {
        let values = [0, 40, 5, 60, 10, 50, 20];
        let g: VecDeque<_> =
            values.iter().enumerate().map(|(i, v)| reading(100 + i as u64 * 5, *v, 2)).collect();
        assert!(subscription(&g, 130).is_empty());
    }

    #[test]
    fn a_steady_backlog_is_not() {
        let g: VecDeque<_> = (0..7).map(|i| reading(100 + i * 5, 500, 1)).collect();
        assert!(subscription(&g, 130).is_empty());
    }

    #[test]
    fn old_readings_do_not_count() {
        let g: VecDeque<_> = (0..7).map(|i| reading(100 + i * 5, i * 50, 0)).collect();
        assert!(subscription(&g, 1_000).is_empty());
    }

    #[test]
    fn consumers_at_their_cap_are_flagged_after_three_readings() {
        let at_cap = |at_s| Gauges {
            at_s,
            backlog: 500,
            in_flight: 64,
            credits: Some(64),
            consumers: 1,
            ..Gauges::default()
        };
        let g: VecDeque<_> = [at_cap(100), at_cap(105), at_cap(110)].into();
        assert_eq!(subscription(&g, 110)[0].kind, CongestionKind::InFlightCap);
        let g: VecDeque<_> = [at_cap(105), at_cap(110)].into();
        assert!(subscription(&g, 110).is_empty());
    }
}
