//! Stream subscriptions on the embedded broker: a group member, in-order commits, and
//! redelivery of nacked messages.
//!
//! The broker's stream cursor only moves forward, so a nack cannot un-read a message.
//! The member redelivers it itself (after the nack's delay) and holds the partition's
//! commit point below it until it is acked, so a crash in between replays it from the
//! broker: at-least-once either way.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use switchboard_broker::{Broker, StreamConsumer};
use switchboard_core::backend::{self, CommitPoint, DeliverySource, Settle};
use switchboard_core::contract::{BusError, Delivery, DeliveryInfo, LeaseLostCause, Nack};
use switchboard_core::{Message, SubscriptionName, Timestamp, TopicName};
use tokio::sync::Notify;

use super::errors::to_bus;

const POLL: Duration = Duration::from_secs(5);

/// A message due for delivery to this member.
struct Ready {
    message: Message,
    partition: u32,
    offset: u64,
    published_at: Timestamp,
    attempt: u32,
}

/// State shared by the member and the settle handles of its deliveries.
struct Member {
    broker: Broker,
    topic: TopicName,
    subscription: SubscriptionName,
    /// Taken at close, so the member leaves its group at once even while settle handles
    /// of its deliveries are still alive.
    consumer: Mutex<Option<Arc<StreamConsumer>>>,
    /// Per partition. Held across the commit call so commits reach the broker in
    /// increasing order.
    commits: tokio::sync::Mutex<HashMap<u32, CommitPoint>>,
    /// Unsettled deliveries, readable without the async lock (for back-pressure).
    unsettled: Mutex<usize>,
    redeliver: Mutex<VecDeque<Ready>>,
    attempts: Mutex<HashMap<(u32, u64), u32>>,
    /// Woken by every settlement and every redelivery that falls due.
    changed: Notify,
}

pub(crate) struct StreamSource {
    member: Option<Arc<Member>>,
    buffer: VecDeque<switchboard_broker::BrokerDelivery>,
    prefetch: usize,
}

impl StreamSource {
    pub(crate) fn new(
        broker: Broker,
        topic: TopicName,
        subscription: SubscriptionName,
        prefetch: u32,
    ) -> Result<StreamSource, BusError> {
        let consumer = broker.stream_consumer(&topic, &subscription).map_err(to_bus)?;
        Ok(StreamSource {
            member: Some(Arc::new(Member {
                broker,
                topic,
                subscription,
                consumer: Mutex::new(Some(Arc::new(consumer))),
                commits: tokio::sync::Mutex::new(HashMap::new()),
                unsettled: Mutex::new(0),
                redeliver: Mutex::new(VecDeque::new()),
                attempts: Mutex::new(HashMap::new()),
                changed: Notify::new(),
            })),
            buffer: VecDeque::new(),
            prefetch: prefetch as usize,
        })
    }
}

fn wrap(member: &Arc<Member>, r: Ready) -> Delivery {
    let info = DeliveryInfo::new(member.topic.clone(), member.subscription.clone(), r.partition, r.offset)
        .with_attempt(r.attempt)
        .with_published_at(Some(r.published_at));
    let settle = StreamSettle { member: member.clone(), partition: r.partition, offset: r.offset };
    backend::delivery(r.message, info, Box::new(settle))
}

#[async_trait::async_trait]
impl DeliverySource for StreamSource {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            let member = self.member.clone()?;
            let changed = member.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(r) = member.redeliver.lock().pop_front() {
                return Some(Ok(wrap(&member, r)));
            }
            let unsettled = *member.unsettled.lock();
            if unsettled >= self.prefetch {
                // Back-pressure: wait for a settlement before handing out more.
                changed.await;
                continue;
            }
            if let Some(d) = self.buffer.pop_front() {
                member.commits.lock().await.entry(d.partition).or_default().delivered(d.offset);
                *member.unsettled.lock() += 1;
                let r = Ready {
                    message: d.message,
                    partition: d.partition,
                    offset: d.offset,
                    published_at: d.published_at,
                    attempt: 1,
                };
                return Some(Ok(wrap(&member, r)));
            }
            let want = (self.prefetch - unsettled).clamp(1, 256);
            let consumer = member.consumer.lock().clone()?;
            tokio::select! {
                got = consumer.receive(want, POLL) => match got {
                    Ok(got) => self.buffer.extend(got),
                    Err(switchboard_broker::BrokerError::Closed) => {
                        self.member = None;
                        return None;
                    }
                    Err(e) => return Some(Err(to_bus(e))),
                },
                _ = changed => {}
            }
        }
    }

    async fn close(&mut self) -> Result<(), BusError> {
        // Unsettled deliveries stay uncommitted and are read again by the next member.
        if let Some(member) = self.member.take() {
            member.consumer.lock().take();
        }
        self.buffer.clear();
        Ok(())
    }
}

struct StreamSettle {
    member: Arc<Member>,
    partition: u32,
    offset: u64,
}

impl StreamSettle {
    fn settled(&self) {
        let mut n = self.member.unsettled.lock();
        *n = n.saturating_sub(1);
        drop(n);
        self.member.changed.notify_waiters();
    }

    /// Reads the message back from the log and queues it for this member again.
    async fn redeliver(member: Arc<Member>, partition: u32, offset: u64, delay: Duration) {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let attempt = {
            let mut attempts = member.attempts.lock();
            let a = attempts.entry((partition, offset)).or_insert(1);
            *a += 1;
            *a
        };
        match member.broker.read(&member.topic, partition, offset, 1) {
            Ok(records) => {
                if let Some(rec) = records.into_iter().find(|r| r.offset == offset) {
                    member.redeliver.lock().push_back(Ready {
                        message: rec.message,
                        partition,
                        offset,
                        published_at: rec.published_at,
                        attempt,
                    });
                    // Counted as unsettled again until it is settled.
                    *member.unsettled.lock() += 1;
                }
            }
            Err(e) => tracing::warn!(topic = %member.topic, partition, offset, error = %e,
                "Could not read a nacked message back; it is replayed after a restart."),
        }
        member.changed.notify_waiters();
    }
}

#[async_trait::async_trait]
impl Settle for StreamSettle {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        let result = {
            let mut commits = self.member.commits.lock().await;
            match commits.get_mut(&self.partition).and_then(|c| c.acked(self.offset)) {
                Some(point) => {
                    let consumer = self.member.consumer.lock().clone();
                    match consumer {
                        Some(c) => c.commit(self.partition, point).await.map_err(to_bus),
                        None => Err(BusError::lease_lost(
                            LeaseLostCause::SubscriptionClosed,
                            "the offset is not committed",
                        )),
                    }
                }
                None => Ok(()),
            }
        };
        self.member.attempts.lock().remove(&(self.partition, self.offset));
        self.settled();
        result
    }

    async fn nack(self: Box<Self>, nack: Nack) -> Result<(), BusError> {
        self.settled();
        let member = self.member.clone();
        tokio::spawn(StreamSettle::redeliver(member, self.partition, self.offset, nack.delay));
        Ok(())
    }

    async fn extend(&self, _by: Duration) -> Result<(), BusError> {
        // Stream deliveries have no lease: they stay uncommitted until acked.
        Ok(())
    }

    fn abandon(self: Box<Self>) {
        self.settled();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(StreamSettle::redeliver(
                self.member.clone(),
                self.partition,
                self.offset,
                Duration::ZERO,
            ));
        }
    }
}

impl Drop for StreamSource {
    fn drop(&mut self) {
        if let Some(member) = self.member.take() {
            member.consumer.lock().take();
        }
    }
}
