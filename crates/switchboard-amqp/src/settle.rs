//! Settling deliveries, and the client-side lease RabbitMQ does not have.
//!
//! Queue mode: RabbitMQ keeps a delivery unacked for as long as the channel lives, so the
//! backend keeps the lease itself. Each delivery handed out gets a timer; when it fires
//! before a settle, the backend nacks the message with requeue (RabbitMQ counts that
//! delivery in `x-delivery-count`) and a later ack or nack returns
//! [`BusError::LeaseLost`]. `extend` pushes the timer. A settle whose channel died (the
//! connection dropped, the subscription was closed) also returns `LeaseLost`: RabbitMQ has
//! requeued the message and delivers it again.
//!
//! A nack with a delay holds the message unacked for the delay and then nacks it with
//! requeue: RabbitMQ 3.10 has no delayed redelivery. The held message keeps its prefetch
//! slot meanwhile, and if the process dies it comes back at once.
//!
//! A nack of the last allowed delivery (`attempt >= max_deliveries`) dead-letters the
//! message instead (see `dead_letter.rs`).
//!
//! Stream mode: an ack moves the subscription's commit point (up to the lowest offset still
//! unsettled), which the committer writes to the offset store (see `offsets.rs`), and acks
//! the channel's credit. A nack hands the same message to the subscription again, with the
//! next attempt number, after its delay.
//!
//! Every ack and nack waits at most `RPC_TIMEOUT` for the channel (see `connect.rs`); a settle
//! that runs out fails with a retryable error, and RabbitMQ may deliver the message again.
//!
//! Every queue delivery received from RabbitMQ carries an [`Unsettled`] guard from the moment
//! the pump reads it until it is settled on the channel (acked, nacked, requeued after lease
//! expiry, or dropped with its dead channel): that is the `in_flight` count of `stats`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use switchboard_core::backend::Settle;
use switchboard_core::contract::{BusError, DeadLetterReason, LeaseLostCause, Nack};
use switchboard_core::{Message, Timestamp};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::connect::{is_timeout, settle_bounded};
use crate::dead_letter;
use crate::subscribe::{Incoming, Redelivery, SubCtx};

const REQUEUE: BasicNackOptions = BasicNackOptions { multiple: false, requeue: true };

/// One delivery received from RabbitMQ and not yet settled: counted in its queue's in-flight
/// count while it lives.
pub(crate) struct Unsettled(Arc<AtomicU64>);

impl Unsettled {
    /// Counts a delivery just received.
    pub(crate) fn new(count: Arc<AtomicU64>) -> Unsettled {
        count.fetch_add(1, Ordering::Relaxed);
        Unsettled(count)
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

enum LeaseState {
    Held(Instant),
    Done,
    Expired,
}

/// The client-side lease of one queue delivery.
pub(crate) struct Lease {
    acker: Acker,
    state: parking_lot::Mutex<LeaseState>,
    wake: Notify,
    /// Dropped once the delivery is settled on the channel.
    unsettled: parking_lot::Mutex<Option<Unsettled>>,
}

impl Lease {
    /// Starts the lease of a delivery just handed out.
    pub(crate) fn start(acker: Acker, lease: Duration, unsettled: Unsettled) -> Arc<Lease> {
        let l = Arc::new(Lease {
            acker,
            state: parking_lot::Mutex::new(LeaseState::Held(Instant::now() + lease)),
            wake: Notify::new(),
            unsettled: parking_lot::Mutex::new(Some(unsettled)),
        });
        tokio::spawn(watch(l.clone()));
        l
    }

    /// Ends the lease for a settle; `LeaseLost` when it had expired or the channel is gone.
    /// The returned guard is to be dropped once the settle reached the channel.
    fn take(&self, ctx: &SubCtx) -> Result<Option<Unsettled>, BusError> {
        let mut state = self.state.lock();
        match *state {
            LeaseState::Held(_) => {
                *state = LeaseState::Done;
                drop(state);
                let unsettled = self.unsettled.lock().take();
                self.wake.notify_one();
                if self.acker.poisoned() {
                    return Err(channel_gone(ctx, "the channel closed; RabbitMQ delivers the message again"));
                }
                Ok(unsettled)
            }
            LeaseState::Expired => Err(expired()),
            LeaseState::Done => Err(already_settled()),
        }
    }
}

async fn watch(lease: Arc<Lease>) {
    loop {
        let deadline = match *lease.state.lock() {
            LeaseState::Held(d) => d,
            _ => return,
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = lease.wake.notified() => continue,
        }
        let expired = {
            let mut state = lease.state.lock();
            match *state {
                LeaseState::Held(d) if Instant::now() >= d => {
                    *state = LeaseState::Expired;
                    true
                }
                LeaseState::Held(_) => false,
                _ => return,
            }
        };
        if expired {
            let unsettled = lease.unsettled.lock().take();
            if let Err(e) = settle_bounded(lease.acker.nack(REQUEUE)).await {
                tracing::debug!(error = %e, "requeue after lease expiry failed; the channel requeues it");
            }
            drop(unsettled);
            return;
        }
    }
}

/// The lease timer ran out first.
fn expired() -> BusError {
    BusError::lease_lost(LeaseLostCause::Expired, "the message was requeued")
}

/// Settled before (cannot happen through `Delivery`, which settles once).
fn already_settled() -> BusError {
    BusError::lease_lost(LeaseLostCause::Unknown, "already settled")
}

/// The delivery's channel is gone: closed with its subscription (or the backend), or lost
/// with the connection.
fn channel_gone(ctx: &SubCtx, detail: impl Into<String>) -> BusError {
    let cause =
        if ctx.closed() { LeaseLostCause::SubscriptionClosed } else { LeaseLostCause::ConnectionLost };
    BusError::lease_lost(cause, detail)
}

/// Acks or nacks on the channel (bounded, see `connect::settle_bounded`) and maps the outcome.
async fn on_channel(
    ctx: &SubCtx,
    settle: impl std::future::Future<Output = lapin::Result<bool>>,
) -> Result<(), BusError> {
    match settle_bounded(settle).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(channel_gone(ctx, "the channel closed; RabbitMQ delivers the message again")),
        Err(e) if is_timeout(&e) => Err(e),
        Err(e) => {
            Err(channel_gone(ctx, format!("the channel failed ({e}); RabbitMQ delivers the message again")))
        }
    }
}

/// Settles a queue-mode delivery.
pub(crate) struct QueueSettle {
    pub(crate) ctx: Arc<SubCtx>,
    pub(crate) lease: Arc<Lease>,
    /// Kept for dead-lettering when the subscription has a dead-letter topic.
    pub(crate) message: Option<Message>,
    pub(crate) attempt: u32,
    pub(crate) offset: u64,
}

#[async_trait::async_trait]
impl Settle for QueueSettle {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        let _unsettled = self.lease.take(&self.ctx)?;
        on_channel(&self.ctx, self.lease.acker.ack(BasicAckOptions::default())).await
    }

