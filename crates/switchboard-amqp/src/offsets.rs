//! Committed offsets of stream subscriptions, kept in RabbitMQ.
//!
//! RabbitMQ keeps no consumer offsets for streams over AMQP 0-9-1, so the backend keeps them
//! itself, in RabbitMQ: each stream subscription has a durable classic queue (the offset
//! store, named by `naming::offsets`) declared with `x-max-length = 1` and
//! `x-overflow = drop-head`. A commit publishes the next offset to read (decimal text) to it
//! through the default exchange, persistent and under publisher confirm; the newest message
//! pushes the older one out, so the store holds the last commit. The store is also what
//! marks that a stream subscription exists: a queue subscription of the same name is
//! refused with `Conflict` while it exists (and a stream subscription while the quorum queue
//! of a queue subscription exists), and `delete_subscription` deletes it.
//!
//! Opening reads the store with `basic.get` (without ack) until it is empty, keeps the last
//! value and requeues what it read at once (`basic.nack`, multiple, requeue): requeued
//! messages go back to their old place at the head, so the last message read is always the
//! newest commit, even when a commit arrived while another reader held the old one. Reads
//! are serialized within a process. Two processes opening the same stream subscription at
//! the very same moment can still race: while one holds the stored message the other sees an
//! empty store and starts at the subscription's `start` (RabbitMQ 3.10 has no way to peek at
//! a message over AMQP).
//!
//! Commits follow the embedded broker's rule (see `subscribe::Cursor`): an ack moves the
//! commit point only up to the lowest offset still unsettled. The point is kept in memory at
//! once (the ack returns `Ok`) and written by a committer task per subscription, at most every
//! [`COMMIT_INTERVAL`], retrying while the connection is down (jittered exponential backoff,
//! `Reconnect`: 100 ms doubling to [`MAX_RETRY_BACKOFF`]); closing the subscription, or
//! the backend, writes the last point before it returns. Acks after that return `LeaseLost`
//! (the message is delivered again). A crash loses at most the commits of the last interval:
//! those messages are delivered again (at-least-once). All members of one stream subscription
//! share the store; the last commit written wins.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicNackOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation};
use switchboard_core::contract::{BusError, LeaseLostCause, Resource};
use switchboard_policy::Reconnect;
use tokio::sync::{Notify, watch};

use crate::connect::{
    BACKEND, RPC_TIMEOUT, Shared, bounded, close_channel, is_timeout, lapin_error, timed_out,
};

/// Shortest time between two writes of a subscription's commit point.
pub(crate) const COMMIT_INTERVAL: Duration = Duration::from_millis(50);

/// How long closing may spend writing the last commit point.
const FINAL_WRITE: Duration = Duration::from_secs(5);

/// The longest wait between attempts to write a commit point. The waits are jittered
/// ([`Reconnect`]): a broker restart fails the commits of every stream subscription at once,
/// and without jitter they would all retry in the same instants.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5);

/// Most messages read from a store on open (it holds one, two at a race).
const MAX_READ: usize = 64;

/// The commit point of one open stream subscription, and what of it RabbitMQ has.
pub(crate) struct Commits {
    /// The offset store.
    queue: String,
    want: parking_lot::Mutex<Want>,
    /// The point last written (or read on open).
    written: tokio::sync::Mutex<Option<u64>>,
    wake: Notify,
}

struct Want {
    point: Option<u64>,
    sealed: bool,
}

impl Commits {
    /// The commits of a subscription whose store holds `stored`.
    pub(crate) fn new(queue: String, stored: Option<u64>) -> Arc<Commits> {
        Arc::new(Commits {
            queue,
            want: parking_lot::Mutex::new(Want { point: stored, sealed: false }),
            written: tokio::sync::Mutex::new(stored),
            wake: Notify::new(),
        })
    }

