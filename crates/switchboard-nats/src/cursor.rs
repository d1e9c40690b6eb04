//! Committed positions of stream subscriptions, kept in JetStream, and the in-order commit
//! rule that moves them.
//!
//! ## Where
//!
//! One key per (topic, subscription) in the KV bucket `SB_CURSORS`: the stream
//! `KV_SB_CURSORS` on subjects `$KV.SB_CURSORS.>`, laid out the way JetStream KV (2.9) lays
//! out a bucket (one value per subject, file storage), so `nats kv get SB_CURSORS <key>`
//! shows it. The key is `<escaped topic>.<escaped subscription>` ([`naming::escape`]
//! leaves no `.`, so the key is injective). The value is JSON:
//! `{"mode":"stream","topic":…,"subscription":…,"start":…,"next":N,"id":…}`, where `next`
//! is the stream sequence the subscription reads next (everything below it is committed)
//! and `id` is unique per creation of the subscription.
//!
//! ## How
//!
//! Every write is a compare-and-set on the key's revision (the stream sequence of its
//! current value, `Nats-Expected-Last-Subject-Sequence`): creating expects no value, so two
//! concurrent creators agree on one cursor; a commit expects the revision it last saw. A
//! failed compare re-reads the key: a missing key (or one with another `id`: deleted and
//! created again) means the subscription was deleted ([`BusError::NotFound`] for its
//! reader), a larger `next` (written by another reader)
//! is kept (cursors never move back), a smaller one is overwritten.
//!
//! ## When
//!
//! An ack only moves the commit point in memory, up to the lowest delivery still unsettled
//! ([`CommitPoint`], the rule every backend shares). A background task per open subscription
//! writes the point at most every [`COMMIT_INTERVAL`], and once more when the subscription is
//! closed or dropped, and when the backend is closed; a failed write is retried with jittered
//! exponential backoff (`Reconnect`: 100 ms doubling to [`MAX_RETRY_BACKOFF`]). An ack that
//! returned `Ok` but was not written yet (a crash within the interval) is replayed after a restart: at-least-once,
//! never skipped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config, DiscardPolicy, LastRawMessageErrorKind, StorageType};
use async_nats::jetstream::{ErrorCode, stream::PurgeErrorKind};
use switchboard_core::backend::CommitPoint;
use switchboard_core::contract::{BusError, Start};
use switchboard_core::{SubscriptionName, TopicName};
use switchboard_policy::Reconnect;
use tokio::sync::watch;

use crate::backend::Inner;
use crate::connect::REQUEST_TIMEOUT;
use crate::errors::{backend_msg, js_retryable, map};
use crate::naming;

/// The JetStream stream behind the `SB_CURSORS` bucket.
pub(crate) const BUCKET_STREAM: &str = "KV_SB_CURSORS";
/// Subject prefix of the bucket's keys.
const KEY_PREFIX: &str = "$KV.SB_CURSORS.";
/// How often at most a subscription writes its commit point.
pub(crate) const COMMIT_INTERVAL: Duration = Duration::from_millis(50);
/// The longest wait before writing a commit point again after a failed write. The waits are
/// jittered ([`Reconnect`]): a server restart fails the writes of every subscription at once,
/// and without jitter they would all retry in the same instants.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(2);
/// Header a KV delete or purge marker carries.
const KV_OPERATION: &str = "KV-Operation";

/// The subject holding the cursor of `name` on `topic`.
pub(crate) fn subject(topic: &TopicName, name: &SubscriptionName) -> String {
    format!("{KEY_PREFIX}{}.{}", naming::escape(topic.as_str()), naming::escape(name.as_str()))
}

/// A stored cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// `"stream"`; anything else is not ours to resume.
    pub(crate) mode: String,
    /// Where the subscription started when it was created (informative).
    pub(crate) start: String,
    /// The next stream sequence to read.
    pub(crate) next: u64,
    /// Unique per creation, so a reader of a deleted subscription cannot write into a new
    /// subscription of the same name.
    pub(crate) id: String,
}

