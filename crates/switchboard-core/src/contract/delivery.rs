//! One message handed to a consumer, and the exactly-once settlement of it.

use std::time::Duration;

use crate::{Message, SubscriptionName, Timestamp, TopicName};

use super::BusError;

/// Where a delivery came from and how often it was delivered.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryInfo {
    /// The topic it was published to.
    pub topic: TopicName,
    /// The subscription it came through.
    pub subscription: SubscriptionName,
    /// Its partition (0 on backends without partitions).
    pub partition: u32,
    /// Its position in the partition (the stream sequence on NATS, the stream offset or
    /// delivery tag on RabbitMQ). Increases with publish order within a partition.
    pub offset: u64,
    /// 1 for the first delivery, 2 for the first redelivery, …
    pub attempt: u32,
    /// When the broker stored it, if the backend says.
    pub published_at: Option<Timestamp>,
}

impl DeliveryInfo {
    /// The first delivery (attempt 1) of the message at `offset` of `partition`, with no
    /// publish time; set the rest with the `with_*` methods.
    pub fn new(
        topic: TopicName,
        subscription: SubscriptionName,
        partition: u32,
        offset: u64,
    ) -> DeliveryInfo {
        DeliveryInfo { topic, subscription, partition, offset, attempt: 1, published_at: None }
    }

    /// Sets the attempt number (1 for the first delivery).
    #[must_use]
    pub fn with_attempt(mut self, attempt: u32) -> DeliveryInfo {
        self.attempt = attempt;
        self
    }

    /// Sets when the broker stored the message.
    #[must_use]
    pub fn with_published_at(mut self, at: Option<Timestamp>) -> DeliveryInfo {
        self.published_at = at;
        self
    }
}

/// How a nack asks for the message back.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Nack {
    /// Redeliver after this long (zero: at once). Needs
    /// [`Capability::NackDelay`](super::Capability::NackDelay) when non-zero.
    pub delay: Duration,
    /// Why processing failed; kept as `dlerror` if the message is dead-lettered.
    pub error: Option<String>,
}

impl Nack {
    /// Redeliver at once.
    pub fn now() -> Nack {
        Nack::default()
    }

    /// Redeliver after `delay`.
    pub fn after(delay: Duration) -> Nack {
        Nack { delay, error: None }
    }

    /// Records why processing failed.
    #[must_use]
    pub fn with_error(mut self, error: impl Into<String>) -> Nack {
        self.error = Some(error.into());
        self
    }
}

/// The backend's side of a delivery: how it is acked, nacked or extended.
///
/// Implemented by backends (see [`crate::backend`]), called only through [`Delivery`], which
/// guarantees that exactly one of `ack`, `nack` or `abandon` is called, once.
#[async_trait::async_trait]
pub trait Settle: Send + Sync + 'static {
    /// The message is done (queue: removed for this subscription; stream: its offset
    /// committed).
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
    /// The message was not processed; deliver it again (or dead-letter it once it has used
    /// up its deliveries).
    async fn nack(self: Box<Self>, nack: Nack) -> Result<(), BusError>;
    /// Queue mode: keep the lease for `by` more from now.
    async fn extend(&self, by: Duration) -> Result<(), BusError>;
    /// The delivery was dropped unsettled (a handler task was cancelled). Must not block:
    /// hand the message back (a nack without delay) in the background, or let the lease
    /// run out.
    fn abandon(self: Box<Self>);
}

/// One message handed to a consumer. Settle it with [`ack`](Delivery::ack) or
/// [`nack`](Delivery::nack); both take the delivery by value, so it cannot be settled twice.
/// A delivery dropped without either is handed back to the broker for redelivery.
pub struct Delivery {
    message: Message,
    info: DeliveryInfo,
    settled: Settled,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").field("info", &self.info).field("message", &self.message).finish()
    }
}

impl Delivery {
    /// Built by backends, through [`crate::backend::delivery`].
    pub(crate) fn new(message: Message, info: DeliveryInfo, settle: Box<dyn Settle>) -> Delivery {
        Delivery { message, info, settled: Settled { settle: Some(settle) } }
    }

    /// The message as published.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Where it came from and which attempt this is.
    pub fn info(&self) -> &DeliveryInfo {
        &self.info
    }

    /// Splits the delivery into its parts; the [`Settled`] handle still settles exactly once.
    pub fn into_parts(self) -> (Message, DeliveryInfo, Settled) {
        (self.message, self.info, self.settled)
    }

    /// Marks the message done.
    ///
    /// # Errors
    /// [`BusError::LeaseLost`] when the lease ran out first (the message will be delivered
    /// again), or a backend error; either way the message is not lost.
    pub async fn ack(self) -> Result<(), BusError> {
        self.settled.ack().await
    }

    /// Hands the message back for redelivery (or dead-lettering once it has used up its
    /// deliveries).
    ///
    /// # Errors
    /// [`BusError::Unsupported`] for a delay on a backend without
    /// [`nack_delay`](super::Capability::NackDelay); otherwise as [`Delivery::ack`].
    pub async fn nack(self, nack: Nack) -> Result<(), BusError> {
        self.settled.nack(nack).await
    }

    /// Queue mode: keeps the lease `by` longer from now, for slow handlers.
    ///
    /// # Errors
    /// [`BusError::Unsupported`] without
    /// [`lease_extension`](super::Capability::LeaseExtension), or as [`Delivery::ack`].
    pub async fn extend(&self, by: Duration) -> Result<(), BusError> {
        self.settled.extend(by).await
    }
}

/// The settlement half of a [`Delivery`] split by [`Delivery::into_parts`]; same rules: it
/// settles once, and dropping it unsettled hands the message back.
pub struct Settled {
    settle: Option<Box<dyn Settle>>,
}

impl Settled {
    /// See [`Delivery::ack`].
    ///
    /// # Errors
    /// As [`Delivery::ack`].
    pub async fn ack(mut self) -> Result<(), BusError> {
        match self.settle.take() {
            Some(s) => s.ack().await,
            None => Err(BusError::Closed),
        }
    }

    /// See [`Delivery::nack`].
    ///
    /// # Errors
    /// As [`Delivery::nack`].
    pub async fn nack(mut self, nack: Nack) -> Result<(), BusError> {
        match self.settle.take() {
            Some(s) => s.nack(nack).await,
            None => Err(BusError::Closed),
        }
    }

    /// See [`Delivery::extend`].
    ///
    /// # Errors
    /// As [`Delivery::extend`].
    pub async fn extend(&self, by: Duration) -> Result<(), BusError> {
        match &self.settle {
            Some(s) => s.extend(by).await,
            None => Err(BusError::Closed),
        }
    }
}

impl Drop for Settled {
    fn drop(&mut self) {
        if let Some(s) = self.settle.take() {
            s.abandon();
        }
    }
}
