//! The one error type of the backend contract.
//!
//! Errors carry data, not prose to be parsed: a [`BusError::NotFound`] says which
//! [`Resource`] is missing, a [`BusError::LeaseLost`] says why in a [`LeaseLostCause`], so a
//! caller decides by matching, never by reading the message.

use std::fmt;

use crate::{MessageError, NameError, SubscriptionName, TopicName};

/// A boxed error from a backend's client library, kept as the `source` of a [`BusError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a [`BusError::NotFound`] or [`BusError::Conflict`] is about.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// A topic.
    Topic(TopicName),
    /// A subscription on a topic.
    Subscription {
        /// The topic.
        topic: TopicName,
        /// The subscription.
        subscription: SubscriptionName,
    },
    /// An object of the broker's own that has no Switchboard name (a RabbitMQ queue or
    /// exchange, a NATS consumer), as the broker names it.
    Native {
        /// What kind of object (`queue`, `exchange`, `consumer`, …).
        kind: &'static str,
        /// The broker's name for it.
        name: String,
    },
}

impl Resource {
    /// A subscription on `topic`.
    pub fn subscription(topic: &TopicName, subscription: &SubscriptionName) -> Resource {
        Resource::Subscription { topic: topic.clone(), subscription: subscription.clone() }
    }

    /// The topic this is about, if it is a topic or a subscription.
    pub fn topic(&self) -> Option<&TopicName> {
        match self {
            Resource::Topic(t) | Resource::Subscription { topic: t, .. } => Some(t),
            Resource::Native { .. } => None,
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Topic(t) => write!(f, "topic {t}"),
            Resource::Subscription { topic, subscription } => {
                write!(f, "subscription {subscription} on topic {topic}")
            }
            Resource::Native { kind, name } => write!(f, "{kind} {name:?}"),
        }
    }
}

/// Why a delivery can no longer be settled.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseLostCause {
    /// Its lease ran out; another delivery of the message is (or will be) made.
    Expired,
    /// The broker no longer knows the delivery (settled by a redelivery, or an unknown
    /// receipt).
    Unknown,
    /// The subscription it came from was closed first.
    SubscriptionClosed,
    /// The connection or consume stream it came over broke.
    ConnectionLost,
}

impl LeaseLostCause {
    fn describe(self) -> &'static str {
        match self {
            LeaseLostCause::Expired => "its lease ran out",
            LeaseLostCause::Unknown => "the broker no longer knows it",
            LeaseLostCause::SubscriptionClosed => "its subscription was closed",
            LeaseLostCause::ConnectionLost => "the connection it came over broke",
        }
    }
}

/// What can go wrong talking to a messaging backend.
///
/// [`BusError::is_retryable`] tells transient failures (the broker is restarting, the
/// connection dropped) from ones that will fail again unchanged (bad input, unsupported
/// feature, a closed handle).
#[non_exhaustive]
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
    /// The backend does not have a feature the call needs; see
    /// [`Capabilities`](super::Capabilities).
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
    #[error("{resource} does not exist")]
    NotFound {
        /// What is missing.
        resource: Resource,
    },
    /// The resource exists with settings that conflict with the ones asked for.
    #[error("{resource} exists with other settings: {reason}")]
    Conflict {
        /// What exists.
        resource: Resource,
        /// Which settings differ, for a person.
        reason: String,
    },
    /// The delivery can no longer be settled. The message will be (or was) delivered again.
    #[error("the delivery can no longer be settled: {}{}", cause.describe(), detail_suffix(detail))]
    LeaseLost {
        /// Why.
        cause: LeaseLostCause,
        /// What the backend knows beyond the cause (which message, which lease), if anything.
        detail: String,
    },
    /// The bus, publisher or subscription was closed.
    #[error("closed")]
    Closed,
    /// Nothing answered in time (a request that got no reply).
    #[error("{operation} got no answer within {after:?}")]
    Timeout {
        /// What waited (`request to orders.commands`).
        operation: String,
        /// How long it waited.
        after: std::time::Duration,
    },
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

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() { String::new() } else { format!(" ({detail})") }
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

    /// [`BusError::NotFound`] for a topic.
    pub fn topic_not_found(topic: &TopicName) -> BusError {
        BusError::NotFound { resource: Resource::Topic(topic.clone()) }
    }

    /// [`BusError::NotFound`] for a subscription.
    pub fn subscription_not_found(topic: &TopicName, subscription: &SubscriptionName) -> BusError {
        BusError::NotFound { resource: Resource::subscription(topic, subscription) }
    }

    /// [`BusError::Conflict`] for a subscription that exists with other settings.
    pub fn subscription_conflict(
        topic: &TopicName,
        subscription: &SubscriptionName,
        reason: impl Into<String>,
    ) -> BusError {
        BusError::Conflict { resource: Resource::subscription(topic, subscription), reason: reason.into() }
    }

    /// [`BusError::LeaseLost`] with what the backend knows about the delivery.
    pub fn lease_lost(cause: LeaseLostCause, detail: impl Into<String>) -> BusError {
        BusError::LeaseLost { cause, detail: detail.into() }
    }

    /// True when the same call may succeed later without any change by the caller: the
    /// broker could not be reached, or it said the failure is transient. A closed handle
    /// stays closed, so [`BusError::Closed`] is not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            BusError::Unreachable { .. } => true,
            BusError::Backend { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TopicName {
        TopicName::new(s).expect("valid")
    }

    #[test]
    fn errors_name_what_they_are_about() {
        let s = SubscriptionName::new("billing").expect("valid");
        let e = BusError::subscription_not_found(&t("orders"), &s);
        assert_eq!(e.to_string(), "subscription billing on topic orders does not exist");
        match e {
            BusError::NotFound { resource: Resource::Subscription { topic, subscription } } => {
                assert_eq!((topic.as_str(), subscription.as_str()), ("orders", "billing"));
            }
            other => panic!("{other:?}"),
        }
        let lost = BusError::lease_lost(LeaseLostCause::Expired, "message 7");
        assert_eq!(lost.to_string(), "the delivery can no longer be settled: its lease ran out (message 7)");
    }

    #[test]
    fn only_transient_failures_are_retryable() {
        assert!(!BusError::Closed.is_retryable(), "a closed handle stays closed");
        assert!(!BusError::topic_not_found(&t("x")).is_retryable());
        let transient =
            BusError::Backend { backend: "b", message: "m".into(), retryable: true, source: None };
        assert!(transient.is_retryable());
        let refused =
            BusError::Unreachable { backend: "b", endpoint: "h:1".into(), source: "refused".into() };
        assert!(refused.is_retryable());
    }
}
