//! `switchboard serve` in a process of its own, over gRPC on loopback.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use async_trait::async_trait;
use bytes::Bytes;
use switchboard_proto::io::cloudevents::v1 as ce;
use switchboard_proto::switchboard::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::{Confirm, Consumer, Durability, Publisher, Received, Shape, Target, within};

type Client = pb::switchboard_client::SwitchboardClient<Channel>;

/// A running `switchboard serve` (started the way the reliability campaign starts it), killed
/// when dropped, with its data directory.
pub(crate) struct ServeProcess {
    _server: switchboard_campaign::ServerProcess,
    pub(crate) grpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
    pid: u32,
    _dir: tempfile::TempDir,
}

impl ServeProcess {
    /// Starts `bin serve` on a fresh data directory and waits until it serves.
    pub(crate) async fn start(bin: &Path) -> Result<ServeProcess> {
        if !bin.exists() {
            bail!("{} not found (build it first: cargo build --release --bin switchboard)", bin.display());
        }
        // Under the working directory (a real disk) rather than /tmp, which may be a tmpfs.
        let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
        let spec = switchboard_campaign::ServerSpec::new(
            bin.to_owned(),
            dir.path().join("data"),
            dir.path().join("server.log"),
        )?;
        let server = spec.start().await?;
        let pid = server.pid();
        Ok(ServeProcess { _server: server, grpc: spec.grpc, http: spec.http, pid, _dir: dir })
    }
}

/// Topics on a running server, created with one fsync policy.
pub(crate) struct Serve {
    name: String,
    client: Client,
    fsync: bool,
    http: std::net::SocketAddr,
    pid: u32,
}

impl Serve {
    pub(crate) async fn connect(name: &str, process: &ServeProcess, fsync: bool) -> Result<Box<dyn Target>> {
        let channel = within("connecting over gRPC", async {
            Ok(Channel::from_shared(format!("http://{}", process.grpc))?.connect().await?)
        })
        .await?;
        let client = Client::new(channel).max_decoding_message_size(64 << 20);
        Ok(Box::new(Serve { name: name.to_owned(), client, fsync, http: process.http, pid: process.pid }))
    }

    fn sub(i: usize) -> String {
        format!("sub-{i}")
    }
}

fn event(payload: Bytes) -> ce::CloudEvent {
    ce::CloudEvent {
        id: switchboard_core::new_message_id(),
        source: "/bench".into(),
        spec_version: "1.0".into(),
        r#type: "bench".into(),
        attributes: Default::default(),
        data: Some(ce::cloud_event::Data::BinaryData(payload)),
    }
}

#[async_trait]
impl Target for Serve {
    fn name(&self) -> &str {
        &self.name
    }

    fn durability(&self) -> Durability {
        if self.fsync { Durability::FsyncBeforeAck } else { Durability::NoFsync }
    }

    fn setup(&self) -> String {
        let fsync = if self.fsync { "fsync always (the default)" } else { "fsync never" };
        format!(
            "separate process; gRPC Publish with one call in flight per publisher carrying the messages queued meanwhile (each confirmed on its own); Consume stream with credits, acks by receipt; 1 partition, {fsync}"
        )
    }

    fn supports(&self, _: Shape) -> bool {
        true
    }

    async fn create(&self, topic: &str, shape: Shape) -> Result<()> {
        let mut c = self.client.clone();
        let fsync = if self.fsync { pb::FsyncPolicy::Always } else { pb::FsyncPolicy::Never };
        let config = pb::TopicConfig { fsync: fsync as i32, ..Default::default() };
        c.create_topic(pb::CreateTopicRequest { name: topic.into(), config: Some(config) }).await?;
        if let Shape::Queue { subscriptions } = shape {
            for i in 0..subscriptions {
                let config = pb::SubscriptionConfig {
                    mode: pb::SubscriptionMode::Queue as i32,
                    start: pb::StartPosition::Earliest as i32,
                    max_in_flight_per_consumer: Some(10_000),
                    ..Default::default()
                };
                let request = pb::CreateSubscriptionRequest {
                    topic: topic.into(),
                    name: Self::sub(i),
                    config: Some(config),
                };
                c.create_subscription(request).await?;
            }
        }
        Ok(())
    }

    async fn publisher(&self, topic: &str) -> Result<Box<dyn Publisher>> {
        Ok(Box::new(ServePublisher::start(self.client.clone(), topic.to_owned())))
    }

    async fn consumer(&self, topic: &str, subscription: usize, prefetch: u32) -> Result<Box<dyn Consumer>> {
        ServeConsumer::open(&self.client, topic, &Self::sub(subscription), prefetch, false).await
    }

    async fn reader(&self, topic: &str) -> Result<Box<dyn Consumer>> {
        let mut c = self.client.clone();
        let config = pb::SubscriptionConfig {
            mode: pb::SubscriptionMode::Stream as i32,
            start: pb::StartPosition::Earliest as i32,
            ..Default::default()
        };
        c.create_subscription(pb::CreateSubscriptionRequest {
            topic: topic.into(),
            name: "replay".into(),
            config: Some(config),
        })
        .await?;
        ServeConsumer::open(&self.client, topic, "replay", 1000, true).await
    }