impl Record {
    /// A new stream cursor.
    pub(crate) fn stream(start: Start, next: u64, id: String) -> Record {
        let start = match start {
            Start::Earliest => "earliest",
            Start::Latest => "latest",
        };
        Record { mode: "stream".into(), start: start.into(), next, id }
    }

    fn encode(&self, topic: &TopicName, name: &SubscriptionName) -> bytes::Bytes {
        let v = serde_json::json!({
            "mode": self.mode,
            "topic": topic.as_str(),
            "subscription": name.as_str(),
            "start": self.start,
            "next": self.next,
            "id": self.id,
        });
        bytes::Bytes::from(v.to_string())
    }

    fn decode(payload: &[u8]) -> Option<Record> {
        let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        Some(Record {
            mode: v.get("mode")?.as_str()?.to_owned(),
            start: v.get("start").and_then(|s| s.as_str()).unwrap_or_default().to_owned(),
            next: v.get("next")?.as_u64()?,
            id: v.get("id").and_then(|s| s.as_str()).unwrap_or_default().to_owned(),
        })
    }
}

/// What a key holds: its revision (0 when it never had a value) and its record, if any.
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) revision: u64,
    pub(crate) record: Option<Record>,
}

/// Creates the bucket unless this connection already did.
pub(crate) async fn ensure_bucket(inner: &Inner) -> Result<(), BusError> {
    if inner.bucket_ready.load(Ordering::Acquire) {
        return Ok(());
    }
    let config = Config {
        name: BUCKET_STREAM.to_owned(),
        subjects: vec![format!("{KEY_PREFIX}>")],
        description: Some("switchboard stream subscription cursors".into()),
        storage: StorageType::File,
        max_messages_per_subject: 1,
        max_messages: -1,
        max_bytes: -1,
        max_consumers: -1,
        discard: DiscardPolicy::New,
        duplicate_window: Duration::from_secs(120),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        ..Default::default()
    };
    match inner.js.create_stream(config).await {
        Ok(_) => {}
        Err(e) => match e.kind() {
            // Exists (created by another connection, maybe with other settings): use it.
            CreateStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NAME_EXIST => {}
            CreateStreamErrorKind::JetStream(j) => {
                let retryable = js_retryable(&j);
                return Err(map("creating the cursor bucket", e, retryable));
            }
            _ => return Err(map("creating the cursor bucket", e, true)),
        },
    }
    inner.bucket_ready.store(true, Ordering::Release);
    Ok(())
}

/// Reads a key. A missing bucket reads as an empty key.
pub(crate) async fn read(inner: &Inner, subject: &str) -> Result<Read, BusError> {
    let empty = Read { revision: 0, record: None };
    let stream = inner
        .js
        .get_stream_no_info(BUCKET_STREAM)
        .await
        .map_err(|e| map("opening the cursor bucket", e, true))?;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => {
            let deleted = m.headers.get(KV_OPERATION).is_some();
            let record = if deleted { None } else { Record::decode(&m.payload) };
            if !deleted && record.is_none() {
                return Err(backend_msg(
                    format!("the cursor at {subject} is not a switchboard cursor"),
                    false,
                ));
            }
            Ok(Read { revision: m.sequence, record })
        }
        Err(e) => match e.kind() {
            LastRawMessageErrorKind::NoMessageFound => Ok(empty),
            LastRawMessageErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                Ok(empty)
            }
            LastRawMessageErrorKind::JetStream(j) => {
                let retryable = js_retryable(&j);
                Err(map(&format!("reading the cursor {subject}"), e, retryable))
            }
            _ => Err(map(&format!("reading the cursor {subject}"), e, true)),
        },
    }
}

/// Why a compare-and-set write failed.
#[derive(Debug)]
pub(crate) enum PutError {
    /// The key's revision was not the expected one.
    Changed,
    /// Anything else, mapped.
    Failed(BusError),
}

