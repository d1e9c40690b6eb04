//! RabbitMQ through lapin: durable classic and quorum queues with persistent messages and
//! publisher confirms, and a stream for the replay scenario.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use async_trait::async_trait;
use bytes::Bytes;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};

use super::{Confirm, Consumer, Durability, Publisher, Received, Shape, Target, first_then_ready, within};

/// Which RabbitMQ queue type a target uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A durable classic queue.
    Classic,
    /// A quorum queue (Raft; the replicated, durable default RabbitMQ recommends).
    Quorum,
    /// A stream (an append-only log), for the replay scenario only.
    Stream,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Classic => "rabbitmq-classic",
            Kind::Quorum => "rabbitmq-quorum",
            Kind::Stream => "rabbitmq-stream",
        }
    }

    fn queue_type(self) -> &'static str {
        match self {
            Kind::Classic => "classic",
            Kind::Quorum => "quorum",
            Kind::Stream => "stream",
        }
    }
}

/// A RabbitMQ server and one connection to it (channels per publisher and consumer).
pub(crate) struct RabbitMq {
    kind: Kind,
    connection: Connection,
}

impl RabbitMq {
    pub(crate) async fn connect(uri: &str, kind: Kind) -> Result<Box<dyn Target>> {
        let props = ConnectionProperties::default().with_connection_name(kind.name().into());
        let connection = within("connecting to RabbitMQ", async {
            Connection::connect(uri, props).await.map_err(|e| anyhow::anyhow!("{uri} is not reachable: {e}"))
        })
        .await?;
        Ok(Box::new(RabbitMq { kind, connection }))
    }

    fn exchange(topic: &str) -> String {
        format!("bench.{topic}")
    }

    fn queue(topic: &str, subscription: usize) -> String {
        format!("bench.{topic}.sub-{subscription}")
    }

    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from(self.kind.queue_type())));
        args
    }
}

#[async_trait]
impl Target for RabbitMq {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn durability(&self) -> Durability {
        // Persistent messages on durable queues are confirmed once written and fsynced (classic
        // message store, quorum Raft log, stream segment).
        Durability::FsyncBeforeAck
    }

    fn setup(&self) -> String {
        match self.kind {
            Kind::Stream => {
                "a stream queue, publisher confirms, consumer from offset `first`, prefetch 1,000".into()
            }
            k => format!(
                "durable {} queues bound to a fanout exchange, persistent messages, publisher confirms, basic.qos prefetch, basic.ack per message",
                k.queue_type()
            ),
        }
    }

    fn supports(&self, shape: Shape) -> bool {
        matches!(
            (self.kind, shape),
            (Kind::Stream, Shape::Log) | (Kind::Classic | Kind::Quorum, Shape::Queue { .. })
        )
    }

    async fn create(&self, topic: &str, shape: Shape) -> Result<()> {
        let ch = self.connection.create_channel().await?;
        let exchange = Self::exchange(topic);
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(exchange.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default())
            .await?;
        let queues = match shape {
            Shape::Queue { subscriptions } => subscriptions,
            Shape::Log => 1,
        };
        for i in 0..queues {
            let q = Self::queue(topic, i);
            ch.queue_declare(q.as_str().into(), QueueDeclareOptions::durable(), self.queue_args()).await?;
            ch.queue_bind(
                q.as_str().into(),
                exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        ch.close(200, "done".into()).await?;
        Ok(())
    }

    async fn publisher(&self, topic: &str) -> Result<Box<dyn Publisher>> {
        let channel = self.connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Box::new(RabbitPublisher { channel, exchange: Self::exchange(topic) }))
    }

    async fn consumer(&self, topic: &str, subscription: usize, prefetch: u32) -> Result<Box<dyn Consumer>> {
        RabbitConsumer::open(
            &self.connection,
            &Self::queue(topic, subscription),
            prefetch,
            FieldTable::default(),
        )
        .await
    }

    async fn reader(&self, topic: &str) -> Result<Box<dyn Consumer>> {
        let mut args = FieldTable::default();
        args.insert("x-stream-offset".into(), AMQPValue::LongString(LongString::from("first")));
        RabbitConsumer::open(&self.connection, &Self::queue(topic, 0), 1000, args).await
    }

    async fn delete(&self, topic: &str, shape: Shape) -> Result<()> {
        let ch = self.connection.create_channel().await?;
        let queues = match shape {
            Shape::Queue { subscriptions } => subscriptions,
            Shape::Log => 1,
        };
        for i in 0..queues {
            ch.queue_delete(Self::queue(topic, i).as_str().into(), QueueDeleteOptions::default()).await?;
        }
        ch.exchange_delete(Self::exchange(topic).as_str().into(), ExchangeDeleteOptions::default()).await?;
        ch.close(200, "done".into()).await?;
        Ok(())
    }
}

struct RabbitPublisher {
    channel: Channel,
    exchange: String,
}

#[async_trait]
impl Publisher for RabbitPublisher {
    async fn send(&mut self, payload: Bytes) -> Result<Confirm> {
        let props = BasicProperties::default().with_delivery_mode(2);
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &payload,
                props,
            )
            .await?;
        Ok(Box::pin(async move {
            match confirm.await? {
                Confirmation::Ack(_) => Ok(()),
                Confirmation::Nack(_) => bail!("RabbitMQ nacked a publish"),
                Confirmation::NotRequested => bail!("publisher confirms are off"),
            }
        }))
    }
}

struct RabbitConsumer {
    _channel: Channel,
    consumer: lapin::Consumer,
    prefetch: usize,
}

impl RabbitConsumer {
    async fn open(
        connection: &Connection,
        queue: &str,
        prefetch: u32,
        args: FieldTable,
    ) -> Result<Box<dyn Consumer>> {
        let channel = connection.create_channel().await?;
        channel.basic_qos(prefetch.min(u32::from(u16::MAX)) as u16, BasicQosOptions::default()).await?;
        let tag = format!("bench-{}", switchboard_core::new_message_id());
        let consumer = channel
            .basic_consume(queue.into(), tag.as_str().into(), BasicConsumeOptions::default(), args)
            .await?;
        Ok(Box::new(RabbitConsumer { _channel: channel, consumer, prefetch: prefetch as usize }))
    }
}

#[async_trait]
impl Consumer for RabbitConsumer {
    async fn next(&mut self, wait: Duration) -> Result<Received> {
        let Some((at, deliveries)) =
            first_then_ready(&mut self.consumer, wait, self.prefetch, "the RabbitMQ consumer").await?
        else {
            return Ok(Received { at: Instant::now(), payloads: Vec::new() });
        };
        let mut payloads = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            d.acker.ack(BasicAckOptions::default()).await?;
            payloads.push(Bytes::from(d.data));
        }
        Ok(Received { at, payloads })
    }
}
