use switchboard_graph::{Kind, Limits, ServiceGraph, Window};

use crate::spans::{NOW, span};

#[test]
fn a_flood_of_service_names_stops_at_the_node_limit_and_is_counted() {
    let mut g = ServiceGraph::new(Limits { max_nodes: 50, ..Limits::default() });
    let spans = (0..10_000u32).map(|i| {
        let mut s = span(1, 1, None, Kind::Server, &format!("svc-{i}"));
        s.trace_id[..4].copy_from_slice(&i.to_be_bytes());
        s
    });
    let out = g.ingest(spans, NOW);
    let (nodes, _) = g.size();
    assert_eq!(nodes, 50);
    assert!(out.rejected > 9_900);
    assert!(out.reason.unwrap().contains("too many services"));
    assert_eq!(g.dropped().nodes, out.rejected);
    // What was there before the flood is still served.
    assert!(!g.view(Window::OneMinute, NOW).edges.is_empty());
}

#[test]
fn invalid_service_names_are_refused() {
    let mut g = ServiceGraph::default();
    let out = g.ingest(
        [
            span(1, 1, None, Kind::Server, ""),
            span(1, 2, None, Kind::Server, &"x".repeat(500)),
            span(1, 3, None, Kind::Server, "bad\nname"),
        ],
        NOW,
    );
    assert_eq!(out.rejected, 3);
    assert_eq!(g.dropped().invalid_names, 3);
    assert_eq!(g.size(), (0, 0));
}

#[test]
fn spans_waiting_for_a_partner_are_bounded() {
    let mut g = ServiceGraph::new(Limits { max_pending: 100, ..Limits::default() });
    let clients = (0..1_000u32).map(|i| {
        let mut s = span(1, 1, None, Kind::Client, "order");
        s.span_id[..4].copy_from_slice(&i.to_be_bytes());
        s
    });
    g.ingest(clients, NOW);
    assert_eq!(g.pending(), 100);
    assert_eq!(g.dropped().pending, 900);
    g.expire(NOW + 11);
    assert_eq!(g.pending(), 0);
    assert_eq!(g.dropped().unpaired, 100);
}

#[test]
fn the_edge_limit_holds() {
    let mut g = ServiceGraph::new(Limits { max_edges: 10, ..Limits::default() });
    for i in 0..100u8 {
        g.observe_publish("order", &format!("topic-{i}"), 1, false, 0.001, NOW);
    }
    assert_eq!(g.size().1, 10);
    assert_eq!(g.dropped().edges, 90);
}
