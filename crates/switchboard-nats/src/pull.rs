//! The pulling side of a queue subscription: one background task per member that long-polls
//! the durable consumer and hands deliveries to [`Subscription::next`](switchboard_core::contract::Subscription::next).
//!
//! Back-pressure: a member holds at most `prefetch` messages it has pulled and not settled
//! (buffered or handed out). Each pulled message takes a permit of a semaphore of that
//! size, released when the delivery is settled or dropped, and the task asks the server for
//! only as many messages as it has permits. (JetStream starts the lease, `AckWait`, when it
//! sends a message, so a buffered message's lease runs while it waits in the buffer, as
//! with any prefetching broker.)
//!
//! Resilience: pull requests expire after [`PULL_EXPIRES`] and are renewed, so a request
//! lost in a server restart is replaced within `PULL_EXPIRES` + 5 s (the client's grace).
//! Errors are logged and retried with jittered exponential backoff (`Reconnect`: 100 ms
//! doubling to [`MAX_BACKOFF`]), so a subscription survives server restarts. Only a deleted
//! consumer or stream ends it, with [`BusError::NotFound`].
//!
//! Closing: the member stops asking for messages, hands back (nacks) what it buffered, and
//! reads its last pull request to the end, nacking what it still brings: NATS 2.9 keeps
//! sending to a pull request until it expires even when nobody listens, and messages sent
//! there would otherwise wait out a whole lease. `close` waits for that (≤ `PULL_EXPIRES`);
//! a dropped subscription does it in the background.
//!
//! Dead letters on receipt: a queue message delivered more than `max_deliveries` times had
//! its lease run out on its last attempt (the consumer died or stalled); the task
//! dead-letters it (reason `lease expired`) instead of handing it out. See
//! [`crate::dead_letter`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use futures::StreamExt;
use parking_lot::Mutex;
use switchboard_core::backend::DeliverySource;
use switchboard_core::contract::{BusError, DeadLetterReason, Delivery, DeliveryInfo, SubscriptionSpec};
use switchboard_core::{Message, SubscriptionName, Timestamp, TopicName};
use switchboard_policy::Reconnect;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::backend::Inner;
use crate::settle::NatsSettle;

/// How long one pull request waits on the server for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// Most messages asked for in one pull request.
const MAX_BATCH: usize = 256;
/// The longest wait before pulling again after an error. The waits are jittered
/// ([`Reconnect`]): a server restart breaks the pulls of every subscription of every client
/// at once, and without jitter they would all retry in the same instants.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// When dead-lettering fails, the message comes back after this long for another try.
pub(crate) const DEAD_LETTER_RETRY: Duration = Duration::from_secs(1);

/// What every delivery of one subscription member shares.
pub(crate) struct SubShared {
    pub(crate) inner: Arc<Inner>,
    pub(crate) topic: TopicName,
    pub(crate) name: SubscriptionName,
    pub(crate) lease: Duration,
    pub(crate) max_deliveries: Option<u32>,
    pub(crate) dead_letter_topic: Option<TopicName>,
    /// Stream sequences whose last nack could not be dead-lettered (publish failed), with
    /// the nack's error, so the retry keeps reason `nacked`.
    pub(crate) nacked: Mutex<HashMap<u64, Option<String>>>,
}

impl SubShared {
    pub(crate) fn new(
        inner: Arc<Inner>,
        topic: TopicName,
        spec: &SubscriptionSpec,
        dead_letter_topic: Option<TopicName>,
    ) -> Arc<SubShared> {
        Arc::new(SubShared {
            inner,
            topic,
            name: spec.name.clone(),
            lease: spec.lease,
            max_deliveries: if dead_letter_topic.is_some() { spec.max_deliveries } else { None },
            dead_letter_topic,
            nacked: Mutex::new(HashMap::new()),
        })
    }
}

/// The [`DeliverySource`] of one member.
pub(crate) struct Source {
    rx: mpsc::Receiver<Result<Delivery, BusError>>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// Starts the pull task of a new member.
pub(crate) fn start(sub: Arc<SubShared>, consumer: PullConsumer, prefetch: u32) -> Source {
    let prefetch = usize::try_from(prefetch).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
    let (tx, rx) = mpsc::channel(prefetch.clamp(1, 4096));
    let (stop, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(prefetch));
    let task = tokio::spawn(run(sub, consumer, tx, permits, stop_rx));
    Source { rx, stop, task: Some(task) }
}

#[async_trait::async_trait]
impl DeliverySource for Source {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        self.rx.recv().await
    }

    async fn close(&mut self) -> Result<(), BusError> {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            // The task hands back what its last pull request still brings (≤ PULL_EXPIRES).
            let _ = tokio::time::timeout(PULL_EXPIRES + Duration::from_secs(2), task).await;
        }
        // Buffered deliveries were never handed out: dropping them nacks them at once.
        self.rx.close();
        while self.rx.try_recv().is_ok() {}
        Ok(())
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Resolves once the member is closed (or dropped) or the backend is closed.
async fn stopped(stop: &mut watch::Receiver<bool>, closed: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = stop.wait_for(|v| *v) => {}
        _ = closed.wait_for(|v| *v) => {}
    }
}

