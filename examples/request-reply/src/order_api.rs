//! The order service's HTTP API: `POST /orders` with an [`OrderRequest`] as JSON.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use switchboard_sync::{CallError, IncomingContextLayer};
use tonic::Code;

use crate::order::{Order, OrderError, OrderRequest, OrderService};

/// The routes, behind [`IncomingContextLayer`]: the inventory call made for a request runs
/// in that request's trace and within its deadline (`x-request-timeout-ms`).
pub fn router(orders: Arc<OrderService>) -> Router {
    Router::new().route("/orders", post(place)).with_state(orders).layer(IncomingContextLayer::new())
}

/// `201` with the [`Order`], or an error status with the reason as text.
async fn place(
    State(orders): State<Arc<OrderService>>,
    Json(order): Json<OrderRequest>,
) -> Result<(StatusCode, Json<Order>), (StatusCode, String)> {
    match orders.place(&order).await {
        Ok(placed) => Ok((StatusCode::CREATED, Json(placed))),
        Err(e) => Err((status_of(&e), e.to_string())),
    }
}

/// The inventory's refusals are the client's problem (4xx); its absence is ours (5xx).
fn status_of(e: &OrderError) -> StatusCode {
    match e {
        CallError::Failed { error, .. } => match error.code() {
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        },
        CallError::Timeout { .. } | CallError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
        CallError::CircuitOpen { .. } | CallError::BudgetExhausted { .. } => StatusCode::SERVICE_UNAVAILABLE,
    }
}
