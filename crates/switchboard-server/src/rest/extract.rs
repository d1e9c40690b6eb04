//! Extractors whose rejections are problem documents (RFC 9457) instead of axum's plain text,
//! and the small parsing helpers every handler shares.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use switchboard_broker::BrokerError;
use switchboard_core::{SubscriptionName, TopicName};
use switchboard_proto::reason::Reason;

use crate::error::ApiError;
use crate::state::AppState;

/// The request body, read up to the server's body limit (a larger body is a 413 problem).
///
/// Handlers take the raw bytes and parse them after the permission check, so a caller that
/// may not touch a topic learns nothing from how its body was parsed.
pub(super) struct Body(pub(super) Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::TooLarge(format!(
                    "the request body is larger than the limit of {} bytes",
                    state.config.limits.max_request_bytes
                )))
            }
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// Query parameters; a malformed query is a 400 problem.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// Path parameters; a segment that does not parse (a partition that is not a number) is a
/// 400 problem.
pub(super) struct ApiPath<T>(pub(super) T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ApiPath(p))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// Parses a JSON body; an empty body (or `null`) is `T::default()` when `empty_ok`.
pub(super) fn json_body<T: DeserializeOwned + Default>(body: &[u8], empty_ok: bool) -> Result<T, ApiError> {
    let text = body.trim_ascii();
    if empty_ok && (text.is_empty() || text == b"null") {
        return Ok(T::default());
    }
    json(body)
}

/// Parses a JSON document.
pub(super) fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
}

/// A topic name from the path.
pub(super) fn topic_name(name: &str) -> Result<TopicName, ApiError> {
    TopicName::new(name).map_err(|e| BrokerError::from(e).into())
}

/// A subscription name from the path.
pub(super) fn subscription_name(name: &str) -> Result<SubscriptionName, ApiError> {
    SubscriptionName::new(name).map_err(|e| BrokerError::from(e).into())
}

/// `max` from a query, defaulted and checked against the ceiling every read shares.
pub(super) fn max_messages(max: Option<usize>, default: usize) -> Result<usize, ApiError> {
    let max = max.unwrap_or(default);
    if !(1..=MAX_MESSAGES).contains(&max) {
        return Err(ApiError::BadRequest(format!("max must be between 1 and {MAX_MESSAGES}, not {max}")));
    }
    Ok(max)
}

/// Most messages one receive or read returns.
pub(super) const MAX_MESSAGES: usize = 1000;

/// A problem document for statuses [`ApiError`] has no variant for (405).
pub(super) fn problem(status: StatusCode, reason: Reason, detail: String) -> Response {
    let body = serde_json::json!({
        "type": format!("https://switchboard.dev/problems/{reason}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    resp
}
