use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use switchboard::layers::InboxStore as _;
use switchboard::layers::{
    CircuitBreakerConfig, CircuitBreakerLayer, InboxLayer, KeyOrderLayer, MemoryInbox, TraceLayer,
};
use switchboard::router::{Handled, HandlerError, Incoming, Outgoing};
use switchboard::{DeliveryInfo, Message, TopicName};

use switchboard_testkit::topic;
use tower::{Layer, Service, ServiceExt};

fn incoming(message: Message) -> Incoming {
    let info = DeliveryInfo::new(TopicName::from_static("t"), switchboard_testkit::sub("s"), 0, 0);
    Incoming::new(message, info, "h").with_max_deliveries(Some(3))
}

#[tokio::test]
async fn key_ordered_concurrency_runs_keys_in_parallel_and_each_key_in_order() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let (r, p, s) = (running.clone(), peak.clone(), seen.clone());
    let handler = tower::service_fn(move |msg: Incoming| {
        let (r, p, s) = (r.clone(), p.clone(), s.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            // Later messages of a key finish faster: without ordering they would overtake.
            let seq: u32 = std::str::from_utf8(&msg.message.data).expect("utf8").parse().expect("number");
            tokio::time::sleep(Duration::from_millis(u64::from(20 - seq))).await;
            let key = msg.message.partition_key().expect("key").to_owned();
            s.lock().entry(key).or_default().push(seq);
            r.fetch_sub(1, Ordering::SeqCst);
            Handled::Ok(vec![])
        }
    });
    let mut svc = KeyOrderLayer::new(4).layer(handler);
    let mut calls = Vec::new();
    for seq in 0..10u32 {
        for key in ["a", "b", "c", "d"] {
            let m = Message::new("/t", "t", seq.to_string()).with_key(key);
            let fut = svc.ready().await.expect("ready").call(incoming(m));
            calls.push(tokio::spawn(fut));
        }
    }
    for c in calls {
        c.await.expect("join").expect("handled");
    }
    let seen = seen.lock();
    for key in ["a", "b", "c", "d"] {
        assert_eq!(seen[key], (0..10).collect::<Vec<_>>(), "key {key} in order");
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak > 1 && peak <= 4, "different keys ran in parallel within the limit: peak {peak}");
}

#[tokio::test]
async fn an_open_circuit_stops_calls_until_its_trial() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let handler = tower::service_fn(move |_: Incoming| {
        c.fetch_add(1, Ordering::SeqCst);
        async move { Handled::Err(HandlerError::transient("dependency down")) }
    });
    let layer = CircuitBreakerLayer::new(CircuitBreakerConfig {
        failure_threshold: 3,
        open_for: Duration::from_millis(100),
    });
    let breaker = layer.breaker();
    let mut svc = layer.layer(handler);
    for _ in 0..10 {
        let _ = svc.ready().await.expect("ready").call(incoming(Message::new("/t", "t", "x"))).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "calls stop once the circuit opens");
    assert!(breaker.is_open());
    let err = svc.ready().await.expect("ready").call(incoming(Message::new("/t", "t", "x"))).await;
    assert!(matches!(err, Err(HandlerError::CircuitOpen(_))), "{err:?}");
    tokio::time::sleep(Duration::from_millis(120)).await;
    let _ = svc.ready().await.expect("ready").call(incoming(Message::new("/t", "t", "x"))).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4, "one trial call after the open period");
}

#[tokio::test]
async fn the_inbox_runs_a_message_id_once() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let handler = tower::service_fn(move |_: Incoming| {
        c.fetch_add(1, Ordering::SeqCst);
        async move { Handled::Ok(vec![Outgoing::new(topic("out"), Message::new("/t", "t", "y"))]) }
    });
    let inbox = Arc::new(MemoryInbox::new(Duration::from_secs(60), 1000));
    let mut svc = InboxLayer::new(inbox).layer(handler);
    let m = Message::new("/t", "t", "x").with_id("order-7");
    let first = svc.ready().await.expect("ready").call(incoming(m.clone())).await.expect("first");
    let second = svc.ready().await.expect("ready").call(incoming(m)).await.expect("second");
    assert_eq!((first.len(), second.len()), (1, 0), "the duplicate publishes nothing");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler ran once");
    let failing = tower::service_fn(|_: Incoming| async { Handled::Err(HandlerError::transient("x")) });
    let mut svc = InboxLayer::new(Arc::new(MemoryInbox::new(Duration::from_secs(60), 10))).layer(failing);
    let m = Message::new("/t", "t", "x").with_id("retry-me");
    assert!(svc.ready().await.expect("ready").call(incoming(m.clone())).await.is_err());
    assert!(svc.ready().await.expect("ready").call(incoming(m)).await.is_err(), "a failure is not recorded");
}

