//! An SVG chart of a report: one panel per scenario, a row of bars per target.
//!
//! Written by hand (a few dozen elements) rather than through a plotting crate, so the bench
//! builds no font or raster stack.

use std::fmt::Write as _;

use crate::report::{Report, rate};
use crate::scenario::Scenario;
use crate::target::Durability;

const WIDTH: f64 = 1000.0;
const LABEL: f64 = 230.0;
const BAR: f64 = 13.0;
const PLOT: f64 = WIDTH - LABEL - 110.0;

/// One bar: a label inside the row, the value, its text.
struct Bar {
    value: f64,
    text: String,
    shade: usize,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn color(durability: Option<Durability>, shade: usize) -> &'static str {
    match (durability, shade) {
        (Some(Durability::NoFsync), 0) => "#e8893a",
        (Some(Durability::NoFsync), 1) => "#f3b37c",
        (Some(Durability::NoFsync), _) => "#f9d9bd",
        (_, 0) => "#2f6db3",
        (_, 1) => "#6a9bd3",
        (_, _) => "#a9c4e6",
    }
}

/// The chart of `report`.
pub(crate) fn svg(report: &Report) -> String {
    let mut body = String::new();
    let mut y = 60.0;
    for scenario in Scenario::ALL {
        let cells: Vec<_> =
            report.cells.iter().filter(|c| c.scenario == scenario && c.error.is_none()).collect();
        if cells.is_empty() {
            continue;
        }
        let (what, names): (&str, [&str; 3]) = match scenario {
            Scenario::D => ("latency from the intended send time, ms", ["p50", "p99", "p99.9"]),
            Scenario::C => ("msgs/s", ["publish", "replay", ""]),
            _ => ("msgs/s", ["publish", "consume+ack", ""]),
        };
        let _ = writeln!(
            body,
            r#"<text x="10" y="{y}" font-size="15" font-weight="bold">{} <tspan font-weight="normal" font-size="12">({what}; {})</tspan></text>"#,
            escape(&scenario.title(&report.params)),
            names.iter().filter(|n| !n.is_empty()).copied().collect::<Vec<_>>().join(" / ")
        );
        y += 10.0;
        let rows: Vec<(String, Option<Durability>, Vec<Bar>)> = cells
            .iter()
            .map(|c| {
                let m = &c.median;
                let bars = match (scenario, m.latency) {
                    (Scenario::D, Some(l)) => [l.p50, l.p99, l.p999]
                        .iter()
                        .enumerate()
                        .map(|(shade, v)| Bar { value: *v, text: format!("{v:.2} ms"), shade })
                        .collect(),
                    (Scenario::D, None) => Vec::new(),
                    _ => [m.publish_per_sec, m.consume_per_sec]
                        .iter()
                        .enumerate()
                        .map(|(shade, v)| Bar { value: v.unwrap_or(0.0), text: rate(*v), shade })
                        .collect(),
                };
                let durability = report.targets.iter().find(|t| t.name == c.target).map(|t| t.durability);
                (c.target.clone(), durability, bars)
            })
            .collect();
        let max =
            rows.iter().flat_map(|r| r.2.iter().map(|b| b.value)).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
        for (name, durability, bars) in rows {
            let height = BAR * bars.len().max(1) as f64 + 8.0;
            let _ = writeln!(
                body,
                r#"<text x="{}" y="{}" font-size="12" text-anchor="end">{}</text>"#,
                LABEL - 8.0,
                y + height / 2.0 + 2.0,
                escape(&name)
            );
            for (i, bar) in bars.iter().enumerate() {
                let w = (bar.value / max * PLOT).max(1.0);
                let by = y + 4.0 + i as f64 * BAR;
                let _ = writeln!(
                    body,
                    r#"<rect x="{LABEL}" y="{by}" width="{w:.1}" height="{}" fill="{}"/><text x="{:.1}" y="{}" font-size="10">{}</text>"#,
                    BAR - 2.0,
                    color(durability, bar.shade),
                    LABEL + w + 4.0,
                    by + BAR - 4.0,
                    escape(&bar.text)
                );
            }
            y += height;
        }
        y += 28.0;
    }
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y}" viewBox="0 0 {WIDTH} {y}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="22" font-size="17" font-weight="bold">Switchboard and peers, {} ({} run(s), medians)</text>"#,
        escape(&report.date),
        report.runs
    );
    let _ = writeln!(
        svg,
        r##"<rect x="10" y="34" width="12" height="10" fill="#2f6db3"/><text x="26" y="43" font-size="12">fsync before ack</text><rect x="150" y="34" width="12" height="10" fill="#e8893a"/><text x="166" y="43" font-size="12">no fsync before ack</text><text x="320" y="43" font-size="12">{}</text>"##,
        escape(&report.machine)
    );
    svg.push_str(&body);
    svg.push_str("</svg>\n");
    svg
}
