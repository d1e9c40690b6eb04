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

/// The opening of a chart: the `<svg>` element, a white page and the title.
fn header(width: f64, height: f64, title: &str) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ =
        writeln!(svg, r#"<text x="10" y="22" font-size="17" font-weight="bold">{}</text>"#, escape(title));
    svg
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
                let label = match c.rate {
                    Some(r) => format!("{} @ {}/s", c.target, rate(Some(r as f64))),
                    None => c.target.clone(),
                };
                (label, durability, bars)
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
    let mut svg = header(
        WIDTH,
        y,
        &format!("Switchboard and peers, {} ({} run(s), medians)", report.date, report.runs),
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

/// Latency against offered rate (D), one line per target measured at two rates or more:
/// p99 on a log scale over the rate on a log scale. `None` when no target has a curve.
pub(crate) fn latency_curve(report: &Report) -> Option<String> {
    const W: f64 = 900.0;
    const H: f64 = 520.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 230.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 60.0;
    const PALETTE: [&str; 8] =
        ["#2f6db3", "#e8893a", "#3a9e5c", "#c0392b", "#8e44ad", "#7f8c8d", "#d4ac0d", "#16a085"];
    let lines: Vec<(String, Vec<(f64, f64)>)> = report
        .targets
        .iter()
        .filter_map(|t| {
            let mut points: Vec<(f64, f64)> = report
                .cells
                .iter()
                .filter(|c| c.target == t.name && c.scenario == Scenario::D && c.error.is_none())
                .filter_map(|c| Some((c.rate? as f64, c.median.latency?.p99)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (points.len() >= 2).then(|| (t.name.clone(), points))
        })
        .collect();
    if lines.is_empty() {
        return None;
    }
    let all = || lines.iter().flat_map(|(_, p)| p.iter());
    let (x_min, x_max) =
        (all().map(|p| p.0).fold(f64::MAX, f64::min), all().map(|p| p.0).fold(0.0, f64::max));
    let (y_min, y_max) = (
        all().map(|p| p.1).fold(f64::MAX, f64::min).max(0.01),
        all().map(|p| p.1).fold(0.0, f64::max).max(0.02),
    );
    // Whole decades around the data, so the axes read in powers of ten.
    let (lx0, lx1) = (x_min.log10().floor(), x_max.log10().ceil().max(x_min.log10().floor() + 1.0));
    let (ly0, ly1) = (y_min.log10().floor(), y_max.log10().ceil().max(y_min.log10().floor() + 1.0));
    let x = |v: f64| LEFT + (v.log10() - lx0) / (lx1 - lx0) * (W - LEFT - RIGHT);
    let y = |v: f64| H - BOTTOM - (v.max(0.01).log10() - ly0) / (ly1 - ly0) * (H - TOP - BOTTOM);
    let title = format!(
        "D: p99 latency against offered rate, 1 KiB ({}, {} run(s), medians)",
        report.date, report.runs
    );
    let mut svg = header(W, H, &title);
    for d in (lx0 as i32)..=(lx1 as i32) {
        let v = 10f64.powi(d);
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1}" stroke="#ddd"/><text x="{0:.1}" y="{2}" font-size="11" text-anchor="middle">{3}</text>"##,
            x(v),
            H - BOTTOM,
            H - BOTTOM + 16.0,
            rate(Some(v))
        );
    }
    for d in (ly0 as i32)..=(ly1 as i32) {
        let v = 10f64.powi(d);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" font-size="11" text-anchor="end">{v} ms</text>"##,
            y(v),
            W - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">offered msgs/s</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 18.0
    );
    for (i, (name, points)) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = points.iter().map(|(r, p)| format!("{:.1},{:.1}", x(*r), y(*p))).collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for (r, p) in points {
            let _ = writeln!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#, x(*r), y(*p));
        }
        let ly = TOP + 10.0 + i as f64 * 18.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{}" width="12" height="10" fill="{color}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            W - RIGHT + 16.0,
            ly - 9.0,
            W - RIGHT + 32.0,
            ly,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    Some(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Cell, TargetInfo};
    use crate::scenario::{Figures, Latency, Params};

    fn d_cell(target: &str, rate: u64, p99: f64) -> Cell {
        let median = Figures {
            latency: Some(Latency { p50: p99 / 3.0, p99, p999: p99 * 2.0, max: p99 * 3.0, count: 10 }),
            ..Figures::default()
        };
        Cell {
            target: target.into(),
            scenario: Scenario::D,
            rate: Some(rate),
            runs: vec![median.clone()],
            median,
            error: None,
            stages: Vec::new(),
            server_cpu_us_per_msg: None,
        }
    }

    fn report(cells: Vec<Cell>) -> Report {
        let params = Params {
            secs: 1.0,
            publishers: 1,
            window: 1,
            consumers: 1,
            prefetch: 1,
            replay_count: 1,
            rate: 2_000,
        };
        let targets = ["a", "b"]
            .iter()
            .map(|n| TargetInfo {
                name: (*n).into(),
                durability: Durability::FsyncBeforeAck,
                setup: String::new(),
            })
            .collect();
        Report {
            date: "today".into(),
            machine: "here".into(),
            ceiling: None,
            params,
            runs: 1,
            targets,
            skipped: Vec::new(),
            cells,
        }
    }

    #[test]
    fn a_curve_has_a_line_per_target_with_two_rates_or_more() {
        let r = report(vec![d_cell("a", 2_000, 1.0), d_cell("a", 10_000, 3.0), d_cell("b", 2_000, 2.0)]);
        let svg = latency_curve(&r).expect("target a has a curve");
        assert_eq!(svg.matches("<polyline").count(), 1, "b has one rate only");
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains(">a</text>") && !svg.contains(">b</text>"));
        assert!(latency_curve(&report(vec![d_cell("a", 2_000, 1.0)])).is_none());
        // And the tables: one per rate, the highest sustained named.
        let md = report(vec![d_cell("a", 2_000, 1.0), d_cell("a", 10_000, 80.0)]).markdown();
        assert!(
            md.contains("D: latency at 2000 msgs/s") && md.contains("D: latency at 10000 msgs/s"),
            "{md}"
        );
        assert!(md.contains("Highest D rate sustained (every run complete, p99 ≤ 50 ms): a 2.0k"), "{md}");
    }
}
