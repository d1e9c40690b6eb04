//! Settling a queue delivery: ack, nack, extend and abandon as JetStream acknowledgements
//! (stream deliveries are settled by [`crate::stream`]).
//!
//! - ack: `+ACK`, sent as a double ack (the server confirms it, bounded by the request
//!   timeout) so a failed ack is reported instead of silently lost.
//! - lease lost: JetStream would accept a late ack even after redelivering the message, so
//!   the lease is tracked here: it runs from when the message was received (the server's
//!   `AckWait` started a little earlier, when it sent it) for a lease, moved on by
//!   extensions. An ack or nack after that is not sent and fails with
//!   [`BusError::LeaseLost`]: the server's lease ran out too, so the message is (or will
//!   be) delivered again. Within the lease, a settle that races the server's own timer may
//!   still land after a redelivery (at-least-once).
//! - nack: `-NAK`, with `{"delay": ns}` when the nack asks for a delay (NATS ≥ 2.7). In a
//!   queue subscription with `max_deliveries`, a nack of the last allowed attempt
//!   dead-letters the message instead (see [`crate::dead_letter`]).
//! - extend: `+WPI` (work in progress), which restarts the lease at a full `AckWait` from
//!   now. JetStream cannot set an arbitrary deadline, so an extension by `by` ≤ lease gets a
//!   full lease (at least what was asked), and `by` > lease is covered by re-sending `+WPI`
//!   every half lease until `by` has passed (stopped when the delivery is settled).
//! - abandon (a delivery dropped unsettled): `-NAK` sent in the background, so the message
//!   comes back at once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::message::Acker;
use parking_lot::Mutex;
use switchboard_core::Message;
use switchboard_core::backend::Settle;
use switchboard_core::contract::{BusError, DeadLetterReason, LeaseLostCause, Nack};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::errors::map_boxed;
use crate::pull::{DEAD_LETTER_RETRY, SubShared};

/// Longest extension one call may ask for (as the embedded broker).
const MAX_EXTENSION: Duration = Duration::from_secs(12 * 3600);

/// The [`Settle`] of one JetStream delivery.
pub(crate) struct NatsSettle {
    sub: Arc<SubShared>,
    acker: Arc<Acker>,
    /// The message, kept when it may have to be dead-lettered.
    original: Option<Message>,
    seq: u64,
    attempt: u32,
    /// Released on settlement: frees a prefetch slot of the member.
    _permit: Option<OwnedSemaphorePermit>,
    /// Re-sends `+WPI` for extensions longer than one lease.
    keepalive: Mutex<Option<JoinHandle<()>>>,
    /// When the lease runs out, as far as this side knows.
    deadline: Mutex<Instant>,
}

impl NatsSettle {
    pub(crate) fn new(
        sub: Arc<SubShared>,
        acker: Acker,
        original: Option<Message>,
        seq: u64,
        attempt: u32,
        permit: Option<OwnedSemaphorePermit>,
        received: Instant,
    ) -> NatsSettle {
        let deadline = Mutex::new(received + sub.lease);
        NatsSettle {
            sub,
            acker: Arc::new(acker),
            original,
            seq,
            attempt,
            _permit: permit,
            keepalive: Mutex::new(None),
            deadline,
        }
    }

    /// Fails with [`BusError::LeaseLost`] once the lease ran out.
    fn check_lease(&self) -> Result<(), BusError> {
        let deadline = *self.deadline.lock();
        if Instant::now() > deadline {
            return Err(BusError::lease_lost(
                LeaseLostCause::Expired,
                format!(
                    "message {} on topic {}, lease {:?}; it will be delivered again",
                    self.seq, self.sub.topic, self.sub.lease
                ),
            ));
        }
        Ok(())
    }

    fn stop_keepalive(&self) {
        if let Some(k) = self.keepalive.lock().take() {
            k.abort();
        }
    }

    /// Sends `kind` and waits for the server to confirm it.
    async fn send(&self, kind: AckKind, what: &str) -> Result<(), BusError> {
        self.sub.inner.check_open()?;
        self.acker.double_ack_with(kind).await.map_err(|e| map_boxed(what, e))
    }
}

impl Drop for NatsSettle {
    fn drop(&mut self) {
        self.stop_keepalive();
    }
}

#[async_trait::async_trait]
impl Settle for NatsSettle {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.stop_keepalive();
        self.check_lease()?;
        self.send(AckKind::Ack, "ack").await
    }

    async fn nack(self: Box<Self>, nack: Nack) -> Result<(), BusError> {
        self.stop_keepalive();
        self.check_lease()?;
        if let (Some(max), Some(original)) = (self.sub.max_deliveries, &self.original)
            && self.attempt >= max
        {
            let error = nack.error.clone();
            let reason = DeadLetterReason::Nacked;
            return match crate::dead_letter::publish(
                &self.sub,
                original,
                reason,
                self.seq,
                self.attempt,
                error,
            )
            .await
            {
                Ok(()) => self.send(AckKind::Term, "terminating a dead-lettered message").await,
                Err(e) => {
                    // Not lost: it comes back (attempt > max) and is dead-lettered then.
                    self.sub.nacked.lock().insert(self.seq, nack.error);
                    let _ = self.acker.ack_with(AckKind::Nak(Some(DEAD_LETTER_RETRY))).await;
                    Err(e)
                }
            };
        }
        let kind = if nack.delay.is_zero() { AckKind::Nak(None) } else { AckKind::Nak(Some(nack.delay)) };
        self.send(kind, "nack").await
    }

    async fn extend(&self, by: Duration) -> Result<(), BusError> {
        if by.is_zero() || by > MAX_EXTENSION {
            return Err(BusError::InvalidArgument(format!(
                "a lease may be extended by 1 ms to {} s, not {} ms",
                MAX_EXTENSION.as_secs(),
                by.as_millis()
            )));
        }
        self.stop_keepalive();
        self.check_lease()?;
        let sent = Instant::now();
        self.send(AckKind::Progress, "extending the lease").await?;
        let lease = self.sub.lease;
        {
            let mut deadline = self.deadline.lock();
            *deadline = (*deadline).max(sent + by.max(lease));
        }
        if by > lease {
            let acker = self.acker.clone();
            let until = sent + by;
            let task = tokio::spawn(async move {
                let mut covered = sent + lease;
                while covered < until {
                    tokio::time::sleep_until(covered - lease / 2).await;
                    let at = Instant::now();
                    if acker.ack_with(AckKind::Progress).await.is_err() {
                        return;
                    }
                    covered = at + lease;
                }
            });
            *self.keepalive.lock() = Some(task);
        }
        Ok(())
    }

    fn abandon(self: Box<Self>) {
        self.stop_keepalive();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let acker = self.acker.clone();
            rt.spawn(async move {
                let _ = acker.ack_with(AckKind::Nak(None)).await;
            });
        }
    }
}
