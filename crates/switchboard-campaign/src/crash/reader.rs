//! The reader process: one task per subscription keeps a `Consume` stream open (opening it
//! again whenever it breaks), records every delivery, settles each batch at once (ack for
//! queues, commit for streams), and records each settle the server *confirmed*. A settle
//! whose answer never came is not recorded: its messages may legitimately come back.
//!
//! When told to stop, the reader drains: it keeps consuming until every subscription's
//! backlog (from `Stats`) is zero, or the drain time runs out.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use switchboard_proto::switchboard::v1 as api;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;

use super::events::{Event, EventSink};
use super::worker::{SubKind, WorkerSpec, stop_signal};
use crate::grpc::{self, Client, In, Out};

/// Credits a stream opens with; each settled batch grants back what it used.
const CREDITS: u32 = 256;
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_DELAY: Duration = Duration::from_millis(100);

pub(super) async fn run(spec: &WorkerSpec) -> anyhow::Result<()> {
    let (sink, thread) = EventSink::to_file(&spec.events)?;
    let mut stop = stop_signal();
    let client = grpc::client(spec.grpc)?;
    let failures = Arc::new(AtomicU64::new(0));
    let (done_tx, done) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for (name, kind) in &spec.subscriptions {
        let consumer = Consumer {
            client: client.clone(),
            topic: spec.topic.clone(),
            sub: name.clone(),
            kind: *kind,
            sink: sink.clone(),
            failures: failures.clone(),
        };
        tasks.spawn(consumer.run(done.clone()));
    }

    stop.wait_for(|stop| *stop).await.context("the stop signal went away")?;
    let deadline = Instant::now() + Duration::from_millis(spec.drain_ms);
    let mut client = client;
    let (drained, backlogs) = loop {
        let backlogs = backlogs(&mut client, &spec.topic, &spec.subscriptions).await;
        let drained = backlogs.iter().all(|(_, b)| *b == 0);
        if drained || Instant::now() > deadline {
            break (drained, backlogs);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = done_tx.send(true);
    while let Some(joined) = tasks.join_next().await {
        joined.context("a consuming task panicked")?;
    }
    sink.send(Event::Finished { failures: failures.load(Ordering::Relaxed), drained, backlogs });
    drop(sink);
    thread.join().map_err(|_| anyhow::anyhow!("the event writer panicked"))?
}

/// Each subscription's backlog; `u64::MAX` when the server did not answer.
async fn backlogs(client: &mut Client, topic: &str, subs: &[(String, SubKind)]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for (sub, _) in subs {
        let request = api::StatsRequest { topic: topic.to_owned(), subscription: sub.clone() };
        let backlog = match tokio::time::timeout(OPEN_TIMEOUT, client.stats(request)).await {
            Ok(Ok(stats)) => stats.into_inner().backlog,
            _ => u64::MAX,
        };
        out.push((sub.clone(), backlog));
    }
    out
}

/// What an unanswered settle request covered.
enum Pending {
    /// Receipt and message id of each acked delivery, in request order.
    Acks(Vec<(String, String)>),
    Commit,
}

struct Consumer {
    client: Client,
    topic: String,
    sub: String,
    kind: SubKind,
    sink: EventSink,
    failures: Arc<AtomicU64>,
}

impl Consumer {
    async fn run(mut self, done: watch::Receiver<bool>) {
        while !*done.borrow() {
            match self.session(done.clone()).await {
                Ok(()) => return,
                Err(error) => {
                    self.sink.send(Event::Reconnected { what: self.sub.clone(), error });
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        }
    }

    /// One `Consume` stream until `done` (Ok) or until it breaks (Err: why).
    async fn session(&mut self, mut done: watch::Receiver<bool>) -> Result<(), String> {
        let (tx, rx) = mpsc::channel::<api::ConsumeRequest>(64);
        let open = api::consume_request::Open {
            topic: self.topic.clone(),
            subscription: self.sub.clone(),
            credits: CREDITS,
        };
        send(&tx, 0, In::Open(open)).await?;
        let mut inbound =
            match tokio::time::timeout(OPEN_TIMEOUT, self.client.consume(ReceiverStream::new(rx))).await {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) => return Err(grpc::describe(&status)),
                Err(_) => return Err("opening the stream timed out".into()),
            };
        let mut next_request = 1u64;
        let mut pending: HashMap<u64, Pending> = HashMap::new();
        loop {
            let response = tokio::select! {
                _ = done.wait_for(|d| *d) => return Ok(()),
                r = inbound.message() => match r {
                    Ok(Some(r)) => r,
                    Ok(None) => return Err("the server ended the stream".into()),
                    Err(status) => return Err(grpc::describe(&status)),
                },
            };
            match response.response {
                Some(Out::Deliveries(batch)) => {
                    let (settle, used) = self.record(batch.deliveries, &mut pending, next_request);
                    if let Some(settle) = settle {
                        send(&tx, next_request, settle).await?;
                        next_request += 1;
                    }
                    if used > 0 {
                        send(&tx, 0, In::Credit(api::consume_request::Credit { credits: used })).await?;
                    }
                }
                Some(Out::Settled(settled)) => self.confirm(settled, &mut pending),
                Some(Out::Opened(_)) | None => {}
            }
        }
    }

    /// Records deliveries; returns the settle request for them and the credits they used.
    fn record(
        &self,
        deliveries: Vec<api::Delivery>,
        pending: &mut HashMap<u64, Pending>,
        request_id: u64,
    ) -> (Option<In>, u32) {
        let used = u32::try_from(deliveries.len()).unwrap_or(u32::MAX);
        let mut acks = Vec::new();
        let mut commits: HashMap<u32, u64> = HashMap::new();
        for d in deliveries {
            let id = d.event.map(|e| e.id).unwrap_or_default();
            self.sink.send(Event::Delivered {
                sub: self.sub.clone(),
                id: id.clone(),
                partition: d.partition,
                offset: d.offset,
                attempt: d.attempt,
            });
            match self.kind {
                SubKind::Queue | SubKind::OrderedQueue => acks.push((d.receipt, id)),
                SubKind::Stream => {
                    let next = commits.entry(d.partition).or_default();
                    *next = (*next).max(d.offset + 1);
                }
            }
        }
        let settle = if !acks.is_empty() {
            let receipts = acks.iter().map(|(r, _)| r.clone()).collect();
            pending.insert(request_id, Pending::Acks(acks));
            Some(In::Ack(api::consume_request::Ack { receipts }))
        } else if !commits.is_empty() {
            let offsets = commits
                .into_iter()
                .map(|(partition, offset)| api::PartitionOffset { partition, offset })
                .collect();
            pending.insert(request_id, Pending::Commit);
            Some(In::Commit(api::consume_request::Commit { offsets }))
        } else {
            None
        };
        (settle, used)
    }

    /// Records what the server confirmed of a settle request.
    fn confirm(&self, settled: api::consume_response::Settled, pending: &mut HashMap<u64, Pending>) {
        let Some(request) = pending.remove(&settled.request_id) else { return };
        for (i, outcome) in settled.outcomes.into_iter().enumerate() {
            if outcome.error.is_some() {
                self.failures.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let event = match &request {
                Pending::Acks(acks) => {
                    // Outcomes come in request order; match by receipt all the same.
                    let id = acks
                        .iter()
                        .find(|(r, _)| *r == outcome.receipt)
                        .or_else(|| acks.get(i))
                        .map(|(_, id)| id.clone())
                        .unwrap_or_default();
                    Event::AckConfirmed { sub: self.sub.clone(), id }
                }
                Pending::Commit => Event::CommitConfirmed {
                    sub: self.sub.clone(),
                    partition: outcome.partition,
                    offset: outcome.offset,
                },
            };
            self.sink.send(event);
        }
    }
}

async fn send(tx: &mpsc::Sender<api::ConsumeRequest>, request_id: u64, request: In) -> Result<(), String> {
    tx.send(api::ConsumeRequest { request_id, request: Some(request) })
        .await
        .map_err(|_| "the request stream closed".to_owned())
}
