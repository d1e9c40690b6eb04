//! The run's results: medians, the comparison table (markdown, also printed), and JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::ceiling::Ceiling;
use crate::scenario::{Figures, Latency, Params, Scenario};
use crate::target::Durability;

/// A target as the report names it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct TargetInfo {
    pub(crate) name: String,
    pub(crate) durability: Durability,
    pub(crate) setup: String,
}

/// One target in one scenario: every run, and their medians.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Cell {
    pub(crate) target: String,
    pub(crate) scenario: Scenario,
    /// The offered rate, for D.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rate: Option<u64>,
    pub(crate) runs: Vec<Figures>,
    pub(crate) median: Figures,
    /// Why the runs stopped, if one failed.
    pub(crate) error: Option<String>,
    /// Where messages spent their time inside the broker over all the runs (Switchboard
    /// targets only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) stages: Vec<crate::stages::StageFigure>,
    /// CPU time (user + system) of the target's own server process per message moved, µs.
    pub(crate) server_cpu_us_per_msg: Option<f64>,
}

/// Everything one invocation measured.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Report {
    /// UTC, RFC 3339.
    pub(crate) date: String,
    pub(crate) machine: String,
    pub(crate) ceiling: Option<Ceiling>,
    pub(crate) params: Params,
    pub(crate) runs: usize,
    pub(crate) targets: Vec<TargetInfo>,
    pub(crate) skipped: Vec<String>,
    pub(crate) cells: Vec<Cell>,
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    Some(if xs.len() % 2 == 1 { xs[mid] } else { (xs[mid - 1] + xs[mid]) / 2.0 })
}

/// The median of each figure across runs (each percentile on its own).
pub(crate) fn medians(runs: &[Figures]) -> Figures {
    let of = |f: &dyn Fn(&Figures) -> Option<f64>| median(runs.iter().filter_map(f).collect());
    let lat =
        |f: &dyn Fn(&Latency) -> f64| median(runs.iter().filter_map(|r| r.latency.as_ref().map(f)).collect());
    let latency = lat(&|l| l.p50).map(|p50| Latency {
        p50,
        p99: lat(&|l| l.p99).unwrap_or_default(),
        p999: lat(&|l| l.p999).unwrap_or_default(),
        max: lat(&|l| l.max).unwrap_or_default(),
        count: runs.iter().filter_map(|r| r.latency.map(|l| l.count)).sum(),
    });
    Figures {
        publish_per_sec: of(&|r| r.publish_per_sec),
        consume_per_sec: of(&|r| r.consume_per_sec),
        latency,
    }
}

/// `123.4k`, `1.23M`, or `-`.
pub(crate) fn rate(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(x) if x >= 1e6 => format!("{:.2}M", x / 1e6),
        Some(x) if x >= 1e4 => format!("{:.0}k", x / 1e3),
        Some(x) if x >= 1e3 => format!("{:.1}k", x / 1e3),
        Some(x) => format!("{x:.0}"),
    }
}

fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The Switchboard target a peer is compared with: `switchboard serve` (a server in its own
/// process, as the peers are) at the peer's durability.
pub(crate) fn reference_for(durability: Durability) -> &'static str {
    match durability {
        Durability::FsyncBeforeAck => "switchboard-serve",
        Durability::NoFsync => "switchboard-serve-nofsync",
    }
}

/// How many times better the reference is than `peer` on the scenario's headline figure
/// (above 1: Switchboard ahead). Throughput for A, B, E (consume + ack, the end-to-end
/// rate) and C (replay); p99 latency for D.
pub(crate) fn advantage(scenario: Scenario, reference: &Figures, peer: &Figures) -> Option<f64> {
    match scenario {
        Scenario::D => Some(peer.latency?.p99 / reference.latency?.p99),
        _ => Some(reference.consume_per_sec? / peer.consume_per_sec?),
    }
}

