//! Dead letters: moving a message that exhausted its deliveries to the subscription's
//! dead-letter topic (stored there *before* the source lets go, so a crash duplicates a dead
//! letter but never loses one), and redrive, which publishes dead letters back to the source
//! topic targeted at their subscription only.

use std::time::Duration;

use switchboard_core::backend::DeadLetterStamp;
use switchboard_core::{SubscriptionName, TopicName};

use super::Broker;
use crate::error::{BrokerError, Result};
use crate::subscription::{Subscription, read_one};
use crate::topic::{Outgoing, Topic};

/// The queue subscription every dead-letter topic gets, which redrive reads from.
pub const REDRIVE_SUBSCRIPTION: &str = "redrive";

/// Extension attributes added to a dead letter.
pub use switchboard_core::contract::dead_letter_ext;

impl Broker {
    /// Moves up to `max` dead letters of `subscription` back: each is published again to the
    /// source topic for that subscription only (other subscriptions do not see it again).
    /// Returns how many moved.
    ///
    /// # Errors
    /// Unknown names, a subscription without a dead-letter topic, or storage.
    pub async fn redrive(
        &self,
        topic: &TopicName,
        subscription: &SubscriptionName,
        max: usize,
    ) -> Result<usize> {
        let (t, s) = self.subscription(topic, subscription)?;
        let dlq = s.config.dead_letter_topic.clone().ok_or_else(|| {
            BrokerError::InvalidConfig(format!("subscription {subscription} has no dead-letter topic"))
        })?;
        let redrive = SubscriptionName::new(REDRIVE_SUBSCRIPTION)?;
        let (dt, ds) = self.subscription(&dlq, &redrive)?;
        let member = ds.join();
        let mut moved = 0;
        let mut others = Vec::new();
        let result: Result<()> = async {
            while moved < max {
                let batch = ds.receive(&dt, member, (max - moved).min(256), usize::MAX)?;
                if batch.is_empty() {
                    break;
                }
                for d in batch {
                    let Some(receipt) = d.receipt else { continue };
                    let ext = &d.message.extensions;
                    let mine = ext.get(dead_letter_ext::TOPIC).map(String::as_str) == Some(topic.as_str())
                        && ext.get(dead_letter_ext::SUBSCRIPTION).map(String::as_str)
                            == Some(subscription.as_str());
                    if !mine || moved >= max {
                        others.push(receipt);
                        continue;
                    }
                    let mut message = d.message;
                    for k in dead_letter_ext::ALL {
                        message.extensions.remove(k);
                    }
                    t.publish(
                        vec![Outgoing { message, deliver_at: None }],
                        Some(subscription),
                        false,
                        t.config.max_message_bytes,
                    )
                    .await?;
                    ds.ack(&[receipt]).await?.remove(0)?;
                    moved += 1;
                }
            }
            Ok(())
        }
        .await;
        for r in others {
            let _ = ds.nack(&r, Duration::ZERO, None).await;
        }
        ds.leave(member);
        result?;
        s.changed.notify_waiters();
        Ok(moved)
    }

    pub(super) async fn process_dead_letters(&self, t: &Topic, s: &Subscription) -> Result<()> {
        let pending = s.take_dead_letters();
        if pending.is_empty() {
            return Ok(());
        }
        let Some(dlq_name) = s.config.dead_letter_topic.clone() else { return Ok(()) };
        let mut pending = pending.into_iter();
        while let Some(dl) = pending.next() {
            let outcome: Result<()> = async {
                let Some((_, stored)) = read_one(t, dl.pos)? else {
                    s.forget(dl.pos);
                    return Ok(());
                };
                let dlq = self.topic(&dlq_name)?;
                let mut message = stored.message;
                DeadLetterStamp {
                    reason: dl.reason,
                    topic: &t.name,
                    subscription: &s.name,
                    attempts: dl.attempts,
                    partition: dl.pos.0,
                    offset: dl.pos.1,
                    error: dl.last_error.as_deref(),
                    handler: None,
                }
                .stamp(&mut message);
                // The dead letter is stored before the source lets go of the message: a crash
                // in between gives a duplicate dead letter, never a lost one.
                dlq.publish(vec![Outgoing { message, deliver_at: None }], None, false, dlq.config.max_message_bytes).await?;
                s.dead_letter_stored(dl.pos).await?;
                tracing::warn!(topic = %t.name, subscription = %s.name, partition = dl.pos.0, offset = dl.pos.1,
                    attempts = dl.attempts, reason = dl.reason.as_str(), "Dead-lettered a message.");
                Ok(())
            }
            .await;
            if let Err(e) = outcome {
                s.return_dead_letter(dl);
                for rest in pending {
                    s.return_dead_letter(rest);
                }
                return Err(e);
            }
        }
        Ok(())
    }
}
