//! `GET /orders/{id}` with `Prefer: wait=N` (RFC 7240): a pending order is answered when it
//! becomes confirmed or canceled, or after N seconds, whichever is first. A client that wants
//! the outcome asks once instead of polling.
//!
//! One task follows the order feed from its head and wakes the requests waiting on an order
//! when its `order.confirmed` or `order.canceled` arrives, so an event costs one map lookup
//! however many requests wait. A request registers before it reads the order, so an outcome
//! between the read and the wait is not missed. On PostgreSQL the feed carries every
//! process's appends; on SQLite, this process's (the one order service the file has).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use switchboard::eventstore::EventStore;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::read_model::order_id;
use super::store::ShopDatabase;

/// The longest wait a request may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Requests waiting for an order's outcome.
pub struct Waiters {
    waiting: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Waiters {
    /// Follows `store`'s feed from its head.
    ///
    /// # Errors
    /// The head cannot be read.
    pub async fn start<DB: ShopDatabase>(store: EventStore<DB>) -> anyhow::Result<Arc<Waiters>> {
        let head = store.head().await?;
        let mut feed = store.subscribe_all(head).await?;
        let (stop, mut stopped) = watch::channel(false);
        let waiters = Arc::new(Waiters { waiting: Mutex::new(HashMap::new()), stop, task: Mutex::new(None) });
        let weak = Arc::downgrade(&waiters);
        let task = tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = stopped.changed() => return,
                    event = feed.next() => event,
                };
                let Some(waiters) = weak.upgrade() else { return };
                match event {
                    Ok(event) if matches!(event.ty.as_str(), "order.confirmed" | "order.canceled") => {
                        if let Some(id) = order_id(event.stream.as_str()) {
                            waiters.wake(id);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "The order waiters could not read the feed; retrying.");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        *waiters.task.lock() = Some(task);
        Ok(waiters)
    }

    /// A receiver that completes when order `id` becomes final (from now on).
    pub fn register(&self, id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut waiting = self.waiting.lock();
        let list = waiting.entry(id.to_owned()).or_default();
        // Requests that gave up left their senders behind: drop them here.
        list.retain(|s| !s.is_closed());
        list.push(tx);
        rx
    }

    /// Forgets the waits on `id` that gave up.
    pub fn forget(&self, id: &str) {
        let mut waiting = self.waiting.lock();
        if let Some(list) = waiting.get_mut(id) {
            list.retain(|s| !s.is_closed());
            if list.is_empty() {
                waiting.remove(id);
            }
        }
    }

    fn wake(&self, id: &str) {
        let woken = self.waiting.lock().remove(id);
        for waiter in woken.into_iter().flatten() {
            let _ = waiter.send(());
        }
    }

    /// Stops following the feed.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// The seconds a `Prefer` header asks to wait (`wait=N`), at most [`MAX_WAIT`].
pub fn preferred_wait(headers: &axum::http::HeaderMap) -> Option<Duration> {
    headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).find_map(
        |p| {
            let (name, value) = p.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            let seconds: f64 = value.trim().trim_matches('"').parse().ok()?;
            (seconds.is_finite() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds).min(MAX_WAIT))
        },
    )
}
