//! The writer process: one task per key publishes messages `k<key>-0`, `k<key>-1`, … one at
//! a time, so the order of a key's receipts is its sequence order.
//!
//! A publish that gets no answer (the server died mid-call) may or may not be stored, so it
//! is retried with the *same* id until it gets a receipt: the topic's dedup window turns a
//! retry of a stored message into a `duplicate` receipt naming the first copy, and the
//! message counts as acknowledged once, with that receipt's position.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use switchboard_proto::switchboard::v1 as api;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::Code;

use super::events::{Event, EventSink, MessageId};
use super::worker::{WorkerSpec, stop_signal};
use crate::grpc::{self, Client};
use crate::report::epoch_ms;

/// One publish attempt may take this long before it counts as unanswered.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// After the stop signal, a publish still without an answer is given up after this long (it
/// is then simply not acknowledged).
pub(super) const STOP_GRACE: Duration = Duration::from_secs(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

pub(super) async fn run(spec: &WorkerSpec) -> anyhow::Result<()> {
    let (sink, thread) = EventSink::to_file(&spec.events)?;
    let stop = stop_signal();
    let client = grpc::client(spec.grpc)?;
    let failures = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs_f64(f64::from(spec.keys.max(1)) / f64::from(spec.rate.max(1)));
    let mut tasks = JoinSet::new();
    for key in 0..spec.keys {
        let publisher = KeyPublisher {
            client: client.clone(),
            topic: spec.topic.clone(),
            key,
            sink: sink.clone(),
            failures: failures.clone(),
            stop: stop.clone(),
        };
        tasks.spawn(publisher.run(period));
    }
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined.context("a publishing task panicked").and_then(|r| r) {
            result = Err(e);
            tasks.abort_all();
        }
    }
    sink.send(Event::Finished {
        failures: failures.load(Ordering::Relaxed),
        drained: true,
        backlogs: Vec::new(),
    });
    drop(sink);
    thread.join().map_err(|_| anyhow::anyhow!("the event writer panicked"))??;
    result
}

struct KeyPublisher {
    client: Client,
    topic: String,
    key: u32,
    sink: EventSink,
    failures: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
}

impl KeyPublisher {
    async fn run(mut self, period: Duration) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for seq in 0.. {
            if *self.stop.borrow() {
                return Ok(());
            }
            tick.tick().await;
            let id = MessageId { key: self.key, seq }.render();
            if !self.publish_until_answered(id).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Publishes one message, retrying with the same id; false if it was given up after the
    /// stop signal.
    async fn publish_until_answered(&mut self, id: String) -> anyhow::Result<bool> {
        let partition_key = format!("key-{}", self.key);
        let data = format!("{{\"key\":{},\"id\":\"{id}\"}}", self.key).into_bytes();
        let request = api::PublishRequest {
            topic: self.topic.clone(),
            events: vec![grpc::event(id.clone(), Some(&partition_key), data)],
            deliver_at: None,
        };
        let mut backoff = Duration::from_millis(50);
        let mut given_up_at: Option<Instant> = None;
        for attempts in 1.. {
            let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.publish(request.clone())).await;
            let error = match outcome {
                Ok(Ok(response)) => {
                    let receipt = response
                        .into_inner()
                        .receipts
                        .into_iter()
                        .next()
                        .context("a publish answered without a receipt")?;
                    self.sink.send(Event::Acked {
                        id,
                        partition: receipt.partition,
                        offset: receipt.offset,
                        attempts,
                        duplicate: receipt.duplicate,
                        t_ms: epoch_ms(),
                    });
                    return Ok(true);
                }
                Ok(Err(status)) => {
                    // These never heal by retrying: the campaign set something up wrong, or
                    // the server forgot the topic (which the report must show, not hide).
                    if matches!(
                        status.code(),
                        Code::InvalidArgument
                            | Code::NotFound
                            | Code::PermissionDenied
                            | Code::Unauthenticated
                    ) {
                        bail!("publishing {id}: {}", grpc::describe(&status));
                    }
                    grpc::describe(&status)
                }
                Err(_) => format!("no answer within {ATTEMPT_TIMEOUT:?}"),
            };
            self.failures.fetch_add(1, Ordering::Relaxed);
            if attempts == 1 {
                self.sink.send(Event::Reconnected { what: "publish".into(), error });
            }
            if *self.stop.borrow() {
                let since = *given_up_at.get_or_insert_with(Instant::now);
                if since.elapsed() > STOP_GRACE {
                    return Ok(false);
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        Ok(false)
    }
}
