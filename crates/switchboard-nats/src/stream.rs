//! Stream subscriptions: a log cursor read with an ephemeral ordered consumer.
//!
//! A stream subscription is a committed position (see [`crate::cursor`]) plus, while it is
//! open, a reader: an ephemeral pull consumer (`AckPolicy::None`, memory storage,
//! `DeliverPolicy::ByStartSequence` = the next sequence to read) that this member pulls from
//! as [`crate::pull`] does for queues (at most `prefetch` unsettled deliveries). Opening
//! always starts at the committed position, so a reopened subscription continues exactly
//! where its acks left off, in stream order, whatever happened to the deliveries it left
//! unsettled.
//!
//! - The reader checks that consumer sequences follow each other; a gap, a pull error or a
//!   vanished consumer (a server restart loses it; checked after every empty pull) makes it
//!   create a new consumer from the next sequence it has not read, so order holds across
//!   reconnects and restarts.
//! - ack: moves the commit point in memory up to the lowest unsettled delivery; the point is
//!   written shortly after (see [`crate::cursor`]).
//! - nack: the reader hands the message out again itself, after the nack's delay, with
//!   attempt + 1, before new messages (lowest sequence first among those due). Until it is
//!   acked, it holds the commit point below it, so a crash in between replays it.
//! - a delivery dropped unsettled: redelivered at once, as a nack without delay.
//! - extend: there is no lease on stream deliveries (a no-op that succeeds); a delivery may
//!   stay unsettled as long as needed.
//! - close: the reader stops and deletes its consumer, and the commit point is written.
//!   Deliveries still unsettled are not redelivered to anyone: the next reader reads them
//!   again from the committed position. They may still be acked, which commits.
//!
//! A deleted subscription ends its reader with [`BusError::NotFound`] (noticed on the next
//! commit write); so does a deleted topic (noticed when the reader needs a new consumer).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::{ErrorCode, stream};
use futures::StreamExt;
use parking_lot::Mutex;
use switchboard_core::backend::{DeliverySource, Settle};
use switchboard_core::contract::{
    BusError, Delivery, DeliveryInfo, Nack, Start, Subscription, SubscriptionSpec, SubscriptionStats,
};
use switchboard_core::{Message, SubscriptionName, Timestamp, TopicName};
use switchboard_policy::Reconnect;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::backend::Inner;
use crate::cursor::{self, Cursor, PutError, Record, Store};
use crate::errors::{js_retryable, map};
use crate::naming;

/// How long one pull request waits on the server for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// Most messages asked for in one pull request.
const MAX_BATCH: usize = 256;
/// The longest wait before pulling again after an error. The waits are jittered
/// ([`Reconnect`]): a server restart breaks the pulls of every subscription of every client
/// at once, and without jitter they would all retry in the same instants.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The server removes a reader's consumer after this long without a pull (a crashed
/// process); a live reader that stopped pulling (every prefetch slot held) makes a new one.
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(30);

/// Opens (creating if need be) the stream subscription `spec` on `topic`.
pub(crate) async fn subscribe(
    inner: &Arc<Inner>,
    topic: &TopicName,
    spec: SubscriptionSpec,
) -> Result<Subscription, BusError> {
    crate::publish::ensure_topic(inner, topic).await?;
    cursor::ensure_bucket(inner).await?;
    let stream_name = naming::stream_name(topic);
    let stream = inner
        .js
        .get_stream_no_info(&stream_name)
        .await
        .map_err(|e| map(&format!("opening the stream of topic {topic}"), e, true))?;
    let (revision, record) = open_cursor(inner, &stream, topic, &spec).await?;
    let next = record.next;
    let store = Store::new(inner.clone(), topic.clone(), spec.name.clone(), record, revision);
    let cursor = Cursor::start(store);
    let source = start(inner.clone(), cursor, stream_name, next, spec.prefetch);
    Ok(switchboard_core::backend::subscription(topic.clone(), spec, Box::new(source)))
}

