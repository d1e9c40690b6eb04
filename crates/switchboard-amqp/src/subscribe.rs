//! Subscriptions: a quorum queue per queue subscription, the topic's stream for stream
//! subscriptions, and a pump task per open subscription that survives reconnects.
//!
//! Queue mode: the durable quorum queue `sb.q.…` (see `naming.rs`) is bound to the topic's
//! exchange; every member of the subscription consumes from it (competing consumers) on its
//! own channel with `basic.qos(prefetch)`. Quorum queues stamp `x-delivery-count` on
//! redeliveries, so `attempt = x-delivery-count + 1`. A queue only holds messages published
//! after it was created, whatever `start` says (`queue_replay` is false).
//!
//! Stream mode: one RabbitMQ stream per topic (`sb.s.<topic>`, declared with the topic), not
//! one per subscription: a per-subscription stream would start empty, so a new subscription
//! could not replay what the topic already holds. A stream subscription consumes it with
//! `x-stream-offset` = `first` (`Start::Earliest`) or `next` (`Start::Latest`); the delivery
//! offset is the `x-stream-offset` header. RabbitMQ keeps no consumer offsets for streams
//! over AMQP 0-9-1, so the backend keeps the commit point in a per-subscription offset store
//! in RabbitMQ (see `offsets.rs`): an existing stream subscription, reopened in any process,
//! resumes at its committed offset (`x-stream-offset` = that number) and `start` only applies
//! to a new one (or one that has committed nothing yet). After a dropped connection the
//! subscription resumes from its oldest unacked offset. Deliveries below the offset asked for
//! are skipped (RabbitMQ 3.10 filters them itself; this guards against a broker that sends
//! the whole chunk). `stream_groups` is false: every member of a stream subscription reads every
//! message, and the members share one commit point. Delivery is at-least-once.
//!
//! A subscription name belongs to one mode: opening a queue subscription while the stream
//! subscription's offset store exists, or a stream subscription while the queue
//! subscription's quorum queue exists, is a `Conflict` (checked with passive declares on a
//! throwaway channel; two processes creating the name in both modes at the same moment can
//! both succeed).
//!
//! A pump task per open subscription feeds it (see `pump.rs`), and a committer task per stream
//! subscription writes its commit point (see `offsets.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueBindOptions};
use lapin::options::{BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Acker, Channel, Consumer};
use switchboard_core::backend::{CommitPoint, DeliverySource};
use switchboard_core::contract::{
    BusError, Delivery, DeliveryInfo, Mode, Start, Subscription, SubscriptionSpec,
};
use switchboard_core::{Message, Timestamp, TopicName};
use tokio::sync::{mpsc, watch};

use crate::connect::{BACKEND, Shared, bounded, close_channel, settle_bounded};
use crate::offsets::{self, Commits};
use crate::publish::ensure_topic;
use crate::settle::{Lease, QueueSettle, StreamSettle, Unsettled};
use crate::{headers, naming};

/// Everything a subscription's pump and settles share.
pub(crate) struct SubCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) topic: TopicName,
    pub(crate) spec: SubscriptionSpec,
    pub(crate) dead_letter_topic: Option<TopicName>,
    /// The queue consumed: the subscription's quorum queue or the topic's stream.
    pub(crate) queue: String,
    pub(crate) in_flight: Arc<AtomicU64>,
    pub(crate) cursor: parking_lot::Mutex<Cursor>,
    /// The commit point of a stream subscription.
    pub(crate) commits: Option<Arc<Commits>>,
    pub(crate) redeliver: mpsc::UnboundedSender<Incoming>,
    /// Set once the pump stops for good (the subscription was closed or dropped, or the
    /// backend closed), before it closes its channel: a settle that then finds the channel
    /// gone lost its lease because the subscription was closed, not because the connection
    /// broke.
    pub(crate) stopped: AtomicBool,
}

impl SubCtx {
    /// Whether the subscription (or the whole backend) was closed.
    pub(crate) fn closed(&self) -> bool {
        self.stopped.load(Ordering::Acquire) || self.shared.check_open().is_err()
    }
}

/// Offsets of a stream subscription handed out and not yet acked, and its commit point (the
/// rule every backend shares: [`CommitPoint`]).
#[derive(Default)]
pub(crate) struct Cursor {
    point: CommitPoint,
    /// The offset the current consumer was asked to start at; anything below is skipped.
    pub(crate) floor: u64,
}