/// Writes `record` if the key is still at `expected` (0: has no value); returns the new
/// revision.
pub(crate) async fn put(
    inner: &Inner,
    subject: &str,
    topic: &TopicName,
    name: &SubscriptionName,
    record: &Record,
    expected: u64,
) -> Result<u64, PutError> {
    let failed = |e, retryable| PutError::Failed(map(&format!("writing the cursor {subject}"), e, retryable));
    let publish =
        PublishMessage::build().payload(record.encode(topic, name)).expected_last_subject_sequence(expected);
    let ack = inner.js.send_publish(subject.to_owned(), publish).await.map_err(|e| failed(e, true))?;
    match ack.await {
        Ok(a) => Ok(a.sequence),
        Err(e) => match e.kind() {
            PublishErrorKind::WrongLastSequence => Err(PutError::Changed),
            PublishErrorKind::StreamNotFound => {
                // The bucket was deleted behind our back: create it again next time.
                inner.bucket_ready.store(false, Ordering::Release);
                Err(failed(e, true))
            }
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => Err(failed(e, true)),
            _ => Err(failed(e, false)),
        },
    }
}

/// Removes a key (and its history); a missing bucket or key is fine.
pub(crate) async fn delete(inner: &Inner, subject: &str) -> Result<(), BusError> {
    let Ok(stream) = inner.js.get_stream_no_info(BUCKET_STREAM).await else {
        return Ok(());
    };
    match stream.purge().filter(subject).await {
        Ok(_) => Ok(()),
        Err(e) => match e.kind() {
            PurgeErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => Ok(()),
            PurgeErrorKind::JetStream(j) => {
                let retryable = js_retryable(&j);
                Err(map(&format!("deleting the cursor {subject}"), e, retryable))
            }
            _ => Err(map(&format!("deleting the cursor {subject}"), e, true)),
        },
    }
}

/// The stored side of one open stream subscription: the key, the revision last seen and
/// the value last written, serialized by a lock so writes reach the server in order.
pub(crate) struct Store {
    inner: Arc<Inner>,
    topic: TopicName,
    name: SubscriptionName,
    subject: String,
    record: Record,
    written: tokio::sync::Mutex<Written>,
    /// Set once the key is found deleted (the subscription was deleted).
    pub(crate) gone: watch::Sender<bool>,
}

#[derive(Debug)]
struct Written {
    revision: u64,
    next: u64,
}

impl Store {
    pub(crate) fn new(
        inner: Arc<Inner>,
        topic: TopicName,
        name: SubscriptionName,
        record: Record,
        revision: u64,
    ) -> Arc<Store> {
        let subject = subject(&topic, &name);
        let written = Written { revision, next: record.next };
        Arc::new(Store {
            inner,
            topic,
            name,
            subject,
            record,
            written: tokio::sync::Mutex::new(written),
            gone: watch::channel(false).0,
        })
    }

    fn not_found(&self) -> BusError {
        BusError::subscription_not_found(&self.topic, &self.name)
    }

    /// Writes `point` unless a value at or past it is stored already.
    pub(crate) async fn flush_to(&self, point: u64) -> Result<(), BusError> {
        let mut w = self.written.lock().await;
        if point <= w.next {
            return Ok(());
        }
        let record = Record { next: point, ..self.record.clone() };
        for _ in 0..4 {
            match put(&self.inner, &self.subject, &self.topic, &self.name, &record, w.revision).await {
                Ok(revision) => {
                    *w = Written { revision, next: point };
                    return Ok(());
                }
                Err(PutError::Failed(e)) => return Err(e),
                Err(PutError::Changed) => {
                    let read = read(&self.inner, &self.subject).await?;
                    match read.record {
                        Some(r) if r.mode == self.record.mode && r.id == self.record.id => {
                            w.revision = read.revision;
                            if r.next >= point {
                                // Another reader committed further: cursors never move back.
                                w.next = r.next;
                                return Ok(());
                            }
                        }
                        _ => {
                            self.gone.send_replace(true);
                            return Err(self.not_found());
                        }
                    }
                }
            }
        }
        Err(backend_msg(format!("the cursor {} kept changing while writing it", self.subject), true))
    }
}

/// The commit side of one open stream subscription: the tracker and the latest point, which
/// a background task writes ([`committer`]).
pub(crate) struct Cursor {
    pub(crate) store: Arc<Store>,
    pub(crate) topic: TopicName,
    pub(crate) name: SubscriptionName,
    tracker: parking_lot::Mutex<CommitPoint>,
    point: watch::Sender<u64>,
}

