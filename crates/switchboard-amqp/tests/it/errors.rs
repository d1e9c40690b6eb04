//! Connection errors: invalid URLs, unreachable brokers, closed backends.

use switchboard_core::backend::{Backend, Publisher, Subscriber};
use switchboard_core::contract::{BusError, PublishOptions, SubscriptionSpec};

use crate::*;

#[tokio::test]
async fn an_invalid_url_is_refused_without_credentials() {
    for url in ["http://guest:secret@127.0.0.1:5672/%2f", "not a url", "amqp://guest:secret@:5672"] {
        let e = AmqpBackend::connect(url).await.unwrap_err();
        assert!(matches!(e, BusError::InvalidUrl { .. }), "{url}: {e:?}");
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}

#[tokio::test]
async fn an_unreachable_broker_names_the_endpoint_only() {
    let e = AmqpBackend::connect("amqp://guest:secret@127.0.0.1:1/%2f").await.unwrap_err();
    match &e {
        BusError::Unreachable { backend, endpoint, .. } => {
            assert_eq!(*backend, "amqp");
            assert_eq!(endpoint, "127.0.0.1:1");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_retryable());
    assert!(!e.to_string().contains("secret"), "{e}");
}

#[tokio::test]
async fn a_closed_backend_refuses_calls() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("closed");
    bus.close().await.unwrap();
    let e = bus.publish(&t, vec![msg(1)], &PublishOptions::default()).await.unwrap_err();
    assert!(matches!(e, BusError::Closed), "{e:?}");
    let e = bus.subscribe(&t, SubscriptionSpec::queue(sub("w"))).await.unwrap_err();
    assert!(matches!(e, BusError::Closed), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_backend_ends_open_subscriptions() {
    require_service!(RabbitMq);
    let bus = bus().await;
    let t = unique_topic("closesubs");
    let mut s = bus.subscribe(&t, SubscriptionSpec::queue(sub("w"))).await.unwrap();
    let other = super::bus().await;
    bus.close().await.unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), s.next()).await.unwrap();
    assert!(ended.is_none());
    cleanup(&other, &[&t], &[(&t, "w")]).await;
}
