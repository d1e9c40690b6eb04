//! Who is asking and what they may see: the state and caller of an operation, and the
//! permission checks resolvers make before touching the broker.

use async_graphql::Context;
use switchboard_core::TopicName;

use super::error::{GqlResult, gql_error};
use crate::auth::{Action, AuthError, Principal};
use crate::state::AppState;

/// The server state every resolver reads.
pub(super) fn state<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a AppState> {
    ctx.data::<AppState>()
}

/// The authenticated caller of the operation (put in the request data by the HTTP and
/// WebSocket handlers).
pub(super) fn principal<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Principal> {
    ctx.data::<Principal>().map_err(|_| gql_error(AuthError::Missing.into()))
}

/// Fails with `FORBIDDEN` unless the caller may do `action` on `topic`.
pub(super) fn check(ctx: &Context<'_>, action: Action, topic: &TopicName) -> async_graphql::Result<()> {
    principal(ctx)?.check(action, Some(topic.as_str())).gql()
}

/// Whether the caller may do anything at all with `topic` (what makes it visible).
pub(super) fn may_see(principal: &Principal, topic: &str) -> bool {
    [Action::Admin, Action::Consume, Action::Publish].into_iter().any(|a| principal.may(a, topic))
}

/// Fails with `FORBIDDEN` unless the caller may do something with `topic`.
pub(super) fn check_visible(principal: &Principal, topic: &TopicName) -> async_graphql::Result<()> {
    if may_see(principal, topic.as_str()) {
        return Ok(());
    }
    // Refused every action: the error names consuming, what showing a topic fully needs.
    principal.check(Action::Consume, Some(topic.as_str())).gql()
}

/// Fails with `FORBIDDEN` unless the caller may consume or administer `topic`: what reading
/// its subscriptions and their counts needs.
pub(super) fn check_inspect(ctx: &Context<'_>, topic: &TopicName) -> async_graphql::Result<()> {
    let p = principal(ctx)?;
    if p.may(Action::Admin, topic.as_str()) {
        return Ok(());
    }
    p.check(Action::Consume, Some(topic.as_str())).gql()
}
