//! Panic recovery: a panicking handler becomes a failed delivery (nacked and retried, then
//! dead-lettered), never a dead service.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use futures::future::BoxFuture;
use tower::Layer;

use super::{Around, Wrapped};
use crate::router::{Handled, HandlerError, Incoming};

/// Catches panics of the inner service (see the module docs). Innermost in the stack, so
/// every other layer sees a panic as an ordinary error.
#[derive(Clone, Copy, Debug, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> CatchPanic<S> {
        Wrapped::new(inner, *self)
    }
}

/// The service of [`CatchPanicLayer`].
pub type CatchPanic<S> = Wrapped<S, CatchPanicLayer>;

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

impl Around for CatchPanicLayer {
    fn around<F>(&self, req: Incoming, next: impl FnOnce(Incoming) -> F) -> BoxFuture<'static, Handled>
    where
        F: Future<Output = Handled> + Send + 'static,
    {
        let handler = req.handler.clone();
        let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| next(req))) {
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
