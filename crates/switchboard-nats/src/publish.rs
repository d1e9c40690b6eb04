//! Topics as streams, and publishing with confirms.
//!
//! A topic is a JetStream stream with file storage, limits retention and one subject (see
//! [`crate::naming`]). It is created on first use and remembered, so publishing does not ask
//! the server each time; if the stream disappears (deleted by an operator) the next publish
//! notices, creates it again and retries once.
//!
//! A publish sends every message, then awaits each PubAck: the PubAck is the confirm, and it
//! comes once the stream has stored the message under JetStream's own durability policy
//! (the file store syncs to disk on its `sync_interval`, 2 minutes by default, not per
//! message; a replicated stream acks after a quorum has it). The message id travels as
//! `Nats-Msg-Id`, so a repeated id within the stream's duplicate window
//! ([`DEDUP_WINDOW`]) is stored once and acked as a duplicate: retrying a failed publish is
//! safe. Every wait is bounded by [`REQUEST_TIMEOUT`]; during an outage publish fails with a
//! retryable error instead of hanging.

use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::stream::{Config, StorageType};
use async_nats::jetstream::{ErrorCode, context::PublishAckFuture};
use switchboard_core::contract::BusError;
use switchboard_core::{Message, TopicName};

use crate::backend::Inner;
use crate::connect::REQUEST_TIMEOUT;
use crate::errors::{backend_msg, js_retryable, map};
use crate::{headers, naming};

/// How long JetStream remembers message ids for deduplication.
pub(crate) const DEDUP_WINDOW: Duration = Duration::from_secs(120);

/// Creates the stream of `topic` unless it is known to exist; an existing stream is left as
/// it is, whatever its settings.
pub(crate) async fn ensure_topic(inner: &Inner, topic: &TopicName) -> Result<(), BusError> {
    if inner.ensured.lock().contains(topic) {
        return Ok(());
    }
    let config = Config {
        name: naming::stream_name(topic),
        subjects: vec![naming::subject(topic)],
        description: Some(format!("switchboard topic {topic}")),
        storage: StorageType::File,
        duplicate_window: DEDUP_WINDOW,
        max_messages: -1,
        max_bytes: -1,
        max_messages_per_subject: -1,
        max_consumers: -1,
        num_replicas: 1,
        ..Default::default()
    };
    match inner.js.create_stream(config).await {
        Ok(_) => {}
        Err(e) => match e.kind() {
            CreateStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NAME_EXIST => {}
            CreateStreamErrorKind::JetStream(j) => {
                let retryable = js_retryable(&j);
                return Err(map(&format!("creating the stream of topic {topic}"), e, retryable));
            }
            CreateStreamErrorKind::TimedOut
            | CreateStreamErrorKind::JetStreamUnavailable
            | CreateStreamErrorKind::Response => {
                return Err(map(&format!("creating the stream of topic {topic}"), e, true));
            }
            _ => return Err(map(&format!("creating the stream of topic {topic}"), e, false)),
        },
    }
    inner.ensured.lock().insert(topic.clone());
    Ok(())
}

/// Validates, then publishes `messages` in order with `Nats-Msg-Id` = message id.
pub(crate) async fn publish(
    inner: &Inner,
    topic: &TopicName,
    messages: Vec<Message>,
) -> Result<(), BusError> {
    let max = inner.client.server_info().max_payload;
    for m in &messages {
        m.validate(max)?;
    }
    if messages.is_empty() {
        return Ok(());
    }
    let _gate = inner.publishing.read().await;
    let batch = messages.iter().map(|m| (headers::encode(m, &m.id), m.data.clone())).collect();
    publish_encoded(inner, topic, batch).await
}

/// Publishes already encoded messages (headers, data) in order, ensuring the topic first.
pub(crate) async fn publish_encoded(
    inner: &Inner,
    topic: &TopicName,
    batch: Vec<Encoded>,
) -> Result<(), BusError> {
    ensure_topic(inner, topic).await?;
    match send(inner, topic, &batch).await {
        Err(Retry::StreamMissing) => {
            // Deleted behind our back (or JetStream is restarting): recreate and send again;
            // ids make the repeat safe.
            inner.ensured.lock().remove(topic);
            ensure_topic(inner, topic).await?;
            match send(inner, topic, &batch).await {
                Ok(()) => Ok(()),
                Err(Retry::StreamMissing) => Err(backend_msg(
                    format!("no stream answered for topic {topic} (JetStream unavailable?)"),
                    true,
                )),
                Err(Retry::Failed(e)) => Err(e),
            }
        }
        Err(Retry::Failed(e)) => Err(e),
        Ok(()) => Ok(()),
    }
}

/// A message ready to send: its headers and data.
pub(crate) type Encoded = (async_nats::HeaderMap, bytes::Bytes);

/// Why [`send`] failed.
enum Retry {
    /// No stream took the subject.
    StreamMissing,
    /// Anything else, mapped.
    Failed(BusError),
}

/// Sends every message (pipelined), then awaits every PubAck.
async fn send(inner: &Inner, topic: &TopicName, batch: &[Encoded]) -> Result<(), Retry> {
    let subject = naming::subject(topic);
    let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(batch.len());
    for (h, data) in batch {
        let ack = inner
            .js
            .publish_with_headers(subject.clone(), h.clone(), data.clone())
            .await
            .map_err(classify)?;
        acks.push(ack);
    }
    for ack in acks {
        ack.await.map_err(classify)?;
    }
    Ok(())
}

/// Maps a publish error: a missing stream may be retried, everything at the connection
/// level is retryable, a JetStream refusal is not.
fn classify(e: async_nats::jetstream::context::PublishError) -> Retry {
    let retryable = match e.kind() {
        PublishErrorKind::StreamNotFound => return Retry::StreamMissing,
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => true,
        PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::MaxPayloadExceeded => false,
        _ => {
            let js =
                std::error::Error::source(&e).and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>());
            js.is_none_or(js_retryable)
        }
    };
    Retry::Failed(map("publish", e, retryable))
}

/// Flushes the client's outgoing buffer, bounded by [`REQUEST_TIMEOUT`].
pub(crate) async fn flush_client(inner: &Inner) -> Result<(), BusError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, inner.client.flush()).await {
        Ok(r) => r.map_err(|e| map("flush", e, true)),
        Err(_) => Err(backend_msg("flush timed out (disconnected?)", true)),
    }
}
