//! GraphQL errors: every [`ApiError`] becomes an error with the same message and an
//! `extensions.code` derived from its HTTP status (`NOT_FOUND`, `BAD_USER_INPUT`,
//! `FORBIDDEN`, …) plus the status itself and the error's `reason` (`topic-not-found`, …, as
//! in the HTTP problem `type`), so clients branch on codes, not on messages.

use async_graphql::ErrorExtensionValues;
use axum::http::StatusCode;
use switchboard_broker::BrokerError;
use switchboard_core::{SubscriptionName, TopicName};

use crate::error::ApiError;

/// Code of requests the parser refused.
pub(super) const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
/// Code of requests validation refused: unknown fields, wrong arguments, too deep, too complex.
pub(super) const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";

/// The GraphQL error for `e`.
pub(super) fn gql_error(e: ApiError) -> async_graphql::Error {
    let status = e.status();
    if status.is_server_error() {
        tracing::warn!(error = %e, "A GraphQL operation failed.");
    }
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code(status));
    extensions.set("status", status.as_u16());
    // The same machine-readable reason as the HTTP problem `type` and the gRPC ErrorInfo.
    extensions.set("reason", e.reason().as_str());
    let mut error = async_graphql::Error::new(e.to_string());
    error.extensions = Some(extensions);
    error
}

/// The `extensions.code` of an error with HTTP status `status`.
fn code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "BAD_USER_INPUT",
        StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::CONFLICT => "CONFLICT",
        StatusCode::GONE => "GONE",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::INSUFFICIENT_STORAGE => "INSUFFICIENT_STORAGE",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        _ => "INTERNAL_SERVER_ERROR",
    }
}

/// Turns API-edge errors into coded GraphQL errors with `?`-friendly `.gql()`.
///
/// `async_graphql::Error` converts from anything `Display`, so a bare `?` on a broker result
/// compiles but loses the code: resolvers always go through this.
pub(super) trait GqlResult<T> {
    /// The result with its error mapped by [`gql_error`].
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T, E: Into<ApiError>> GqlResult<T> for Result<T, E> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| gql_error(e.into()))
    }
}

/// A `BAD_USER_INPUT` error.
pub(super) fn bad_input(message: impl Into<String>) -> async_graphql::Error {
    gql_error(ApiError::BadRequest(message.into()))
}

/// Validates a topic name (`BAD_USER_INPUT` naming the rule it breaks).
pub(super) fn topic_name(name: &str) -> async_graphql::Result<TopicName> {
    TopicName::new(name).map_err(BrokerError::from).gql()
}

/// Validates a subscription name.
pub(super) fn subscription_name(name: &str) -> async_graphql::Result<SubscriptionName> {
    SubscriptionName::new(name).map_err(BrokerError::from).gql()
}
