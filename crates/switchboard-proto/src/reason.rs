//! Machine-readable reasons of errors, carried in gRPC status details as the standard
//! `google.rpc.ErrorInfo` (`reason`, `domain` = [`DOMAIN`], `metadata` naming the resources
//! the error is about), so that a client decides what to do from data, never from the text
//! of the message.
//!
//! The server writes them with [`attach`]; clients read them with [`error_info`] or
//! [`reason`]. The reason names are also the last path segment of the HTTP problem `type`
//! (`https://switchboard.dev/problems/<reason>`), so both APIs share one list.
//!
//! Reasons are kebab-case (`topic-not-found`) because they were the problem types first;
//! `google.rpc.ErrorInfo` suggests UPPER_SNAKE_CASE, but one spelling on both APIs is worth
//! more than following that suggestion.
//!
//! ```
//! use switchboard_proto::reason::{self, Reason, key};
//!
//! let status = tonic::Status::not_found("topic orders does not exist");
//! let status = reason::attach(status, Reason::TopicNotFound, [(key::TOPIC, "orders")]);
//! assert_eq!(reason::reason(&status), Some(Reason::TopicNotFound));
//! let info = reason::error_info(&status).unwrap();
//! assert_eq!(info.metadata[key::TOPIC], "orders");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use tonic_types::{ErrorDetails, StatusExt as _};

pub use tonic_types::ErrorInfo;

/// The `domain` of every [`ErrorInfo`] Switchboard writes.
pub const DOMAIN: &str = "switchboard.dev";

/// The metadata keys of an [`ErrorInfo`]: the resources an error is about. A key is present
/// only when the server knows the value.
pub mod key {
    /// The topic's name.
    pub const TOPIC: &str = "topic";
    /// The subscription's name.
    pub const SUBSCRIPTION: &str = "subscription";
    /// The partition's number, in decimal.
    pub const PARTITION: &str = "partition";
    /// The receipt of a delivery, as the server issued it.
    pub const RECEIPT: &str = "receipt";
}

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// Why a request failed, as the server says it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in the order they are declared.
            pub const ALL: &[Reason] = &[$(Reason::$variant,)*];

            /// The reason's name on the wire, e.g. `topic-not-found`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)*
                }
            }
        }

        impl FromStr for Reason {
            type Err = UnknownReason;

            fn from_str(s: &str) -> Result<Reason, UnknownReason> {
                match s {
                    $($name => Ok(Reason::$variant),)*
                    _ => Err(UnknownReason(s.to_owned())),
                }
            }
        }
    };
}

