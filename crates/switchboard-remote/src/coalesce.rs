//! Concurrent publishes share one `Publish` call in flight per topic.
//!
//! A service that publishes from many tasks at once (one per request it serves) would
//! otherwise send one unary call per publish; each call costs the server a request, a task
//! and its share of a group commit, and the client one HTTP/2 stream. Here the first publish
//! to a topic goes out at once, on the caller's own task, so a lone publish waits for nothing.
//! Publishes that arrive while that call is out queue up, and when it returns they leave
//! together as the next call, which a drain task sends. This is the batching a Switchboard
//! client should do (the bench's own client does the same), with no timer: a batch is
//! whatever queued during one round trip.
//!
//! What each caller sees is unchanged:
//!
//! - its messages stay together and in order, and a publish that returned is before any
//!   publish that started after it;
//! - its result is the result of the call that carried it;
//! - a request the server refuses as a whole (one caller's message over the server's size
//!   limit, a batch over its count limit) is sent again one caller at a time, so only the
//!   caller at fault gets the error;
//! - publishes with a `deliver_at` share a call only with those of the same `deliver_at`.
//!
//! A caller that stops waiting (its future dropped) may still have its messages published,
//! as with any call whose answer never arrived.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use switchboard_core::TopicName;
use switchboard_proto::io::cloudevents::v1 as ce;
use switchboard_proto::reason::{self, Reason};
use switchboard_proto::switchboard::v1 as api;
use tokio::sync::oneshot;
use tonic::Status;

use crate::connection::Shared;

/// Most events one coalesced call carries: well under the server's default batch limit
/// (1,000), so a server configured lower is rare; one that is gets each caller's batch alone.
const MAX_EVENTS: usize = 500;
/// Most encoded bytes one coalesced call carries, well under the server's default request
/// limit (16 MiB).
const MAX_BYTES: usize = 4 * 1024 * 1024;

/// Publishes with the same topic and `deliver_at` may share a call.
#[derive(Clone, PartialEq, Eq, Hash)]
struct LaneKey {
    topic: TopicName,
    deliver_at: Option<u64>,
}

/// One caller's batch, waiting for a call.
struct Pending {
    events: Vec<ce::CloudEvent>,
    bytes: usize,
    done: oneshot::Sender<Result<(), Status>>,
}

/// Publishes queued behind the call in flight. A lane exists while a call is out.
#[derive(Default)]
struct Lane {
    queue: VecDeque<Pending>,
}

/// What a publish does: send its own call (the lane was idle), or wait for the call that
/// carries it.
enum Role {
    Sender(Vec<ce::CloudEvent>),
    Queued(oneshot::Receiver<Result<(), Status>>),
}

/// The lanes of one backend.
#[derive(Clone, Default)]
pub(crate) struct Coalescer {
    lanes: Arc<Mutex<HashMap<LaneKey, Lane>>>,
}

impl Coalescer {
    /// Publishes `events` to `topic`, sharing a call with concurrent publishes of the same
    /// topic and `deliver_at`.
    ///
    /// # Errors
    /// The status of the call that carried these events.
    pub(crate) async fn publish(
        &self,
        shared: &Arc<Shared>,
        topic: &TopicName,
        deliver_at: Option<u64>,
        events: Vec<ce::CloudEvent>,
    ) -> Result<(), Status> {
        let key = LaneKey { topic: topic.clone(), deliver_at };
        let role = {
            let mut lanes = self.lanes.lock();
            match lanes.get_mut(&key) {
                Some(lane) => {
                    let (done, result) = oneshot::channel();
                    let bytes = events.iter().map(prost::Message::encoded_len).sum();
                    lane.queue.push_back(Pending { events, bytes, done });
                    Role::Queued(result)
                }
                None => {
                    lanes.insert(key.clone(), Lane::default());
                    Role::Sender(events)
                }
            }
        };
        match role {
            Role::Queued(result) => result.await.unwrap_or_else(|_| {
                Err(Status::cancelled("the publish was dropped before its call was answered"))
            }),
            Role::Sender(events) => {
                // The lane is ours until the guard hands it on, also if this future is dropped
                // mid-call, so queued publishes never wait for a caller that left.
                let _guard = LaneGuard { coalescer: self.clone(), shared: shared.clone(), key: key.clone() };
                send(shared, &key, events).await
            }
        }
    }