impl Cursor {
    /// The cursor of a subscription whose committed offset is `committed` (`None`: nothing
    /// stored yet, so the first commit point is written whatever it is).
    pub(crate) fn resuming_at(committed: Option<u64>) -> Cursor {
        let point = committed.map_or_else(CommitPoint::unstored, CommitPoint::resuming_at);
        Cursor { point, floor: 0 }
    }

    fn delivered(&mut self, offset: u64) {
        self.point.delivered(offset);
    }

    /// Marks one delivery of `offset` acked; returns the new commit point if it moved.
    pub(crate) fn acked(&mut self, offset: u64) -> Option<u64> {
        self.point.acked(offset)
    }

    fn resume_at(&self) -> Option<u64> {
        self.point.resume_at()
    }
}

/// What the pump (or a stream nack) hands to the subscription.
pub(crate) enum Incoming {
    /// A delivery from RabbitMQ; queue deliveries count as in flight from here on.
    Amqp(AmqpDelivery, Option<Unsettled>),
    Again(Redelivery),
    Failed(BusError),
}

/// A stream delivery nacked by the caller, handed out again.
pub(crate) struct Redelivery {
    pub(crate) message: Message,
    pub(crate) offset: u64,
    pub(crate) attempt: u32,
    pub(crate) published_at: Option<Timestamp>,
    pub(crate) acker: Acker,
}

/// Opens a subscription: declares what it needs, starts consuming, starts the pump.
pub(crate) async fn subscribe(
    shared: &Arc<Shared>,
    topic: &TopicName,
    spec: SubscriptionSpec,
) -> Result<Subscription, BusError> {
    shared.check_open()?;
    spec.validate()?;
    if spec.ordered_by_key {
        return Err(BusError::Unsupported { backend: BACKEND, feature: "per_key_order" });
    }
    let dead_letter_topic = spec.dead_letter_topic_for(topic)?;
    let quorum_queue = naming::queue(topic, &spec.name);
    let store = naming::offsets(topic, &spec.name);
    let (queue, other_mode, other) = match spec.mode {
        Mode::Queue => (quorum_queue, store.clone(), "stream"),
        Mode::Stream => (naming::stream(topic), quorum_queue, "queue"),
    };
    if offsets::exists(shared, &other_mode).await? {
        return Err(BusError::subscription_conflict(
            topic,
            &spec.name,
            format!("it is a {other} subscription"),
        ));
    }
    let (cursor, commits) = match spec.mode {
        Mode::Queue => (Cursor::default(), None),
        Mode::Stream => {
            let stored = offsets::open(shared, &store).await.map_err(|e| match e {
                BusError::Conflict { reason, .. } => BusError::subscription_conflict(
                    topic,
                    &spec.name,
                    format!("its offset store has other settings ({reason})"),
                ),
                other => other,
            })?;
            let commits = Commits::new(store, stored);
            shared.register(&commits);
            (Cursor::resuming_at(stored), Some(commits))
        }
    };
    let (redeliver, again_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(SubCtx {
        shared: shared.clone(),
        topic: topic.clone(),
        dead_letter_topic,
        in_flight: shared.in_flight(&queue),
        queue,
        spec: spec.clone(),
        cursor: parking_lot::Mutex::new(cursor),
        commits,
        redeliver,
        stopped: AtomicBool::new(false),
    });
    let first = open(&ctx).await?;
    // As many as RabbitMQ sends unacked (the prefetch), so the pump takes every delivery off
    // the consumer at once and counts it in flight.
    let (tx, rx) = mpsc::channel(prefetch(&spec).into());
    let (stop, stop_rx) = watch::channel(false);
    let committer =
        ctx.commits.clone().map(|c| tokio::spawn(offsets::committer(shared.clone(), c, stop_rx.clone())));
    let pump = tokio::spawn(crate::pump::pump(ctx.clone(), first, tx, stop_rx));
    let source = AmqpSource { ctx, rx, again_rx, stop, pump: Some(pump), committer };
    Ok(switchboard_core::backend::subscription(topic.clone(), spec, Box::new(source)))
}

fn prefetch(spec: &SubscriptionSpec) -> u16 {
    u16::try_from(spec.prefetch).unwrap_or(u16::MAX).max(1)
}

fn consumer_tag() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("sb-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Declares the subscription's queue (queue mode) and starts a consumer on a new channel.
pub(crate) async fn open(ctx: &SubCtx) -> Result<(Channel, Consumer), BusError> {
    ensure_topic(&ctx.shared, &ctx.topic).await?;
    if let Some(dlq) = &ctx.dead_letter_topic {
        ensure_topic(&ctx.shared, dlq).await?;
    }
    let ch = ctx.shared.channel().await?;
    let opened = consume(ctx, &ch).await;
    if opened.is_err() {
        close_channel(&ch).await;
    }
    Ok((ch, opened?))
}

async fn consume(ctx: &SubCtx, ch: &Channel) -> Result<Consumer, BusError> {
    let mut args = FieldTable::default();
    match ctx.spec.mode {
        Mode::Queue => declare_queue(ctx, ch).await?,
        Mode::Stream => {
            let mut cursor = ctx.cursor.lock();
            let resume = cursor.resume_at();
            cursor.floor = resume.unwrap_or(0);
            drop(cursor);
            let offset = match (resume, ctx.spec.start) {
                (Some(n), _) => AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX)),
                (None, Start::Earliest) => AMQPValue::LongString(LongString::from("first")),
                (None, Start::Latest) => AMQPValue::LongString(LongString::from("next")),
            };
            args.insert("x-stream-offset".into(), offset);
        }
    }
    bounded("setting the prefetch", ch.basic_qos(prefetch(&ctx.spec), BasicQosOptions::default())).await?;
    bounded(
        "starting a consumer",
        ch.basic_consume(
            ctx.queue.as_str().into(),
            consumer_tag().into(),
            BasicConsumeOptions::default(),
            args,
        ),
    )
    .await
    .map_err(|e| match e {
        // What is gone is the subscription's quorum queue, or the topic's stream.
        BusError::NotFound { .. } => match ctx.spec.mode {
            Mode::Queue => BusError::subscription_not_found(&ctx.topic, &ctx.spec.name),
            Mode::Stream => BusError::topic_not_found(&ctx.topic),
        },
        other => other,
    })
}

