//! `POST /v1/topics/{topic}/events`: publish CloudEvents in binary, structured or batched
//! mode.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_broker::{Durability, PublishOptions};
use switchboard_core::{Message, Timestamp};

use super::cloudevents;
use super::extract::{ApiPath, ApiQuery, Body, topic_name};
use super::time;
use crate::auth::Action;
use crate::config::Limits;
use crate::error::ApiError;
use crate::http::Caller;
use crate::metrics::Api;
use crate::state::AppState;

/// Header asking queue subscriptions to hold the events back until a time.
pub(super) const DELIVER_AT_HEADER: &str = "switchboard-deliver-at";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishQuery {
    /// RFC 3339 time or milliseconds since the epoch.
    deliver_at: Option<String>,
}

pub(super) async fn publish(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(query): ApiQuery<PublishQuery>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    caller.check(Action::Publish, Some(&topic))?;
    let topic = topic_name(&topic)?;
    let (deliver_at, messages) =
        decode_request(query.deliver_at.as_deref(), &headers, body, &state.config.limits)?;
    let (count, bytes) = (messages.len() as u64, messages.iter().map(|m| m.data.len() as u64).sum());
    let published = state.broker.publish_batch(&topic, messages, PublishOptions { deliver_at }).await;
    state.telemetry.published(caller.service(), topic.as_str(), count, published.is_err(), started.elapsed());
    let receipts = published?;
    state.metrics.published(Api::Rest, topic.as_str(), count, bytes, started.elapsed());
    let receipts: Vec<Value> = receipts
        .iter()
        .map(|r| {
            json!({
                "partition": r.partition,
                "offset": r.offset,
                "timestamp": time::format(r.timestamp),
                "duplicate": r.duplicate,
                "durability": match r.durability {
                    Durability::Fsynced => "fsynced",
                    Durability::Written => "written",
                },
            })
        })
        .collect();
    Ok(Json(json!({ "receipts": receipts })))
}

/// Everything the handler parses from the request: the delivery time (query parameter first,
/// then header) and the events. Also the entry point of the `cloudevents_http` fuzz target.
pub(crate) fn decode_request(
    query_deliver_at: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
    limits: &Limits,
) -> Result<(Option<Timestamp>, Vec<Message>), ApiError> {
    let header = headers
        .get(DELIVER_AT_HEADER)
        .map(|v| v.to_str().map_err(|_| ApiError::BadRequest(format!("{DELIVER_AT_HEADER} is not ASCII"))))
        .transpose()?;
    let deliver_at = query_deliver_at
        .or(header)
        .map(|s| time::parse(s).map_err(|e| ApiError::BadRequest(format!("deliver_at: {e}"))))
        .transpose()?;
    let messages = cloudevents::decode(headers, body, limits)?;
    Ok((deliver_at, messages))
}
