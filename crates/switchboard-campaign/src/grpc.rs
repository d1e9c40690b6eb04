//! The server's gRPC API as the campaigns use it: a client, events, topics, subscriptions.
//!
//! Campaigns speak the raw protocol (not the SDK) because they must see exactly what the
//! server confirmed: which publish got a receipt, which ack got a `settled` outcome.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use switchboard_proto::io::cloudevents::v1::CloudEvent;
use switchboard_proto::io::cloudevents::v1::cloud_event::{
    CloudEventAttributeValue, Data, cloud_event_attribute_value::Attr,
};
use switchboard_proto::switchboard::v1 as api;
use switchboard_proto::switchboard::v1::switchboard_client::SwitchboardClient;
use tonic::transport::{Channel, Endpoint};

pub(crate) use api::consume_request::Request as In;
pub(crate) use api::consume_response::Response as Out;

/// The generated client.
pub(crate) type Client = SwitchboardClient<Channel>;

/// A client whose channel connects on first use and reconnects after the server went away,
/// so one client outlives server restarts.
pub(crate) fn client(addr: SocketAddr) -> anyhow::Result<Client> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .context("building the gRPC endpoint")?
        // A server that is down must fail a call fast, not after the OS's connect timeout.
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true);
    Ok(SwitchboardClient::new(endpoint.connect_lazy()).max_decoding_message_size(64 << 20))
}

/// A client on a connection of its own (a lazy channel per call site would share nothing
/// anyway; this names the intent: one TCP connection per simulated client).
pub(crate) async fn connected_client(addr: SocketAddr) -> anyhow::Result<Client> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .context("building the gRPC endpoint")?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(SwitchboardClient::new(channel).max_decoding_message_size(64 << 20))
}

/// A CloudEvent with a partition key (so every message of a key lands in one partition).
pub(crate) fn event(id: String, key: Option<&str>, data: Vec<u8>) -> CloudEvent {
    let mut attributes = HashMap::new();
    if let Some(key) = key {
        attributes.insert(
            "partitionkey".to_owned(),
            CloudEventAttributeValue { attr: Some(Attr::CeString(key.to_owned())) },
        );
    }
    CloudEvent {
        id,
        source: "/switchboard-campaign".to_owned(),
        spec_version: "1.0".to_owned(),
        r#type: "campaign.message".to_owned(),
        attributes,
        data: Some(Data::BinaryData(data.into())),
    }
}

/// A topic config with the server's defaults except what is named.
pub(crate) fn topic_config(partitions: u32) -> api::TopicConfig {
    api::TopicConfig { partitions: Some(partitions), ..Default::default() }
}

/// Creates a topic (idempotent with the same settings).
pub(crate) async fn create_topic(
    client: &mut Client,
    name: &str,
    config: api::TopicConfig,
) -> anyhow::Result<()> {
    client
        .create_topic(api::CreateTopicRequest { name: name.to_owned(), config: Some(config) })
        .await
        .with_context(|| format!("creating topic {name}"))?;
    Ok(())
}

/// A queue subscription's settings: from the earliest message, redelivered forever (no dead
/// letters, which a campaign would otherwise count as lost).
pub(crate) fn queue_config(lease_ms: u64, ordered_by_key: bool) -> api::SubscriptionConfig {
    api::SubscriptionConfig {
        mode: api::SubscriptionMode::Queue as i32,
        start: api::StartPosition::Earliest as i32,
        lease_ms: Some(lease_ms),
        max_deliveries: Some(0),
        ordered_by_key,
        ..Default::default()
    }
}

/// A stream subscription's settings, from the earliest message.
pub(crate) fn stream_config() -> api::SubscriptionConfig {
    api::SubscriptionConfig {
        mode: api::SubscriptionMode::Stream as i32,
        start: api::StartPosition::Earliest as i32,
        ..Default::default()
    }
}

/// Creates a subscription (idempotent with the same settings).
pub(crate) async fn create_subscription(
    client: &mut Client,
    topic: &str,
    name: &str,
    config: api::SubscriptionConfig,
) -> anyhow::Result<()> {
    client
        .create_subscription(api::CreateSubscriptionRequest {
            topic: topic.to_owned(),
            name: name.to_owned(),
            config: Some(config),
        })
        .await
        .with_context(|| format!("creating subscription {topic}/{name}"))?;
    Ok(())
}

/// `CODE: message` of a status, for reports.
pub(crate) fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