impl Report {
    fn cell(&self, target: &str, scenario: Scenario, rate: Option<u64>) -> Option<&Cell> {
        self.cells.iter().find(|c| c.target == target && c.scenario == scenario && c.rate == rate)
    }

    fn durability(&self, target: &str) -> Option<Durability> {
        self.targets.iter().find(|t| t.name == target).map(|t| t.durability)
    }

    /// The tables, in markdown (they read well as plain text too).
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Run {} on {}; {} run(s) per figure, medians shown.\n",
            self.date, self.machine, self.runs
        );
        if let Some(c) = &self.ceiling {
            let _ = writeln!(
                out,
                "Machine ceiling (same disk, same run): sequential write {:.0} MiB/s{}, {:.0} fsyncs/s (4 KiB append + fdatasync).\n",
                c.sequential_write_mib_s,
                if c.direct_io { " (O_DIRECT)" } else { " (buffered + fsync)" },
                c.fsyncs_per_sec
            );
        }
        // One table per scenario, and for D one per offered rate.
        let mut tables: Vec<(Scenario, Option<u64>)> = Vec::new();
        for c in &self.cells {
            if !tables.contains(&(c.scenario, c.rate)) {
                tables.push((c.scenario, c.rate));
            }
        }
        tables.sort_by_key(|(s, r)| (Scenario::ALL.iter().position(|x| x == s), *r));
        for (scenario, at) in tables {
            let cells: Vec<_> =
                self.cells.iter().filter(|c| c.scenario == scenario && c.rate == at).collect();
            let params = Params { rate: at.unwrap_or(self.params.rate), ..self.params.clone() };
            let _ = writeln!(out, "### {}\n", scenario.title(&params));
            let (first, second) = match scenario {
                Scenario::C => ("publish/s", "replay/s"),
                Scenario::D => ("offered/s", "received/s"),
                _ => ("publish/s", "consume+ack/s"),
            };
            let _ = writeln!(
                out,
                "| target | durability | {first} | {second} | p50 ms | p99 ms | p99.9 ms | Switchboard × |\n|---|---|--:|--:|--:|--:|--:|--:|"
            );
            for c in &cells {
                let durability = self.durability(&c.target);
                let label = durability.map(Durability::label).unwrap_or("?");
                if let Some(e) = &c.error {
                    let _ = writeln!(
                        out,
                        "| {} | {label} | failed: {} | | | | | |",
                        c.target,
                        e.replace('|', "/")
                    );
                    continue;
                }
                let m = &c.median;
                let (p50, p99, p999) = match m.latency {
                    Some(l) => (ms(l.p50), ms(l.p99), ms(l.p999)),
                    None => ("-".into(), "-".into(), "-".into()),
                };
                let ratio = durability
                    .map(reference_for)
                    .filter(|r| *r != c.target && !c.target.starts_with("switchboard"))
                    .and_then(|r| self.cell(r, scenario, at))
                    .filter(|r| r.error.is_none())
                    .and_then(|r| advantage(scenario, &r.median, m))
                    .map(|x| format!("{x:.2}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "| {} | {label} | {} | {} | {p50} | {p99} | {p999} | {ratio} |",
                    c.target,
                    rate(m.publish_per_sec),
                    rate(m.consume_per_sec)
                );
            }
            out.push('\n');
            stage_table(&mut out, &cells);
        }
        self.sustained_rates(&mut out);
        let _ = writeln!(
            out,
            "Switchboard ×: the figure of `switchboard serve` at the peer's durability divided by the peer's (consume + ack or replay rate; for D, the peer's p99 over Switchboard's). Above 1, Switchboard is ahead.\n"
        );
        for t in &self.targets {
            let _ = writeln!(out, "- **{}** ({}): {}", t.name, t.durability.label(), t.setup);
        }
        for s in &self.skipped {
            let _ = writeln!(out, "- {s}");
        }
        out
    }
}

