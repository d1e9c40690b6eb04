//! The shape most handler layers share, written once: a layer that does something around
//! one call of the layer below (changes the request, skips the call, or looks at and changes
//! the outcome) implements [`Around`], and [`Wrapped`] is its tower `Service`. Tracing,
//! metrics, correlation ids, dead-lettering, the circuit breaker, the timeout and panic
//! recovery are each only their `around`; the layers that call the service below more than
//! once or later (retry, inbox, per-key order) keep services of their own.
//!
//! A service can write its own layer the same way:
//!
//! ```
//! use std::future::Future;
//! use futures::future::BoxFuture;
//! use switchboard::layers::{Around, Wrapped};
//! use switchboard::{Handled, Incoming};
//!
//! /// Logs every delivery's id.
//! #[derive(Clone, Copy)]
//! struct LogIds;
//!
//! impl Around for LogIds {
//!     fn around<F>(&self, req: Incoming, next: impl FnOnce(Incoming) -> F) -> BoxFuture<'static, Handled>
//!     where
//!         F: Future<Output = Handled> + Send + 'static,
//!     {
//!         println!("handling {}", req.message.id);
//!         Box::pin(next(req))
//!     }
//! }
//!
//! impl<S> tower::Layer<S> for LogIds {
//!     type Service = Wrapped<S, LogIds>;
//!     fn layer(&self, inner: S) -> Self::Service {
//!         Wrapped::new(inner, *self)
//!     }
//! }
//! ```

use std::future::Future;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::Service;

use crate::router::{Handled, HandlerError, Incoming, Outgoing};

/// What a layer does around one handler call.
pub trait Around: Clone + Send + Sync + 'static {
    /// The outcome of handling `req`. `next` calls the layer below, at most once; not calling
    /// it skips the handler (an open circuit breaker does).
    fn around<F>(&self, req: Incoming, next: impl FnOnce(Incoming) -> F) -> BoxFuture<'static, Handled>
    where
        F: Future<Output = Handled> + Send + 'static;
}

/// The service of an [`Around`] layer `L` over the service `S`.
#[derive(Clone, Debug)]
pub struct Wrapped<S, L> {
    inner: S,
    layer: L,
}

impl<S, L> Wrapped<S, L> {
    /// `layer` around `inner`.
    pub fn new(inner: S, layer: L) -> Wrapped<S, L> {
        Wrapped { inner, layer }
    }
}

impl<S, L> Service<Incoming> for Wrapped<S, L>
where
    S: Service<Incoming, Response = Vec<Outgoing>, Error = HandlerError>,
    S::Future: Send + 'static,
    L: Around,
{
    type Response = Vec<Outgoing>;
    type Error = HandlerError;
    type Future = BoxFuture<'static, Handled>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Incoming) -> Self::Future {
        let inner = &mut self.inner;
        self.layer.around(req, |req| inner.call(req))
    }
}
