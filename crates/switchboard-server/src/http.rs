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
        let service = parts.headers.get(crate::auth::SERVICE_HEADER).map(|v| v.as_bytes());
        let principal = state.auth.authenticate(header)?;
        Ok(Caller(principal.with_service(service).map_err(ApiError::BadRequest)?))
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
        .merge(crate::dashboard::router())
        // Outermost: a body larger than the limit is refused before any handler reads it.
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.is_ready() { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.metrics.render(&state.broker);
    // The broker's stage histograms and the service graph's metrics go before the
    // registry's closing `# EOF`.
    let end = text.rfind("# EOF").unwrap_or(text.len());
    text.truncate(end);
    crate::metrics::render_stages(&mut text, &state.broker.stage_latencies());
    state.telemetry.render_prometheus(&mut text);
    text.push_str("# EOF\n");
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}