/// Reads the subscription's cursor, creating it when the subscription is new; returns its
/// revision and record. A queue subscription of the same name is a conflict; a durable
/// consumer left by an older version of this backend (stream subscriptions used to be
/// durable consumers) is migrated: the cursor starts after its ack floor and the consumer is
/// deleted.
async fn open_cursor(
    inner: &Inner,
    stream: &stream::Stream<()>,
    topic: &TopicName,
    spec: &SubscriptionSpec,
) -> Result<(u64, Record), BusError> {
    let name = &spec.name;
    let subject = cursor::subject(topic, name);
    let conflict = |what: &str| BusError::subscription_conflict(topic, name, what);
    let state = stream.get_info().await.map_err(|e| map(&format!("reading topic {topic}"), e, true))?.state;
    for _ in 0..4 {
        let read = cursor::read(inner, &subject).await?;
        if let Some(mut record) = read.record {
            if record.mode != "stream" {
                return Err(conflict(&format!("it is a {} subscription, not a stream", record.mode)));
            }
            if record.next > state.last_sequence + 1 {
                // Past the end: the topic's stream was deleted and created again.
                tracing::warn!(%topic, subscription = %name, cursor = record.next, last = state.last_sequence,
                    "stream cursor is past the end of the topic (recreated?); reading from its start");
                record.next = state.first_sequence.max(1);
            }
            return Ok((read.revision, record));
        }
        let legacy = match stream.consumer_info(naming::consumer_name(name)).await {
            Ok(info) => {
                let description = info.config.description.as_deref().unwrap_or_default();
                if !description.starts_with("switchboard stream subscription") {
                    return Err(conflict("it is a queue subscription (a durable consumer), not a stream"));
                }
                Some(info.ack_floor.stream_sequence + 1)
            }
            Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => None,
            Err(e) => {
                let retryable = match e.kind() {
                    ConsumerInfoErrorKind::JetStream(j) => js_retryable(&j),
                    _ => true,
                };
                return Err(map(&format!("reading subscription {name} on topic {topic}"), e, retryable));
            }
        };
        let next = legacy.unwrap_or(match spec.start {
            Start::Earliest => state.first_sequence.max(1),
            Start::Latest => state.last_sequence + 1,
        });
        let id = inner.client.new_inbox().trim_start_matches("_INBOX.").to_owned();
        let record = Record::stream(spec.start, next, id);
        match cursor::put(inner, &subject, topic, name, &record, read.revision).await {
            Ok(revision) => {
                if legacy.is_some() {
                    let _ = stream.delete_consumer(&naming::consumer_name(name)).await;
                }
                return Ok((revision, record));
            }
            // Created concurrently by another member: read it again.
            Err(PutError::Changed) => continue,
            Err(PutError::Failed(e)) => return Err(e),
        }
    }
    Err(crate::errors::backend_msg(format!("the cursor of subscription {name} kept changing"), true))
}

/// A message due to be handed out again.
struct Redelivery {
    due: tokio::time::Instant,
    message: Message,
    published_at: Option<Timestamp>,
    attempt: u32,
}

/// What the source, its pull task and its deliveries share.
struct Reader {
    cursor: Arc<Cursor>,
    /// Nacked (or dropped) deliveries by stream sequence.
    redeliver: Mutex<BTreeMap<u64, Redelivery>>,
    /// Woken when a redelivery is queued.
    changed: Notify,
    /// False once the source is closed or dropped: nothing is redelivered any more.
    open: AtomicBool,
}

