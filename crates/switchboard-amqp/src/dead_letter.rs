//! Dead letters: moving a message that used up `max_deliveries` to the subscription's
//! dead-letter topic, with the metadata every backend adds.
//!
//! The backend does the moving (so `native_dead_letter` is false), because only it knows
//! the metadata (`dlreason`, `dltopic`, `dlsubscription`, `dlattempts`, `dlerror`,
//! `dlpartition`, `dloffset`):
//!
//! - a nack of delivery `max_deliveries` publishes the message with `dlreason = nacked` to
//!   the dead-letter topic (an exchange like any topic), waits for the confirm, and only then
//!   acks the original, so a crash in between gives a duplicate dead letter, never a lost one;
//! - a delivery whose attempt (`x-delivery-count + 1`) exceeds `max_deliveries` means the
//!   last allowed delivery was not settled: its lease ran out, or its consumer died and
//!   RabbitMQ requeued it. The subscription dead-letters it with `dlreason = lease expired`
//!   the same way, without handing it to the caller.
//!
//! RabbitMQ's own dead-lettering is the backstop: the quorum queue is declared with
//! `x-delivery-limit = max_deliveries + 1`, `x-dead-letter-exchange` = the dead-letter
//! topic's exchange and `x-dead-letter-strategy = at-least-once`. It only acts when a message
//! keeps coming back without the backend getting to move it (consumers dying over and over);
//! such a dead letter carries RabbitMQ's `x-death` headers instead of the `dl*` extensions.

use std::sync::Arc;

use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use switchboard_core::Message;
use switchboard_core::backend::DeadLetterStamp;
use switchboard_core::contract::{BusError, DeadLetterReason, PublishOptions};

use crate::connect::settle_bounded;
use crate::headers;
use crate::publish::publish;
use crate::subscribe::SubCtx;

/// Publishes `message` to the dead-letter topic with its metadata and waits for the confirm.
pub(crate) async fn send(
    ctx: &SubCtx,
    mut message: Message,
    reason: DeadLetterReason,
    attempts: u32,
    error: Option<&str>,
    offset: u64,
) -> Result<(), BusError> {
    let Some(dlq) = &ctx.dead_letter_topic else {
        return Err(BusError::InvalidArgument("the subscription has no dead-letter topic".into()));
    };
    DeadLetterStamp {
        reason,
        topic: &ctx.topic,
        subscription: &ctx.spec.name,
        attempts,
        partition: 0,
        offset,
        error,
        handler: None,
    }
    .stamp(&mut message);
    publish(&ctx.shared, dlq, vec![message], &PublishOptions::default()).await?;
    tracing::warn!(topic = %ctx.topic, subscription = %ctx.spec.name, dead_letter_topic = %dlq,
        attempts, reason = reason.as_str(), "Dead-lettered a message.");
    Ok(())
}

/// Dead-letters a delivery that came back after its last allowed attempt (lease expired or
/// consumer died), then acks it. On failure the message is requeued.
pub(crate) async fn expired(ctx: &Arc<SubCtx>, delivery: AmqpDelivery, attempt: u32) -> Result<(), BusError> {
    let offset = delivery.delivery_tag;
    let message = headers::decode(&delivery.properties, delivery.data);
    let attempts = attempt.saturating_sub(1);
    match send(ctx, message, DeadLetterReason::LeaseExpired, attempts, None, offset).await {
        Ok(()) => {
            let _ = settle_bounded(delivery.acker.ack(BasicAckOptions::default())).await;
            Ok(())
        }
        Err(e) => {
            let _ = settle_bounded(delivery.acker.nack(BasicNackOptions { multiple: false, requeue: true }))
                .await;
            Err(e)
        }
    }
}
