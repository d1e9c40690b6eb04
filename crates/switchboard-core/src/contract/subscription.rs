//! Subscribing: the spec of a subscription and the handle that yields its deliveries.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;

use crate::SubscriptionName;
use crate::TopicName;

use super::{BusError, Delivery};

/// How the messages of a topic reach the members of one subscription.
///
/// Exhaustive on purpose, unlike the contract's other enums: every backend must handle
/// every mode, so a new mode should fail to compile in each backend rather than fall into a
/// wildcard arm that treats it as an old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Competing consumers: each message goes to one member; acked messages are gone for
    /// this subscription; nacked or expired ones come back.
    Queue,
    /// A replayable log: every message in order per partition; an ack commits its offset.
    Stream,
}

/// Where a new subscription starts. An existing subscription resumes where it left off.
///
/// Exhaustive for the same reason as [`Mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The oldest retained message (needs
    /// [`Capability::ReplayFromStart`](super::Capability::ReplayFromStart)).
    Earliest,
    /// Messages published after the subscription is created.
    Latest,
}

/// A named subscription on a topic and its settings. Opening a subscription that exists
/// joins it (as another competing consumer, or group member); its settings must match.
///
/// Built with [`SubscriptionSpec::queue`] or [`SubscriptionSpec::stream`] and the `with_*`
/// methods; fields are public to read, and new settings arrive as new `with_*` methods.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// The subscription's name, unique per topic.
    pub name: SubscriptionName,
    /// Queue or stream.
    pub mode: Mode,
    /// Where a new subscription starts.
    pub start: Start,
    /// Queue mode: how long a delivery may stay unsettled before it is delivered again.
    pub lease: Duration,
    /// Queue mode: deliveries before a message is dead-lettered; `None`: never.
    pub max_deliveries: Option<u32>,
    /// Queue mode: where dead letters go; `None`: `<topic>.<subscription>.dlq`.
    pub dead_letter_topic: Option<TopicName>,
    /// Queue mode: at most one message per partition key in flight (needs
    /// [`Capability::PerKeyOrder`](super::Capability::PerKeyOrder)).
    pub ordered_by_key: bool,
    /// Deliveries this member holds unsettled at most (back-pressure).
    pub prefetch: u32,
}

impl SubscriptionSpec {
    /// A queue subscription with defaults: start at the earliest message, 30 s lease,
    /// 10 deliveries, prefetch 64.
    pub fn queue(name: SubscriptionName) -> SubscriptionSpec {
        SubscriptionSpec {
            name,
            mode: Mode::Queue,
            start: Start::Earliest,
            lease: Duration::from_secs(30),
            max_deliveries: Some(10),
            dead_letter_topic: None,
            ordered_by_key: false,
            prefetch: 64,
        }
    }

    /// A stream subscription starting at the earliest message, prefetch 256.
    pub fn stream(name: SubscriptionName) -> SubscriptionSpec {
        SubscriptionSpec {
            mode: Mode::Stream,
            max_deliveries: None,
            prefetch: 256,
            ..SubscriptionSpec::queue(name)
        }
    }

    /// Sets where a new subscription starts.
    #[must_use]
    pub fn with_start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// Sets the lease.
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the deliveries before dead-lettering.
    #[must_use]
    pub fn with_max_deliveries(mut self, max: Option<u32>) -> Self {
        self.max_deliveries = max;
        self
    }

    /// Sets the dead-letter topic.
    #[must_use]
    pub fn with_dead_letter_topic(mut self, topic: TopicName) -> Self {
        self.dead_letter_topic = Some(topic);
        self
    }

    /// Keeps one message per key in flight.
    #[must_use]
    pub fn with_ordered_by_key(mut self, on: bool) -> Self {
        self.ordered_by_key = on;
        self
    }

    /// Sets the prefetch (unsettled deliveries per member).
    #[must_use]
    pub fn with_prefetch(mut self, n: u32) -> Self {
        self.prefetch = n;
        self
    }

    /// The dead-letter topic of a queue subscription with `max_deliveries`, or `None`.
    ///
    /// # Errors
    /// [`BusError::InvalidArgument`] when the default name would be too long or the topic
    /// is its own dead-letter topic.
    pub fn dead_letter_topic_for(&self, topic: &TopicName) -> Result<Option<TopicName>, BusError> {
        if self.mode != Mode::Queue || self.max_deliveries.is_none() {
            return Ok(None);
        }
        let dlq = match &self.dead_letter_topic {
            Some(d) => d.clone(),
            None => super::default_dead_letter_topic(topic, &self.name).map_err(|e| {
                BusError::InvalidArgument(format!(
                    "the default dead-letter topic name is invalid ({e}); set dead_letter_topic"
                ))
            })?,
        };
        if dlq == *topic {
            return Err(BusError::InvalidArgument("a topic cannot be its own dead-letter topic".into()));
        }
        Ok(Some(dlq))
    }