impl Reader {
    fn delivery(
        self: &Arc<Self>,
        seq: u64,
        message: Message,
        published_at: Option<Timestamp>,
        attempt: u32,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Delivery {
        let info = DeliveryInfo::new(self.cursor.topic.clone(), self.cursor.name.clone(), 0, seq)
            .with_attempt(attempt)
            .with_published_at(published_at);
        let settle = StreamSettle {
            reader: self.clone(),
            seq,
            message: message.clone(),
            published_at,
            attempt,
            _permit: permit,
        };
        switchboard_core::backend::delivery(message, info, Box::new(settle))
    }

    /// Queues `seq` for redelivery after `delay` (unless the source is closed: then the next
    /// reader reads it from the committed position).
    fn redeliver(
        &self,
        seq: u64,
        message: Message,
        published_at: Option<Timestamp>,
        attempt: u32,
        delay: Duration,
    ) {
        if !self.open.load(Ordering::Acquire) {
            return;
        }
        let due = tokio::time::Instant::now() + delay;
        let attempt = attempt.saturating_add(1);
        self.redeliver.lock().insert(seq, Redelivery { due, message, published_at, attempt });
        self.changed.notify_waiters();
    }

    /// The lowest sequence due now, or when the next one falls due.
    fn take_due(self: &Arc<Self>) -> Result<Delivery, Option<tokio::time::Instant>> {
        let now = tokio::time::Instant::now();
        let mut map = self.redeliver.lock();
        let due = map.iter().find(|(_, r)| r.due <= now).map(|(seq, _)| *seq);
        match due.and_then(|seq| map.remove(&seq).map(|r| (seq, r))) {
            Some((seq, r)) => {
                drop(map);
                Ok(self.delivery(seq, r.message, r.published_at, r.attempt, None))
            }
            None => Err(map.values().map(|r| r.due).min()),
        }
    }
}

/// The [`DeliverySource`] of a stream subscription.
struct Source {
    reader: Arc<Reader>,
    rx: mpsc::Receiver<Result<Delivery, BusError>>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

fn start(inner: Arc<Inner>, cursor: Arc<Cursor>, stream_name: String, next: u64, prefetch: u32) -> Source {
    let prefetch = usize::try_from(prefetch).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
    let (tx, rx) = mpsc::channel(prefetch.clamp(1, 4096));
    let (stop, stop_rx) = watch::channel(false);
    let reader = Arc::new(Reader {
        cursor,
        redeliver: Mutex::new(BTreeMap::new()),
        changed: Notify::new(),
        open: AtomicBool::new(true),
    });
    let permits = Arc::new(Semaphore::new(prefetch));
    let pull = Pull { inner, reader: reader.clone(), stream_name, next, tx, permits, stop: stop_rx };
    let task = tokio::spawn(pull.run());
    Source { reader, rx, stop, task: Some(task) }
}

#[async_trait::async_trait]
impl DeliverySource for Source {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            let changed = self.reader.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wake = match self.reader.take_due() {
                Ok(d) => return Some(Ok(d)),
                Err(wake) => wake,
            };
            let timer = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = changed => {}
                _ = timer => {}
                m = self.rx.recv() => return m,
            }
        }
    }

    async fn close(&mut self) -> Result<(), BusError> {
        self.reader.open.store(false, Ordering::Release);
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(PULL_EXPIRES + Duration::from_secs(6), task).await;
        }
        // Read but never handed out: they stay uncommitted for the next reader.
        self.rx.close();
        while self.rx.try_recv().is_ok() {}
        self.reader.redeliver.lock().clear();
        match self.reader.cursor.flush().await {
            // Deleted meanwhile: nothing left to commit.
            Err(BusError::NotFound { .. }) => Ok(()),
            r => r,
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.reader.open.store(false, Ordering::Release);
        self.stop.send_replace(true);
    }
}

