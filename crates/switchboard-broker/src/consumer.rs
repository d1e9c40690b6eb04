//! Consumer handles: a queue consumer (competing, acks each message) and a stream consumer
//! (a member of a group that splits the partitions and commits offsets).

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{SharedClock, Timestamp};

use crate::delivery::BrokerDelivery;
use crate::error::Result;
use crate::queue::MemberId;
use crate::receipt::Receipt;
use crate::subscription::Subscription;
use crate::topic::Topic;

/// Waits up to `wait` for at least one message, waking on publishes, on subscription
/// changes (nack, ack, rebalance) and when a lease or delay falls due.
pub(crate) async fn receive_waiting(
    clock: &SharedClock,
    topic: &Topic,
    sub: &Subscription,
    member: MemberId,
    max: usize,
    max_in_flight: usize,
    wait: Duration,
) -> Result<Vec<BrokerDelivery>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let published = topic.appended.notified();
        let changed = sub.changed.notified();
        tokio::pin!(published, changed);
        published.as_mut().enable();
        changed.as_mut().enable();
        let got = sub.receive(topic, member, max, max_in_flight)?;
        let now = tokio::time::Instant::now();
        if !got.is_empty() || max == 0 || now >= deadline {
            topic.record_wake(&got);
            return Ok(got);
        }
        let mut until = deadline;
        if let Some(due) = sub.next_due() {
            let in_clock = due.duration_since(clock.now());
            until = until.min(now + in_clock.max(Duration::from_millis(1)));
        }
        tokio::select! {
            _ = published => {}
            _ = changed => {}
            _ = tokio::time::sleep_until(until) => {}
        }
    }
}

/// A competing consumer of a queue subscription.
///
/// Any number of queue consumers may share a subscription; each message goes to one of them
/// at a time. Dropping the consumer does not release its leases: they run out and the
/// messages are delivered again, exactly as if the process had died.
pub struct QueueConsumer {
    pub(crate) clock: SharedClock,
    pub(crate) topic: Arc<Topic>,
    pub(crate) sub: Arc<Subscription>,
    pub(crate) member: MemberId,
    pub(crate) max_in_flight: usize,
}

impl QueueConsumer {
    /// Receives up to `max` messages, waiting up to `wait` for the first one. Never returns
    /// more than the consumer's in-flight bound allows (flow control).
    ///
    /// # Errors
    /// A storage failure while reading or journaling deliveries.
    pub async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<BrokerDelivery>> {
        receive_waiting(&self.clock, &self.topic, &self.sub, self.member, max, self.max_in_flight, wait).await
    }

    /// Sets the bound on messages this consumer holds unacked.
    pub fn set_max_in_flight(&mut self, n: usize) {
        self.max_in_flight = n.max(1);
    }

    /// Acks one delivery; once this returns `Ok` the ack survives a crash.
    ///
    /// # Errors
    /// [`BrokerError::UnknownReceipt`](crate::BrokerError::UnknownReceipt) (never issued or
    /// already settled), [`BrokerError::LeaseExpired`](crate::BrokerError::LeaseExpired), or
    /// a storage failure.
    pub async fn ack(&self, receipt: &Receipt) -> Result<()> {
        self.sub.ack(std::slice::from_ref(receipt)).await?.remove(0)
    }

    /// Acks many deliveries with one journal write. The outer error is a storage failure;
    /// the inner results are per receipt.
    ///
    /// # Errors
    /// A storage failure while journaling the acks.
    pub async fn ack_many(&self, receipts: &[Receipt]) -> Result<Vec<Result<()>>> {
        self.sub.ack(receipts).await
    }

    /// Gives a delivery back: it is delivered again after `delay` (zero: at once), or
    /// dead-lettered when it has used up its deliveries. `error` is kept as the last error
    /// in the dead letter's metadata.
    ///
    /// # Errors
    /// As for [`ack`](Self::ack).
    pub async fn nack(&self, receipt: &Receipt, delay: Duration, error: Option<String>) -> Result<()> {
        self.sub.nack(receipt, delay, error).await
    }

    /// Extends a delivery's lease to `by` from now, for slow work.
    ///
    /// # Errors
    /// As for [`ack`](Self::ack), without storage failures.
    pub fn extend(&self, receipt: &Receipt, by: Duration) -> Result<Timestamp> {
        self.sub.extend(receipt, by)
    }

    /// Deliveries this consumer holds unacked.
    pub fn in_flight(&self) -> usize {
        self.sub.in_flight_of(self.member)
    }
}

impl Drop for QueueConsumer {
    fn drop(&mut self) {
        self.sub.leave(self.member);
    }
}

/// A member of a stream subscription's group.
///
/// The group's members split the topic's partitions; each partition is read in order by its
/// one owner. When members join or leave, partitions move and their new owner resumes from
/// the committed offset.
pub struct StreamConsumer {
    pub(crate) clock: SharedClock,
    pub(crate) topic: Arc<Topic>,
    pub(crate) sub: Arc<Subscription>,
    pub(crate) member: MemberId,
}

impl StreamConsumer {
    /// Reads up to `max` messages from the partitions this member owns, waiting up to `wait`
    /// for the first one.
    ///
    /// # Errors
    /// A storage failure while reading.
    pub async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<BrokerDelivery>> {
        receive_waiting(&self.clock, &self.topic, &self.sub, self.member, max, usize::MAX, wait).await
    }

    /// Commits `offset` as the next offset to read in `partition` (so commit `d.offset + 1`
    /// after processing delivery `d`). Survives a crash once it returns `Ok`.
    ///
    /// # Errors
    /// [`BrokerError::NotAssigned`](crate::BrokerError::NotAssigned) if the partition moved
    /// to another member, an out-of-range offset, or a storage failure.
    pub async fn commit(&self, partition: u32, offset: u64) -> Result<()> {
        self.sub.commit(&self.topic, Some(self.member), partition, offset).await
    }

    /// The partitions this member owns now.
    pub fn assignment(&self) -> Vec<u32> {
        self.sub.assignment(self.member)
    }
}

impl Drop for StreamConsumer {
    fn drop(&mut self) {
        self.sub.leave(self.member);
    }
}
