//! The `Consume` stream: one consumer of one subscription, with credit-based flow control.
//!
//! A task per stream owns the broker consumer. It waits on two things at once: requests from
//! the client (credits, acks, nacks, extensions, commits — each settled as it arrives) and a
//! `receive` for as many messages as the stream has credits. The pending `receive` is never
//! cancelled to handle a request (a cancelled receive could hold leases it never handed out),
//! only paused while the request is served, and polled again after. When the stream ends the
//! consumer is dropped: leases it still holds run out and their messages are delivered again.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;

use switchboard_broker::{Broker, BrokerDelivery, BrokerError, QueueConsumer, Receipt, StreamConsumer};
use switchboard_core::{SubscriptionName, TopicName};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::Caller;
use super::convert::{self, subscription_name, topic_name};
use super::pb::switchboard::v1 as api;
use super::service::STREAM_BUFFER;
use crate::auth::Action;
use crate::error::ApiError;
use crate::metrics::Api;
use crate::state::AppState;
use api::consume_request::Request as In;
use api::consume_response::{Deliveries, Opened, Outcome, Response as Out, Settled};

/// How long one `receive` waits for messages before it is started again (with the credits
/// the stream holds by then).
const POLL: Duration = Duration::from_millis(500);
/// Acks and nacks one stream may have waiting for their fsyncs before it stops reading.
const MAX_SETTLING: usize = 64;
/// How long the server waits for the `open` request.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Deliveries are split over responses of about this size, well under the 4 MiB that gRPC
/// clients accept by default (a single larger message still goes alone).
const MAX_RESPONSE_BYTES: usize = 3 << 20;
/// What a delivery adds to its message's size on the wire, roughly.
const DELIVERY_OVERHEAD: usize = 128;

type Tx = mpsc::Sender<Result<api::ConsumeResponse, Status>>;
/// A `receive` in progress, borrowing the consumer.
type Receiving<'a> = Pin<Box<dyn Future<Output = Result<Vec<BrokerDelivery>, BrokerError>> + Send + 'a>>;
/// An ack or nack in progress: its request id and outcomes.
type Settlement<'a> = Pin<Box<dyn Future<Output = (u64, Vec<Outcome>)> + Send + 'a>>;

/// Starts the task serving one consume stream and returns its responses.
pub(super) fn spawn(
    state: AppState,
    caller: Caller,
    inbound: Streaming<api::ConsumeRequest>,
) -> ReceiverStream<Result<api::ConsumeResponse, Status>> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let _open = state.metrics.connection(Api::Grpc);
        if let Err(status) = run(&state, &caller, inbound, &tx).await {
            tracing::debug!(%status, "Consume stream ended with an error.");
            let _ = tx.send(Err(status)).await;
        }
    });
    ReceiverStream::new(rx)
}

/// Sends one response; false if the client is gone.
async fn send(tx: &Tx, response: Out) -> bool {
    tx.send(Ok(api::ConsumeResponse { response: Some(response) })).await.is_ok()
}

fn bad(message: &str) -> Status {
    ApiError::BadRequest(message.to_owned()).into()
}

