//! A private nats-server (own port and store, started and killed by this test) restarted
//! under a live subscription and publisher.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_core::backend::{Publisher, Subscriber};
use switchboard_core::contract::{BusError, PublishOptions};
use switchboard_nats::NatsBackend;

use crate::*;

struct Server {
    child: Child,
}

impl Server {
    fn start(binary: &std::path::Path, port: u16, dir: &std::path::Path) -> Server {
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        Server { child }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a private server runs: its binary, a free port and its own store, so that it can be
/// started again in the same place.
struct Place {
    binary: std::path::PathBuf,
    port: u16,
    dir: tempfile::TempDir,
}

impl Place {
    fn new(binary: &std::path::Path) -> Place {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Place { binary: binary.to_owned(), port, dir: tempfile::tempdir().unwrap() }
    }

    fn start(&self) -> Server {
        Server::start(&self.binary, self.port, self.dir.path())
    }

    async fn connect(&self) -> NatsBackend {
        connect_when_up(&format!("nats://127.0.0.1:{}", self.port)).await
    }
}

async fn connect_when_up(url: &str) -> NatsBackend {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match NatsBackend::connect(url).await {
            Ok(b) => return b,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("private server did not come up: {e}"),
        }
    }
}

#[tokio::test]
async fn a_subscription_survives_a_server_restart_and_publish_fails_retryably_meanwhile() {
    let place = Place::new(require_service!(NatsServer).path());
    let server = place.start();
    let bus = place.connect().await;
    let t = topic("restart");
    let mut sub = bus.subscribe(&t, queue("r")).await.unwrap();
    bus.publish(&t, vec![msg("before")], &PublishOptions::default()).await.unwrap();
    next(&mut sub, Duration::from_secs(5)).await.ack().await.unwrap();

    server.stop();
    let started = Instant::now();
    let err = bus.publish(&t, vec![msg("during")], &PublishOptions::default()).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(matches!(err, BusError::Backend { .. } | BusError::Unreachable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(12), "took {:?}", started.elapsed());

    let _server = place.start();
    let after = msg("after");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match bus.publish(&t, vec![after.clone()], &PublishOptions::default()).await {
            Ok(()) => break,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("publish after restart: {e}"),
        }
    }
    // "during" may or may not have been stored (its ack was lost); "after" must arrive.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = next(&mut sub, deadline.saturating_duration_since(Instant::now())).await;
        let id = d.message().id.clone();
        d.ack().await.unwrap();
        if id == after.id {
            break;
        }
    }
}

/// Publishes `m`, retrying while the server is coming back.
async fn publish_retrying(bus: &NatsBackend, t: &switchboard_core::TopicName, m: switchboard_core::Message) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match bus.publish(t, vec![m.clone()], &PublishOptions::default()).await {
            Ok(()) => return,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("publish after restart: {e}"),
        }
    }
}

#[tokio::test]
async fn a_stream_subscription_reads_on_in_order_across_a_server_restart() {
    let place = Place::new(require_service!(NatsServer).path());
    let server = place.start();
    let bus = place.connect().await;
    let t = topic("srestart");
    let spec = switchboard_core::contract::SubscriptionSpec::stream(name("log"));
    let mut sub = bus.subscribe(&t, spec.clone()).await.unwrap();
    bus.publish(&t, (1..=10).map(msg).collect(), &PublishOptions::default()).await.unwrap();
    let mut held = None;
    for offset in 1..=6u64 {
        let d = next(&mut sub, Duration::from_secs(5)).await;
        assert_eq!(d.info().offset, offset);
        if offset < 6 { d.ack().await.unwrap() } else { held = Some(d) }
    }
    // Let the commit of 1..5 be written, then crash the server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _server = place.start();
    for i in 11..=15 {
        publish_retrying(&bus, &t, msg(i)).await;
    }
    // The live reader goes on after 6 (its own position), without gaps or repeats.
    for offset in 7..=15u64 {
        let d = next(&mut sub, Duration::from_secs(20)).await;
        assert_eq!((d.info().offset, d.info().attempt), (offset, 1), "after the restart");
        d.ack().await.unwrap();
    }
    nothing_for(&mut sub, Duration::from_millis(300)).await;
    sub.close().await.unwrap();
    drop(held);
    // 6 was never acked: a new reader (new connection) resumes there, in order.
    let other = place.connect().await;
    let mut sub = other.subscribe(&t, spec.clone()).await.unwrap();
    for offset in 6..=15u64 {
        let d = next(&mut sub, Duration::from_secs(5)).await;
        assert_eq!(d.info().offset, offset, "reopened after the restart");
        d.ack().await.unwrap();
    }
    sub.close().await.unwrap();
    let mut sub = other.subscribe(&t, spec).await.unwrap();
    nothing_for(&mut sub, Duration::from_millis(300)).await;
}
