//! Queue subscriptions as durable pull consumers: creating or joining them; and, for both
//! modes, stats and deletion. Stream subscriptions are opened by [`crate::stream`].
//!
//! A queue subscription is one durable pull consumer per (topic, subscription) on the
//! topic's stream, named after the subscription ([`naming::consumer_name`]). Every member of
//! the subscription pulls from the same consumer, so members compete for messages. The
//! consumer's settings encode the subscription's: `AckPolicy::Explicit`, `AckWait` = lease,
//! `DeliverPolicy::All` for [`Start::Earliest`] and `New` for [`Start::Latest`] (only when
//! the consumer is created: an existing subscription resumes), unlimited `MaxDeliver` (the
//! backend counts deliveries itself, see [`crate::dead_letter`]), and a description naming
//! the mode and dead-letter settings. Joining with different lease, mode or dead-letter
//! settings is a [`BusError::Conflict`], and so is opening a queue subscription under the
//! name of a stream subscription of the topic (its cursor exists, see [`crate::cursor`]) or
//! the other way round.
//!
//! `max_ack_pending` is the consumer-wide cap on unsettled messages, shared by all members,
//! so it is set generously (at least [`MIN_MAX_ACK_PENDING`] and at least the prefetch);
//! each member's own prefetch is enforced client-side by [`crate::pull`].

use std::sync::Arc;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::ConsumerErrorKind;
use switchboard_core::contract::{BusError, Mode, Start, Subscription, SubscriptionSpec, SubscriptionStats};
use switchboard_core::{SubscriptionName, TopicName};

use crate::backend::Inner;
use crate::errors::{BACKEND, js_retryable, map};
use crate::naming;
use crate::pull::SubShared;

/// Lower bound of the consumer-wide unsettled cap.
const MIN_MAX_ACK_PENDING: i64 = 1024;

/// Opens `spec` on `topic`: a stream subscription through [`crate::stream`]; a queue
/// subscription by ensuring the topic (and its dead-letter topic), creating or joining the
/// consumer, and starting to pull.
pub(crate) async fn subscribe(
    inner: &Arc<Inner>,
    topic: &TopicName,
    spec: SubscriptionSpec,
) -> Result<Subscription, BusError> {
    spec.validate()?;
    if spec.ordered_by_key {
        return Err(BusError::Unsupported { backend: BACKEND, feature: "per_key_order" });
    }
    if spec.mode == Mode::Stream {
        return crate::stream::subscribe(inner, topic, spec).await;
    }
    if let Some(r) = crate::cursor::read(inner, &crate::cursor::subject(topic, &spec.name)).await?.record {
        return Err(BusError::subscription_conflict(
            topic,
            &spec.name,
            format!("it is a {} subscription, not a queue", r.mode),
        ));
    }
    let dead_letter_topic = spec.dead_letter_topic_for(topic)?;
    crate::publish::ensure_topic(inner, topic).await?;
    if let Some(dlq) = &dead_letter_topic {
        crate::publish::ensure_topic(inner, dlq).await?;
    }
    let wanted = consumer_config(&spec, dead_letter_topic.as_ref());
    let stream = inner
        .js
        .get_stream_no_info(naming::stream_name(topic))
        .await
        .map_err(|e| map(&format!("opening the stream of topic {topic}"), e, false))?;
    let durable = naming::consumer_name(&spec.name);
    let existing = match stream.consumer_info(&durable).await {
        Ok(info) => {
            check_same(&info.config, &wanted, topic, &spec.name)?;
            true
        }
        Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => false,
        Err(e) => return Err(info_error(e, topic, &spec.name)),
    };
    let consumer: PullConsumer = if existing {
        // Joined as it is (its consumer-wide max_ack_pending included).
        stream.get_consumer(&durable).await.map_err(|e| {
            crate::errors::map_boxed(&format!("joining subscription {} on topic {topic}", spec.name), e)
        })?
    } else {
        create(&stream, wanted, topic, &spec.name).await?
    };
    let shared = SubShared::new(inner.clone(), topic.clone(), &spec, dead_letter_topic);
    let source = crate::pull::start(shared, consumer, spec.prefetch);
    Ok(switchboard_core::backend::subscription(topic.clone(), spec, Box::new(source)))
}

