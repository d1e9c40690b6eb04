//! Topics and publishing: one durable fanout exchange per topic, with the topic's stream
//! bound to it, and persistent messages published under publisher confirms.
//!
//! `ensure_topic` declares the exchange `sb.t.<topic>` and the stream `sb.s.<topic>`
//! (x-queue-type=stream) bound to it, so the topic is a retained log from its creation on and
//! a new stream subscription can replay it from the start (RabbitMQ's default retention
//! applies: unbounded unless a policy sets `max-age` or `max-length-bytes`). Declared topics
//! are cached per process. A publish returns once RabbitMQ confirmed every message; a nack
//! from the broker, or a connection that dropped before the confirm, is a retryable error.

#[allow(unused_imports)] use crate::wd::Wd;
use std::time::SystemTime;

use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use switchboard_core::contract::{BusError, PublishOptions};
use switchboard_core::{Message, Timestamp, TopicName};

use crate::connect::{BACKEND, Shared, lapin_error};
use crate::{headers, naming};

/// Largest message accepted (RabbitMQ's default `max_message_size` is 128 MiB).
pub(crate) const MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;

/// Declares the topic's exchange and stream unless this process already did.
pub(crate) async fn ensure_topic(shared: &Shared, topic: &TopicName) -> Result<(), BusError> {
    shared.check_open()?;
    if shared.ensured.lock().contains(topic) {
        return Ok(());
    }
    let ch = shared.channel().wd(concat!(file!(), ":", line!())).await?;
    let declared = declare_topic(&ch, topic).wd(concat!(file!(), ":", line!())).await;
    let _ = ch.close(200, "ok".into()).wd(concat!(file!(), ":", line!())).await;
    declared?;
    shared.ensured.lock().insert(topic.clone());
    Ok(())
}

async fn declare_topic(ch: &Channel, topic: &TopicName) -> Result<(), BusError> {
    let exchange = naming::exchange(topic);
    let stream = naming::stream(topic);
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    ch.exchange_declare(exchange.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default())
        .wd(concat!(file!(), ":", line!())).await
        .map_err(lapin_error)?;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("stream")));
    ch.queue_declare(stream.as_str().into(), QueueDeclareOptions::durable(), args)
        .wd(concat!(file!(), ":", line!())).await
        .map_err(lapin_error)?;
    ch.queue_bind(
        stream.as_str().into(),
        exchange.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .wd(concat!(file!(), ":", line!())).await
    .map_err(lapin_error)
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
    ensure_topic(shared, topic).wd(concat!(file!(), ":", line!())).await?;
    let result = send(shared, topic, &messages).wd(concat!(file!(), ":", line!())).await;
    if let Err(BusError::NotFound(_)) = &result {
        // The exchange was deleted behind our back: declare it again next time.
        shared.ensured.lock().remove(topic);
    }
    result
}

async fn send(shared: &Shared, topic: &TopicName, messages: &[Message]) -> Result<(), BusError> {
    let ch = shared.publish_channel().wd(concat!(file!(), ":", line!())).await?;
    let exchange = naming::exchange(topic);
    let now = Timestamp::from_system_time(SystemTime::now());
    let mut confirms = Vec::with_capacity(messages.len());
    for m in messages {
        let props = headers::encode(m, now);
        let confirm = ch
            .basic_publish(
                exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &m.data,
                props,
            )
            .wd(concat!(file!(), ":", line!())).await
            .map_err(lapin_error)?;
        confirms.push(confirm);
    }
    let mut nacked = 0;
    for confirm in confirms {
        if confirm.wd(concat!(file!(), ":", line!())).await.map_err(lapin_error)?.is_nack() {
            nacked += 1;
        }
    }
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
