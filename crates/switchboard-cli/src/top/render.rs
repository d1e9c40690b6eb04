//! Drawing the graph: a full-screen ratatui frame, or plain text for `--once`.

use std::fmt::Write as _;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};

use super::model::{Graph, edges_by_attention, ms, short, subscriptions};

const EDGE_HEADER: [&str; 8] = ["kind", "from", "to", "rate/s", "err %", "p50 ms", "p99 ms", "e2e p99"];
const SUB_HEADER: [&str; 8] =
    ["subscription", "backlog", "lag", "in flight", "dead", "consumers", "in/s", "congestion"];

fn edge_cells(graph: &Graph) -> Vec<([String; 8], bool)> {
    edges_by_attention(graph)
        .into_iter()
        .map(|e| {
            let cells = [
                e.kind.clone(),
                short(&e.source).to_owned(),
                short(&e.target).to_owned(),
                format!("{:.1}", e.rate),
                format!("{:.1}", e.error_rate * 100.0),
                ms(e.latency.as_ref(), |q| q.p50_ms),
                ms(e.latency.as_ref(), |q| q.p99_ms),
                ms(e.end_to_end.as_ref(), |q| q.p99_ms),
            ];
            (cells, !e.congested.is_empty() || e.error_rate >= 0.05)
        })
        .collect()
}

fn subscription_cells(graph: &Graph) -> Vec<([String; 8], bool)> {
    subscriptions(graph)
        .into_iter()
        .map(|n| {
            let r = n.subscription.as_ref();
            let v = |f: fn(&super::model::Reading) -> u64| r.map_or_else(|| "-".into(), |r| f(r).to_string());
            let congestion: Vec<&str> = n.congested.iter().map(|c| c.kind.as_str()).collect();
            let cells = [
                n.name.clone(),
                v(|r| r.backlog),
                v(|r| r.lag),
                v(|r| r.in_flight),
                v(|r| r.dead_lettered),
                v(|r| r.consumers),
                format!("{:.1}", n.rate_in),
                congestion.join(", "),
            ];
            (cells, !n.congested.is_empty())
        })
        .collect()
}

/// The summary line: what is shown and what needs attention.
fn summary(graph: &Graph, source: &str, status: &str) -> String {
    let congested = graph.nodes.iter().filter(|n| !n.congested.is_empty()).count()
        + graph.edges.iter().filter(|e| !e.congested.is_empty()).count();
    let services = graph.nodes.iter().filter(|n| n.kind == "service").count();
    let mut s = format!(
        "{source} · window {} · {services} services · {} edges · {congested} congested",
        graph.window,
        graph.edges.len()
    );
    if graph.dropped.any() {
        let d = &graph.dropped;
        let _ = write!(
            s,
            " · telemetry dropped: {} nodes, {} edges, {} spans waiting",
            d.nodes, d.edges, d.pending
        );
    }
    if !status.is_empty() {
        let _ = write!(s, " · {status}");
    }
    s
}

/// One screen: a summary, the edges, the subscriptions, what is congested, the keys.
pub(crate) fn frame(f: &mut Frame<'_>, graph: &Graph, source: &str, status: &str) {
    let [top, edges, subs, congestion, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Percentage(50),
        Constraint::Percentage(30),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(
        Paragraph::new(summary(graph, source, status)).style(Style::new().add_modifier(Modifier::BOLD)),
        top,
    );

    let table = |title: &'static str,
                 header: [&'static str; 8],
                 rows: Vec<([String; 8], bool)>,
                 widths: [Constraint; 8]| {
        let rows = rows.into_iter().map(|(cells, hot)| {
            let style =
                if hot { Style::new().fg(Color::Red).add_modifier(Modifier::BOLD) } else { Style::new() };
            Row::new(cells).style(style)
        });
        Table::new(rows, widths)
            .header(Row::new(header).style(Style::new().add_modifier(Modifier::UNDERLINED)))
            .block(Block::new().borders(Borders::TOP).title(title))
    };
    let w = |c: [u16; 8]| c.map(Constraint::Fill);
    f.render_widget(table("edges", EDGE_HEADER, edge_cells(graph), w([2, 5, 5, 2, 2, 2, 2, 2])), edges);
    f.render_widget(
        table("subscriptions", SUB_HEADER, subscription_cells(graph), w([5, 2, 2, 2, 2, 2, 2, 5])),
        subs,
    );

    let mut lines: Vec<Line<'_>> = Vec::new();
    for (id, c) in congested(graph) {
        lines.push(Line::styled(format!("⚠ {id}: {} — {}", c.kind, c.detail), Style::new().fg(Color::Red)));
    }
    if lines.is_empty() {
        lines.push(Line::styled("nothing congested", Style::new().fg(Color::Green)));
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::TOP).title("congestion")),
        congestion,
    );
    f.render_widget(Paragraph::new("q quit · w window (1m → 5m → 1h) · r refresh now"), keys);
}