/// Creates the consumer; a concurrent creation with the same settings is fine (the create
/// is idempotent), with other settings it is a conflict.
async fn create(
    stream: &async_nats::jetstream::stream::Stream<()>,
    config: pull::Config,
    topic: &TopicName,
    name: &SubscriptionName,
) -> Result<PullConsumer, BusError> {
    let e = match stream.create_consumer(config).await {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    Err(match e.kind() {
        ConsumerErrorKind::JetStream(j)
            if [ErrorCode::CONSUMER_NAME_EXIST, ErrorCode::CONSUMER_ALREADY_EXISTS]
                .contains(&j.error_code()) =>
        {
            BusError::subscription_conflict(topic, name, j.to_string())
        }
        ConsumerErrorKind::JetStream(j) => {
            let retryable = js_retryable(&j);
            map(&format!("creating subscription {name} on topic {topic}"), e, retryable)
        }
        _ => map(&format!("creating subscription {name} on topic {topic}"), e, true),
    })
}

/// The consumer configuration a spec asks for.
fn consumer_config(spec: &SubscriptionSpec, dead_letter_topic: Option<&TopicName>) -> pull::Config {
    let mode = match spec.mode {
        Mode::Queue => "queue",
        Mode::Stream => "stream",
    };
    let dl = match (spec.max_deliveries, dead_letter_topic) {
        (Some(max), Some(dlq)) => format!("dead letters to {dlq} after {max} deliveries"),
        _ => "no dead letters".to_owned(),
    };
    pull::Config {
        durable_name: Some(naming::consumer_name(&spec.name)),
        description: Some(format!("switchboard {mode} subscription {}; {dl}", spec.name)),
        deliver_policy: match spec.start {
            Start::Earliest => DeliverPolicy::All,
            Start::Latest => DeliverPolicy::New,
        },
        ack_policy: AckPolicy::Explicit,
        ack_wait: spec.lease,
        max_deliver: -1,
        max_ack_pending: i64::from(spec.prefetch).max(MIN_MAX_ACK_PENDING),
        ..Default::default()
    }
}

/// Refuses to join a consumer whose settings differ from the ones asked for.
fn check_same(
    have: &async_nats::jetstream::consumer::Config,
    want: &pull::Config,
    topic: &TopicName,
    name: &SubscriptionName,
) -> Result<(), BusError> {
    let mut diffs = Vec::new();
    if have.description != want.description {
        diffs.push(format!(
            "it is {:?}, not {:?}",
            have.description.as_deref().unwrap_or("not a switchboard subscription"),
            want.description.as_deref().unwrap_or_default()
        ));
    }
    if have.ack_wait != want.ack_wait {
        diffs.push(format!("its lease is {:?}, not {:?}", have.ack_wait, want.ack_wait));
    }
    if have.ack_policy != want.ack_policy || have.max_deliver != want.max_deliver {
        diffs.push("its ack policy or max deliveries differ".to_owned());
    }
    if have.deliver_subject.is_some() {
        diffs.push("it is a push consumer".to_owned());
    }
    if diffs.is_empty() {
        return Ok(());
    }
    Err(BusError::subscription_conflict(topic, name, diffs.join("; ")))
}

/// Maps a consumer-info failure.
fn info_error(
    e: async_nats::jetstream::context::ConsumerInfoError,
    topic: &TopicName,
    name: &SubscriptionName,
) -> BusError {
    match e.kind() {
        ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound => {
            BusError::subscription_not_found(topic, name)
        }
        ConsumerInfoErrorKind::JetStream(j) => {
            let retryable = js_retryable(&j);
            map(&format!("reading subscription {name} on topic {topic}"), e, retryable)
        }
        _ => map(&format!("reading subscription {name} on topic {topic}"), e, true),
    }
}

/// Queue subscriptions: backlog = undelivered + unsettled, in flight = unsettled
/// (`num_ack_pending`), lag = the stream's last sequence minus the consumer's ack floor
/// (distance from the oldest unfinished message to the newest). Dead letters are not counted
/// server-side. Stream subscriptions: see [`crate::stream::stats`].
pub(crate) async fn stats(
    inner: &Inner,
    topic: &TopicName,
    name: &SubscriptionName,
) -> Result<SubscriptionStats, BusError> {
    let not_found = || BusError::subscription_not_found(topic, name);
    let stream = inner.js.get_stream_no_info(naming::stream_name(topic)).await.map_err(|_| not_found())?;
    let info = match stream.consumer_info(naming::consumer_name(name)).await {
        Ok(info) => info,
        Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => {
            return crate::stream::stats(inner, topic, name).await?.ok_or_else(not_found);
        }
        Err(e) => return Err(info_error(e, topic, name)),
    };
    let last = match stream.get_info().await {
        Ok(s) => s.state.last_sequence,
        Err(e) => return Err(map(&format!("reading topic {topic}"), e, true)),
    };
    let in_flight = info.num_ack_pending as u64;
    Ok(SubscriptionStats::new(
        info.num_pending + in_flight,
        in_flight,
        last.saturating_sub(info.ack_floor.stream_sequence),
    ))
}

/// Deletes the subscription: its consumer (queue) or its cursor (stream); a missing
/// consumer, cursor or stream is fine.
pub(crate) async fn delete(
    inner: &Inner,
    topic: &TopicName,
    name: &SubscriptionName,
) -> Result<(), BusError> {
    crate::cursor::delete(inner, &crate::cursor::subject(topic, name)).await?;
    let Ok(stream) = inner.js.get_stream_no_info(naming::stream_name(topic)).await else {
        return Ok(());
    };
    match stream.delete_consumer(&naming::consumer_name(name)).await {
        Ok(_) => Ok(()),
        Err(e) => match e.kind() {
            ConsumerErrorKind::JetStream(j)
                if [ErrorCode::CONSUMER_NOT_FOUND, ErrorCode::STREAM_NOT_FOUND].contains(&j.error_code()) =>
            {
                Ok(())
            }
            ConsumerErrorKind::JetStream(j) => {
                let retryable = js_retryable(&j);
                Err(map(&format!("deleting subscription {name} on topic {topic}"), e, retryable))
            }
            _ => Err(map(&format!("deleting subscription {name} on topic {topic}"), e, true)),
        },
    }
}
