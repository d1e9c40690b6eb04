//! What these tests share beyond the testkit: a client of the test server, and messages that
//! carry numbers.

use switchboard_core::TopicName;
use switchboard_core::contract::Delivery;
use switchboard_remote::RemoteBackend;
use switchboard_testkit::{TestServer, body, msg};

/// A remote backend connected to `srv`.
pub(crate) async fn connect(srv: &TestServer) -> RemoteBackend {
    RemoteBackend::connect(&srv.url()).await.unwrap()
}

/// The number a message of [`publish`] carries.
pub(crate) fn num(d: &Delivery) -> u32 {
    body(d).parse().unwrap()
}

/// Publishes the testkit's [`msg`] of each number.
pub(crate) async fn publish(bus: &RemoteBackend, t: &TopicName, ns: impl IntoIterator<Item = u32>) {
    switchboard_testkit::publish(bus, t, ns.into_iter().map(msg)).await;
}