impl Cursor {
    /// Starts the cursor of a reader at `store`'s stored position, with its writer task, and
    /// registers it with the backend (for stats and the final flush on close).
    pub(crate) fn start(store: Arc<Store>) -> Arc<Cursor> {
        let next = store.record.next;
        let (point, rx) = watch::channel(next);
        tokio::spawn(committer(store.clone(), rx));
        let cursor = Arc::new(Cursor {
            topic: store.topic.clone(),
            name: store.name.clone(),
            store,
            tracker: parking_lot::Mutex::new(CommitPoint::resuming_at(next)),
            point,
        });
        let mut open = cursor.store.inner.cursors.lock();
        open.retain(|c| c.strong_count() > 0);
        open.push(Arc::downgrade(&cursor));
        drop(open);
        cursor
    }

    /// A message read from the stream.
    pub(crate) fn delivered(&self, seq: u64) {
        self.tracker.lock().delivered(seq);
    }

    /// An ack: moves the commit point (written soon by the task).
    pub(crate) fn acked(&self, seq: u64) {
        let moved = self.tracker.lock().acked(seq);
        if let Some(point) = moved {
            self.point.send_replace(point);
        }
    }

    /// Deliveries read and not acked, and the commit point in memory.
    pub(crate) fn snapshot(&self) -> (usize, u64) {
        let t = self.tracker.lock();
        // Always known: the tracker starts at the stored position.
        (t.pending(), t.committed().unwrap_or_default())
    }

    /// Writes the current commit point now.
    pub(crate) async fn flush(&self) -> Result<(), BusError> {
        let point = *self.point.borrow();
        match tokio::time::timeout(REQUEST_TIMEOUT * 2, self.store.flush_to(point)).await {
            Ok(r) => r,
            Err(_) => Err(backend_msg("writing the stream cursor timed out", true)),
        }
    }
}

/// Writes the commit point of one cursor: at most every [`COMMIT_INTERVAL`], retrying
/// failures, and a last time when the cursor is dropped. Ends when the backend is closed
/// or the subscription is found deleted.
async fn committer(store: Arc<Store>, mut rx: watch::Receiver<u64>) {
    let mut closed = store.inner.closed.subscribe();
    let mut reconnect = Reconnect::up_to(MAX_RETRY_BACKOFF);
    let mut failing = false;
    loop {
        if !failing {
            let dropped = tokio::select! {
                r = rx.changed() => r.is_err(),
                _ = closed.wait_for(|c| *c) => return,
            };
            if dropped {
                // Last write after the cursor is gone (all its deliveries settled or dropped).
                let point = *rx.borrow();
                if let Ok(Err(e)) = tokio::time::timeout(REQUEST_TIMEOUT * 2, store.flush_to(point)).await {
                    tracing::warn!(subject = %store.subject, error = %e, "final cursor write failed; acks since the last write will be replayed");
                }
                return;
            }
        }
        let wait = if failing { reconnect.next_delay() } else { COMMIT_INTERVAL };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
        let point = *rx.borrow_and_update();
        match store.flush_to(point).await {
            Ok(()) => {
                failing = false;
                reconnect.reset();
            }
            Err(BusError::NotFound { .. }) => return,
            Err(e) => {
                tracing::warn!(subject = %store.subject, error = %e, "writing the stream cursor failed; retrying");
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_keys_are_injective() {
        let r = Record::stream(Start::Latest, 42, "x1".into());
        let topic = TopicName::new("a.b").expect("valid");
        let name = SubscriptionName::new("s").expect("valid");
        assert_eq!(Record::decode(&r.encode(&topic, &name)), Some(r));
        let key = |t: &str, s: &str| {
            subject(&TopicName::new(t).expect("valid"), &SubscriptionName::new(s).expect("valid"))
        };
        assert_ne!(key("a.b", "c"), key("a", "b.c"));
        assert_ne!(key("a_b", "c"), key("a.b", "c"));
        assert_eq!(key("a.b", "c"), "$KV.SB_CURSORS.a_Db.c");
    }
}
