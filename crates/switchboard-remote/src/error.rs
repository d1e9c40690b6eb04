//! gRPC statuses as [`BusError`]s: the wire's numeric codes stop here.
//!
//! What an error is about and whether it may pass is decided from the reason the server
//! attaches (a `google.rpc.ErrorInfo` in the status details, or the `reason` of a stream
//! item's `Error`, see `switchboard_proto::reason`), never from the message text: a
//! RESOURCE_EXHAUSTED is retryable for `no-space` and not for `message-too-large`, and a
//! NOT_FOUND names the topic or subscription from the error's metadata. A server from before
//! reasons existed sends none; its errors keep their code and become non-retryable where the
//! code alone cannot tell.

use std::collections::HashMap;

use switchboard_core::contract::{BusError, LeaseLostCause, Resource};
use switchboard_core::{SubscriptionName, TopicName};
use switchboard_proto::reason::{self, Reason, key};
use switchboard_proto::switchboard::v1 as api;
use tonic::{Code, Status};

/// The backend's name in errors and [`Backend::name`](switchboard_core::backend::Backend::name).
pub(crate) const BACKEND: &str = "switchboard";

fn backend(message: String, retryable: bool, status: Status) -> BusError {
    BusError::Backend { backend: BACKEND, message, retryable, source: Some(Box::new(status)) }
}

/// What the server said the error is about.
struct Details {
    reason: Option<Reason>,
    metadata: HashMap<String, String>,
}

impl Details {
    fn of(status: &Status) -> Details {
        match reason::error_info(status) {
            Some(info) => Details { reason: info.reason.parse().ok(), metadata: info.metadata },
            None => Details { reason: None, metadata: HashMap::new() },
        }
    }

    /// The topic or subscription named in the metadata; a broker object named by the
    /// message when the server named none (a server from before reasons).
    fn resource(&self, message: &str) -> Resource {
        let topic = self.metadata.get(key::TOPIC).and_then(|t| TopicName::new(t.as_str()).ok());
        let subscription =
            self.metadata.get(key::SUBSCRIPTION).and_then(|s| SubscriptionName::new(s.as_str()).ok());
        match (topic, subscription) {
            (Some(topic), Some(subscription)) => Resource::Subscription { topic, subscription },
            (Some(topic), None) => Resource::Topic(topic),
            (None, Some(subscription)) => {
                Resource::Native { kind: "subscription", name: subscription.to_string() }
            }
            (None, None) => Resource::Native { kind: "resource", name: message.to_owned() },
        }
    }
}

/// Maps a status from a call to `endpoint`.
///
/// Codes that repeating the call may cure (the server restarting, overloaded, a dropped
/// connection, a full disk) become retryable errors; the caller's mistakes do not.
pub(crate) fn from_status(status: Status, endpoint: &str) -> BusError {
    let details = Details::of(&status);
    classify(status, &details, endpoint)
}

/// [`from_status`] once the details are known (from the status, or from a stream item).
fn classify(status: Status, details: &Details, endpoint: &str) -> BusError {
    let msg = status.message().to_owned();
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => BusError::InvalidArgument(msg),
        Code::NotFound => BusError::NotFound { resource: details.resource(&msg) },
        Code::AlreadyExists => BusError::Conflict { resource: details.resource(&msg), reason: msg },
        Code::Unauthenticated => backend(
            format!(
                "the server refused the token ({msg}); set a valid one with ?token=… or SWITCHBOARD_TOKEN"
            ),
            false,
            status,
        ),
        Code::PermissionDenied => backend(format!("permission denied: {msg}"), false, status),
        // A full disk heals; a message or batch over the server's limits does not.
        Code::ResourceExhausted => {
            let retryable = details.reason == Some(Reason::NoSpace);
            backend(format!("resource exhausted: {msg}"), retryable, status)
        }
        // A transport failure (connection refused or reset) carries its cause as the source;
        // an UNAVAILABLE from the server itself means it is shutting down.
        Code::Unavailable if std::error::Error::source(&status).is_some() => BusError::Unreachable {
            backend: BACKEND,
            endpoint: endpoint.to_owned(),
            source: Box::new(status),
        },
        // INTERNAL is how the server reports a storage failure, after which nothing of the
        // request was stored (also when the broker closes under a publish during shutdown):
        // repeating the call is safe and may succeed, as on the embedded backend.
        Code::Unavailable
        | Code::Unknown
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Internal => backend(format!("{}: {msg}", status.code().description()), true, status),
        Code::Unimplemented => backend(
            format!("the server does not implement this call ({msg}); is it switchboard serve?"),
            false,
            status,
        ),
        Code::FailedPrecondition | Code::DataLoss | Code::Ok => {
            backend(format!("{}: {msg}", status.code().description()), false, status)
        }
    }
}