fn congested(graph: &Graph) -> Vec<(&str, &super::model::Congestion)> {
    let nodes = graph.nodes.iter().flat_map(|n| n.congested.iter().map(move |c| (n.id.as_str(), c)));
    let edges = graph
        .edges
        .iter()
        .filter(|e| e.kind == "sync")
        .flat_map(|e| e.congested.iter().map(move |c| (e.target.as_str(), c)));
    nodes.chain(edges).collect()
}

/// The same screen as text, for `--once` (a pipe, a script, a log).
pub(crate) fn text(graph: &Graph, source: &str) -> String {
    let mut out = summary(graph, source, "");
    out.push('\n');
    for (title, header, rows) in
        [("edges", EDGE_HEADER, edge_cells(graph)), ("subscriptions", SUB_HEADER, subscription_cells(graph))]
    {
        let _ = writeln!(out, "\n{title}");
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for (cells, _) in &rows {
            for (w, c) in widths.iter_mut().zip(cells) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            padded.join("  ").trim_end().to_owned()
        };
        let _ = writeln!(out, "{}", line(&header.map(str::to_owned)));
        for (cells, hot) in &rows {
            let _ = writeln!(out, "{}{}", line(cells), if *hot { "  ⚠" } else { "" });
        }
    }
    let _ = writeln!(out, "\ncongestion");
    let found = congested(graph);
    if found.is_empty() {
        let _ = writeln!(out, "nothing congested");
    }
    for (id, c) in found {
        let _ = writeln!(out, "⚠ {id}: {} — {}", c.kind, c.detail);
    }
    out
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;

    fn graph() -> Graph {
        serde_json::from_value(serde_json::json!({
            "window": "1m",
            "nodes": [
                {"id": "service:order", "kind": "service", "name": "order", "rate_in": 1.0, "rate_out": 2.0},
                {"id": "subscription:emails/email", "kind": "subscription", "name": "emails/email", "rate_in": 3.0, "rate_out": 0.0,
                 "subscription": {"backlog": 250, "lag": 250, "in_flight": 0, "dead_lettered": 0, "consumers": 0},
                 "congested": [{"kind": "no_consumers", "detail": "backlog 0 → 250 in 25 s with no consumer attached"}]}
            ],
            "edges": [
                {"kind": "sync", "source": "service:order", "target": "service:inventory", "rate": 12.5, "error_rate": 0.0,
                 "latency": {"p50_ms": 1.25, "p99_ms": 9.5}, "end_to_end": null}
            ],
            "dropped": {"nodes": 0, "edges": 0, "pending": 0, "unpaired": 3, "invalid_names": 0}
        }))
        .expect("a graph")
    }

    #[test]
    fn the_screen_shows_edges_subscriptions_and_what_is_congested() {
        let mut terminal = Terminal::new(TestBackend::new(140, 30)).expect("terminal");
        terminal.draw(|f| frame(f, &graph(), "http://broker", "")).expect("draw");
        let screen: String = terminal.backend().buffer().content().iter().map(|c| c.symbol()).collect();
        for expected in ["order", "inventory", "12.5", "9.5", "emails/email", "250", "no_consumers"] {
            assert!(screen.contains(expected), "{expected} on screen");
        }
    }

    #[test]
    fn the_text_form_has_a_line_per_edge_and_subscription() {
        let text = text(&graph(), "http://broker");
        assert!(text.contains("sync  order  inventory  12.5"), "{text}");
        assert!(text.contains("emails/email  250"), "{text}");
        assert!(text.contains("⚠ subscription:emails/email: no_consumers"), "{text}");
    }
}
