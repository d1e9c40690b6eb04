//! Queue subscriptions over HTTP: long-poll receive, then ack, nack or extend by receipt.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_broker::{BrokerDelivery, BrokerError, Receipt};

use super::cloudevents;
use super::extract::{ApiPath, ApiQuery, Body, json_body, max_messages, subscription_name, topic_name};
use super::time;
use crate::auth::Action;
use crate::error::ApiError;
use crate::http::Caller;
use crate::metrics::Api;
use crate::state::AppState;

/// Longest single wait of a long poll. Between slices the handler checks whether the server
/// is shutting down, so a 20-second poll holds a graceful shutdown back by at most this long
/// (and the broker's receive always runs to completion: no lease is taken and then lost).
const POLL_SLICE: Duration = Duration::from_millis(500);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReceiveParams {
    /// Most messages to return (1 to 1000, default 10).
    max: Option<usize>,
    /// How long to wait for the first message, ms (default 0, capped by the server's
    /// `limits.max_wait_ms`).
    wait_ms: Option<u64>,
}

/// `POST /v1/topics/{topic}/subscriptions/{sub}/receive?max=&wait_ms=`: leases up to
/// `max` messages, waiting up to `wait_ms` for the first (long polling, as SQS does). The
/// same parameters may come as a JSON body; the query wins.
pub(super) async fn receive(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((topic, sub)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ReceiveParams>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Consume, Some(&topic))?;
    let (topic, sub) = (topic_name(&topic)?, subscription_name(&sub)?);
    let from_body: ReceiveParams = json_body(&body, true)?;
    let max = max_messages(query.max.or(from_body.max), 10)?;
    let wait_ms = query.wait_ms.or(from_body.wait_ms).unwrap_or(0).min(state.config.limits.max_wait_ms);
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let deliveries = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = state.broker.receive(&topic, &sub, max, left.min(POLL_SLICE)).await?;
        if !got.is_empty() || left <= POLL_SLICE || !state.is_ready() {
            break got;
        }
    };
    state.metrics.delivered(&deliveries);
    state.telemetry.delivered(&deliveries);
    let messages: Vec<Value> = deliveries.iter().map(delivery_json).collect();
    Ok(Json(json!({ "messages": messages })))
}

fn delivery_json(d: &BrokerDelivery) -> Value {
    json!({
        "receipt": d.receipt.map(|r| r.to_string()),
        "partition": d.partition,
        "offset": d.offset,
        "attempt": d.attempt,
        "published_at": time::format(d.published_at),
        "lease_expires_at": d.lease_expires_at.map(time::format),
        "event": cloudevents::encode(&d.message),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    /// One receipt: the answer is 204 or a problem.
    receipt: Option<String>,
    /// Many receipts: the answer is 200 with a result per receipt.
    receipts: Option<Vec<String>>,
}

/// `POST …/ack` with `{"receipt": …}` (204 or a problem) or `{"receipts": [...]}` (200 with
/// one result per receipt, in order; the acks are journaled together).
pub(super) async fn ack(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((topic, sub)): ApiPath<(String, String)>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    caller.check(Action::Consume, Some(&topic))?;
    let (topic, sub) = (topic_name(&topic)?, subscription_name(&sub)?);
    let request: AckRequest = json_body(&body, false)?;
    let (texts, single) = match (request.receipt, request.receipts) {
        (Some(r), None) => (vec![r], true),
        (None, Some(rs)) => (rs, false),
        _ => return Err(ApiError::BadRequest("send either `receipt` or `receipts`".into())),
    };
    let limit = state.config.limits.max_batch_messages;
    if texts.len() > limit {
        return Err(BrokerError::BatchTooLarge { len: texts.len(), max: limit }.into());
    }
    // Receipts that do not parse are unknown; the others are acked together.
    let parsed: Vec<Result<Receipt, BrokerError>> = texts.iter().map(|t| t.parse()).collect();
    let valid: Vec<Receipt> = parsed.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    let mut settled = state.broker.ack(&topic, &sub, &valid).await?.into_iter();
    let results: Vec<Result<(), ApiError>> = parsed
        .into_iter()
        .map(|p| match p {
            Err(e) => Err(e.into()),
            Ok(_) => settled.next().unwrap_or(Err(BrokerError::Closed)).map_err(ApiError::from),
        })
        .collect();
    let acked = results.iter().filter(|r| r.is_ok()).count();
    state.metrics.acked(Api::Rest, topic.as_str(), sub.as_str(), acked as u64, started.elapsed());
    // A REST consumer's receipts do not say when their messages were published (that would
    // take a read per ack), so its acks count without an end-to-end latency.
    state.telemetry.settled((topic.as_str(), sub.as_str()), caller.service(), &[], acked as u64, 0);
    if single {
        return match results.into_iter().next() {
            Some(Err(e)) => Err(e),
            _ => Ok(StatusCode::NO_CONTENT.into_response()),
        };
    }
    let results: Vec<Value> = texts
        .iter()
        .zip(results)
        .map(|(receipt, r)| match r {
            Ok(()) => json!({ "receipt": receipt, "status": 200 }),
            Err(e) => json!({ "receipt": receipt, "status": e.status().as_u16(), "detail": e.to_string() }),
        })
        .collect();
    Ok(Json(json!({ "acked": acked, "results": results })).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NackRequest {
    receipt: String,
    /// Deliver again after this long (default at once).
    #[serde(default)]
    delay_ms: u64,
    /// Why processing failed; kept in the dead letter if it comes to that.
    error: Option<String>,
}

/// `POST …/nack {"receipt", "delay_ms"?, "error"?}`: gives a delivery back (204).
pub(super) async fn nack(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((topic, sub)): ApiPath<(String, String)>,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    caller.check(Action::Consume, Some(&topic))?;
    let (topic, sub) = (topic_name(&topic)?, subscription_name(&sub)?);
    let request: NackRequest = super::extract::json(&body)?;
    let receipt: Receipt = request.receipt.parse()?;
    let delay = Duration::from_millis(request.delay_ms);
    state.broker.nack(&topic, &sub, &receipt, delay, request.error).await?;
    state.metrics.nacked(topic.as_str(), sub.as_str(), 1);
    state.telemetry.settled((topic.as_str(), sub.as_str()), caller.service(), &[], 0, 1);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendRequest {
    receipt: String,
    /// The lease runs out this long from now.
    by_ms: u64,
}

/// `POST …/extend {"receipt", "by_ms"}`: the lease now runs out `by_ms` from now.
pub(super) async fn extend(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((topic, sub)): ApiPath<(String, String)>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Consume, Some(&topic))?;
    let (topic, sub) = (topic_name(&topic)?, subscription_name(&sub)?);
    let request: ExtendRequest = super::extract::json(&body)?;
    let receipt: Receipt = request.receipt.parse()?;
    let expires = state.broker.extend(&topic, &sub, &receipt, Duration::from_millis(request.by_ms))?;
    Ok(Json(json!({ "receipt": request.receipt, "lease_expires_at": time::format(expires) })))
}
