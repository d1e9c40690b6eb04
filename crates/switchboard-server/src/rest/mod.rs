//! REST API under `/v1` (CloudEvents HTTP binding). Filled in by the REST work.

use axum::Router;

use crate::state::AppState;

/// The REST routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
}
