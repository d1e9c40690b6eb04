//! NATS JetStream through async-nats: a file-storage stream per topic, durable pull
//! consumers with explicit acks, an ordered consumer for replay.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use async_nats::jetstream::{self, consumer::pull, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{Confirm, Consumer, Durability, Publisher, Received, Shape, Target, first_then_ready, within};

/// A NATS server with JetStream.
pub(crate) struct Nats {
    js: jetstream::Context,
}

impl Nats {
    pub(crate) async fn connect(url: &str) -> Result<Box<dyn Target>> {
        let client = within("connecting to NATS", async {
            async_nats::connect(url).await.map_err(|e| anyhow!("{url} is not reachable: {e}"))
        })
        .await?;
        Ok(Box::new(Nats { js: jetstream::new(client) }))
    }

    fn consumer_name(i: usize) -> String {
        format!("sub-{i}")
    }
}

#[async_trait]
impl Target for Nats {
    fn name(&self) -> &str {
        "nats-jetstream"
    }

    fn durability(&self) -> Durability {
        // JetStream acknowledges once the message is written to its file store; it fsyncs on a
        // timer (every 2 minutes by default), and NATS 2.9 has no per-message fsync setting.
        Durability::NoFsync
    }

    fn setup(&self) -> String {
        "file storage (the machine's nats-server 2.9, default sync interval), async publish acks, durable pull consumers with explicit ack, ordered consumer for replay".into()
    }

    fn supports(&self, _: Shape) -> bool {
        true
    }

    async fn create(&self, topic: &str, shape: Shape) -> Result<()> {
        let config = stream::Config {
            name: topic.to_owned(),
            subjects: vec![topic.to_owned()],
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let s = self.js.create_stream(config).await?;
        if let Shape::Queue { subscriptions } = shape {
            for i in 0..subscriptions {
                let config = pull::Config {
                    durable_name: Some(Self::consumer_name(i)),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    max_ack_pending: 100_000,
                    ..Default::default()
                };
                s.create_consumer(config).await?;
            }
        }
        Ok(())
    }

    async fn publisher(&self, topic: &str) -> Result<Box<dyn Publisher>> {
        Ok(Box::new(NatsPublisher { js: self.js.clone(), subject: topic.to_owned() }))
    }

    async fn consumer(&self, topic: &str, subscription: usize, prefetch: u32) -> Result<Box<dyn Consumer>> {
        let s = self.js.get_stream(topic).await?;
        let c: jetstream::consumer::PullConsumer =
            s.get_consumer(&Self::consumer_name(subscription)).await.map_err(|e| anyhow!("{e}"))?;
        let messages = c.stream().max_messages_per_batch(prefetch as usize).messages().await?;
        let messages = messages.map(|m| m.map_err(anyhow::Error::from)).boxed();
        Ok(Box::new(NatsConsumer { messages, prefetch: prefetch as usize, ack: true }))
    }

    async fn reader(&self, topic: &str) -> Result<Box<dyn Consumer>> {
        let s = self.js.get_stream(topic).await?;
        let config = pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        };
        let c = s.create_consumer(config).await?;
        let messages = c.messages().await?;
        let messages = messages.map(|m| m.map_err(anyhow::Error::from)).boxed();
        Ok(Box::new(NatsConsumer { messages, prefetch: 1000, ack: false }))
    }

    async fn delete(&self, topic: &str, _: Shape) -> Result<()> {
        self.js.delete_stream(topic).await?;
        Ok(())
    }
}

struct NatsPublisher {
    js: jetstream::Context,
    subject: String,
}

#[async_trait]
impl Publisher for NatsPublisher {
    async fn send(&mut self, payload: Bytes) -> Result<Confirm> {
        let ack = self.js.publish(self.subject.clone(), payload).await?;
        Ok(Box::pin(async move {
            ack.await?;
            Ok(())
        }))
    }
}

type Messages = futures::stream::BoxStream<'static, Result<jetstream::Message>>;

struct NatsConsumer {
    messages: Messages,
    prefetch: usize,
    ack: bool,
}

#[async_trait]
impl Consumer for NatsConsumer {
    async fn next(&mut self, wait: Duration) -> Result<Received> {
        let Some((at, messages)) =
            first_then_ready(&mut self.messages, wait, self.prefetch, "the JetStream consumer").await?
        else {
            return Ok(Received { at: Instant::now(), payloads: Vec::new() });
        };
        let mut payloads = Vec::with_capacity(messages.len());
        for m in messages {
            if self.ack {
                m.ack().await.map_err(|e| anyhow!("{e}"))?;
            }
            payloads.push(m.message.payload);
        }
        Ok(Received { at, payloads })
    }
}
