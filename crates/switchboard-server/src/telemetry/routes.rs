//! `GET /v1/graph` (the service graph over a window) and `GET /v1/graph/history` (one edge's
//! or node's figures over time). Reading the graph names every topic, so it takes `admin`
//! on every topic (`*`).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use switchboard_graph::{GraphView, History, Window};

use crate::auth::Action;
use crate::error::ApiError;
use crate::http::Caller;
use crate::rest::ApiQuery;
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GraphQuery {
    /// `1m` (the default), `5m` or `1h`.
    window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    /// An edge's or a node's id, as the graph names it.
    id: String,
    window: Option<String>,
}

pub(crate) fn window(w: Option<&str>) -> Result<Window, ApiError> {
    match w {
        None => Ok(Window::OneMinute),
        Some(w) => {
            Window::parse(w).ok_or_else(|| ApiError::BadRequest(format!("window {w:?}: use 1m, 5m or 1h")))
        }
    }
}

pub(crate) async fn graph(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<GraphQuery>,
) -> Result<Json<GraphView>, ApiError> {
    caller.check(Action::Admin, None)?;
    Ok(Json(state.telemetry.view(window(query.window.as_deref())?)))
}

pub(crate) async fn history(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    caller.check(Action::Admin, None)?;
    let window = window(query.window.as_deref())?;
    let now = super::now_s();
    state
        .telemetry
        .with_graph(|g| g.history(&query.id, window, now))
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no edge or node {:?} in the service graph", query.id)))
}