/// The pull task of a stream reader.
struct Pull {
    inner: Arc<Inner>,
    reader: Arc<Reader>,
    stream_name: String,
    /// The next stream sequence to read.
    next: u64,
    tx: mpsc::Sender<Result<Delivery, BusError>>,
    permits: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

/// The error that ends the reader of a deleted subscription.
fn deleted(reader: &Reader) -> BusError {
    BusError::subscription_not_found(&reader.cursor.topic, &reader.cursor.name)
}

/// Why a reader's consumer could not be made.
enum Create {
    /// The topic's stream is gone.
    Gone(BusError),
    /// Anything else: try again.
    Retry(BusError),
}

impl Pull {
    async fn run(mut self) {
        let mut closed = self.inner.closed.subscribe();
        let mut gone = self.reader.cursor.store.gone.subscribe();
        let mut consumer: Option<PullConsumer> = None;
        let mut last_consumer_seq = 0u64;
        let mut reconnect = Reconnect::up_to(MAX_BACKOFF);
        'pull: loop {
            let first = tokio::select! {
                biased;
                _ = self.stop.wait_for(|v| *v) => break,
                _ = closed.wait_for(|v| *v) => break,
                _ = gone.wait_for(|v| *v) => None,
                _ = self.tx.closed() => break,
                p = self.permits.clone().acquire_owned() => match p { Ok(p) => Some(p), Err(_) => break },
            };
            let Some(first) = first else {
                let _ = self.tx.send(Err(deleted(&self.reader))).await;
                break;
            };
            let mut held = vec![first];
            while held.len() < MAX_BATCH {
                match self.permits.clone().try_acquire_owned() {
                    Ok(p) => held.push(p),
                    Err(_) => break,
                }
            }
            let c = match &consumer {
                Some(c) => c.clone(),
                None => match self.create().await {
                    Ok(c) => {
                        last_consumer_seq = 0;
                        consumer = Some(c.clone());
                        c
                    }
                    Err(Create::Gone(e)) => {
                        let _ = self.tx.send(Err(e)).await;
                        break;
                    }
                    Err(Create::Retry(e)) => {
                        tracing::warn!(stream = %self.stream_name, error = %e, "creating the stream reader failed");
                        drop(held);
                        if !self.pause(reconnect.next_delay(), &mut closed).await {
                            break;
                        }
                        continue;
                    }
                },
            };
            let started = Instant::now();
            let mut batch = match c.batch().max_messages(held.len()).expires(PULL_EXPIRES).messages().await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(stream = %self.stream_name, error = %e, "stream pull request failed");
                    self.discard(consumer.take());
                    drop(held);
                    if !self.pause(reconnect.next_delay(), &mut closed).await {
                        break;
                    }
                    continue;
                }
            };
            let mut received = 0usize;
            loop {
                let item = tokio::select! {
                    _ = self.stop.wait_for(|v| *v) => break 'pull,
                    _ = closed.wait_for(|v| *v) => break 'pull,
                    m = batch.next() => m,
                };
                match item {
                    None => break,
                    Some(Ok(m)) => {
                        let Ok(info) = m.info() else {
                            tracing::warn!(stream = %self.stream_name, "ignoring a message without JetStream metadata");
                            continue;
                        };
                        let (seq, consumer_seq, published) =
                            (info.stream_sequence, info.consumer_sequence, info.published);
                        if consumer_seq != last_consumer_seq + 1 {
                            // Missed something (or the consumer was replaced): start over from
                            // the next unread sequence.
                            tracing::debug!(stream = %self.stream_name, consumer_seq, last_consumer_seq, "stream reader gap; recreating");
                            self.discard(consumer.take());
                            break;
                        }
                        last_consumer_seq = consumer_seq;
                        if seq < self.next {
                            continue;
                        }
                        received += 1;
                        reconnect.reset();
                        self.next = seq + 1;
                        let published_ms =
                            u64::try_from(published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
                        let (nats_msg, _acker) = m.split();
                        let fallback_id = format!("{}-{seq}", self.stream_name);
                        let message = crate::headers::decode(
                            nats_msg.headers.as_ref(),
                            nats_msg.subject.as_str(),
                            nats_msg.payload,
                            fallback_id,
                        );
                        self.reader.cursor.delivered(seq);
                        let d =
                            self.reader.delivery(seq, message, Some(Timestamp(published_ms)), 1, held.pop());
                        if self.tx.send(Ok(d)).await.is_err() {
                            break 'pull;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(stream = %self.stream_name, error = %e, "stream pull failed");
                        self.discard(consumer.take());
                        if !self.pause(reconnect.next_delay(), &mut closed).await {
                            break 'pull;
                        }
                        break;
                    }
                }
            }
            drop(held);
            if received == 0 && started.elapsed() < PULL_EXPIRES / 2 {
                // Ended early and empty (server trouble): do not spin, and do not trust the
                // consumer to still exist.
                self.discard(consumer.take());
                if !self.pause(reconnect.next_delay(), &mut closed).await {
                    break;
                }
            } else if received == 0
                && let Some(c) = &consumer
                && let Err(e) = c.get_info().await
                && matches!(e.kind(), ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound)
            {
                // A pull on a consumer that no longer exists (lost in a server restart, or
                // removed after `INACTIVE_THRESHOLD`) just comes back empty: make a new one.
                self.discard(consumer.take());
            }
        }
        let backend_closed = *self.inner.closed.borrow();
        if !backend_closed && let Some(c) = consumer {
            let name = c.cached_info().name.clone();
            if let Ok(stream) = self.inner.js.get_stream_no_info(&self.stream_name).await {
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.delete_consumer(&name)).await;
            }
        }
    }

    /// Sleeps for `d` unless stopped first; false when stopped.
    async fn pause(&mut self, d: Duration, closed: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = self.stop.wait_for(|v| *v) => false,
            _ = closed.wait_for(|v| *v) => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Creates the ephemeral consumer reading from `self.next`.
    async fn create(&self) -> Result<PullConsumer, Create> {
        let topic = &self.reader.cursor.topic;
        let config = pull::Config {
            description: Some(format!(
                "switchboard stream reader of subscription {}",
                self.reader.cursor.name
            )),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: self.next },
            ack_policy: AckPolicy::None,
            max_deliver: 1,
            inactive_threshold: INACTIVE_THRESHOLD,
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        };
        let stream = self
            .inner
            .js
            .get_stream_no_info(&self.stream_name)
            .await
            .map_err(|e| Create::Retry(map(&format!("opening the stream of topic {topic}"), e, true)))?;
        match stream.create_consumer(config).await {
            Ok(c) => Ok(c),
            Err(e) => Err(match e.kind() {
                ConsumerErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                    Create::Gone(BusError::topic_not_found(topic))
                }
                _ => Create::Retry(map(&format!("reading topic {topic}"), e, true)),
            }),
        }
    }

    /// Forgets a consumer, deleting it in the background (it may be gone already).
    fn discard(&self, consumer: Option<PullConsumer>) {
        let Some(c) = consumer else { return };
        let (inner, stream_name, name) =
            (self.inner.clone(), self.stream_name.clone(), c.cached_info().name.clone());
        tokio::spawn(async move {
            if let Ok(stream) = inner.js.get_stream_no_info(&stream_name).await {
                let _ = stream.delete_consumer(&name).await;
            }
        });
    }
}

