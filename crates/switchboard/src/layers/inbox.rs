//! The idempotent consumer: a message id a handler has already processed (within the
//! window) is acked without running the handler again, so at-least-once delivery does not
//! become at-least-once side effects.
//!
//! An id is recorded after the handler succeeds. Two deliveries of one id running at the
//! same moment (a redelivery racing a slow first attempt) can both run; to make the record
//! and the side effect atomic, write both in one database transaction (the outbox/inbox
//! patterns build on [`InboxStore`] for that).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use switchboard_core::contract::BoxError;
use tower::{Layer, Service};

use crate::router::{Handled, HandlerError, Incoming, Outgoing};

/// Where processed message ids are kept.
#[async_trait::async_trait]
pub trait InboxStore: Send + Sync + 'static {
    /// True when `handler` processed `message_id` within the store's window.
    ///
    /// # Errors
    /// The store cannot be read.
    async fn contains(&self, handler: &str, message_id: &str) -> Result<bool, BoxError>;

    /// Records that `handler` processed `message_id`.
    ///
    /// # Errors
    /// The store cannot be written.
    async fn insert(&self, handler: &str, message_id: &str) -> Result<(), BoxError>;
}

/// An in-memory inbox with a time window and a size bound (oldest entries go first). Lost
/// on restart: use a database store where duplicates after a restart matter.
#[derive(Debug)]
pub struct MemoryInbox {
    window: Duration,
    max_entries: usize,
    entries: Mutex<Entries>,
}

/// (handler, message id).
type Key = (String, String);

/// When each key was recorded, and the keys in recording order (for eviction).
type Entries = (HashMap<Key, Instant>, VecDeque<(Key, Instant)>);

impl MemoryInbox {
    /// Remembers ids for `window`, at most `max_entries` of them.
    pub fn new(window: Duration, max_entries: usize) -> MemoryInbox {
        MemoryInbox { window, max_entries: max_entries.max(1), entries: Mutex::new(Default::default()) }
    }
}

#[async_trait::async_trait]
impl InboxStore for MemoryInbox {
    async fn contains(&self, handler: &str, message_id: &str) -> Result<bool, BoxError> {
        let entries = self.entries.lock();
        let key = (handler.to_owned(), message_id.to_owned());
        Ok(entries.0.get(&key).is_some_and(|at| at.elapsed() < self.window))
    }

    async fn insert(&self, handler: &str, message_id: &str) -> Result<(), BoxError> {
        let now = Instant::now();
        let mut guard = self.entries.lock();
        let (map, order) = &mut *guard;
        let key = (handler.to_owned(), message_id.to_owned());
        map.insert(key.clone(), now);
        order.push_back((key, now));
        while let Some((k, at)) = order.front() {
            if order.len() <= self.max_entries && at.elapsed() < self.window {
                break;
            }
            // Only remove the map entry if it was not refreshed by a later insert.
            if map.get(k) == Some(at) {
                map.remove(k);
            }
            order.pop_front();
        }
        Ok(())
    }
}

/// Skips messages the store has seen; records them after the handler succeeds.
#[derive(Clone)]
pub struct InboxLayer {
    store: Arc<dyn InboxStore>,
}

impl std::fmt::Debug for InboxLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxLayer").finish_non_exhaustive()
    }
}

impl InboxLayer {
    /// Dedups through `store`.
    pub fn new(store: Arc<dyn InboxStore>) -> InboxLayer {
        InboxLayer { store }
    }
}

impl<S> Layer<S> for InboxLayer {
    type Service = Inbox<S>;
    fn layer(&self, inner: S) -> Inbox<S> {
        Inbox { inner, store: self.store.clone() }
    }
}

/// The service of [`InboxLayer`].
#[derive(Clone)]
pub struct Inbox<S> {
    inner: S,
    store: Arc<dyn InboxStore>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Inbox<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S> Service<Incoming> for Inbox<S>
where
    S: Service<Incoming, Response = Vec<Outgoing>, Error = HandlerError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Vec<Outgoing>;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Handled>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Incoming) -> Self::Future {
        let store = self.store.clone();
        // The call waits on the store first, so it takes the ready service with it.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let handler = req.handler.clone();
            let id = req.message.id.clone();
            if store.contains(&handler, &id).await.map_err(HandlerError::Transient)? {
                tracing::debug!(handler = %handler, id = %id, "Skipped a message this handler already processed.");
                metrics::counter!("switchboard_handler_duplicates_total", "handler" => handler.to_string())
                    .increment(1);
                return Ok(Vec::new());
            }
            let outputs = inner.call(req).await?;
            if let Err(e) = store.insert(&handler, &id).await {
                // The work is done and its output must go out; the only cost is that a
                // redelivery of this id would run again.
                tracing::warn!(handler = %handler, id = %id, error = %e, "Could not record a processed message id.");
            }
            Ok(outputs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_inbox_forgets_after_its_window_and_beyond_its_size() {
        let inbox = MemoryInbox::new(Duration::from_millis(50), 2);
        inbox.insert("h", "a").await.expect("insert");
        assert!(inbox.contains("h", "a").await.expect("read"));
        assert!(!inbox.contains("other", "a").await.expect("read"), "per handler");
        inbox.insert("h", "b").await.expect("insert");
        inbox.insert("h", "c").await.expect("insert");
        assert!(!inbox.contains("h", "a").await.expect("read"), "evicted by size");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!inbox.contains("h", "c").await.expect("read"), "expired");
    }
}