    /// Records an ack that moved the commit point to `point` (`None`: it did not move).
    ///
    /// # Errors
    /// `LeaseLost` once the subscription is closed: the ack is no longer written.
    pub(crate) fn acked(&self, point: Option<u64>) -> Result<(), BusError> {
        let mut want = self.want.lock();
        if want.sealed {
            return Err(BusError::lease_lost(
                LeaseLostCause::SubscriptionClosed,
                "the offset is not committed and the message is delivered again",
            ));
        }
        if let Some(p) = point
            && want.point.is_none_or(|w| p > w)
        {
            want.point = Some(p);
            drop(want);
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Refuses further acks; the point as it is now is the last one to write.
    pub(crate) fn seal(&self) {
        self.want.lock().sealed = true;
    }

    /// Writes the commit point unless RabbitMQ has it already.
    pub(crate) async fn flush(&self, shared: &Shared) -> Result<(), BusError> {
        let mut written = self.written.lock().await;
        let Some(point) = self.want.lock().point else { return Ok(()) };
        if written.is_some_and(|w| w >= point) {
            return Ok(());
        }
        write(shared, &self.queue, point).await?;
        *written = Some(point);
        Ok(())
    }

    /// Seals and writes the last point, retrying retryable errors for a while.
    pub(crate) async fn finish(&self, shared: &Shared) -> Result<(), BusError> {
        self.seal();
        let attempts = async {
            let mut reconnect = Reconnect::up_to(MAX_RETRY_BACKOFF);
            loop {
                match self.flush(shared).await {
                    Err(e) if e.is_retryable() => {
                        tracing::debug!(error = %e, store = %self.queue, "writing the last commit failed; retrying");
                        tokio::time::sleep(reconnect.next_delay()).await;
                    }
                    done => return done,
                }
            }
        };
        match tokio::time::timeout(FINAL_WRITE, attempts).await {
            Ok(done) => done,
            Err(_) => Err(BusError::Backend {
                backend: BACKEND,
                message: format!(
                    "could not commit the offset of a stream subscription to {} in {FINAL_WRITE:?}; \
                     acked messages are delivered again",
                    self.queue
                ),
                retryable: true,
                source: None,
            }),
        }
    }
}

/// Writes a subscription's commit point as it moves, at most every [`COMMIT_INTERVAL`],
/// until the subscription stops (then it writes the last point) or the backend closes
/// (which writes it itself).
pub(crate) async fn committer(
    shared: Arc<Shared>,
    commits: Arc<Commits>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BusError> {
    let mut shutdown = shared.shutdown();
    let mut reconnect = Reconnect::up_to(MAX_RETRY_BACKOFF);
    loop {
        tokio::select! {
            () = commits.wake.notified() => {}
            _ = stop.changed() => break,
            _ = shutdown.changed() => return Ok(()),
        }
        let pause = match commits.flush(&shared).await {
            Ok(()) => {
                reconnect.reset();
                COMMIT_INTERVAL
            }
            Err(e) => {
                if e.is_retryable() {
                    tracing::debug!(error = %e, store = %commits.queue, "committing failed; retrying");
                } else {
                    tracing::warn!(error = %e, store = %commits.queue, "committing failed");
                }
                commits.wake.notify_one();
                reconnect.next_delay()
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => break,
            _ = shutdown.changed() => return Ok(()),
        }
    }
    commits.finish(&shared).await
}

/// Declares the offset store `queue` (creating it marks the stream subscription as existing)
/// and returns the offset it holds, if any.
pub(crate) async fn open(shared: &Shared, queue: &str) -> Result<Option<u64>, BusError> {
    let _one_at_a_time = shared.offset_reads.lock().await;
    let ch = shared.channel().await?;
    let read = declare_and_read(&ch, queue).await;
    close_channel(&ch).await;
    read
}

fn store_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("classic")));
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    args.insert("x-overflow".into(), AMQPValue::LongString(LongString::from("drop-head")));
    args
}

async fn declare_and_read(ch: &Channel, queue: &str) -> Result<Option<u64>, BusError> {
    bounded(
        "declaring an offset store",
        ch.queue_declare(queue.into(), QueueDeclareOptions::durable(), store_args()),
    )
    .await?;
    let mut last = None;
    let mut last_tag = None;
    for _ in 0..MAX_READ {
        let Some(got) =
            bounded("reading an offset store", ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }))
                .await?
        else {
            break;
        };
        last_tag = Some(got.delivery.delivery_tag);
        match parse(&got.delivery.data) {
            Some(offset) => last = Some(offset),
            None => tracing::warn!(store = queue, "ignoring a malformed offset in the offset store"),
        }
        if got.message_count == 0 {
            break;
        }
    }
    if let Some(tag) = last_tag {
        bounded(
            "requeueing an offset store",
            ch.basic_nack(tag, BasicNackOptions { multiple: true, requeue: true }),
        )
        .await?;
    }
    Ok(last)
}

