//! A real server on a loopback port in a temporary data directory, and helpers to read
//! subscriptions with deadlines.

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_core::backend::Publisher;
use switchboard_core::contract::{Delivery, PublishOptions, Subscription};
use switchboard_core::{Message, SubscriptionName, TopicName};
use switchboard_remote::RemoteBackend;
use switchboard_server::{Server, ServerConfig};

/// Long enough for anything that should happen; tests normally finish far sooner.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) struct TestServer {
    pub(crate) server: Option<Server>,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) addr: SocketAddr,
    configure: fn(&mut ServerConfig),
}

fn config(dir: &std::path::Path, grpc: SocketAddr, configure: fn(&mut ServerConfig)) -> ServerConfig {
    let mut c = ServerConfig {
        data_dir: dir.to_owned(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        grpc_addr: grpc,
        ..ServerConfig::default()
    };
    configure(&mut c);
    c
}

impl TestServer {
    pub(crate) fn url(&self) -> String {
        format!("switchboard://{}", self.addr)
    }

    pub(crate) async fn connect(&self) -> RemoteBackend {
        RemoteBackend::connect(&self.url()).await.unwrap()
    }

    /// Shuts the server down (gracefully) and starts a new one on the same port and data
    /// directory.
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    pub(crate) async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            tokio::time::timeout(WAIT, s.shutdown()).await.expect("shutdown in time").unwrap();
        }
    }

    pub(crate) async fn start_again(&mut self) {
        let server = Server::start(config(self.dir.path(), self.addr, self.configure)).await.unwrap();
        self.server = Some(server);
    }
}

/// A server without auth.
pub(crate) async fn start() -> TestServer {
    start_with(|_| {}).await
}

/// A server whose settings `configure` adjusts.
pub(crate) async fn start_with(configure: fn(&mut ServerConfig)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), "127.0.0.1:0".parse().unwrap(), configure)).await.unwrap();
    let addr = server.grpc_addr();
    TestServer { server: Some(server), dir, addr, configure }
}

pub(crate) fn topic(name: &str) -> TopicName {
    TopicName::new(name).unwrap()
}

pub(crate) fn sub(name: &str) -> SubscriptionName {
    SubscriptionName::new(name).unwrap()
}

/// A message whose data is `n`, with id `m-<n>`.
pub(crate) fn msg(n: u32) -> Message {
    Message::new("/test", "test.event", n.to_string()).with_id(format!("m-{n}"))
}

/// The number a message of [`msg`] carries.
pub(crate) fn num(d: &Delivery) -> u32 {
    std::str::from_utf8(&d.message().data).unwrap().parse().unwrap()
}

pub(crate) async fn publish(bus: &RemoteBackend, t: &TopicName, ns: impl IntoIterator<Item = u32>) {
    let messages = ns.into_iter().map(msg).collect();
    bus.publish(t, messages, &PublishOptions::default()).await.unwrap();
}

/// The next delivery, within [`WAIT`].
pub(crate) async fn next(s: &mut Subscription) -> Delivery {
    tokio::time::timeout(WAIT, s.next()).await.expect("a delivery in time").expect("open").unwrap()
}

/// Asserts nothing is delivered for `d`.
pub(crate) async fn nothing_for(s: &mut Subscription, d: Duration) {
    if let Ok(got) = tokio::time::timeout(d, s.next()).await {
        panic!("expected no delivery, got {got:?}");
    }
}