    /// Checks the values are in range.
    ///
    /// # Errors
    /// [`BusError::InvalidArgument`] naming the value.
    pub fn validate(&self) -> Result<(), BusError> {
        if self.lease < Duration::from_millis(1) {
            return Err(BusError::InvalidArgument("lease must be at least 1 ms".into()));
        }
        if self.max_deliveries == Some(0) {
            return Err(BusError::InvalidArgument("max_deliveries must be at least 1".into()));
        }
        if self.prefetch == 0 {
            return Err(BusError::InvalidArgument("prefetch must be at least 1".into()));
        }
        if self.mode == Mode::Stream && self.ordered_by_key {
            return Err(BusError::InvalidArgument(
                "ordered_by_key applies to queue subscriptions; streams are ordered per partition".into(),
            ));
        }
        Ok(())
    }
}

/// Counts for a subscription, as far as the backend reports them.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// Messages not yet acked (queue) or committed (stream).
    pub backlog: u64,
    /// Deliveries handed out and not yet settled.
    pub in_flight: u64,
    /// Distance from the oldest unfinished message to the newest.
    pub lag: u64,
    /// Messages moved to the dead-letter topic so far, if the backend counts them.
    pub dead_lettered: Option<u64>,
}

impl SubscriptionStats {
    /// Backlog, in-flight and lag; no dead-letter count.
    pub fn new(backlog: u64, in_flight: u64, lag: u64) -> SubscriptionStats {
        SubscriptionStats { backlog, in_flight, lag, dead_lettered: None }
    }

    /// Sets the count of messages moved to the dead-letter topic.
    #[must_use]
    pub fn with_dead_lettered(mut self, dead_lettered: Option<u64>) -> SubscriptionStats {
        self.dead_lettered = dead_lettered;
        self
    }
}

/// The backend's side of an open subscription (see [`crate::backend`]).
#[async_trait::async_trait]
pub trait DeliverySource: Send + 'static {
    /// The next delivery; waits while none is available. `None` once closed.
    async fn next(&mut self) -> Option<Result<Delivery, BusError>>;
    /// Stops receiving. Deliveries already handed out can still be settled where the
    /// backend allows; unsettled ones are redelivered.
    async fn close(&mut self) -> Result<(), BusError>;
}

/// What a receive in progress hands back: the source, and the delivery (`None`: the receive
/// was cancelled by [`Subscription::close`]).
type Receiving = Pin<
    Box<dyn Future<Output = (Box<dyn DeliverySource>, Option<Option<Result<Delivery, BusError>>>)> + Send>,
>;

enum Source {
    Idle(Box<dyn DeliverySource>),
    /// A receive in progress owns the source until it finishes, so a `Stream` poll that
    /// returns `Pending` loses nothing and the next poll continues the same receive.
    Receiving(Receiving),
    Closed,
}

/// Asks a receive in progress to give the source back (for `close`).
#[derive(Default)]
struct Cancel {
    requested: AtomicBool,
    waker: AtomicWaker,
}

/// One receive from `source`, ending early once `cancel` is requested. Ending early is safe
/// because [`DeliverySource::next`] is cancel-safe: a dropped receive loses no message.
async fn receive(
    mut source: Box<dyn DeliverySource>,
    cancel: Arc<Cancel>,
) -> (Box<dyn DeliverySource>, Option<Option<Result<Delivery, BusError>>>) {
    let item = {
        let mut next = source.next();
        std::future::poll_fn(|cx| {
            if let Poll::Ready(item) = next.as_mut().poll(cx) {
                return Poll::Ready(Some(item));
            }
            cancel.waker.register(cx.waker());
            if cancel.requested.load(Ordering::Acquire) { Poll::Ready(None) } else { Poll::Pending }
        })
        .await
    };
    (source, item)
}

/// An open subscription: call [`next`](Subscription::next), or use it as a
/// [`Stream`](futures::Stream) of deliveries.
///
/// ```
/// # async fn run(mut sub: switchboard_core::contract::Subscription) -> Result<(), switchboard_core::contract::BusError> {
/// use futures::StreamExt;
///
/// let mut batch = (&mut sub).take(10);
/// while let Some(delivery) = batch.next().await {
///     delivery?.ack().await?;
/// }
/// sub.close().await
/// # }
/// ```
pub struct Subscription {
    topic: TopicName,
    spec: SubscriptionSpec,
    source: Source,
    cancel: Arc<Cancel>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("topic", &self.topic).field("spec", &self.spec).finish()
    }
}

impl Subscription {
    /// Built by backends, through [`crate::backend::subscription`].
    pub(crate) fn new(
        topic: TopicName,
        spec: SubscriptionSpec,
        source: Box<dyn DeliverySource>,
    ) -> Subscription {
        Subscription { topic, spec, source: Source::Idle(source), cancel: Arc::default() }
    }

    /// The topic.
    pub fn topic(&self) -> &TopicName {
        &self.topic
    }

    /// The settings it was opened with.
    pub fn spec(&self) -> &SubscriptionSpec {
        &self.spec
    }

