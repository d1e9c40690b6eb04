//! Connecting: bad URLs, unreachable servers, tokens and TLS.

use std::time::{Duration, Instant};

use switchboard_core::Message;
use switchboard_core::backend::{Backend, Publisher, Subscriber};
use switchboard_core::contract::{BusError, PublishOptions, SubscriptionSpec};
use switchboard_remote::RemoteBackend;

use switchboard_testkit::{ADMIN_TOKEN, ORDERS_TOKEN, TestServer, WAIT, next, sub, topic};

#[tokio::test]
async fn invalid_urls_are_refused_without_showing_the_token() {
    for url in ["http://127.0.0.1:1", "switchboard://", "switchboard://h:1?tokn=x", "switchboard://h:70000"] {
        match RemoteBackend::connect(url).await {
            Err(BusError::InvalidUrl { .. }) => {}
            other => panic!("{url}: expected InvalidUrl, got {other:?}"),
        }
    }
    let e = RemoteBackend::connect("switchboard://h:1/x?token=hunter2").await.unwrap_err();
    assert!(matches!(e, BusError::InvalidUrl { .. }));
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = RemoteBackend::connect("switchboards://h:1?ca=/nonexistent/ca.pem").await.unwrap_err();
    assert!(e.to_string().contains("CA file"), "{e}");
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_naming_the_endpoint() {
    // Bound and closed again: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let e =
        RemoteBackend::connect(&format!("switchboard://127.0.0.1:{port}?token=hunter2")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    match &e {
        BusError::Unreachable { endpoint, .. } => assert_eq!(endpoint, &format!("127.0.0.1:{port}")),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(e.is_retryable());
    assert!(!e.to_string().contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_sent_and_checked() {
    let srv = TestServer::start_with_auth().await;
    let t = topic("orders");

    // No token, or a wrong one: a clear, permanent error on the first call.
    for url in [srv.url(), format!("{}?token=wrong-token", srv.url())] {
        let bus = RemoteBackend::connect(&url).await.unwrap();
        let e = bus
            .publish(&t, vec![Message::new("/s", "t", "x")], &PublishOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, BusError::Backend { retryable: false, .. }), "{e:?}");
        assert!(e.to_string().contains("token"), "{e}");
        assert!(!e.to_string().contains("wrong-token"), "{e}");
    }

    // The admin token creates the topic and subscription.
    let admin = RemoteBackend::connect(&format!("{}?token={ADMIN_TOKEN}", srv.url())).await.unwrap();
    admin.subscribe(&t, SubscriptionSpec::queue(sub("billing"))).await.unwrap().close().await.unwrap();

    // A publish-and-consume token works on existing topics without admin rights.
    let orders = RemoteBackend::connect(&format!("{}?token={ORDERS_TOKEN}", srv.url())).await.unwrap();
    orders.publish(&t, vec![Message::new("/s", "t", "x")], &PublishOptions::default()).await.unwrap();
    let mut s = orders.subscribe(&t, SubscriptionSpec::queue(sub("billing"))).await.unwrap();
    next(&mut s, WAIT).await.ack().await.unwrap();
    // ... but not elsewhere.
    let e = orders.subscribe(&topic("payments"), SubscriptionSpec::queue(sub("x"))).await.unwrap_err();
    assert!(e.to_string().contains("permission denied") || matches!(e, BusError::NotFound { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    let tls = switchboard_testkit::self_signed(certs.path());
    let ca = tls.cert.clone();
    let server = TestServer::start_with(|c| c.tls = Some(tls)).await;
    let port = server.grpc_addr().port();

    let url = format!("switchboards://localhost:{port}?ca={}", ca.display());
    let bus = RemoteBackend::connect(&url).await.unwrap();
    let t = topic("secure");
    let mut s = bus.subscribe(&t, SubscriptionSpec::queue(sub("q"))).await.unwrap();
    bus.publish(&t, vec![Message::new("/s", "t", "x")], &PublishOptions::default()).await.unwrap();
    next(&mut s, WAIT).await.ack().await.unwrap();
    s.close().await.unwrap();

    // Without the CA the certificate is not trusted; plaintext is not served at all.
    for url in [format!("switchboards://localhost:{port}"), format!("switchboard://localhost:{port}")] {
        let failed = match RemoteBackend::connect(&url).await {
            Err(_) => true,
            Ok(bus) => {
                bus.publish(&t, vec![Message::new("/s", "t", "x")], &PublishOptions::default()).await.is_err()
            }
        };
        assert!(failed, "{url} must not work");
    }
    bus.close().await.unwrap();
    drop(bus);
    server.shutdown().await.unwrap();
}
