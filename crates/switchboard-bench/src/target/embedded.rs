//! Switchboard in process: the broker library on this machine's disk, no network.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_trait::async_trait;
use bytes::Bytes;
use switchboard_broker::{Broker, QueueConsumer, StreamConsumer, SubscriptionConfig, TopicConfig};
use switchboard_core::{Message, SubscriptionName, TopicName};

use super::{Confirm, Consumer, Durability, Publisher, Received, Shape, Target};

/// The broker in this process, on a temporary directory, with every default (fsync
/// `always`: a publish returns once its group commit is on disk).
pub(crate) struct Embedded {
    broker: Broker,
    _dir: tempfile::TempDir,
}

impl Embedded {
    pub(crate) async fn open() -> Result<Box<dyn Target>> {
        // Under target/ (a real disk) rather than /tmp, which may be a tmpfs.
        let dir = tempfile::tempdir_in(std::env::current_dir()?).context("a data directory")?;
        let broker = Broker::open(dir.path()).await.context("opening the broker")?;
        Ok(Box::new(Embedded { broker, _dir: dir }))
    }
}

fn names(topic: &str, subscription: usize) -> Result<(TopicName, SubscriptionName)> {
    Ok((TopicName::new(topic)?, SubscriptionName::new(format!("sub-{subscription}"))?))
}

#[async_trait]
impl Target for Embedded {
    async fn stages(&self) -> Result<Option<Vec<switchboard_broker::StageSnapshot>>> {
        Ok(Some(self.broker.stage_latencies()))
    }

    fn name(&self) -> &str {
        "switchboard-embedded"
    }

    fn durability(&self) -> Durability {
        Durability::FsyncBeforeAck
    }

    fn setup(&self) -> String {
        "in process, 1 partition, fsync always (group commit), dedup window on (defaults)".into()
    }

    fn supports(&self, _: Shape) -> bool {
        true
    }

    async fn create(&self, topic: &str, shape: Shape) -> Result<()> {
        let t = TopicName::new(topic)?;
        self.broker.create_topic(&t, TopicConfig::default()).await?;
        if let Shape::Queue { subscriptions } = shape {
            for i in 0..subscriptions {
                let (_, s) = names(topic, i)?;
                let config =
                    SubscriptionConfig { max_in_flight_per_consumer: 10_000, ..SubscriptionConfig::queue() };
                self.broker.create_subscription(&t, &s, config).await?;
            }
        }
        Ok(())
    }

    async fn publisher(&self, topic: &str) -> Result<Box<dyn Publisher>> {
        Ok(Box::new(EmbeddedPublisher { broker: self.broker.clone(), topic: TopicName::new(topic)? }))
    }

    async fn consumer(&self, topic: &str, subscription: usize, prefetch: u32) -> Result<Box<dyn Consumer>> {
        let (t, s) = names(topic, subscription)?;
        let consumer = self.broker.queue_consumer(&t, &s)?;
        Ok(Box::new(EmbeddedQueue { consumer, prefetch: prefetch as usize }))
    }

    async fn reader(&self, topic: &str) -> Result<Box<dyn Consumer>> {
        let t = TopicName::new(topic)?;
        let s = SubscriptionName::new("replay")?;
        self.broker.create_subscription(&t, &s, SubscriptionConfig::stream()).await?;
        Ok(Box::new(EmbeddedStream { consumer: self.broker.stream_consumer(&t, &s)? }))
    }

    async fn delete(&self, topic: &str, _: Shape) -> Result<()> {
        Ok(self.broker.delete_topic(&TopicName::new(topic)?).await?)
    }
}

struct EmbeddedPublisher {
    broker: Broker,
    topic: TopicName,
}

#[async_trait]
impl Publisher for EmbeddedPublisher {
    async fn send(&mut self, payload: Bytes) -> Result<Confirm> {
        let (broker, topic) = (self.broker.clone(), self.topic.clone());
        Ok(Box::pin(async move {
            broker.publish(&topic, Message::new("/bench", "bench", payload)).await?;
            Ok(())
        }))
    }
}

struct EmbeddedQueue {
    consumer: QueueConsumer,
    prefetch: usize,
}

#[async_trait]
impl Consumer for EmbeddedQueue {
    async fn next(&mut self, wait: Duration) -> Result<Received> {
        let deliveries = self.consumer.receive(self.prefetch, wait).await?;
        let at = Instant::now();
        let receipts: Vec<_> = deliveries.iter().filter_map(|d| d.receipt).collect();
        if !receipts.is_empty() {
            for r in self.consumer.ack_many(&receipts).await? {
                r?;
            }
        }
        Ok(Received { at, payloads: deliveries.into_iter().map(|d| d.message.data).collect() })
    }
}

struct EmbeddedStream {
    consumer: StreamConsumer,
}

#[async_trait]
impl Consumer for EmbeddedStream {
    async fn next(&mut self, wait: Duration) -> Result<Received> {
        let deliveries = self.consumer.receive(1000, wait).await?;
        let at = Instant::now();
        let mut next: BTreeMap<u32, u64> = BTreeMap::new();
        for d in &deliveries {
            next.insert(d.partition, d.offset + 1);
        }
        for (partition, offset) in next {
            self.consumer.commit(partition, offset).await?;
        }
        Ok(Received { at, payloads: deliveries.into_iter().map(|d| d.message.data).collect() })
    }
}
