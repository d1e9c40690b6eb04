//! Turning `async-nats` errors into [`BusError`]s. Call sites decide retryability from the
//! error kind (each client call has its own kind enum); the rule is the same everywhere:
//! connection-level trouble (timeouts, no responders while JetStream restarts, a dropped
//! connection) is retryable, a JetStream API error is not unless the server says it is
//! temporarily unavailable (503).

use switchboard_core::contract::BusError;

/// The backend's name in errors and capability tables.
pub(crate) const BACKEND: &str = "nats";

/// A [`BusError::Backend`] with a message and no source.
pub(crate) fn backend_msg(message: impl Into<String>, retryable: bool) -> BusError {
    BusError::Backend { backend: BACKEND, message: message.into(), retryable, source: None }
}

/// A [`BusError::Backend`] wrapping a client error.
pub(crate) fn map(
    context: &str,
    err: impl std::error::Error + Send + Sync + 'static,
    retryable: bool,
) -> BusError {
    BusError::Backend {
        backend: BACKEND,
        message: format!("{context}: {err}"),
        retryable,
        source: Some(Box::new(err)),
    }
}

/// A [`BusError::Backend`] wrapping a boxed client error (`async_nats::Error`, as returned
/// by acks, which fail only at the connection level: retryable).
pub(crate) fn map_boxed(context: &str, err: async_nats::Error) -> BusError {
    BusError::Backend {
        backend: BACKEND,
        message: format!("{context}: {err}"),
        retryable: true,
        source: Some(err),
    }
}

/// Whether a JetStream API error is worth retrying.
pub(crate) fn js_retryable(err: &async_nats::jetstream::Error) -> bool {
    err.code() == 503
}