async fn declare_queue(ctx: &SubCtx, ch: &Channel) -> Result<(), BusError> {
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), text("quorum"));
    if let (Some(max), Some(dlq)) = (ctx.spec.max_deliveries, &ctx.dead_letter_topic) {
        // Backstop only: the backend dead-letters with metadata first (dead_letter.rs).
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(max) + 1));
        args.insert("x-dead-letter-exchange".into(), text(&naming::exchange(dlq)));
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        args.insert("x-overflow".into(), text("reject-publish"));
    }
    bounded(
        "declaring a queue",
        ch.queue_declare(ctx.queue.as_str().into(), QueueDeclareOptions::durable(), args),
    )
    .await
    .map_err(|e| match e {
        BusError::Conflict { reason, .. } => {
            BusError::subscription_conflict(&ctx.topic, &ctx.spec.name, reason)
        }
        other => other,
    })?;
    bounded(
        "binding a queue",
        ch.queue_bind(
            ctx.queue.as_str().into(),
            naming::exchange(&ctx.topic).as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .map_err(|e| match e {
        // The topic's exchange is gone.
        BusError::NotFound { .. } => BusError::topic_not_found(&ctx.topic),
        other => other,
    })
}

/// The stream offset of a stream delivery.
pub(crate) fn stream_offset(d: &AmqpDelivery) -> Option<u64> {
    headers::int_header(&d.properties, "x-stream-offset").and_then(|o| u64::try_from(o).ok())
}

pub(crate) fn attempt_of(d: &AmqpDelivery) -> u32 {
    let count = headers::int_header(&d.properties, "x-delivery-count").unwrap_or(0);
    u32::try_from(count).unwrap_or(u32::MAX - 1).saturating_add(1)
}

/// The subscription handed to the caller.
struct AmqpSource {
    ctx: Arc<SubCtx>,
    rx: mpsc::Receiver<Incoming>,
    again_rx: mpsc::UnboundedReceiver<Incoming>,
    stop: watch::Sender<bool>,
    pump: Option<tokio::task::JoinHandle<()>>,
    committer: Option<tokio::task::JoinHandle<Result<(), BusError>>>,
}

impl AmqpSource {
    fn info(&self, offset: u64, attempt: u32, published_at: Option<Timestamp>) -> DeliveryInfo {
        DeliveryInfo::new(self.ctx.topic.clone(), self.ctx.spec.name.clone(), 0, offset)
            .with_attempt(attempt)
            .with_published_at(published_at)
    }

    /// Turns a delivery from RabbitMQ into a [`Delivery`]; `None` for a queue delivery from
    /// a channel that died in the meantime (RabbitMQ delivers it again).
    fn deliver(&self, d: AmqpDelivery, unsettled: Option<Unsettled>) -> Option<Delivery> {
        let published_at = headers::published_at(&d.properties);
        match self.ctx.spec.mode {
            Mode::Queue => {
                if !d.acker.usable() {
                    return None;
                }
                let attempt = attempt_of(&d);
                let offset = d.delivery_tag;
                let message = headers::decode(&d.properties, d.data);
                let unsettled = unsettled.unwrap_or_else(|| Unsettled::new(self.ctx.in_flight.clone()));
                let lease = Lease::start(d.acker, self.ctx.spec.lease, unsettled);
                let keep = self.ctx.dead_letter_topic.as_ref().map(|_| message.clone());
                let settle = QueueSettle { ctx: self.ctx.clone(), lease, message: keep, attempt, offset };
                Some(switchboard_core::backend::delivery(
                    message,
                    self.info(offset, attempt, published_at),
                    Box::new(settle),
                ))
            }
            Mode::Stream => {
                let offset = stream_offset(&d).unwrap_or(d.delivery_tag);
                self.ctx.cursor.lock().delivered(offset);
                let message = headers::decode(&d.properties, d.data);
                Some(self.stream_delivery(message, offset, 1, published_at, d.acker))
            }
        }
    }

    fn stream_delivery(
        &self,
        message: Message,
        offset: u64,
        attempt: u32,
        published_at: Option<Timestamp>,
        acker: Acker,
    ) -> Delivery {
        let settle = StreamSettle {
            ctx: self.ctx.clone(),
            acker,
            message: message.clone(),
            offset,
            attempt,
            published_at,
        };
        switchboard_core::backend::delivery(
            message,
            self.info(offset, attempt, published_at),
            Box::new(settle),
        )
    }
}

#[async_trait::async_trait]
impl DeliverySource for AmqpSource {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            let item = tokio::select! {
                biased;
                Some(again) = self.again_rx.recv() => again,
                item = self.rx.recv() => item?,
            };
            match item {
                Incoming::Amqp(d, unsettled) => {
                    if let Some(delivery) = self.deliver(d, unsettled) {
                        return Some(Ok(delivery));
                    }
                }
                Incoming::Again(r) => {
                    return Some(Ok(self.stream_delivery(
                        r.message,
                        r.offset,
                        r.attempt,
                        r.published_at,
                        r.acker,
                    )));
                }
                Incoming::Failed(e) => return Some(Err(e)),
            }
        }
    }

    async fn close(&mut self) -> Result<(), BusError> {
        self.stop.send_replace(true);
        self.rx.close();
        // Deliveries buffered but never handed out go back at once. (Not on a stream:
        // RabbitMQ answers a nack there by closing the connection; the commit point is
        // below them anyway.)
        while let Ok(item) = self.rx.try_recv() {
            if let Incoming::Amqp(d, unsettled) = item
                && self.ctx.spec.mode == Mode::Queue
            {
                let _ =
                    settle_bounded(d.acker.nack(BasicNackOptions { multiple: false, requeue: true })).await;
                drop(unsettled);
            }
        }
        // The pump cancels the consumer and closes the channel, which requeues the rest.
        if let Some(pump) = self.pump.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), pump).await;
        }
        // The committer writes the last commit point (bounded by its own timeout).
        match self.committer.take() {
            Some(committer) => match committer.await {
                Ok(written) => written,
                Err(e) => Err(BusError::backend(BACKEND, false, e)),
            },
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_point_waits_for_the_lowest_unsettled_offset() {
        let mut c = Cursor::resuming_at(None);
        for o in 5..=7 {
            c.delivered(o);
        }
        assert_eq!(c.acked(7), Some(5));
        assert_eq!(c.acked(5), Some(6));
        assert_eq!(c.acked(6), Some(8));
        assert_eq!(c.resume_at(), Some(8));
    }

    #[test]
    fn a_resumed_cursor_starts_at_its_committed_offset() {
        let mut c = Cursor::resuming_at(Some(10));
        assert_eq!(c.resume_at(), Some(10));
        c.delivered(10);
        c.delivered(11);
        assert_eq!(c.acked(11), None, "10 is still unsettled");
        assert_eq!(c.acked(10), Some(12));
    }
}
