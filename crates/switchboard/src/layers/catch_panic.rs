//! Panic recovery: a panicking handler becomes a failed delivery (nacked and retried, then
//! dead-lettered), never a dead service.

use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::router::{Handled, HandlerError, Incoming, Outgoing};

/// Catches panics of the inner service (see the module docs). Innermost in the stack, so
/// every other layer sees a panic as an ordinary error.
#[derive(Clone, Copy, Debug, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic { inner }
    }
}

/// The service of [`CatchPanicLayer`].
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

impl<S> Service<Incoming> for CatchPanic<S>
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
        let handler = req.handler.clone();
        // A panic may happen while building the future as well as while polling it.
        let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(fut) => fut,
            Err(payload) => {
                let msg = panic_message(&*payload);
                return Box::pin(async move { Err(HandlerError::Panicked(msg)) });
            }
        };
        Box::pin(async move {
            match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(result) => result,
                Err(payload) => {
                    let msg = panic_message(&*payload);
                    tracing::error!(handler = %handler, panic = %msg, "Handler panicked; the message will be retried.");
                    Err(HandlerError::Panicked(msg))
                }
            }
        })
    }
}