    /// Takes the next call's worth of queued publishes, or removes the lane when none wait.
    fn next_batch(&self, key: &LaneKey) -> Option<Vec<Pending>> {
        let mut lanes = self.lanes.lock();
        let lane = lanes.get_mut(key)?;
        if lane.queue.is_empty() {
            lanes.remove(key);
            return None;
        }
        let mut batch = Vec::new();
        let (mut events, mut bytes) = (0, 0);
        while let Some(next) = lane.queue.front() {
            let fits = events + next.events.len() <= MAX_EVENTS && bytes + next.bytes <= MAX_BYTES;
            if !batch.is_empty() && !fits {
                break;
            }
            events += next.events.len();
            bytes += next.bytes;
            batch.extend(lane.queue.pop_front());
        }
        Some(batch)
    }

    /// Sends what queued on `key` until nothing does.
    async fn drain(self, shared: Arc<Shared>, key: LaneKey) {
        while let Some(batch) = self.next_batch(&key) {
            send_batch(&shared, &key, batch).await;
        }
    }
}

/// Hands the lane on when the call of the publish that opened it is over.
struct LaneGuard {
    coalescer: Coalescer,
    shared: Arc<Shared>,
    key: LaneKey,
}

impl Drop for LaneGuard {
    fn drop(&mut self) {
        let waiting = {
            let mut lanes = self.coalescer.lanes.lock();
            match lanes.get(&self.key) {
                Some(lane) if lane.queue.is_empty() => {
                    lanes.remove(&self.key);
                    false
                }
                Some(_) => true,
                None => false,
            }
        };
        if !waiting {
            return;
        }
        let drain = self.coalescer.clone().drain(self.shared.clone(), self.key.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(drain);
            }
            // Only when the runtime itself is gone: nothing can send any more, so the queued
            // publishes are told so (dropping their senders) instead of waiting forever.
            Err(_) => {
                self.coalescer.lanes.lock().remove(&self.key);
            }
        }
    }
}

/// Sends several callers' batches as one call and gives each its result; when the server
/// refuses the request as a whole for its content, each batch is sent again alone.
async fn send_batch(shared: &Shared, key: &LaneKey, batch: Vec<Pending>) {
    if batch.len() == 1 {
        let Pending { events, done, .. } = batch.into_iter().next().expect("one");
        let _ = done.send(send(shared, key, events).await);
        return;
    }
    let events = batch.iter().flat_map(|p| p.events.iter().cloned()).collect();
    match send(shared, key, events).await {
        Err(status) if refused_for_content(&status) => {
            for Pending { events, done, .. } in batch {
                let _ = done.send(send(shared, key, events).await);
            }
        }
        result => {
            for p in batch {
                let _ = p.done.send(result.clone());
            }
        }
    }
}

/// Whether the server refused the request for what it carries (sizes, counts, one bad
/// event) rather than for where it went or the server's state; only such a refusal can
/// differ when the callers' batches are sent one by one.
fn refused_for_content(status: &Status) -> bool {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => true,
        Code::ResourceExhausted => reason::reason(status) != Some(Reason::NoSpace),
        _ => false,
    }
}

async fn send(shared: &Shared, key: &LaneKey, events: Vec<ce::CloudEvent>) -> Result<(), Status> {
    let request = api::PublishRequest {
        topic: key.topic.to_string(),
        events,
        deliver_at: key
            .deliver_at
            .map(|ms| crate::convert::timestamp_to_proto(switchboard_core::Timestamp(ms))),
    };
    shared.client().publish(request).await.map(|_| ())
}