#[tokio::test]
async fn the_consumer_span_continues_the_messages_trace_and_its_output_carries_it_on() {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let _ = provider.tracer("warm-up");
    opentelemetry::global::set_tracer_provider(provider.clone());

    let handler = tower::service_fn(|_: Incoming| async {
        Handled::Ok(vec![Outgoing::new(topic("out"), Message::new("/t", "t", "y"))])
    });
    let mut svc = TraceLayer::new().layer(handler);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let m = Message::new("/t", "t", "x")
        .with_extension("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"));
    let out = svc.ready().await.expect("ready").call(incoming(m)).await.expect("handled");
    let tp = &out[0].message.extensions["traceparent"];
    assert!(tp.starts_with(&format!("00-{trace_id}-")), "same trace: {tp}");
    assert!(!tp.contains("00f067aa0ba902b7"), "a new span (the consumer's), not the producer's: {tp}");

    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");
    let span = spans.iter().find(|s| s.name == "process t").expect("a `process t` span");
    assert_eq!(span.span_kind, opentelemetry::trace::SpanKind::Consumer);
    assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
    let attr =
        |k: &str| span.attributes.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.to_string());
    assert_eq!(attr("messaging.destination.name").as_deref(), Some("t"));
    assert_eq!(attr("messaging.operation.type").as_deref(), Some("process"));
    assert_eq!(attr("messaging.consumer.group.name").as_deref(), Some("s"));
}

async fn inbox_store_contract(store: Arc<dyn switchboard::layers::InboxStore>, handler: &str) {
    let id = format!("id-{}", switchboard::Message::new("/t", "t", "").id);
    assert!(!store.contains(handler, &id).await.expect("read"));
    store.insert(handler, &id).await.expect("insert");
    assert!(store.contains(handler, &id).await.expect("read"));
    assert!(!store.contains("another-handler", &id).await.expect("read"), "per handler");
    store.insert(handler, &id).await.expect("a second insert of one id is fine");
}

#[tokio::test]
async fn the_sqlite_inbox_remembers_ids_across_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("inbox.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("sqlite");
    let store =
        switchboard::layers::SqliteInbox::new(pool.clone(), Duration::from_secs(60)).await.expect("store");
    inbox_store_contract(Arc::new(store), "h").await;
    store_survives_reopen(&url).await;
}

async fn store_survives_reopen(url: &str) {
    let pool = sqlx::SqlitePool::connect(url).await.expect("sqlite");
    let store = switchboard::layers::SqliteInbox::new(pool, Duration::from_secs(60)).await.expect("store");
    store.insert("h", "kept").await.expect("insert");
    drop(store);
    let pool = sqlx::SqlitePool::connect(url).await.expect("reopen");
    let store = switchboard::layers::SqliteInbox::new(pool, Duration::from_secs(60)).await.expect("store");
    assert!(store.contains("h", "kept").await.expect("read"), "recorded ids survive a restart");
    let short = switchboard::layers::SqliteInbox::new(
        sqlx::SqlitePool::connect(url).await.expect("reopen"),
        Duration::from_millis(1),
    )
    .await
    .expect("store");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(!short.contains("h", "kept").await.expect("read"), "outside the window");
}

#[tokio::test]
async fn the_postgres_inbox_keeps_ids_per_handler() {
    switchboard_testkit::require_service!(Postgres);
    let url = switchboard_testkit::postgres_url();
    let pool = sqlx::PgPool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} (database test, trust auth): {e}"));
    let store = switchboard::layers::PostgresInbox::new(pool, Duration::from_secs(60)).await.expect("store");
    // A handler name per run keeps parallel runs apart.
    let handler = format!("h-{}", switchboard::Message::new("/t", "t", "").id);
    inbox_store_contract(Arc::new(store), &handler).await;
}