/// The [`Settle`] of one stream delivery.
struct StreamSettle {
    reader: Arc<Reader>,
    seq: u64,
    /// Kept for a redelivery.
    message: Message,
    published_at: Option<Timestamp>,
    attempt: u32,
    /// Released on settlement: frees a prefetch slot of the member.
    _permit: Option<OwnedSemaphorePermit>,
}

#[async_trait::async_trait]
impl Settle for StreamSettle {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.reader.cursor.acked(self.seq);
        Ok(())
    }

    async fn nack(self: Box<Self>, nack: Nack) -> Result<(), BusError> {
        let this = *self;
        this.reader.redeliver(this.seq, this.message, this.published_at, this.attempt, nack.delay);
        Ok(())
    }

    async fn extend(&self, _by: Duration) -> Result<(), BusError> {
        // Stream deliveries have no lease: they stay uncommitted until acked.
        Ok(())
    }

    fn abandon(self: Box<Self>) {
        let this = *self;
        this.reader.redeliver(this.seq, this.message, this.published_at, this.attempt, Duration::ZERO);
    }
}

/// Stats of a stream subscription from its cursor: backlog = lag = sequences from the
/// committed position to the end of the topic; in flight = deliveries read and not acked by
/// readers open on this connection (others are not known here). `None` when there is no
/// stream cursor of that name.
pub(crate) async fn stats(
    inner: &Inner,
    topic: &TopicName,
    name: &SubscriptionName,
) -> Result<Option<SubscriptionStats>, BusError> {
    let read = cursor::read(inner, &cursor::subject(topic, name)).await?;
    let Some(record) = read.record else { return Ok(None) };
    let stream = inner
        .js
        .get_stream_no_info(naming::stream_name(topic))
        .await
        .map_err(|_| BusError::topic_not_found(topic))?;
    let state = stream.get_info().await.map_err(|e| map(&format!("reading topic {topic}"), e, true))?.state;
    let (mut in_flight, mut committed) = (0u64, record.next);
    for c in inner.cursors.lock().iter().filter_map(std::sync::Weak::upgrade) {
        if c.topic == *topic && c.name == *name {
            let (pending, point) = c.snapshot();
            in_flight += pending as u64;
            committed = committed.max(point);
        }
    }
    let from = committed.max(state.first_sequence);
    let backlog = (state.last_sequence + 1).saturating_sub(from);
    Ok(Some(SubscriptionStats::new(backlog, in_flight.min(backlog), backlog)))
}
