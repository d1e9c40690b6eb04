//! The mutation root: publish, and topic and subscription administration. Each mutation
//! checks the caller's permission and its input before it changes anything.

use std::time::Instant;

use async_graphql::{Context, Object};
use switchboard_broker::{BrokerError, PublishOptions};
use switchboard_core::Timestamp;

use super::access::{check, state};
use super::error::{GqlResult, bad_input, subscription_name, topic_name};
use super::inputs::{EventInput, SeekTarget, SubscriptionConfigInput, TopicConfigInput};
use super::types::{PublishReceipt, SubscriptionMode, Topic, TopicSubscription};
use crate::auth::Action;
use crate::metrics::Api;

/// Most dead letters one `redrive` moves.
const MAX_REDRIVE: usize = 10_000;

pub(super) struct MutationRoot;

/// Changes: publishing, creating and deleting topics and subscriptions, redrive and seek.
#[Object(name = "Mutation")]
impl MutationRoot {
    /// Creates a topic with `partitions` partitions and `config`; what is left out takes
    /// the server's topic defaults. Creating it again with the same settings returns it;
    /// with other settings fails with `CONFLICT`. Needs admin permission on the topic.
    async fn create_topic(
        &self,
        ctx: &Context<'_>,
        name: String,
        partitions: Option<u32>,
        config: Option<TopicConfigInput>,
    ) -> async_graphql::Result<Topic> {
        let name = topic_name(&name)?;
        check(ctx, Action::Admin, &name)?;
        let state = state(ctx)?;
        let config = config.unwrap_or_default().apply(partitions, &state.config.topic_defaults)?;
        Ok(Topic(state.broker.create_topic(&name, config).await.gql()?))
    }

    /// Deletes a topic with its subscriptions and messages (the dead-letter topics of its
    /// subscriptions stay). Needs admin permission on the topic.
    async fn delete_topic(&self, ctx: &Context<'_>, name: String) -> async_graphql::Result<bool> {
        let name = topic_name(&name)?;
        check(ctx, Action::Admin, &name)?;
        state(ctx)?.broker.delete_topic(&name).await.gql()?;
        Ok(true)
    }

    /// Creates a subscription on `topic`. A queue subscription with `maxDeliveries` also
    /// gets its dead-letter topic (created if missing). Creating it again with the same
    /// settings returns it; with other settings fails with `CONFLICT`. Needs admin
    /// permission on the topic and on the dead-letter topic.
    async fn create_subscription(
        &self,
        ctx: &Context<'_>,
        topic: String,
        name: String,
        #[graphql(default_with = "SubscriptionMode::Queue")] mode: SubscriptionMode,
        config: Option<SubscriptionConfigInput>,
    ) -> async_graphql::Result<TopicSubscription> {
        let topic = topic_name(&topic)?;
        let name = subscription_name(&name)?;
        check(ctx, Action::Admin, &topic)?;
        let config = config.unwrap_or_default().into_config(mode.into())?;
        // The broker creates and writes the dead-letter topic: the caller must administer it.
        if let Some(dlq) = config.dead_letter_topic_for(&topic, &name).gql()? {
            check(ctx, Action::Admin, &dlq)?;
        }
        let broker = &state(ctx)?.broker;
        broker.create_subscription(&topic, &name, config).await.gql()?;
        // Read back: the broker fills in the dead-letter topic's name.
        TopicSubscription::load(broker, topic, name)
    }

    /// Deletes a subscription and its state (its dead-letter topic stays). Needs admin
    /// permission on the topic.
    async fn delete_subscription(
        &self,
        ctx: &Context<'_>,
        topic: String,
        name: String,
    ) -> async_graphql::Result<bool> {
        let topic = topic_name(&topic)?;
        let name = subscription_name(&name)?;
        check(ctx, Action::Admin, &topic)?;
        state(ctx)?.broker.delete_subscription(&topic, &name).await.gql()?;
        Ok(true)
    }

    /// Publishes `events` to `topic` and returns once they are durable under the topic's
    /// fsync policy, with one receipt per event in order. Events for one partition are
    /// stored all or none. With `deliverAt` (RFC 3339), queue subscriptions hold the events
    /// back until then. Needs publish permission on the topic.
    async fn publish(
        &self,
        ctx: &Context<'_>,
        topic: String,
        events: Vec<EventInput>,
        deliver_at: Option<String>,
    ) -> async_graphql::Result<Vec<PublishReceipt>> {
        let started = Instant::now();
        let topic = topic_name(&topic)?;
        check(ctx, Action::Publish, &topic)?;
        let state = state(ctx)?;
        let limits = &state.config.limits;
        if events.len() > limits.max_batch_messages {
            return Err(BrokerError::BatchTooLarge { len: events.len(), max: limits.max_batch_messages })
                .gql();
        }
        let deliver_at = deliver_at
            .map(|t| {
                Timestamp::parse_rfc3339(&t)
                    .ok_or_else(|| bad_input(format!("deliverAt {t:?} is not an RFC 3339 time")))
            })
            .transpose()?;
        let messages = events.into_iter().map(EventInput::into_message).collect::<Result<Vec<_>, _>>()?;
        for m in &messages {
            m.validate(limits.max_message_bytes).map_err(BrokerError::from).gql()?;
        }
        let sizes: Vec<(String, u64)> =
            messages.iter().map(|m| (m.id.clone(), m.data.len() as u64)).collect();
        let receipts =
            state.broker.publish_batch(&topic, messages, PublishOptions { deliver_at }).await.gql()?;
        let stored = receipts.iter().zip(&sizes).filter(|(r, _)| !r.duplicate);
        let (count, bytes) = stored.fold((0, 0), |(n, b), (_, (_, size))| (n + 1, b + size));
        state.metrics.published(Api::Graphql, topic.as_str(), count, bytes, started.elapsed());
        Ok(receipts
            .into_iter()
            .zip(sizes)
            .map(|(r, (id, _))| PublishReceipt {
                id,
                partition: r.partition,
                offset: r.offset,
                durability: r.durability.into(),
                duplicate: r.duplicate,
                timestamp: r.timestamp,
            })
            .collect())
    }

    /// Moves up to `max` (at most 10000) dead letters of a queue subscription back to it:
    /// each is published to the topic again for that subscription only. Returns how many
    /// moved. Needs admin permission on the topic.
    async fn redrive(
        &self,
        ctx: &Context<'_>,
        topic: String,
        subscription: String,
        #[graphql(default = 100)] max: usize,
    ) -> async_graphql::Result<usize> {
        let topic = topic_name(&topic)?;
        let subscription = subscription_name(&subscription)?;
        check(ctx, Action::Admin, &topic)?;
        if max > MAX_REDRIVE {
            return Err(bad_input(format!("max is {max}; at most {MAX_REDRIVE} dead letters move at once")));
        }
        state(ctx)?.broker.redrive(&topic, &subscription, max).await.gql()
    }

    /// Moves a stream subscription to the earliest or latest message, to a time, or one
    /// partition to an offset; returns the subscription. Needs consume permission on the
    /// topic.
    async fn seek(
        &self,
        ctx: &Context<'_>,
        topic: String,
        subscription: String,
        to: SeekTarget,
    ) -> async_graphql::Result<TopicSubscription> {
        let topic = topic_name(&topic)?;
        let subscription = subscription_name(&subscription)?;
        check(ctx, Action::Consume, &topic)?;
        let to = to.into_seek()?;
        let broker = &state(ctx)?.broker;
        broker.seek(&topic, &subscription, to).await.gql()?;
        TopicSubscription::load(broker, topic, subscription)
    }
}
