//! gRPC statuses as [`BusError`]s: the wire's numeric codes stop here.

use switchboard_core::contract::{BusError, LeaseLostCause, Resource};
use tonic::{Code, Status};

/// The backend's name in errors and [`Backend::name`](switchboard_core::backend::Backend::name).
pub(crate) const BACKEND: &str = "switchboard";

fn backend(message: String, retryable: bool, status: Status) -> BusError {
    BusError::Backend { backend: BACKEND, message, retryable, source: Some(Box::new(status)) }
}

/// What a NOT_FOUND or ALREADY_EXISTS status is about.
fn resource_of(status: &Status) -> Resource {
    Resource::Native { kind: "object", name: status.message().to_owned() }
}

/// Maps a status from a call to `endpoint`.
///
/// Codes that repeating the call may cure (the server restarting, overloaded, a dropped
/// connection) become retryable errors; the caller's mistakes do not.
pub(crate) fn from_status(status: Status, endpoint: &str) -> BusError {
    let msg = status.message().to_owned();
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => BusError::InvalidArgument(msg),
        Code::NotFound => BusError::NotFound { resource: resource_of(&status) },
        Code::AlreadyExists => BusError::Conflict { resource: resource_of(&status), reason: msg },
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
            let retryable = !(msg.contains("limit") || msg.contains("at most"));
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

/// An error about one item of a consume stream (`Outcome.error`), for a settle: an unknown
/// receipt or an expired lease means another delivery owns the message now.
pub(crate) fn from_outcome(code: i32, message: String, endpoint: &str) -> BusError {
    match Code::from_i32(code) {
        Code::NotFound => BusError::lease_lost(LeaseLostCause::Unknown, message),
        Code::FailedPrecondition => BusError::lease_lost(LeaseLostCause::Expired, message),
        code => from_status(Status::new(code, message), endpoint),
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

    #[test]
    fn codes_map_to_the_contract() {
        let e = |code, m: &str| from_status(Status::new(code, m), "h:1");
        assert!(matches!(e(Code::InvalidArgument, "x"), BusError::InvalidArgument(_)));
        assert!(matches!(e(Code::NotFound, "x"), BusError::NotFound { .. }));
        assert!(matches!(e(Code::AlreadyExists, "x"), BusError::Conflict { .. }));
        assert!(e(Code::Unavailable, "shutting down").is_retryable());
        assert!(e(Code::Internal, "storage failure: write failed").is_retryable());
        assert!(e(Code::ResourceExhausted, "no space left on device").is_retryable());
        assert!(!e(Code::ResourceExhausted, "message is 9 bytes; the limit is 1 bytes").is_retryable());
        assert!(!e(Code::Unauthenticated, "unknown token").is_retryable());
        assert!(e(Code::Unauthenticated, "unknown token").to_string().contains("SWITCHBOARD_TOKEN"));
        assert!(matches!(
            from_outcome(9, "expired".into(), "h:1"),
            BusError::LeaseLost { cause: LeaseLostCause::Expired, .. }
        ));
        assert!(heals(Code::Unavailable) && !heals(Code::NotFound));
    }
}