reasons! {
    /// A topic or subscription name breaks the naming rules.
    InvalidName = "invalid-name",
    /// A message is over the size limit (the server's or the topic's).
    MessageTooLarge = "message-too-large",
    /// A message breaks another message rule (attributes, `time`).
    InvalidMessage = "invalid-message",
    /// A configuration value is out of range.
    InvalidConfig = "invalid-config",
    /// An argument is out of range (a lease extension, a nack delay).
    InvalidArgument = "invalid-argument",
    /// No topic of that name.
    TopicNotFound = "topic-not-found",
    /// The topic exists with a different configuration.
    TopicExists = "topic-exists",
    /// No subscription of that name on the topic.
    SubscriptionNotFound = "subscription-not-found",
    /// The subscription exists with a different configuration.
    SubscriptionExists = "subscription-exists",
    /// The operation needs the other subscription mode.
    WrongMode = "wrong-mode",
    /// A partition number beyond the topic's partitions.
    PartitionNotFound = "partition-not-found",
    /// A receipt that was never issued, is settled, or belongs to another subscription.
    UnknownReceipt = "unknown-receipt",
    /// The lease behind a receipt ran out; the message will be delivered again.
    LeaseExpired = "lease-expired",
    /// A partition that is not assigned to this stream consumer (the group rebalanced).
    NotAssigned = "not-assigned",
    /// An offset outside what the partition retains.
    OffsetOutOfRange = "offset-out-of-range",
    /// A batch holds more messages than the server allows.
    BatchTooLarge = "batch-too-large",
    /// The server's disk is full; nothing of the request was stored.
    NoSpace = "no-space",
    /// A storage failure (or unreadable persisted state); nothing was acknowledged.
    StorageFailure = "storage-failure",
    /// The broker is shutting down.
    Closed = "closed",
    /// Another process has the data directory open.
    DataDirInUse = "data-dir-in-use",
    /// The token may not do this.
    Forbidden = "forbidden",
    /// No token, or one the server does not know.
    Unauthenticated = "unauthenticated",
    /// The request is malformed.
    BadRequest = "bad-request",
    /// The request (not one message) is too large.
    TooLarge = "too-large",
    /// The media type is not supported.
    UnsupportedMediaType = "unsupported-media-type",
    /// Something else that is not there.
    NotFound = "not-found",
    /// HTTP only: the route has no such method.
    MethodNotAllowed = "method-not-allowed",
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason name this version does not know (a newer server may send new ones).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error reason {0:?}")]
pub struct UnknownReason(pub String);

/// `status` with an [`ErrorInfo`] of `reason` in the [`DOMAIN`] and `metadata` in its
/// details; its code, message and gRPC metadata are kept. Details it had are replaced.
pub fn attach<K, V>(
    status: tonic::Status,
    reason: Reason,
    metadata: impl IntoIterator<Item = (K, V)>,
) -> tonic::Status
where
    K: Into<String>,
    V: Into<String>,
{
    let metadata: HashMap<String, String> = metadata.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    let details = ErrorDetails::with_error_info(reason.as_str(), DOMAIN, metadata);
    tonic::Status::with_error_details_and_metadata(
        status.code(),
        status.message(),
        details,
        status.metadata().clone(),
    )
}

/// The [`ErrorInfo`] of `status` if Switchboard wrote one (its `domain` is [`DOMAIN`]).
pub fn error_info(status: &tonic::Status) -> Option<ErrorInfo> {
    status.get_details_error_info().filter(|info| info.domain == DOMAIN)
}

/// The [`Reason`] of `status`; `None` when it carries none, or one this version does not know.
pub fn reason(status: &tonic::Status) -> Option<Reason> {
    error_info(status)?.reason.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_from_its_name() {
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>(), Ok(*r));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!("TOPIC_NOT_FOUND".parse::<Reason>(), Err(UnknownReason("TOPIC_NOT_FOUND".into())));
    }

    #[test]
    fn attached_details_survive_the_wire_encoding() {
        let mut status = tonic::Status::resource_exhausted("the disk is full");
        status.metadata_mut().insert("x-trace", "abc".parse().unwrap());
        let status = attach(status, Reason::NoSpace, [(key::TOPIC, "orders"), (key::PARTITION, "3")]);
        // What a client gets: the status as gRPC trailers, parsed back.
        let mut headers = tonic::codegen::http::HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        let status = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!((status.code(), status.message()), (tonic::Code::ResourceExhausted, "the disk is full"));
        assert_eq!(reason(&status), Some(Reason::NoSpace));
        let info = error_info(&status).unwrap();
        assert_eq!(info.domain, DOMAIN);
        assert_eq!(
            (info.metadata[key::TOPIC].as_str(), info.metadata[key::PARTITION].as_str()),
            ("orders", "3")
        );
    }

    #[test]
    fn a_foreign_or_missing_error_info_is_no_reason() {
        assert_eq!(reason(&tonic::Status::internal("x")), None);
        let foreign = tonic::Status::with_error_details(
            tonic::Code::Internal,
            "x",
            ErrorDetails::with_error_info("topic-not-found", "example.com", HashMap::new()),
        );
        assert!(error_info(&foreign).is_none());
        assert_eq!(reason(&foreign), None);
    }
}
