//! Topics and publishing: one durable fanout exchange per topic, with the topic's stream
//! bound to it, and persistent messages published under publisher confirms.
//!
//! `ensure_topic` declares the exchange `sb.t.<topic>` and the stream `sb.s.<topic>`
//! (x-queue-type=stream) bound to it, so the topic is a retained log from its creation on and
//! a new stream subscription can replay it from the start (RabbitMQ's default retention
//! applies: unbounded unless a policy sets `max-age` or `max-length-bytes`). Declared topics
//! are cached per process. A publish returns once RabbitMQ confirmed every message; a nack
//! from the broker, or a connection that dropped before the confirm, is a retryable error, and
//! so is a confirm that does not arrive within `RPC_TIMEOUT` (the publish channel is then
//! replaced; the messages may still have been stored, so a retry can duplicate them).

use std::time::SystemTime;

use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use switchboard_core::contract::{BusError, PublishOptions, Resource};
use switchboard_core::{Message, Timestamp, TopicName};

use crate::connect::{BACKEND, RPC_TIMEOUT, Shared, bounded, close_channel, is_timeout, timed_out};
use crate::{headers, naming};

/// Largest message accepted (RabbitMQ's default `max_message_size` is 128 MiB).
pub(crate) const MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;

/// Declares the topic's exchange and stream unless this process already did.
pub(crate) async fn ensure_topic(shared: &Shared, topic: &TopicName) -> Result<(), BusError> {
    shared.check_open()?;
    if shared.ensured.lock().contains(topic) {
        return Ok(());
    }
    let ch = shared.channel().await?;
    let declared = declare_topic(&ch, topic).await;
    close_channel(&ch).await;
    // What RabbitMQ refused or could not find is the topic's exchange or stream.
    declared.map_err(|e| match e {
        BusError::NotFound { .. } => BusError::topic_not_found(topic),
        BusError::Conflict { reason, .. } => {
            BusError::Conflict { resource: Resource::Topic(topic.clone()), reason }
        }
        other => other,
    })?;
    shared.ensured.lock().insert(topic.clone());
    Ok(())
}

async fn declare_topic(ch: &Channel, topic: &TopicName) -> Result<(), BusError> {
    let exchange = naming::exchange(topic);
    let stream = naming::stream(topic);
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    bounded(
        "declaring an exchange",
        ch.exchange_declare(exchange.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default()),
    )
    .await?;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("stream")));
    bounded(
        "declaring a stream",
        ch.queue_declare(stream.as_str().into(), QueueDeclareOptions::durable(), args),
    )
    .await?;
    bounded(
        "binding a stream",
        ch.queue_bind(
            stream.as_str().into(),
            exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

/// Publishes `messages` in order and waits for every confirm.
pub(crate) async fn publish(
    shared: &Shared,
    topic: &TopicName,
    messages: Vec<Message>,
    options: &PublishOptions,
) -> Result<(), BusError> {
    shared.check_open()?;
    if options.deliver_at.is_some() {
        return Err(BusError::Unsupported { backend: BACKEND, feature: "delayed_delivery" });
    }
    for m in &messages {
        m.validate(MAX_MESSAGE_BYTES)?;
    }
    if messages.is_empty() {
        return Ok(());
    }
    ensure_topic(shared, topic).await?;
    let result = send(shared, topic, &messages).await;
    if let Err(BusError::NotFound { .. }) = &result {
        // The exchange was deleted behind our back: declare it again next time.
        shared.ensured.lock().remove(topic);
        return Err(BusError::topic_not_found(topic));
    }
    result
}

async fn send(shared: &Shared, topic: &TopicName, messages: &[Message]) -> Result<(), BusError> {
    let ch = shared.publish_channel().await?;
    let sent = send_on(&ch, topic, messages).await;
    if let Err(e) = &sent
        && is_timeout(e)
    {
        shared.discard_publish_channel(&ch).await;
    }
    sent
}

async fn send_on(ch: &Channel, topic: &TopicName, messages: &[Message]) -> Result<(), BusError> {
    let exchange = naming::exchange(topic);
    let now = Timestamp::from_system_time(SystemTime::now());
    let mut confirms = Vec::with_capacity(messages.len());
    for m in messages {
        let props = headers::encode(m, now);
        let confirm = bounded(
            "publishing",
            ch.basic_publish(
                exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &m.data,
                props,
            ),
        )
        .await?;
        confirms.push(confirm);
    }
    // One deadline for all the confirms of the batch.
    let confirmed = tokio::time::timeout(RPC_TIMEOUT, async {
        let mut nacked = 0;
        for confirm in confirms {
            if confirm.await.map_err(crate::connect::lapin_error)?.is_nack() {
                nacked += 1;
            }
        }
        Ok::<_, BusError>(nacked)
    })
    .await;
    let nacked = match confirmed {
        Ok(counted) => counted?,
        Err(_) => return Err(timed_out("waiting for publisher confirms")),
    };
    if nacked > 0 {
        return Err(BusError::Backend {
            backend: BACKEND,
            message: format!("RabbitMQ refused {nacked} of {} messages (publisher nack)", messages.len()),
            retryable: true,
            source: None,
        });
    }
    Ok(())
}