/// An error about one item of a consume stream, for a settle: an unknown receipt or an
/// expired lease means another delivery owns the message now.
pub(crate) fn from_outcome(error: api::Error, endpoint: &str) -> BusError {
    let api::Error { code, message, reason, metadata } = error;
    match reason.parse::<Reason>().ok() {
        Some(Reason::LeaseExpired) => BusError::lease_lost(LeaseLostCause::Expired, message),
        Some(Reason::UnknownReceipt | Reason::NotAssigned) => {
            BusError::lease_lost(LeaseLostCause::Unknown, message)
        }
        reason @ Some(_) => {
            classify(Status::new(Code::from_i32(code), message), &Details { reason, metadata }, endpoint)
        }
        // A server from before reasons: the code alone.
        None => match Code::from_i32(code) {
            Code::NotFound => BusError::lease_lost(LeaseLostCause::Unknown, message),
            Code::FailedPrecondition => BusError::lease_lost(LeaseLostCause::Expired, message),
            code => from_status(Status::new(code, message), endpoint),
        },
    }
}

/// Whether a consume stream that failed with `code` should be opened again: everything but
/// errors that will fail again unchanged (the subscription is gone, the token is refused).
pub(crate) fn heals(code: Code) -> bool {
    !matches!(
        code,
        Code::NotFound
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::Unimplemented
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(code: Code, m: &str) -> BusError {
        from_status(Status::new(code, m), "h:1")
    }

    fn with(code: Code, m: &str, r: Reason, metadata: &[(&str, &str)]) -> BusError {
        from_status(reason::attach(Status::new(code, m), r, metadata.iter().copied()), "h:1")
    }

    #[test]
    fn codes_map_to_the_contract() {
        assert!(matches!(e(Code::InvalidArgument, "x"), BusError::InvalidArgument(_)));
        assert!(e(Code::Unavailable, "shutting down").is_retryable());
        assert!(e(Code::Internal, "storage failure: write failed").is_retryable());
        assert!(!e(Code::Unauthenticated, "unknown token").is_retryable());
        assert!(e(Code::Unauthenticated, "unknown token").to_string().contains("SWITCHBOARD_TOKEN"));
        assert!(heals(Code::Unavailable) && !heals(Code::NotFound));
    }

    #[test]
    fn retryability_follows_the_reason_not_the_message() {
        // The messages say the opposite of the reasons: only the reason may decide.
        let full = with(Code::ResourceExhausted, "the limit is 1 byte", Reason::NoSpace, &[("topic", "t")]);
        assert!(full.is_retryable(), "a full disk heals: {full}");
        let big = with(Code::ResourceExhausted, "no space left", Reason::MessageTooLarge, &[("topic", "t")]);
        assert!(!big.is_retryable(), "an oversize message stays oversize: {big}");
        let batch = with(Code::ResourceExhausted, "no space left", Reason::BatchTooLarge, &[]);
        assert!(!batch.is_retryable());
        assert!(
            !e(Code::ResourceExhausted, "no space left on device").is_retryable(),
            "no reason: not retried"
        );
    }

    #[test]
    fn not_found_and_conflict_name_their_resource_from_the_metadata() {
        let t = TopicName::from_static("orders");
        let s = SubscriptionName::from_static("billing");
        match with(
            Code::NotFound,
            "x",
            Reason::SubscriptionNotFound,
            &[("topic", "orders"), ("subscription", "billing")],
        ) {
            BusError::NotFound { resource } => assert_eq!(resource, Resource::subscription(&t, &s)),
            other => panic!("{other:?}"),
        }
        match with(Code::NotFound, "x", Reason::TopicNotFound, &[("topic", "orders")]) {
            BusError::NotFound { resource } => assert_eq!(resource, Resource::Topic(t.clone())),
            other => panic!("{other:?}"),
        }
        match with(Code::AlreadyExists, "exists", Reason::TopicExists, &[("topic", "orders")]) {
            BusError::Conflict { resource, .. } => assert_eq!(resource, Resource::Topic(t)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(e(Code::NotFound, "x"), BusError::NotFound { resource: Resource::Native { .. } }));
    }

    #[test]
    fn stream_items_lose_their_lease_by_reason() {
        let item = |code: Code, r: &str| api::Error {
            code: code as i32,
            message: "m".into(),
            reason: r.into(),
            metadata: HashMap::new(),
        };
        let lost = |e: BusError| match e {
            BusError::LeaseLost { cause, .. } => Some(cause),
            _ => None,
        };
        assert_eq!(
            lost(from_outcome(item(Code::FailedPrecondition, "lease-expired"), "h:1")),
            Some(LeaseLostCause::Expired)
        );
        assert_eq!(
            lost(from_outcome(item(Code::NotFound, "unknown-receipt"), "h:1")),
            Some(LeaseLostCause::Unknown)
        );
        assert_eq!(
            lost(from_outcome(item(Code::FailedPrecondition, ""), "h:1")),
            Some(LeaseLostCause::Expired),
            "an older server"
        );
        let wrong_mode = from_outcome(item(Code::FailedPrecondition, "wrong-mode"), "h:1");
        assert!(matches!(wrong_mode, BusError::Backend { retryable: false, .. }), "{wrong_mode:?}");
    }
}
