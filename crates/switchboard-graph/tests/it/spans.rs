use switchboard_graph::{EdgeKind, Kind, ServiceGraph, SpanRecord, Window};

pub(crate) const NOW: u64 = 1_800_000_000;

pub(crate) fn span(trace: u8, id: u8, parent: Option<u8>, kind: Kind, service: &str) -> SpanRecord {
    SpanRecord {
        trace_id: [trace; 16],
        span_id: [id; 8],
        parent_span_id: parent.map(|p| [p; 8]),
        kind,
        service: service.into(),
        start_ns: NOW * 1_000_000_000,
        end_ns: NOW * 1_000_000_000 + 2_000_000,
        error: false,
        destination: None,
        consumer_group: None,
        peer: None,
        error_type: None,
        links: Vec::new(),
    }
}

fn edges(g: &ServiceGraph) -> Vec<String> {
    g.view(Window::OneMinute, NOW).edges.into_iter().map(|e| e.id).collect()
}

#[test]
fn a_client_and_its_server_make_one_sync_edge_whichever_arrives_first() {
    for server_first in [false, true] {
        let mut g = ServiceGraph::default();
        let client = span(1, 1, None, Kind::Client, "order");
        let server = span(1, 2, Some(1), Kind::Server, "inventory");
        let (a, b) = if server_first { (server, client) } else { (client, server) };
        g.ingest([a], NOW);
        assert!(edges(&g).is_empty(), "half an edge is not drawn");
        g.ingest([b], NOW);
        assert_eq!(edges(&g), ["sync service:order -> service:inventory"]);
        let view = g.view(Window::OneMinute, NOW);
        let e = &view.edges[0];
        assert!(e.rate > 0.0);
        assert!((e.latency.unwrap().p50_ms / 2.0 - 1.0).abs() < 0.15, "{:?}", e.latency);
    }
}

#[test]
fn a_root_server_span_is_a_call_from_the_user_node() {
    let mut g = ServiceGraph::default();
    g.ingest([span(1, 1, None, Kind::Server, "order")], NOW);
    assert_eq!(edges(&g), ["sync service:user -> service:order"]);
}

#[test]
fn producer_and_consumer_spans_draw_the_hop_through_topic_and_subscription() {
    let mut g = ServiceGraph::default();
    let mut producer = span(1, 1, None, Kind::Producer, "order");
    producer.destination = Some("orders".into());
    let mut consumer = span(1, 2, Some(1), Kind::Consumer, "shipping");
    consumer.destination = Some("orders".into());
    consumer.consumer_group = Some("shipping".into());
    consumer.end_ns += 50_000_000;
    g.ingest([producer, consumer], NOW);
    assert_eq!(
        edges(&g),
        [
            "consume subscription:orders/shipping -> service:shipping",
            "deliver topic:orders -> subscription:orders/shipping",
            "publish service:order -> topic:orders",
        ]
    );
    let view = g.view(Window::OneMinute, NOW);
    let consume = view.edges.iter().find(|e| e.kind == EdgeKind::Consume).unwrap();
    let e2e = consume.end_to_end.expect("the producer pairs with its consumer");
    assert!((e2e.p50_ms / 52.0 - 1.0).abs() < 0.15, "{e2e:?}");
}

#[test]
fn a_consumer_pairs_with_its_producer_through_a_span_link_in_either_order() {
    for consumer_first in [false, true] {
        let mut g = ServiceGraph::default();
        let mut producer = span(7, 1, None, Kind::Producer, "order");
        producer.destination = Some("orders".into());
        // A batch consumer in its own trace, linking to the producer.
        let mut consumer = span(9, 5, None, Kind::Consumer, "email");
        consumer.destination = Some("orders".into());
        consumer.consumer_group = Some("email".into());
        consumer.links = vec![([7; 16], [1; 8])];
        let (a, b) = if consumer_first { (consumer, producer) } else { (producer, consumer) };
        g.ingest([a], NOW);
        g.ingest([b], NOW);
        let view = g.view(Window::OneMinute, NOW);
        let consume = view.edges.iter().find(|e| e.kind == EdgeKind::Consume).unwrap();
        assert!(consume.end_to_end.is_some(), "consumer first: {consumer_first}");
    }
}

