//! `POST /v1/traces`: OTLP/HTTP trace export, in protobuf or JSON, into the service graph.
//!
//! Like every route it authenticates first (the `telemetry` permission) and is bounded by
//! the server's request size. A malformed body or an invalid id is refused whole with a 400
//! (a `google.rpc.Status` in the request's encoding, as OTLP/HTTP specifies), a body in
//! another encoding with a 415. Spans the graph's limits turn away (a flood of service
//! names) are answered with OTLP's partial success: the count rejected and why, so the
//! exporter neither retries nor fails, and the graph keeps what it had.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use switchboard_graph::otlp::{self, Encoding};

use crate::auth::Action;
use crate::error::ApiError;
use crate::http::Caller;
use crate::state::AppState;

/// gRPC's `INVALID_ARGUMENT`, the code of a refused OTLP body.
const INVALID_ARGUMENT: i32 = 3;

pub(crate) async fn export(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.check(Action::Telemetry, None)?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(encoding) = Encoding::from_content_type(content_type) else {
        return Err(ApiError::UnsupportedMediaType(format!(
            "OTLP/HTTP takes application/x-protobuf or application/json, not {content_type:?}"
        )));
    };
    if let Some(ce) = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok())
        && !ce.eq_ignore_ascii_case("identity")
    {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding {ce:?} is not accepted; export uncompressed (OTEL_EXPORTER_OTLP_COMPRESSION=none)"
        )));
    }
    let spans = match otlp::decode(&body, encoding) {
        Ok(spans) => spans,
        Err(e) => {
            let body = otlp::error_body(encoding, INVALID_ARGUMENT, &e.to_string());
            return Ok((StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, encoding.content_type())], body)
                .into_response());
        }
    };
    let ingested = state.telemetry.with_graph(|g| g.ingest(spans, super::now_s()));
    if ingested.rejected > 0 {
        tracing::debug!(rejected = ingested.rejected, reason = ?ingested.reason, "Spans refused by the service graph's limits.");
    }
    let body = otlp::response(encoding, ingested.rejected, ingested.reason.as_deref());
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, encoding.content_type())], body).into_response())
}