    async fn delete(&self, topic: &str, _: Shape) -> Result<()> {
        self.client.clone().delete_topic(pb::DeleteTopicRequest { name: topic.into() }).await?;
        Ok(())
    }

    async fn stages(&self) -> Result<Option<Vec<switchboard_broker::StageSnapshot>>> {
        Ok(Some(crate::stages::scrape(self.http).await?))
    }

    fn server_pid(&self) -> Option<u32> {
        Some(self.pid)
    }
}

/// Most messages one `Publish` call carries (the server's default batch limit is 1,000).
const MAX_BATCH: usize = 500;

/// Publishes the way a Switchboard client should: one `Publish` call in flight per
/// publisher, carrying every message queued while the previous call was out. Each message
/// still gets its own confirmation, and order is kept.
struct ServePublisher {
    queue: mpsc::UnboundedSender<(Bytes, oneshot::Sender<Result<(), String>>)>,
}

impl ServePublisher {
    fn start(client: Client, topic: String) -> ServePublisher {
        let (queue, mut rx) = mpsc::unbounded_channel::<(Bytes, oneshot::Sender<Result<(), String>>)>();
        tokio::spawn(async move {
            let mut client = client;
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (payloads, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let events = payloads.into_iter().map(event).collect();
                let request = pb::PublishRequest { topic: topic.clone(), events, deliver_at: None };
                let result = client.publish(request).await.map(|_| ()).map_err(|s| s.to_string());
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            }
        });
        ServePublisher { queue }
    }
}

#[async_trait]
impl Publisher for ServePublisher {
    async fn send(&mut self, payload: Bytes) -> Result<Confirm> {
        let (done, confirmed) = oneshot::channel();
        self.queue.send((payload, done)).map_err(|_| anyhow::anyhow!("the publisher task ended"))?;
        Ok(Box::pin(async move { confirmed.await?.map_err(|e| anyhow::anyhow!("publish failed: {e}")) }))
    }
}

/// One `Consume` stream: acks (queue) or commits (stream) what each answer delivered, and
/// gives the credits back.
struct ServeConsumer {
    requests: mpsc::Sender<pb::ConsumeRequest>,
    responses: tonic::Streaming<pb::ConsumeResponse>,
    stream_mode: bool,
    request_id: u64,
}

impl ServeConsumer {
    async fn open(
        client: &Client,
        topic: &str,
        subscription: &str,
        credits: u32,
        stream_mode: bool,
    ) -> Result<Box<dyn Consumer>> {
        use pb::consume_request::{Open, Request};
        let (requests, rx) = mpsc::channel(1024);
        let open = Open { topic: topic.into(), subscription: subscription.into(), credits };
        requests.send(pb::ConsumeRequest { request_id: 0, request: Some(Request::Open(open)) }).await?;
        let responses = client.clone().consume(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Box::new(ServeConsumer { requests, responses, stream_mode, request_id: 0 }))
    }

    async fn settle(&mut self, deliveries: &[pb::Delivery]) -> Result<()> {
        use pb::consume_request::{Ack, Commit, Credit, Request};
        self.request_id += 1;
        let settle = if self.stream_mode {
            let mut next = std::collections::BTreeMap::new();
            for d in deliveries {
                next.insert(d.partition, d.offset + 1);
            }
            let offsets = next
                .into_iter()
                .map(|(partition, offset)| pb::PartitionOffset { partition, offset })
                .collect();
            Request::Commit(Commit { offsets })
        } else {
            Request::Ack(Ack { receipts: deliveries.iter().map(|d| d.receipt.clone()).collect() })
        };
        self.requests.send(pb::ConsumeRequest { request_id: self.request_id, request: Some(settle) }).await?;
        let credit = Request::Credit(Credit { credits: deliveries.len() as u32 });
        self.requests.send(pb::ConsumeRequest { request_id: 0, request: Some(credit) }).await?;
        Ok(())
    }
}

#[async_trait]
impl Consumer for ServeConsumer {
    async fn next(&mut self, wait: Duration) -> Result<Received> {
        use pb::consume_response::Response;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.responses.next()).await {
                Err(_) => return Ok(Received { at: Instant::now(), payloads: Vec::new() }),
                Ok(None) => bail!("the consume stream ended"),
                Ok(Some(r)) => r?,
            };
            match next.response {
                Some(Response::Deliveries(d)) => {
                    let at = Instant::now();
                    self.settle(&d.deliveries).await?;
                    let payloads = d
                        .deliveries
                        .into_iter()
                        .filter_map(|d| match d.event.and_then(|e| e.data) {
                            Some(ce::cloud_event::Data::BinaryData(b)) => Some(b),
                            _ => None,
                        })
                        .collect();
                    return Ok(Received { at, payloads });
                }
                Some(Response::Settled(s)) => {
                    if let Some(e) = s.outcomes.iter().find_map(|o| o.error.as_ref()) {
                        bail!("the server refused a settle: {}", e.message);
                    }
                }
                _ => {}
            }
        }
    }
}
