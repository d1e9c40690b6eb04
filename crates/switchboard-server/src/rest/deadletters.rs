//! Dead letters of a queue subscription: list them, and redrive them back.
//!
//! The listing reads the dead-letter topic from the floor of its `redrive` subscription (so
//! redriven letters drop out) and keeps the letters of this subscription (a dead-letter
//! topic may be shared).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_broker::{REDRIVE_SUBSCRIPTION, dead_letter_ext as ext};
use switchboard_core::{SubscriptionName, TopicName};

use super::admin::subscription_config;
use super::cloudevents;
use super::extract::{ApiPath, ApiQuery, Body, json_body, max_messages, subscription_name, topic_name};
use super::time;
use crate::auth::Action;
use crate::error::ApiError;
use crate::http::Caller;
use crate::state::AppState;

/// Reads of up to 1000 records one listing may make.
const MAX_SCAN_READS: usize = 16;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Most letters (1 to 1000, default 100).
    max: Option<usize>,
}

/// `GET /v1/topics/{topic}/subscriptions/{sub}/deadletters?max=`.
pub(super) async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((topic, sub)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Admin, Some(&topic))?;
    let (topic, sub) = (topic_name(&topic)?, subscription_name(&sub)?);
    let max = max_messages(query.max, 100)?;
    let dlq = dead_letter_topic(&state, &topic, &sub)?;
    let redrive = subscription_name(REDRIVE_SUBSCRIPTION)?;
    let mut from =
        state.broker.stats(&dlq, &redrive)?.partitions.first().map_or(0, |p| p.floor.max(p.start_offset));
    let mut letters = Vec::new();
    // Letters of other subscriptions are skipped, so read on until `max` of ours, the end, or
    // the scan bound (a shared dead-letter topic may hold many letters of others).
    for _ in 0..MAX_SCAN_READS {
        if letters.len() >= max {
            break;
        }
        let records = state.broker.read(&dlq, 0, from, super::extract::MAX_MESSAGES)?;
        let Some(last) = records.last() else { break };
        from = last.offset + 1;
        let attr = |r: &switchboard_broker::LogRecord, k: &str| r.message.extensions.get(k).cloned();
        letters.extend(
            records
                .iter()
                .filter(|r| {
                    attr(r, ext::TOPIC).as_deref() == Some(topic.as_str())
                        && attr(r, ext::SUBSCRIPTION).as_deref() == Some(sub.as_str())
                })
                .take(max - letters.len())
                .map(|r| {
                    let num = |k: &str| attr(r, k).and_then(|v| v.parse::<u64>().ok());
                    let mut event = r.message.clone();
                    for k in ext::ALL {
                        event.extensions.remove(k);
                    }
                    json!({
                        "offset": r.offset,
                        "dead_lettered_at": time::format(r.published_at),
                        "reason": attr(r, ext::REASON),
                        "attempts": num(ext::ATTEMPTS),
                        "error": attr(r, ext::ERROR),
                        "partition": num(ext::PARTITION),
                        "source_offset": num(ext::OFFSET),
                        "event": cloudevents::encode(&event),
                    })
                }),
        );
    }
    Ok(Json(json!({ "dead_letter_topic": dlq, "messages": letters })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    /// Most letters to move (default 1000).
    max: Option<usize>,
}

/// `POST /v1/topics/{topic}/subscriptions/{sub}/redrive {"max"?}`: publishes dead letters
/// again for this subscription only; answers how many moved.
pub(super) async fn redrive(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((topic, sub)): ApiPath<(String, String)>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Admin, Some(&topic))?;
    let (topic, sub) = (topic_name(&topic)?, subscription_name(&sub)?);
    let request: RedriveRequest = json_body(&body, true)?;
    let max = request.max.unwrap_or(1000);
    if max == 0 {
        return Err(ApiError::BadRequest("max must be at least 1".into()));
    }
    dead_letter_topic(&state, &topic, &sub)?;
    let moved = state.broker.redrive(&topic, &sub, max).await?;
    Ok(Json(json!({ "moved": moved })))
}

fn dead_letter_topic(
    state: &AppState,
    topic: &TopicName,
    sub: &SubscriptionName,
) -> Result<TopicName, ApiError> {
    subscription_config(state, topic, sub)?.dead_letter_topic.ok_or_else(|| {
        ApiError::NotFound(format!(
            "subscription {sub} of topic {topic} has no dead-letter topic (only queue subscriptions with max_deliveries have one)"
        ))
    })
}