/// Serves the stream until the client ends it (`Ok`) or an error ends it.
async fn run(
    state: &AppState,
    caller: &Caller,
    mut inbound: Streaming<api::ConsumeRequest>,
    tx: &Tx,
) -> Result<(), Status> {
    let first = tokio::select! {
        first = tokio::time::timeout(OPEN_TIMEOUT, inbound.message()) => first.map_err(|_| {
            Status::deadline_exceeded(format!("no `open` request within {} s", OPEN_TIMEOUT.as_secs()))
        })??,
        () = tx.closed() => return Ok(()),
    };
    let Some(first) = first else { return Ok(()) };
    let Some(In::Open(open)) = first.request else {
        return Err(bad("the first consume request must be `open`"));
    };
    caller.check(Action::Consume, &open.topic)?;
    let (topic, subscription) = (topic_name(&open.topic)?, subscription_name(&open.subscription)?);
    let consumer = Consumer::open(&state.broker, &topic, &subscription).map_err(ApiError::from)?;
    let max_credits = state.config.limits.max_consume_credits;
    let mut credits = open.credits.min(max_credits);
    let _in_graph = state.telemetry.attach(topic.as_str(), subscription.as_str(), u64::from(credits));
    let service = caller.0.service().into();
    let session = Session { state, topic, subscription, consumer, service, published_at: Mutex::default() };
    tracing::debug!(topic = %session.topic, subscription = %session.subscription, credits, "Consume stream opened.");
    let opened = Opened { mode: session.consumer.mode() as i32, credits, max_credits };
    if !send(tx, Out::Opened(opened)).await {
        return Ok(());
    }

    let max_receipts = state.config.limits.max_batch_messages;
    let mut receiving: Option<Receiving<'_>> = None;
    // Acks and nacks wait for their journal fsync off the loop, so deliveries keep flowing
    // meanwhile; commits stay in order, inline.
    let mut settling: FuturesUnordered<Settlement<'_>> = FuturesUnordered::new();
    // The client half-closed: it sends nothing more, so the stream ends once its credits are
    // used up.
    let mut half_closed = false;
    loop {
        if credits == 0 && half_closed {
            // Answer the acks and nacks still being written before the stream ends.
            while let Some((request_id, outcomes)) = settling.next().await {
                if !send(tx, Out::Settled(Settled { request_id, outcomes })).await {
                    break;
                }
            }
            return Ok(());
        }
        if receiving.is_none() && credits > 0 {
            receiving = Some(Box::pin(session.consumer.receive(credits as usize)));
        }
        tokio::select! {
            () = tx.closed() => return Ok(()),
            // While MAX_SETTLING acks and nacks wait for their fsyncs, requests are not read:
            // a client cannot pile up work faster than the disk confirms it.
            next = inbound.message(), if !half_closed && settling.len() < MAX_SETTLING => {
                let Some(req) = next? else {
                    half_closed = true;
                    continue;
                };
                let outcomes = match req.request {
                    None => {
                        return Err(bad(
                            "empty consume request: set one of open, credit, ack, nack, extend or commit",
                        ));
                    }
                    Some(In::Open(_)) => return Err(bad("the stream is already open: send `open` only once")),
                    Some(In::Credit(c)) => {
                        // Clamped rather than refused: the client learns the cap from `opened`.
                        credits = credits.saturating_add(c.credits).min(max_credits);
                        continue;
                    }
                    Some(In::Ack(a)) if a.receipts.len() > max_receipts => {
                        return Err(bad(&format!("an ack may carry at most {max_receipts} receipts")));
                    }
                    Some(In::Nack(n)) if n.receipts.len() > max_receipts => {
                        return Err(bad(&format!("a nack may carry at most {max_receipts} receipts")));
                    }
                    Some(In::Extend(e)) if e.receipts.len() > max_receipts => {
                        return Err(bad(&format!("an extend may carry at most {max_receipts} receipts")));
                    }
                    Some(In::Ack(a)) => {
                        let id = req.request_id;
                        let session = &session;
                        settling.push(Box::pin(async move { (id, session.ack(a.receipts).await) }));
                        continue;
                    }
                    Some(In::Nack(n)) => {
                        let id = req.request_id;
                        let session = &session;
                        settling.push(Box::pin(async move { (id, session.nack(n).await) }));
                        continue;
                    }
                    Some(In::Extend(e)) => session.extend(e),
                    Some(In::Commit(c)) => session.commit(c.offsets).await,
                };
                let settled = Settled { request_id: req.request_id, outcomes };
                if !send(tx, Out::Settled(settled)).await {
                    return Ok(());
                }
            }
            Some((request_id, outcomes)) = settling.next(), if !settling.is_empty() => {
                if !send(tx, Out::Settled(Settled { request_id, outcomes })).await {
                    return Ok(());
                }
            }
            got = async {
                match receiving.as_mut() {
                    Some(r) => r.await,
                    None => std::future::pending().await,
                }
            }, if receiving.is_some() => {
                receiving = None;
                let deliveries = got.map_err(ApiError::from)?;
                if deliveries.is_empty() {
                    continue;
                }
                credits = credits.saturating_sub(deliveries.len() as u32);
                state.metrics.delivered(&deliveries);
                session.delivered(&deliveries);
                if !send_deliveries(tx, deliveries, credits).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Sends deliveries in responses of at most about [`MAX_RESPONSE_BYTES`].
async fn send_deliveries(tx: &Tx, deliveries: Vec<BrokerDelivery>, credits: u32) -> bool {
    let mut batch = Vec::new();
    let mut size = 0;
    for d in deliveries {
        let len = d.message.size() + DELIVERY_OVERHEAD;
        if !batch.is_empty() && size + len > MAX_RESPONSE_BYTES {
            let full = std::mem::take(&mut batch);
            if !send(tx, Out::Deliveries(Deliveries { deliveries: full, credits })).await {
                return false;
            }
            size = 0;
        }
        size += len;
        batch.push(convert::delivery_to_proto(d));
    }
    send(tx, Out::Deliveries(Deliveries { deliveries: batch, credits })).await
}

/// A queue or a stream consumer.
enum Consumer {
    Queue(QueueConsumer),
    Stream(StreamConsumer),
}

impl Consumer {
    fn open(
        broker: &Broker,
        topic: &TopicName,
        subscription: &SubscriptionName,
    ) -> Result<Consumer, BrokerError> {
        match broker.queue_consumer(topic, subscription) {
            Ok(q) => Ok(Consumer::Queue(q)),
            Err(BrokerError::WrongMode { .. }) => {
                broker.stream_consumer(topic, subscription).map(Consumer::Stream)
            }
            Err(e) => Err(e),
        }
    }

    fn mode(&self) -> api::SubscriptionMode {
        match self {
            Consumer::Queue(_) => api::SubscriptionMode::Queue,
            Consumer::Stream(_) => api::SubscriptionMode::Stream,
        }
    }

    async fn receive(&self, max: usize) -> Result<Vec<BrokerDelivery>, BrokerError> {
        match self {
            Consumer::Queue(q) => q.receive(max, POLL).await,
            Consumer::Stream(s) => s.receive(max, POLL).await,
        }
    }
}

/// An open consume stream.
struct Session<'a> {
    state: &'a AppState,
    topic: TopicName,
    subscription: SubscriptionName,
    consumer: Consumer,
    /// The service consuming, for the service graph.
    service: Arc<str>,
    /// Queue mode: when each message out on a lease was published, by `(partition,
    /// offset)`, so its ack measures publish to handled. Bounded by the stream's credits:
    /// an entry leaves when its message is settled, or is replaced when it comes again.
    published_at: Mutex<HashMap<(u32, u64), u64>>,
}

/// The outcome of an item that failed. The errors of settling name what they are about
/// themselves (the receipt, the partition, the subscription).
fn failed(e: BrokerError) -> Option<api::Error> {
    Some(convert::error_to_proto(&e.into(), &[]))
}

/// What parsing alone makes of the receipts of an ack, nack or extend (for the fuzz targets).
pub(crate) fn parse_receipts(receipts: Vec<String>) -> Vec<Outcome> {
    Settling::new(receipts).outcomes
}

/// One outcome per receipt, parsed where possible.
struct Settling {
    outcomes: Vec<Outcome>,
    /// Receipts that parsed, with their index in `outcomes`.
    parsed: Vec<(usize, Receipt)>,
}

impl Settling {
    fn new(receipts: Vec<String>) -> Settling {
        let mut outcomes = Vec::with_capacity(receipts.len());
        let mut parsed = Vec::with_capacity(receipts.len());
        for (i, receipt) in receipts.into_iter().enumerate() {
            let mut outcome = Outcome { receipt, ..Outcome::default() };
            match outcome.receipt.parse::<Receipt>() {
                Ok(r) => {
                    outcome.partition = r.partition;
                    outcome.offset = r.offset;
                    parsed.push((i, r));
                }
                Err(e) => outcome.error = failed(e),
            }
            outcomes.push(outcome);
        }
        Settling { outcomes, parsed }
    }

    /// Every parsed receipt fails with `e`.
    fn fail_all(mut self, e: BrokerError) -> Vec<Outcome> {
        let error = failed(e);
        for &(i, _) in &self.parsed {
            self.outcomes[i].error.clone_from(&error);
        }
        self.outcomes
    }
}

impl Session<'_> {
    fn at(&self) -> (&str, &str) {
        (self.topic.as_str(), self.subscription.as_str())
    }

    fn delivered(&self, deliveries: &[BrokerDelivery]) {
        self.state.telemetry.delivered(deliveries);
        if let Consumer::Stream(_) = self.consumer {
            // A stream reader settles by committing offsets later, if at all: what it reads
            // is what it consumes, timed from publish to read.
            let now_ms = self.state.broker.clock().now().as_millis();
            let read: Vec<f64> = deliveries
                .iter()
                .map(|d| now_ms.saturating_sub(d.published_at.as_millis()) as f64 / 1e3)
                .collect();
            self.state.telemetry.settled(self.at(), &self.service, &read, 0, 0);
        }
        if let Consumer::Queue(_) = self.consumer {
            let mut published = self.published_at.lock();
            // A lease that ran out leaves its entry behind; the cap keeps those few bounded.
            if published.len() > 4 * self.state.config.limits.max_consume_credits as usize {
                published.clear();
            }
            for d in deliveries {
                published.insert((d.partition, d.offset), d.published_at.as_millis());
            }
        }
    }

    /// Publish-to-ack seconds of the acked receipts, forgetting them.
    fn end_to_end(&self, acked: &[Receipt]) -> (Vec<f64>, u64) {
        // The broker's clock stamped `published_at`.
        let now_ms = self.state.broker.clock().now().as_millis();
        let mut published = self.published_at.lock();
        let mut untimed = 0;
        let timed = acked
            .iter()
            .filter_map(|r| {
                let at = published.remove(&(r.partition, r.offset));
                untimed += u64::from(at.is_none());
                at.map(|at| now_ms.saturating_sub(at) as f64 / 1e3)
            })
            .collect();
        (timed, untimed)
    }

    fn wrong_mode(&self, expected: &'static str) -> BrokerError {
        let actual = match self.consumer {
            Consumer::Queue(_) => "queue",
            Consumer::Stream(_) => "stream",
        };
        BrokerError::WrongMode { subscription: self.subscription.clone(), actual, expected }
    }

    async fn ack(&self, receipts: Vec<String>) -> Vec<Outcome> {
        let started = Instant::now();
        let mut s = Settling::new(receipts);
        let Consumer::Queue(q) = &self.consumer else { return s.fail_all(self.wrong_mode("queue")) };
        let receipts: Vec<Receipt> = s.parsed.iter().map(|&(_, r)| r).collect();
        let results = match q.ack_many(&receipts).await {
            Ok(results) => results,
            Err(e) => return s.fail_all(e),
        };
        let mut acked = 0;
        let mut settled = Vec::with_capacity(s.parsed.len());
        for (&(i, r), result) in s.parsed.iter().zip(results) {
            match result {
                Ok(()) => {
                    acked += 1;
                    settled.push(r);
                }
                Err(e) => s.outcomes[i].error = failed(e),
            }
        }
        let (timed, untimed) = self.end_to_end(&settled);
        self.state.telemetry.settled(self.at(), &self.service, &timed, untimed, 0);
        if acked > 0 {
            let (t, sub) = (self.topic.as_str(), self.subscription.as_str());
            self.state.metrics.acked(Api::Grpc, t, sub, acked, started.elapsed());
        }
        s.outcomes
    }

    async fn nack(&self, nack: api::consume_request::Nack) -> Vec<Outcome> {
        let mut s = Settling::new(nack.receipts);
        let Consumer::Queue(q) = &self.consumer else { return s.fail_all(self.wrong_mode("queue")) };
        let delay = Duration::from_millis(nack.delay_ms);
        let error = (!nack.error.is_empty()).then_some(nack.error);
        let mut nacked = 0;
        for &(i, r) in &s.parsed {
            match q.nack(&r, delay, error.clone()).await {
                Ok(()) => nacked += 1,
                Err(e) => s.outcomes[i].error = failed(e),
            }
        }
        if nacked > 0 {
            self.state.metrics.nacked(self.topic.as_str(), self.subscription.as_str(), nacked);
            self.state.telemetry.settled(self.at(), &self.service, &[], 0, nacked);
        }
        s.outcomes
    }

    fn extend(&self, extend: api::consume_request::Extend) -> Vec<Outcome> {
        let mut s = Settling::new(extend.receipts);
        let Consumer::Queue(q) = &self.consumer else { return s.fail_all(self.wrong_mode("queue")) };
        let by = Duration::from_millis(extend.by_ms);
        for &(i, r) in &s.parsed {
            match q.extend(&r, by) {
                Ok(until) => {
                    s.outcomes[i].lease_expires_at = Some(switchboard_proto::timestamp::to_proto(until))
                }
                Err(e) => s.outcomes[i].error = failed(e),
            }
        }
        s.outcomes
    }

    async fn commit(&self, offsets: Vec<api::PartitionOffset>) -> Vec<Outcome> {
        let mut outcomes: Vec<Outcome> = offsets
            .iter()
            .map(|o| Outcome { partition: o.partition, offset: o.offset, ..Outcome::default() })
            .collect();
        let Consumer::Stream(c) = &self.consumer else {
            let error = failed(self.wrong_mode("stream"));
            for o in &mut outcomes {
                o.error.clone_from(&error);
            }
            return outcomes;
        };
        for o in &mut outcomes {
            if let Err(e) = c.commit(o.partition, o.offset).await {
                o.error = failed(e);
            }
        }
        outcomes
    }
}
