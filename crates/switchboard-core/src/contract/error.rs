//! The one error type of the backend contract.

use crate::{MessageError, NameError};

/// A boxed error from a backend's client library, kept as the `source` of a [`BusError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong talking to a messaging backend.
///
/// [`BusError::is_retryable`] tells transient failures (the broker is restarting, the
/// connection dropped) from ones that will fail again unchanged (bad input, unsupported
/// feature).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The connection URL could not be used.
    #[error("invalid connection URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given (credentials removed).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL names a backend this build does not include.
    #[error(
        "the {scheme}: backend is not compiled in; enable the `{feature}` feature of the switchboard crate"
    )]
    BackendNotEnabled {
        /// The URL scheme.
        scheme: String,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// The broker could not be reached (connect refused, DNS, TLS, timeout).
    #[error("cannot reach the {backend} broker at {endpoint}: {source}")]
    Unreachable {
        /// The backend's name.
        backend: &'static str,
        /// Host and port (no credentials).
        endpoint: String,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
    /// The backend does not have a feature the call needs; see [`super::Capabilities`].
    #[error("the {backend} backend does not support {feature}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// The missing feature (a capability flag name, or a short description).
        feature: &'static str,
    },
    /// A topic or subscription name breaks the naming rules.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// A message breaks the message rules.
    #[error("invalid message: {0}")]
    InvalidMessage(#[from] MessageError),
    /// An argument is out of range or inconsistent (a subscription spec, a delay).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A topic or subscription the call needs does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The subscription exists with settings that conflict with the ones asked for.
    #[error("{0}")]
    Conflict(String),
    /// The delivery can no longer be settled: its lease ran out, it was already settled by a
    /// redelivery, or the subscription it came from is closed. The message will be (or was)
    /// delivered again.
    #[error("the delivery can no longer be settled: {0}")]
    LeaseLost(String),
    /// The bus, publisher or subscription was closed.
    #[error("closed")]
    Closed,
    /// The broker refused or failed the operation.
    #[error("{backend}: {message}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// What the broker said, for a person.
        message: String,
        /// True when repeating the call may succeed (the broker is restarting, overloaded,
        /// or the connection dropped).
        retryable: bool,
        /// The underlying failure, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl BusError {
    /// Builds [`BusError::Backend`] from a client library error.
    pub fn backend(
        backend: &'static str,
        retryable: bool,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> BusError {
        BusError::Backend { backend, message: source.to_string(), retryable, source: Some(Box::new(source)) }
    }

    /// True when the same call may succeed later without any change by the caller.
    pub fn is_retryable(&self) -> bool {
        match self {
            BusError::Unreachable { .. } | BusError::Closed => true,
            BusError::Backend { retryable, .. } => *retryable,
            _ => false,
        }
    }
}