#[test]
fn the_broker_alone_draws_async_edges_for_services_that_export_no_spans() {
    let mut g = ServiceGraph::default();
    g.observe_topology(
        &[switchboard_graph::TopicReading {
            topic: "orders".into(),
            subscriptions: vec![("email".into(), Default::default())],
        }],
        NOW,
    );
    g.observe_publish("order", "orders", 10, false, 0.003, NOW);
    g.observe_deliveries("orders", "email", 10, 2, NOW);
    g.observe_settled("orders", "email", "email", &[0.010; 9], 0, 1, NOW);
    let view = g.view(Window::OneMinute, NOW);
    let ids: Vec<_> = view.edges.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "consume subscription:orders/email -> service:email",
            "deliver topic:orders -> subscription:orders/email",
            "publish service:order -> topic:orders",
        ]
    );
    let consume = &view.edges[0];
    assert!((consume.error_rate - 0.1).abs() < 1e-9);
    assert!((consume.end_to_end.unwrap().p50_ms / 10.0 - 1.0).abs() < 0.15);
    assert!(view.edges[1].redelivery_rate > 0.0);
}

#[test]
fn a_failed_call_whose_server_never_answered_lands_on_the_server_it_reached_before() {
    let mut g = ServiceGraph::default();
    let mut client = span(1, 1, None, Kind::Client, "payment");
    client.peer = Some("provider.local".into());
    g.ingest([client, span(1, 2, Some(1), Kind::Server, "provider")], NOW);
    let mut refused = span(2, 1, None, Kind::Client, "payment");
    refused.peer = Some("provider.local".into());
    refused.error = true;
    refused.error_type = Some("circuit_open".into());
    g.ingest([refused], NOW);
    g.expire(NOW + 11);
    let view = g.view(Window::OneMinute, NOW + 11);
    assert_eq!(view.edges.len(), 1, "{:?}", view.edges);
    let e = &view.edges[0];
    assert_eq!(e.target, "service:provider");
    assert!((e.error_rate - 0.5).abs() < 1e-9);
    assert_eq!(e.congested[0].kind, switchboard_graph::CongestionKind::BreakerOpen);
}

#[test]
fn a_call_to_a_service_without_spans_ends_at_a_virtual_node() {
    let mut g = ServiceGraph::default();
    let mut client = span(1, 1, None, Kind::Client, "payment");
    client.peer = Some("api.stripe.example".into());
    g.ingest([client], NOW);
    g.expire(NOW + 10);
    let view = g.view(Window::OneMinute, NOW + 10);
    assert_eq!(view.edges[0].connection_type, "virtual_node");
    assert!(view.nodes.iter().any(|n| n.name == "api.stripe.example" && n.virtual_node));
}

#[test]
fn edges_leave_the_minute_window_and_stay_in_the_hour() {
    let mut g = ServiceGraph::default();
    g.ingest([span(1, 1, None, Kind::Server, "order")], NOW);
    assert!(g.view(Window::OneMinute, NOW + 120).edges.is_empty());
    assert_eq!(g.view(Window::OneHour, NOW + 120).edges.len(), 1);
}

#[test]
fn the_prometheus_metrics_use_tempos_names_and_labels() {
    let mut g = ServiceGraph::default();
    g.ingest([span(1, 1, None, Kind::Client, "order"), span(1, 2, Some(1), Kind::Server, "inventory")], NOW);
    let mut out = String::new();
    g.render_prometheus(&mut out);
    let labels = r#"client="service:order",server="service:inventory",connection_type="""#;
    assert!(out.contains(&format!("traces_service_graph_request_total{{{labels}}} 1")), "{out}");
    assert!(out.contains(&format!("traces_service_graph_request_failed_total{{{labels}}} 0")));
    assert!(out.contains(&format!(
        "traces_service_graph_request_server_seconds_bucket{{{labels},le=\"0.0025\"}} 1"
    )));
    assert!(out.contains(&format!("traces_service_graph_request_client_seconds_count{{{labels}}} 1")));
}

#[test]
fn the_history_of_an_edge_has_a_point_per_slot() {
    let mut g = ServiceGraph::default();
    for i in 0..6 {
        g.ingest([span(i, 1, None, Kind::Server, "order")], NOW + u64::from(i) * 10);
    }
    let h = g.history("sync service:user -> service:order", Window::OneMinute, NOW + 50).unwrap();
    assert_eq!(h.points.len(), 6);
    assert!(h.points.iter().all(|p| p.latency.is_some()));
    assert!(g.history("sync nobody -> nowhere", Window::OneMinute, NOW).is_none());
}
