//! The subscription root: a live tail of a topic, served over WebSocket.
//!
//! The tail keeps the next offset of every partition, reads whatever is new, and when
//! nothing is, waits for the topic's next publish (at most a second, so a publish that
//! lands between a read and the wait is picked up by the next round).

use std::collections::VecDeque;
use std::time::Duration;

use async_graphql::{Context, Subscription};
use futures::Stream;
use switchboard_broker::{Broker, BrokerError, LogRecord};
use switchboard_core::TopicName;

use super::access::{check, state};
use super::error::{GqlResult, gql_error, topic_name};
use super::service_graph::{GraphWindow, ServiceGraph};
use super::types::Message;
use crate::auth::Action;
use crate::metrics::{Api, ConnectionGuard};

/// Longest wait for a publish before the tail looks at the log again.
const POLL: Duration = Duration::from_secs(1);
/// Most messages one read of one partition returns.
const READ_BATCH: usize = 256;

pub(super) struct SubscriptionRoot;

/// Live streams.
#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// The service graph now, and again after each of the broker's samples (every 5 s).
    /// Needs `admin` on every topic.
    async fn service_graph(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] window: GraphWindow,
    ) -> async_graphql::Result<impl Stream<Item = ServiceGraph> + use<>> {
        super::service_graph::subscribe(ctx, window)
    }

    /// Every message published to `topic`, in order within each partition, as it is
    /// published: from now on (`fromEnd`, the default) or from the oldest retained message.
    /// Reading moves no subscription. Needs consume permission on the topic. The stream ends
    /// with an error if the topic is deleted or the server stops.
    async fn tail(
        &self,
        ctx: &Context<'_>,
        topic: String,
        #[graphql(default = true)] from_end: bool,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Message>> + use<>> {
        let topic = topic_name(&topic)?;
        check(ctx, Action::Consume, &topic)?;
        let state = state(ctx)?;
        let info = state.broker.topic_info(&topic).gql()?;
        let next =
            info.partitions.iter().map(|p| if from_end { p.end_offset } else { p.start_offset }).collect();
        let tail = Tail {
            broker: state.broker.clone(),
            topic,
            next,
            cursor: 0,
            ready: VecDeque::new(),
            ended: false,
            _open: state.metrics.connection(Api::Graphql),
        };
        Ok(futures::stream::unfold(tail, |mut t| async move {
            let item = t.next().await?;
            Some((item, t))
        }))
    }
}

/// The state of one live tail.
struct Tail {
    broker: Broker,
    topic: TopicName,
    /// Next offset to read, per partition.
    next: Vec<u64>,
    /// The partition the next read starts with, so a busy partition cannot starve others.
    cursor: usize,
    /// Read but not yet yielded.
    ready: VecDeque<LogRecord>,
    ended: bool,
    /// Counts the tail among the server's open GraphQL streams while it lives.
    _open: ConnectionGuard,
}

impl Tail {
    /// The next message, an error that ends the tail, or `None` once ended.
    async fn next(&mut self) -> Option<async_graphql::Result<Message>> {
        loop {
            if self.ended {
                return None;
            }
            if let Some(r) = self.ready.pop_front() {
                return Some(Ok(Message(r)));
            }
            // Counted before reading, so a publish between the read and the wait wakes it.
            let outcome = match self.broker.publish_count(&self.topic) {
                Ok(seen) => match self.read_round() {
                    Ok(true) => Ok(()),
                    Ok(false) => self.broker.wait_for_publish(&self.topic, seen, POLL).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                self.ended = true;
                return Some(Err(gql_error(e.into())));
            }
        }
    }

    /// Reads what is new in the partitions, round robin from `cursor`, until something is
    /// read or every partition was looked at. Returns whether anything was read.
    fn read_round(&mut self) -> Result<bool, BrokerError> {
        let partitions = self.next.len();
        for _ in 0..partitions {
            let p = self.cursor;
            self.cursor = (self.cursor + 1) % partitions;
            if self.read_partition(p)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn read_partition(&mut self, p: usize) -> Result<bool, BrokerError> {
        let partition = p as u32;
        loop {
            let from = self.next[p];
            let records = match self.broker.read(&self.topic, partition, from, READ_BATCH) {
                // Retention deleted what the tail had not reached: go on from the oldest kept.
                Err(BrokerError::OffsetOutOfRange { start, .. }) if from < start => {
                    self.next[p] = start;
                    continue;
                }
                other => other?,
            };
            // `read` steps over redriven copies itself: empty means nothing new yet.
            let Some(last) = records.last() else { return Ok(false) };
            self.next[p] = last.offset + 1;
            self.ready.extend(records);
            return Ok(true);
        }
    }
}
