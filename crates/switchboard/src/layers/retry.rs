//! In-process retries of transient failures, with exponential backoff and jitter, before
//! the delivery is given back to the broker. Short blips (a dropped connection) are absorbed
//! here; longer outages fall through to broker redelivery, which backs off too.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};

pub use switchboard_policy::{Backoff, RetryPolicy};

use crate::router::{Handled, HandlerError, Incoming, Outgoing};

/// Retries the inner service by [`RetryPolicy`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// Retries by `policy`.
    pub fn new(policy: RetryPolicy) -> RetryLayer {
        RetryLayer { policy }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry { inner, policy: self.policy }
    }
}

/// The service of [`RetryLayer`].
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S> Service<Incoming> for Retry<S>
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
        // The first call goes to the service that was polled ready; retries to clones.
        let first = self.inner.call(req.clone());
        let mut inner = self.inner.clone();
        let policy = self.policy;
        Box::pin(async move {
            let mut result = first.await;
            let mut retry = 0;
            while let Err(e) = &result {
                if retry >= policy.max_retries || !e.is_retryable() {
                    break;
                }
                retry += 1;
                let delay = policy.backoff.delay(retry);
                tracing::debug!(handler = %req.handler, retry, ?delay, error = %e, "Retrying the handler.");
                metrics::counter!("switchboard_handler_retries_total", "handler" => req.handler.to_string())
                    .increment(1);
                tokio::time::sleep(delay).await;
                result = match inner.ready().await {
                    Ok(svc) => svc.call(req.clone()).await,
                    Err(e) => Err(e),
                };
            }
            result
        })
    }
}
