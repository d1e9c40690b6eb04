//! Operations: health, readiness, metrics, configuration rules, TLS, connection limits and
//! graceful shutdown.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use switchboard_broker::{Broker, SubscriptionConfig, TopicConfig};
use switchboard_core::{Message, SubscriptionName, TopicName};
use switchboard_server::{ConfigError, Server, ServerConfig, ServerError};

use switchboard_testkit::{ADMIN_TOKEN, ORDERS_ADMIN_TOKEN, TestServer, test_config};

fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_are_served() {
    let s = TestServer::start().await;
    let c = http_client();
    let health = c.get(format!("{}/healthz", s.http())).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = c.get(format!("{}/readyz", s.http())).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let broker = s.server().state().broker.clone();
    let t = TopicName::new("orders").unwrap();
    broker.create_topic(&t, TopicConfig::default()).await.unwrap();
    broker
        .create_subscription(&t, &SubscriptionName::new("email").unwrap(), SubscriptionConfig::queue())
        .await
        .unwrap();
    for i in 0..3 {
        broker.publish(&t, Message::new("/t", "t", format!("{i}"))).await.unwrap();
    }
    let resp = c.get(format!("{}/metrics", s.http())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(r#"switchboard_backlog_messages{topic="orders",subscription="email"} 3"#),
        "backlog gauge missing:\n{text}"
    );
    for name in
        ["switchboard_lag_messages", "switchboard_in_flight_messages", "switchboard_dead_lettered_messages"]
    {
        assert!(text.contains(name), "{name} missing");
    }
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");

    // Where the messages' time went: three publishes written and fsynced, one ack journaled,
    // and no consumer was waiting for any of them.
    let email = SubscriptionName::new("email").unwrap();
    let taken = broker.receive(&t, &email, 1, Duration::ZERO).await.unwrap();
    broker.ack(&t, &email, &[taken[0].receipt.unwrap()]).await.unwrap();
    let text = c.get(format!("{}/metrics", s.http())).send().await.unwrap().text().await.unwrap();
    for series in [
        r#"switchboard_stage_latency_seconds_count{stage="write"} 3"#,
        r#"switchboard_stage_latency_seconds_count{stage="fsync_wait"} 3"#,
        r#"switchboard_stage_latency_seconds_count{stage="ack_durable"} 1"#,
        r#"switchboard_stage_latency_seconds_bucket{stage="wake",le="+Inf"} 0"#,
        r#"switchboard_stage_latency_seconds_bucket{stage="write",le="+Inf"} 3"#,
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    assert!(text.trim_end().ends_with("# EOF"), "still one # EOF, at the end");
    assert_eq!(text.matches("# EOF").count(), 1);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_the_server_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.http_addr = "0.0.0.0:0".parse().unwrap();
    match Server::start(config).await {
        Err(ServerError::Config(ConfigError::Invalid(m))) => assert!(m.contains("loopback"), "{m}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a server without tokens listened on 0.0.0.0"),
    }
    let mut config = test_config(dir.path());
    config.tokens = vec![switchboard_server::TokenConfig {
        name: "short".into(),
        token: "abc".into(),
        permissions: vec![],
    }];
    assert!(matches!(Server::start(config).await, Err(ServerError::Config(ConfigError::Invalid(_)))));
}

#[test]
fn configuration_files_are_typed_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.toml");
    std::fs::write(
        &path,
        r#"
data_dir = "/var/lib/switchboard"
http_addr = "127.0.0.1:9000"

[limits]
max_batch_messages = 50

[topic_defaults]
partitions = 4
fsync = { interval = { ms = 10 } }

[[tokens]]
name = "ci"
token = "0123456789abcdef0123"
permissions = [{ topics = "orders*", actions = ["publish", "consume"] }]
"#,
    )
    .unwrap();
    let c = ServerConfig::from_file(&path).unwrap();
    assert_eq!(c.http_addr.port(), 9000);
    assert_eq!(c.limits.max_batch_messages, 50);
    assert_eq!(c.limits.max_wait_ms, 20_000, "unset values keep their defaults");
    assert_eq!(c.topic_defaults.partitions, 4);
    assert_eq!(c.tokens.len(), 1);
    c.validate().unwrap();
    assert!(!format!("{c:?}").contains("0123456789abcdef0123"), "tokens never appear in Debug output");

    std::fs::write(&path, "http_adr = \"127.0.0.1:1\"\n").unwrap();
    match ServerConfig::from_file(&path) {
        Err(ConfigError::Parse { message, .. }) => assert!(message.contains("http_adr"), "{message}"),
        other => panic!("a misspelt key must be refused: {other:?}"),
    }
    assert!(matches!(
        ServerConfig::from_file(&dir.path().join("missing.toml")),
        Err(ConfigError::Read { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_covers_both_listeners() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let certs = tempfile::tempdir().unwrap();
    let tls = switchboard_testkit::self_signed(certs.path());
    let cert_pem = std::fs::read(&tls.cert).unwrap();
    let s = TestServer::start_with(|c| c.tls = Some(tls)).await;

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&cert_pem).unwrap())
        .build()
        .unwrap();
    let https = format!("https://{}/healthz", s.server().http_addr());
    assert_eq!(client.get(&https).send().await.unwrap().status(), 200);
    let plain = format!("http://{}/healthz", s.server().http_addr());
    assert!(http_client().get(&plain).send().await.is_err(), "plain HTTP is not served on a TLS listener");

    // The gRPC listener completes a TLS handshake and offers HTTP/2.
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &cert_pem[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config =
        tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(s.server().grpc_addr()).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.expect("TLS handshake with the gRPC listener");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(stream);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused() {
    let s = TestServer::start_with(|c| c.limits.max_connections = 1).await;
    let addr = s.server().http_addr();
    let get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let held = std::thread::spawn(move || {
        let mut first = std::net::TcpStream::connect(addr).unwrap();
        first.write_all(get.as_bytes()).unwrap();
        let mut buf = [0u8; 256];
        let n = first.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        first // kept open (keep-alive): it holds the only slot
    })
    .join()
    .unwrap();
    let mut second = std::net::TcpStream::connect(addr).unwrap();
    second.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = second.write_all(get.as_bytes());
    let mut buf = [0u8; 64];
    let n = second.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the second connection was closed without an answer");
    drop(held);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_listening_and_flushes_the_broker() {
    let s = TestServer::start().await;
    let broker = s.server().state().broker.clone();
    let t = TopicName::new("t").unwrap();
    let config = TopicConfig { fsync: switchboard_broker::FsyncPolicy::Never, ..TopicConfig::default() };
    broker.create_topic(&t, config).await.unwrap();
    broker.publish(&t, Message::new("/t", "t", "kept")).await.unwrap();
    let addr = s.server().http_addr();
    let (server, dir) = s.into_parts();
    server.shutdown().await.unwrap();
    assert!(std::net::TcpStream::connect(addr).is_err(), "the listener is closed");
    let reopened = Broker::open(dir.path()).await.unwrap();
    let got = reopened.read(&t, 0, 0, 10).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].message.data[..], b"kept");
    reopened.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let s = TestServer::start().await;
    let mut config = test_config(s.dir());
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    match Server::start(config).await {
        Err(ServerError::Broker(switchboard_broker::BrokerError::DataDirInUse(d))) => {
            assert!(d.contains(&s.dir().display().to_string()))
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("two servers opened one data directory"),
    }
    assert!(Broker::open(s.dir()).await.is_err(), "nor may an embedded broker");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_subscription_needs_admin_on_its_dead_letter_topic_too() {
    let s = TestServer::start_with_auth().await;
    let c = http_client();
    let post = |path: &str, token: &str, body: serde_json::Value| {
        c.post(format!("{}{path}", s.http())).bearer_auth(token).json(&body).send()
    };
    assert_eq!(
        post("/v1/topics", ADMIN_TOKEN, serde_json::json!({"name": "orders"})).await.unwrap().status(),
        201
    );
    assert_eq!(
        post("/v1/topics", ADMIN_TOKEN, serde_json::json!({"name": "payments"})).await.unwrap().status(),
        201
    );
    // Dead letters into another team's topic: refused, and nothing is created.
    let foreign =
        serde_json::json!({"name": "s", "config": {"max_deliveries": 1, "dead_letter_topic": "payments"}});
    let r = post("/v1/topics/orders/subscriptions", ORDERS_ADMIN_TOKEN, foreign).await.unwrap();
    assert_eq!(r.status(), 403);
    let info = s.server().state().broker.topic_info(&TopicName::new("payments").unwrap()).unwrap();
    assert!(info.subscriptions.is_empty(), "no redrive subscription was attached to payments");
    assert!(
        s.server()
            .state()
            .broker
            .topic_info(&TopicName::new("orders").unwrap())
            .unwrap()
            .subscriptions
            .is_empty()
    );
    // The default dead-letter topic, orders.s.dlq, is the caller's own: allowed.
    let own = serde_json::json!({"name": "s", "config": {"max_deliveries": 1}});
    assert_eq!(post("/v1/topics/orders/subscriptions", ORDERS_ADMIN_TOKEN, own).await.unwrap().status(), 201);
    s.shutdown().await.unwrap();
}