    async fn nack(self: Box<Self>, nack: Nack) -> Result<(), BusError> {
        let unsettled = self.lease.take(&self.ctx)?;
        let last = self.ctx.spec.max_deliveries.is_some_and(|max| self.attempt >= max);
        if last && let Some(message) = self.message {
            let sent = dead_letter::send(
                &self.ctx,
                message,
                DeadLetterReason::Nacked,
                self.attempt,
                nack.error.as_deref(),
                self.offset,
            )
            .await;
            return match sent {
                Ok(()) => on_channel(&self.ctx, self.lease.acker.ack(BasicAckOptions::default())).await,
                Err(e) => {
                    let _ = settle_bounded(self.lease.acker.nack(REQUEUE)).await;
                    Err(e)
                }
            };
        }
        if nack.delay.is_zero() {
            return on_channel(&self.ctx, self.lease.acker.nack(REQUEUE)).await;
        }
        let acker = self.lease.acker.clone();
        // Still unacked in RabbitMQ meanwhile, so still in flight.
        tokio::spawn(async move {
            tokio::time::sleep(nack.delay).await;
            let _ = settle_bounded(acker.nack(REQUEUE)).await;
            drop(unsettled);
        });
        Ok(())
    }

    async fn extend(&self, by: Duration) -> Result<(), BusError> {
        let mut state = self.lease.state.lock();
        match *state {
            LeaseState::Held(_) if self.lease.acker.poisoned() => {
                Err(channel_gone(&self.ctx, "the channel closed; RabbitMQ delivers the message again"))
            }
            LeaseState::Held(_) => {
                *state = LeaseState::Held(Instant::now() + by);
                drop(state);
                self.lease.wake.notify_one();
                Ok(())
            }
            LeaseState::Expired => Err(expired()),
            LeaseState::Done => Err(already_settled()),
        }
    }

    fn abandon(self: Box<Self>) {
        let Ok(unsettled) = self.lease.take(&self.ctx) else { return };
        let acker = self.lease.acker.clone();
        // Outside a runtime the channel's close requeues the message instead.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = settle_bounded(acker.nack(REQUEUE)).await;
                drop(unsettled);
            });
        }
    }
}

/// Settles a stream-mode delivery.
pub(crate) struct StreamSettle {
    pub(crate) ctx: Arc<SubCtx>,
    pub(crate) acker: Acker,
    pub(crate) message: Message,
    pub(crate) offset: u64,
    pub(crate) attempt: u32,
    pub(crate) published_at: Option<Timestamp>,
}

impl StreamSettle {
    fn again(self, delay: Duration) {
        let again = Incoming::Again(Redelivery {
            message: self.message,
            offset: self.offset,
            attempt: self.attempt.saturating_add(1),
            published_at: self.published_at,
            acker: self.acker,
        });
        let tx = self.ctx.redeliver.clone();
        if delay.is_zero() {
            let _ = tx.send(again);
        } else if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tx.send(again);
            });
        }
    }
}

#[async_trait::async_trait]
impl Settle for StreamSettle {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        let point = self.ctx.cursor.lock().acked(self.offset);
        if let Some(commits) = &self.ctx.commits {
            commits.acked(point)?;
        }
        // Stream acks only return credit; the offset is committed above either way.
        let _ = settle_bounded(self.acker.ack(BasicAckOptions::default())).await;
        Ok(())
    }

    async fn nack(self: Box<Self>, nack: Nack) -> Result<(), BusError> {
        self.again(nack.delay);
        Ok(())
    }

    async fn extend(&self, _by: Duration) -> Result<(), BusError> {
        Ok(())
    }

    fn abandon(self: Box<Self>) {
        self.again(Duration::ZERO);
    }
}