/// Sleeps for `d` unless stopped first; false when stopped.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>, closed: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stopped(stop, closed) => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// The pull loop of one member.
async fn run(
    sub: Arc<SubShared>,
    consumer: PullConsumer,
    tx: mpsc::Sender<Result<Delivery, BusError>>,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut closed = sub.inner.closed.subscribe();
    let mut reconnect = Reconnect::up_to(MAX_BACKOFF);
    'pull: loop {
        let first = tokio::select! {
            biased;
            _ = stopped(&mut stop, &mut closed) => break,
            _ = tx.closed() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let mut held = vec![first];
        while held.len() < MAX_BATCH {
            match permits.clone().try_acquire_owned() {
                Ok(p) => held.push(p),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let request = consumer.batch().max_messages(held.len()).expires(PULL_EXPIRES).messages();
        // Not cancelled by a stop: a request sent and then abandoned would keep receiving.
        let mut batch = match request.await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(topic = %sub.topic, subscription = %sub.name, error = %e, "pull request failed");
                if !pause(reconnect.next_delay(), &mut stop, &mut closed).await {
                    break;
                }
                continue;
            }
        };
        let mut received = 0usize;
        loop {
            let item = tokio::select! {
                _ = stopped(&mut stop, &mut closed) => {
                    drain(&sub, batch).await;
                    break 'pull;
                }
                m = batch.next() => m,
            };
            match item {
                None => break,
                Some(Ok(m)) => {
                    received += 1;
                    reconnect.reset();
                    let permit = held.pop();
                    if !handle(&sub, &tx, m, permit).await {
                        drain(&sub, batch).await;
                        break 'pull;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(topic = %sub.topic, subscription = %sub.name, error = %e, "pull failed");
                    if let Some(gone) = gone(&sub, &consumer).await {
                        let _ = tx.send(Err(gone)).await;
                        break 'pull;
                    }
                    if !pause(reconnect.next_delay(), &mut stop, &mut closed).await {
                        break 'pull;
                    }
                    break;
                }
            }
        }
        drop(held);
        // A request that ended early and empty (server trouble) must not spin.
        if received == 0
            && started.elapsed() < PULL_EXPIRES / 2
            && !pause(reconnect.next_delay(), &mut stop, &mut closed).await
        {
            break;
        }
    }
}

/// After a stop: the pending pull request stays on the server until it expires, and the
/// server keeps sending to it (2.9 does not notice that nobody listens), so read it to its
/// end and hand every message straight back. Skipped when the whole backend is closing.
async fn drain(sub: &SubShared, mut batch: async_nats::jetstream::consumer::pull::Batch) {
    if *sub.inner.closed.borrow() {
        return;
    }
    let until = tokio::time::Instant::now() + PULL_EXPIRES + Duration::from_secs(1);
    while let Ok(Some(item)) = tokio::time::timeout_at(until, batch.next()).await {
        if let Ok(m) = item {
            let _ = m.ack_with(AckKind::Nak(None)).await;
        }
    }
}

/// `Some(NotFound)` when the consumer or its stream no longer exists.
async fn gone(sub: &SubShared, consumer: &PullConsumer) -> Option<BusError> {
    let stream = sub.inner.js.get_stream_no_info(&consumer.cached_info().stream_name).await.ok()?;
    match stream.consumer_info(&consumer.cached_info().name).await {
        Err(e)
            if matches!(
                e.kind(),
                ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound
            ) =>
        {
            Some(BusError::subscription_not_found(&sub.topic, &sub.name))
        }
        _ => None,
    }
}

/// Turns one pulled message into a delivery (or a dead letter); false when the member is
/// gone.
async fn handle(
    sub: &Arc<SubShared>,
    tx: &mpsc::Sender<Result<Delivery, BusError>>,
    msg: async_nats::jetstream::Message,
    permit: Option<OwnedSemaphorePermit>,
) -> bool {
    let received = tokio::time::Instant::now();
    let (seq, delivered, published) = match msg.info() {
        Ok(i) => (i.stream_sequence, i.delivered, i.published),
        Err(e) => {
            tracing::warn!(topic = %sub.topic, error = %e, "ignoring a message without JetStream metadata");
            return true;
        }
    };
    let attempt = u32::try_from(delivered).unwrap_or(u32::MAX).max(1);
    let published_ms = u64::try_from(published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let (nats_msg, acker) = msg.split();
    let fallback_id = format!("{}-{seq}", crate::naming::stream_name(&sub.topic));
    let message = crate::headers::decode(
        nats_msg.headers.as_ref(),
        nats_msg.subject.as_str(),
        nats_msg.payload,
        fallback_id,
    );

    if let Some(max) = sub.max_deliveries
        && attempt > max
    {
        // Its lease ran out on the last allowed attempt (or dead-lettering failed before).
        let memo = sub.nacked.lock().remove(&seq);
        let reason = if memo.is_some() { DeadLetterReason::Nacked } else { DeadLetterReason::LeaseExpired };
        let error = memo.flatten();
        match crate::dead_letter::publish(sub, &message, reason, seq, max, error.clone()).await {
            Ok(()) => {
                if let Err(e) = acker.double_ack_with(AckKind::Term).await {
                    tracing::warn!(topic = %sub.topic, seq, error = %e, "dead-lettered, but terminating the original failed");
                }
            }
            Err(e) => {
                tracing::warn!(topic = %sub.topic, seq, error = %e, "dead-lettering failed; will retry");
                if reason == DeadLetterReason::Nacked {
                    sub.nacked.lock().insert(seq, error);
                }
                let _ = acker.ack_with(AckKind::Nak(Some(DEAD_LETTER_RETRY))).await;
            }
        }
        return true;
    }

    let info = DeliveryInfo::new(sub.topic.clone(), sub.name.clone(), 0, seq)
        .with_attempt(attempt)
        .with_published_at(Some(Timestamp(published_ms)));
    let original: Option<Message> = sub.max_deliveries.map(|_| message.clone());
    let settle = NatsSettle::new(sub.clone(), acker, original, seq, attempt, permit, received);
    let delivery = switchboard_core::backend::delivery(message, info, Box::new(settle));
    // A failed send drops the delivery, which nacks it.
    tx.send(Ok(delivery)).await.is_ok()
}