    /// The next delivery, waiting while none is available; `None` once closed. Cancel-safe:
    /// dropping the future loses no message (the receive continues on the next call).
    pub async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        std::future::poll_fn(|cx| self.poll_receive(cx)).await
    }

    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Delivery, BusError>>> {
        loop {
            match std::mem::replace(&mut self.source, Source::Closed) {
                Source::Idle(source) => {
                    self.source = Source::Receiving(Box::pin(receive(source, self.cancel.clone())));
                }
                Source::Receiving(mut receiving) => match receiving.as_mut().poll(cx) {
                    Poll::Ready((source, item)) => {
                        self.source = Source::Idle(source);
                        // Only `close` cancels, and it consumes the subscription first.
                        if let Some(item) = item {
                            return Poll::Ready(item);
                        }
                    }
                    Poll::Pending => {
                        self.source = Source::Receiving(receiving);
                        return Poll::Pending;
                    }
                },
                Source::Closed => return Poll::Ready(None),
            }
        }
    }

    /// Stops receiving. A receive in progress is ended first (a delivery it already got is
    /// handed back), so the backend's own close always runs.
    ///
    /// # Errors
    /// A backend error while detaching; unsettled deliveries are redelivered regardless.
    pub async fn close(mut self) -> Result<(), BusError> {
        let mut source = match std::mem::replace(&mut self.source, Source::Closed) {
            Source::Idle(source) => source,
            Source::Receiving(receiving) => {
                self.cancel.requested.store(true, Ordering::Release);
                self.cancel.waker.wake();
                let (source, item) = receiving.await;
                drop(item);
                source
            }
            Source::Closed => return Ok(()),
        };
        source.close().await
    }
}

impl futures::Stream for Subscription {
    type Item = Result<Delivery, BusError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_receive(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::StreamExt;
    use tokio::sync::mpsc;

    use super::*;
    use crate::contract::{DeliveryInfo, Nack};
    use crate::{Message, SubscriptionName};

    struct NoSettle;

    #[async_trait::async_trait]
    impl super::super::delivery::Settle for NoSettle {
        async fn ack(self: Box<Self>) -> Result<(), BusError> {
            Ok(())
        }
        async fn nack(self: Box<Self>, _: Nack) -> Result<(), BusError> {
            Ok(())
        }
        async fn extend(&self, _: Duration) -> Result<(), BusError> {
            Ok(())
        }
        fn abandon(self: Box<Self>) {}
    }

    /// Hands out what the test sends; counts receives started and closes.
    struct Source {
        rx: mpsc::UnboundedReceiver<u64>,
        receives: Arc<AtomicUsize>,
        closed: Arc<AtomicBool>,
    }

    #[async_trait::async_trait]
    impl DeliverySource for Source {
        async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
            self.receives.fetch_add(1, Ordering::SeqCst);
            let offset = self.rx.recv().await?;
            let info =
                DeliveryInfo::new(TopicName::from_static("t"), SubscriptionName::from_static("s"), 0, offset);
            Some(Ok(Delivery::new(Message::new("/t", "t", "x"), info, Box::new(NoSettle))))
        }
        async fn close(&mut self) -> Result<(), BusError> {
            self.closed.store(true, Ordering::SeqCst);
            Ok(())
        }
    }

    fn subscription() -> (Subscription, mpsc::UnboundedSender<u64>, Arc<AtomicUsize>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (receives, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let source = Source { rx, receives: receives.clone(), closed: closed.clone() };
        let spec = SubscriptionSpec::queue(SubscriptionName::from_static("s"));
        (Subscription::new(TopicName::from_static("t"), spec, Box::new(source)), tx, receives, closed)
    }

    fn offset(item: Option<Result<Delivery, BusError>>) -> u64 {
        item.expect("open").expect("a delivery").info().offset
    }

    #[tokio::test]
    async fn a_subscription_is_a_stream_of_its_deliveries() {
        let (mut sub, tx, _, _) = subscription();
        for n in 0..3 {
            tx.send(n).expect("open");
        }
        let got: Vec<u64> = (&mut sub).take(3).map(|d| offset(Some(d))).collect().await;
        assert_eq!(got, [0, 1, 2]);
        drop(tx);
        assert!(sub.next().await.is_none(), "the source ended");
    }

    #[tokio::test]
    async fn an_abandoned_next_is_continued_not_restarted() {
        let (mut sub, tx, receives, _) = subscription();
        // Polled once and dropped (a `select!` that took the other branch).
        assert!(futures::poll!(Box::pin(sub.next())).is_pending());
        tx.send(7).expect("open");
        assert_eq!(offset(sub.next().await), 7);
        assert_eq!(receives.load(Ordering::SeqCst), 1, "one receive, continued");
    }

    #[tokio::test]
    async fn close_during_a_pending_receive_still_closes_the_source() {
        let (mut sub, _tx, _, closed) = subscription();
        assert!(futures::poll!(Box::pin(sub.next())).is_pending());
        sub.close().await.expect("close");
        assert!(closed.load(Ordering::SeqCst), "the backend's own close ran");
    }
}
