//! The HTTP side: REST and GraphQL routers merged with `/metrics`, `/healthz` and `/readyz`,
//! and the [`Caller`] extractor that authenticates a request.

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller of an HTTP request.
pub(crate) struct Caller(pub(crate) Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        Ok(Caller(state.auth.authenticate(header)?))
    }
}

/// Every HTTP route of the server.
pub(crate) fn router(state: AppState) -> Router {
    let limit = state.config.limits.max_request_bytes;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::rest::router())
        .merge(crate::graphql::router(&state))
        // Outermost: a body larger than the limit is refused before any handler reads it.
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.is_ready() { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.render(&state.broker),
    )
}
