//! Concurrency with per-key order: different partition keys run in parallel (up to a limit),
//! messages of one key run one after another in the order the router received them.
//!
//! Order is fixed in `call`, which the router invokes in delivery order: each call takes its
//! place in its key's chain right there, before any await, and its future waits for the
//! previous call of the key to finish. Messages without a key are not ordered.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use parking_lot::Mutex;
use tokio::sync::{Semaphore, oneshot};
use tower::{Layer, Service};

use crate::router::{Handled, HandlerError, Incoming, Outgoing};

type Done = Shared<oneshot::Receiver<()>>;

/// Limits calls in flight to `max_concurrency`, keeping per-key order.
#[derive(Clone, Debug)]
pub struct KeyOrderLayer {
    permits: Arc<Semaphore>,
    tails: Arc<Mutex<HashMap<String, Done>>>,
}

impl KeyOrderLayer {
    /// At most `max_concurrency` calls at once (at least 1).
    pub fn new(max_concurrency: usize) -> KeyOrderLayer {
        KeyOrderLayer {
            permits: Arc::new(Semaphore::new(max_concurrency.max(1))),
            tails: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<S> Layer<S> for KeyOrderLayer {
    type Service = KeyOrder<S>;
    fn layer(&self, inner: S) -> KeyOrder<S> {
        KeyOrder { inner, permits: self.permits.clone(), tails: self.tails.clone() }
    }
}

/// The service of [`KeyOrderLayer`].
#[derive(Clone, Debug)]
pub struct KeyOrder<S> {
    inner: S,
    permits: Arc<Semaphore>,
    tails: Arc<Mutex<HashMap<String, Done>>>,
}

impl<S> Service<Incoming> for KeyOrder<S>
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
        let key = req.message.partition_key().map(str::to_owned);
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let previous = key.as_ref().and_then(|k| {
            let mut tails = self.tails.lock();
            tails.insert(k.clone(), done_rx.shared())
        });
        // The inner call happens when this call's turn comes, not now.
        let mut inner = self.inner.clone();
        std::mem::swap(&mut inner, &mut self.inner);
        let permits = self.permits.clone();
        let tails = self.tails.clone();
        Box::pin(async move {
            if let Some(prev) = previous {
                // An error means the previous call's future was dropped: its turn is over.
                let _ = prev.await;
            }
            let result = match permits.acquire_owned().await {
                Ok(_permit) => inner.call(req).await,
                Err(_) => Err(HandlerError::transient("the concurrency limiter was closed")),
            };
            let _ = done_tx.send(());
            if let Some(k) = key {
                // Forget the key once no later call is queued behind this one.
                let mut tails = tails.lock();
                if tails.get(&k).is_some_and(|t| t.peek().is_some()) {
                    tails.remove(&k);
                }
            }
            result
        })
    }
}