/// Whether a D cell kept up with its offered rate: every run completed and the p99 stayed
/// within [`SUSTAINED_P99_MS`] (beyond its capacity a target queues, and latency grows with
/// the run's length).
pub(crate) fn sustained(c: &Cell) -> bool {
    c.error.is_none() && c.median.latency.is_some_and(|l| l.p99 <= SUSTAINED_P99_MS)
}

/// The p99 under which a rate counts as sustained, ms.
pub(crate) const SUSTAINED_P99_MS: f64 = 50.0;

impl Report {
    /// For targets measured at several D rates: the highest each sustained.
    fn sustained_rates(&self, out: &mut String) {
        let mut lines = Vec::new();
        for t in &self.targets {
            let rates: Vec<&Cell> =
                self.cells.iter().filter(|c| c.target == t.name && c.scenario == Scenario::D).collect();
            if rates.len() < 2 {
                continue;
            }
            let best = rates.iter().filter(|c| sustained(c)).filter_map(|c| c.rate).max();
            lines.push(match best {
                Some(r) => format!("{} {}", t.name, rate(Some(r as f64))),
                None => format!("{} none of the rates", t.name),
            });
        }
        if !lines.is_empty() {
            let _ = writeln!(
                out,
                "Highest D rate sustained (every run complete, p99 ≤ {SUSTAINED_P99_MS} ms): {}.\n",
                lines.join(", ")
            );
        }
    }
}

/// Where the time went inside the broker, for the cells that report it.
fn stage_table(out: &mut String, cells: &[&Cell]) {
    let costs: Vec<String> = cells
        .iter()
        .filter_map(|c| c.server_cpu_us_per_msg.map(|us| format!("{} {us:.1} µs", c.target)))
        .collect();
    if !costs.is_empty() {
        let _ = writeln!(
            out,
            "Server CPU per message moved (user + system time of the server process over all runs, divided by the messages consumed): {}.\n",
            costs.join(", ")
        );
    }
    let with: Vec<_> = cells.iter().filter(|c| !c.stages.is_empty()).collect();
    if with.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "Inside the broker, over all runs (`switchboard_stage_latency_seconds`; bucket upper bounds, ms; mean exact):\n\n| target | stage | timed | mean | p50 ≤ | p99 ≤ | p99.9 ≤ |\n|---|---|--:|--:|--:|--:|--:|"
    );
    let bound = |x: Option<f64>| x.map_or_else(|| "> 1000".to_owned(), |v| format!("{v}"));
    for c in with {
        for s in &c.stages {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.3} | {} | {} | {} |",
                c.target,
                s.stage,
                s.count,
                s.mean_ms,
                bound(s.p50_ms),
                bound(s.p99_ms),
                bound(s.p999_ms)
            );
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throughput(x: f64) -> Figures {
        Figures { publish_per_sec: Some(x), consume_per_sec: Some(x), latency: None }
    }

    #[test]
    fn medians_take_the_middle_run_of_each_figure() {
        let runs = [throughput(3.0), throughput(1.0), throughput(2.0)];
        assert_eq!(medians(&runs).publish_per_sec, Some(2.0));
        let runs = [throughput(4.0), throughput(1.0)];
        assert_eq!(medians(&runs).consume_per_sec, Some(2.5));
        assert_eq!(medians(&[]).publish_per_sec, None);
    }

    #[test]
    fn the_advantage_is_above_one_when_switchboard_is_ahead() {
        assert_eq!(advantage(Scenario::A, &throughput(200.0), &throughput(100.0)), Some(2.0));
        let lat =
            |p99| Figures { latency: Some(Latency { p99, ..Latency::default() }), ..Figures::default() };
        assert_eq!(advantage(Scenario::D, &lat(1.0), &lat(3.0)), Some(3.0));
    }

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(rate(Some(1_234_567.0)), "1.23M");
        assert_eq!(rate(Some(123_456.0)), "123k");
        assert_eq!(rate(Some(2_345.0)), "2.3k");
        assert_eq!(rate(None), "-");
    }
}