fn parse(data: &[u8]) -> Option<u64> {
    std::str::from_utf8(data).ok()?.trim().parse().ok()
}

/// Publishes `offset` to the store and waits for the confirm.
async fn write(shared: &Shared, queue: &str, offset: u64) -> Result<(), BusError> {
    let ch = shared.publish_channel().await?;
    let written = write_on(&ch, queue, offset).await;
    if let Err(e) = &written
        && is_timeout(e)
    {
        shared.discard_publish_channel(&ch).await;
    }
    written
}

async fn write_on(ch: &Channel, queue: &str, offset: u64) -> Result<(), BusError> {
    let props = BasicProperties::default().with_delivery_mode(2).with_content_type("text/plain".into());
    let mandatory = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm = bounded(
        "committing an offset",
        ch.basic_publish("".into(), queue.into(), mandatory, offset.to_string().as_bytes(), props),
    )
    .await?;
    let confirmed = tokio::time::timeout(RPC_TIMEOUT, confirm)
        .await
        .map_err(|_| timed_out("waiting for the confirm of an offset commit"))?;
    match confirmed.map_err(lapin_error)? {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        // Returned as unroutable: the store is gone (the subscription was deleted).
        Confirmation::Ack(Some(_)) => {
            Err(BusError::NotFound { resource: Resource::Native { kind: "queue", name: queue.to_owned() } })
        }
        Confirmation::Nack(_) => Err(BusError::Backend {
            backend: BACKEND,
            message: format!("RabbitMQ refused a commit to {queue} (publisher nack)"),
            retryable: true,
            source: None,
        }),
    }
}

/// Whether `queue` exists, by a passive declare on a channel of its own (RabbitMQ closes
/// the channel when it does not).
pub(crate) async fn exists(shared: &Shared, queue: &str) -> Result<bool, BusError> {
    let ch = shared.channel().await?;
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let declared =
        bounded("declaring a queue", ch.queue_declare(queue.into(), passive, FieldTable::default())).await;
    close_channel(&ch).await;
    match declared {
        Ok(_) => Ok(true),
        Err(BusError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_from_decimal_text() {
        assert_eq!(parse(b"42"), Some(42));
        assert_eq!(parse(b" 7\n"), Some(7));
        assert_eq!(parse(b"x"), None);
        assert_eq!(parse(b"-1"), None);
    }

    #[test]
    fn the_point_only_moves_up_and_sealing_refuses_acks() {
        let c = Commits::new("q".into(), Some(10));
        c.acked(Some(5)).unwrap();
        assert_eq!(c.want.lock().point, Some(10));
        c.acked(Some(12)).unwrap();
        c.acked(None).unwrap();
        assert_eq!(c.want.lock().point, Some(12));
        c.seal();
        assert!(matches!(
            c.acked(Some(20)),
            Err(BusError::LeaseLost { cause: LeaseLostCause::SubscriptionClosed, .. })
        ));
        assert_eq!(c.want.lock().point, Some(12));
    }
}
