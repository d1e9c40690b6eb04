//! A deadline per handler call: a stuck handler fails the attempt (and is retried) instead
//! of holding its delivery until the lease runs out.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use tower::Layer;

use super::{Around, Wrapped};
use crate::router::{Handled, HandlerError, Incoming};

/// Fails calls that take longer than `timeout` with [`HandlerError::Timeout`]; the handler's
/// future is dropped (cancelled).
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// Calls get `timeout` each.
    pub fn new(timeout: Duration) -> TimeoutLayer {
        TimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Wrapped::new(inner, *self)
    }
}

/// The service of [`TimeoutLayer`].
pub type Timeout<S> = Wrapped<S, TimeoutLayer>;

impl Around for TimeoutLayer {
    fn around<F>(&self, req: Incoming, next: impl FnOnce(Incoming) -> F) -> BoxFuture<'static, Handled>
    where
        F: Future<Output = Handled> + Send + 'static,
    {
        let timeout = self.timeout;
        let fut = next(req);
        Box::pin(async move {
            tokio::time::timeout(timeout, fut).await.unwrap_or(Err(HandlerError::Timeout(timeout)))
        })
    }
}
