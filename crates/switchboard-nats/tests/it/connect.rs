use std::time::{Duration, Instant};

use switchboard_core::backend::{Backend, Publisher, Subscriber};
use switchboard_core::contract::{BusError, Capability, PublishOptions};
use switchboard_nats::NatsBackend;

use crate::*;

#[tokio::test]
async fn unreachable_server_fails_fast_with_the_endpoint() {
    let started = Instant::now();
    match NatsBackend::connect("nats://127.0.0.1:1").await {
        Err(e @ BusError::Unreachable { .. }) => {
            assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
            assert!(e.is_retryable());
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn invalid_urls_are_rejected() {
    for url in ["http://127.0.0.1:4222", "nats://bad host:4222", "127.0.0.1:4222", "nats://u:secret@h:99999"]
    {
        match NatsBackend::connect(url).await {
            Err(BusError::InvalidUrl { url: shown, .. }) => assert!(!shown.contains("secret"), "{shown}"),
            other => panic!("{url}: expected InvalidUrl, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn capabilities_and_name() {
    require_service!(Nats);
    let bus = bus().await;
    assert_eq!(bus.name(), "nats");
    let caps = bus.capabilities();
    let on: Vec<_> = caps.iter().map(Capability::name).collect();
    assert_eq!(
        on,
        [
            "queue",
            "stream",
            "replay_from_start",
            "queue_replay",
            "nack_delay",
            "lease_extension",
            "dedup",
            "persistence",
            "stats"
        ]
    );
    bus.close().await.unwrap();
}

#[tokio::test]
async fn close_ends_subscriptions_and_refuses_calls() {
    require_service!(Nats);
    let bus = bus().await;
    let t = topic("close");
    let mut sub = bus.subscribe(&t, queue("s")).await.unwrap();
    bus.close().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.expect("ends");
    assert!(end.is_none());
    let err = bus.publish(&t, vec![msg("x")], &PublishOptions::default()).await.unwrap_err();
    assert!(matches!(err, BusError::Closed), "{err:?}");
    bus.close().await.unwrap();
    cleanup(&crate::bus().await, &[&t]).await;
}
