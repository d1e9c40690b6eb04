//! A deadline per handler call: a stuck handler fails the attempt (and is retried) instead
//! of holding its delivery until the lease runs out.

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::router::{Handled, HandlerError, Incoming, Outgoing};

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
        Timeout { inner, timeout: self.timeout }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Service<Incoming> for Timeout<S>
where
    S: Service<Incoming, Response = Vec<Outgoing>, Error = HandlerError>,
    S::Future: Send + 'static,
{
    type Response = Vec<Outgoing>;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Handled>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Incoming) -> Self::Future {
        let timeout = self.timeout;
        let fut = self.inner.call(req);
        Box::pin(async move {
            tokio::time::timeout(timeout, fut).await.unwrap_or(Err(HandlerError::Timeout(timeout)))
        })
    }
}
