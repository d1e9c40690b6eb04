//! Queue subscriptions on the embedded broker: a competing consumer and its settlements.

use std::collections::VecDeque;
use std::time::Duration;

use switchboard_broker::{Broker, QueueConsumer, Receipt};
use switchboard_core::backend::{self, DeliverySource, Settle};
use switchboard_core::contract::{BusError, Delivery, DeliveryInfo, Nack};
use switchboard_core::{SubscriptionName, TopicName};

use super::errors::to_bus;

/// How long one receive call waits before checking for close; any value works, since a
/// publish wakes the receive at once.
const POLL: Duration = Duration::from_secs(5);

/// Identifies the subscription a settlement goes to.
#[derive(Clone)]
struct Target {
    broker: Broker,
    topic: TopicName,
    subscription: SubscriptionName,
}

pub(crate) struct QueueSource {
    target: Target,
    consumer: Option<QueueConsumer>,
    buffer: VecDeque<switchboard_broker::BrokerDelivery>,
    prefetch: usize,
}

impl QueueSource {
    pub(crate) fn new(
        broker: Broker,
        topic: TopicName,
        subscription: SubscriptionName,
        prefetch: u32,
    ) -> Result<QueueSource, BusError> {
        let mut consumer = broker.queue_consumer(&topic, &subscription).map_err(to_bus)?;
        consumer.set_max_in_flight(prefetch as usize);
        Ok(QueueSource {
            target: Target { broker, topic, subscription },
            consumer: Some(consumer),
            buffer: VecDeque::new(),
            prefetch: prefetch as usize,
        })
    }

    fn wrap(&self, d: switchboard_broker::BrokerDelivery) -> Result<Delivery, BusError> {
        let info = DeliveryInfo::new(d.topic, d.subscription, d.partition, d.offset)
            .with_attempt(d.attempt)
            .with_published_at(Some(d.published_at));
        let receipt = d.receipt.ok_or_else(|| BusError::Backend {
            backend: super::errors::BACKEND,
            message: "a queue delivery came without a receipt".into(),
            retryable: false,
            source: None,
        })?;
        Ok(backend::delivery(d.message, info, Box::new(QueueSettle { target: self.target.clone(), receipt })))
    }

    /// Hands buffered, not yet handed-out deliveries straight back.
    fn release_buffer(&mut self) {
        let receipts: Vec<Receipt> = self.buffer.drain(..).filter_map(|d| d.receipt).collect();
        if receipts.is_empty() {
            return;
        }
        let t = self.target.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for r in receipts {
                    let _ = t.broker.nack(&t.topic, &t.subscription, &r, Duration::ZERO, None).await;
                }
            });
        }
    }
}

#[async_trait::async_trait]
impl DeliverySource for QueueSource {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            if let Some(d) = self.buffer.pop_front() {
                return Some(self.wrap(d));
            }
            let consumer = self.consumer.as_ref()?;
            // Cancel-safe: the broker hands out deliveries without an await after choosing
            // them, so a dropped receive loses nothing.
            match consumer.receive(self.prefetch, POLL).await {
                Ok(got) => self.buffer.extend(got),
                Err(switchboard_broker::BrokerError::Closed) => {
                    self.consumer = None;
                    return None;
                }
                Err(e) => return Some(Err(to_bus(e))),
            }
        }
    }

    async fn close(&mut self) -> Result<(), BusError> {
        self.release_buffer();
        self.consumer = None;
        Ok(())
    }
}

impl Drop for QueueSource {
    fn drop(&mut self) {
        self.release_buffer();
    }
}

struct QueueSettle {
    target: Target,
    receipt: Receipt,
}

#[async_trait::async_trait]
impl Settle for QueueSettle {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        let t = &self.target;
        let mut outcomes = t
            .broker
            .ack(&t.topic, &t.subscription, std::slice::from_ref(&self.receipt))
            .await
            .map_err(to_bus)?;
        outcomes.pop().unwrap_or(Ok(())).map_err(to_bus)
    }

    async fn nack(self: Box<Self>, nack: Nack) -> Result<(), BusError> {
        let t = &self.target;
        t.broker.nack(&t.topic, &t.subscription, &self.receipt, nack.delay, nack.error).await.map_err(to_bus)
    }

    async fn extend(&self, by: Duration) -> Result<(), BusError> {
        let t = &self.target;
        t.broker.extend(&t.topic, &t.subscription, &self.receipt, by).map(|_| ()).map_err(to_bus)
    }

    fn abandon(self: Box<Self>) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let t = &self.target;
                let _ = t.broker.nack(&t.topic, &t.subscription, &self.receipt, Duration::ZERO, None).await;
            });
        }
        // Without a runtime the lease runs out and the message is delivered again.
    }
}
