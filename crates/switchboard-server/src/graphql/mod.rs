//! GraphQL at `/graphql`. Filled in by the GraphQL work.

use axum::Router;

use crate::state::AppState;

/// The GraphQL routes.
pub(crate) fn router(_state: &AppState) -> Router<AppState> {
    Router::new()
}
