//! The pump of a subscription: owns its channel and consumer, and survives reconnects.
//!
//! It reads deliveries from RabbitMQ and hands them to the subscription. When the
//! connection drops it reopens the channel and consumer with jittered exponential backoff
//! (`Reconnect`: 100 ms doubling to [`MAX_BACKOFF`]) instead of ending the subscription;
//! deliveries from the dead channel can no longer be settled (RabbitMQ requeues them). It
//! ends when the subscription is closed or dropped, when the backend is closed, or when
//! RabbitMQ cancels the consumer on a live connection (the queue was deleted).
//!
//! Queue mode: every delivery counts as in flight from the moment it is read here (see
//! `settle::Unsettled`), so `stats` sees the deliveries buffered for the caller too. A
//! delivery whose attempt exceeds `max_deliveries` is dead-lettered here
//! (`dlreason = lease expired`, see `dead_letter.rs`) and never reaches the caller.
//!
//! Every request it makes is bounded (see `connect.rs`), so a broker that stops answering makes
//! it reopen, never wait forever.
//!
//! Stream mode: a delivery below the offset the consumer asked for is acked and skipped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions};
use lapin::{Channel, Consumer};
use switchboard_core::contract::{BusError, Mode};
use switchboard_policy::Reconnect;
use tokio::sync::{mpsc, watch};

use crate::connect::{RPC_TIMEOUT, close_channel, settle_bounded};
use crate::dead_letter;
use crate::settle::Unsettled;
use crate::subscribe::{Incoming, SubCtx, attempt_of, open, stream_offset};

/// The longest wait between attempts to reopen a subscription's channel and consumer. The
/// waits are jittered ([`Reconnect`]): a broker restart drops every subscription of every
/// process at once, and without jitter they would all reopen in the same instants.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long to wait after dead-lettering a delivery failed (it was requeued), so a broker
/// that refuses the dead letter is not asked again at once.
const DEAD_LETTER_PAUSE: Duration = Duration::from_millis(100);

/// How one consumer session ended.
enum Ended {
    /// Stop for good.
    Stop,
    /// The channel or connection failed: reopen.
    Lost,
}

pub(crate) async fn pump(
    ctx: Arc<SubCtx>,
    first: (Channel, Consumer),
    tx: mpsc::Sender<Incoming>,
    mut stop: watch::Receiver<bool>,
) {
    let mut shutdown = ctx.shared.shutdown();
    let mut session = Some(first);
    let mut reconnect = Reconnect::up_to(MAX_BACKOFF);
    loop {
        let (ch, consumer) = match session.take() {
            Some(s) => s,
            None => match open(&ctx).await {
                Ok(s) => {
                    tracing::info!(topic = %ctx.topic, subscription = %ctx.spec.name, "subscription resumed");
                    reconnect.reset();
                    s
                }
                // The backend was closed: the subscription ends (`None`), as on `shutdown`.
                Err(BusError::Closed) => return,
                Err(e) if e.is_retryable() => {
                    tracing::debug!(error = %e, "reopening the subscription failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(reconnect.next_delay()) => {}
                        _ = stop.changed() => return,
                        _ = shutdown.changed() => return,
                        () = tx.closed() => return,
                    }
                    continue;
                }
                Err(e) => {
                    let _ = tx.send(Incoming::Failed(e)).await;
                    return;
                }
            },
        };
        let ended = run(&ctx, &ch, consumer, &tx, &mut stop, &mut shutdown).await;
        match ended {
            Ended::Stop => {
                ctx.stopped.store(true, Ordering::Release);
                close_channel(&ch).await;
                return;
            }
            Ended::Lost => {
                tracing::warn!(topic = %ctx.topic, subscription = %ctx.spec.name,
                    "subscription lost its channel; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(reconnect.next_delay()) => {}
                    _ = stop.changed() => return,
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

async fn run(
    ctx: &Arc<SubCtx>,
    ch: &Channel,
    mut consumer: Consumer,
    tx: &mpsc::Sender<Incoming>,
    stop: &mut watch::Receiver<bool>,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    loop {
        let item = tokio::select! {
            item = consumer.next() => item,
            _ = stop.changed() => break,
            _ = shutdown.changed() => break,
            () = tx.closed() => break,
        };
        let delivery = match item {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "consumer failed");
                return Ended::Lost;
            }
            None if ch.status().connected() => return Ended::Stop,
            None => return Ended::Lost,
        };
        let mut unsettled = None;
        match ctx.spec.mode {
            Mode::Queue => {
                let held = Unsettled::new(ctx.in_flight.clone());
                let attempt = attempt_of(&delivery);
                if ctx.dead_letter_topic.is_some() && ctx.spec.max_deliveries.is_some_and(|max| attempt > max)
                {
                    if let Err(e) = dead_letter::expired(ctx, delivery, attempt).await {
                        tracing::warn!(error = %e, "dead-lettering failed; the message was requeued");
                        tokio::time::sleep(DEAD_LETTER_PAUSE).await;
                    }
                    continue;
                }
                unsettled = Some(held);
            }
            Mode::Stream => {
                let floor = ctx.cursor.lock().floor;
                if stream_offset(&delivery).is_some_and(|o| o < floor) {
                    let _ = settle_bounded(delivery.acker.ack(BasicAckOptions::default())).await;
                    continue;
                }
            }
        }
        if tx.send(Incoming::Amqp(delivery, unsettled)).await.is_err() {
            break;
        }
    }
    let _ = tokio::time::timeout(RPC_TIMEOUT, ch.basic_cancel(consumer.tag(), BasicCancelOptions::default()))
        .await;
    Ended::Stop
}
