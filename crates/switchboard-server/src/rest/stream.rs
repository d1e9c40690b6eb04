//! Reading the log: one partition from an offset, or a stream subscription from its
//! committed position; commit and seek.
//!
//! Reads never join the subscription's consumer group: an HTTP request is too short-lived to
//! own partitions, and joining would rebalance the members that stream over gRPC. A read
//! starts at the committed offsets, so reading again without committing returns the same
//! messages; commit `offset + 1` once a message is processed.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_broker::{BrokerError, LogRecord, SeekTo, SubscriptionMode};
use switchboard_core::TopicName;

use super::cloudevents;
use super::extract::{ApiPath, ApiQuery, Body, json, max_messages, subscription_name, topic_name};
use super::time;
use crate::auth::Action;
use crate::error::ApiError;
use crate::http::Caller;
use crate::state::AppState;

/// How often a waiting read checks whether the server is shutting down.
const WAIT_SLICE: Duration = Duration::from_millis(500);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadQuery {
    /// First offset to read (default: the oldest retained).
    offset: Option<u64>,
    /// Most messages (1 to 1000, default 100).
    max: Option<usize>,
    /// Wait this long for a message when there is none yet, ms (default 0).
    wait_ms: Option<u64>,
}

/// `GET /v1/topics/{topic}/partitions/{partition}/messages?offset=&max=&wait_ms=`.
pub(super) async fn read_partition(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((topic, partition)): ApiPath<(String, u32)>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Consume, Some(&topic))?;
    let topic = topic_name(&topic)?;
    let max = max_messages(query.max, 100)?;
    let offset = match query.offset {
        Some(o) => o,
        None => {
            let info = state.broker.topic_info(&topic)?;
            let p = info.partitions.get(partition as usize).ok_or(BrokerError::PartitionNotFound {
                topic: topic.clone(),
                partition,
                partitions: info.partitions.len() as u32,
            })?;
            p.start_offset
        }
    };
    let wait = wait_limit(&state, query.wait_ms);
    let records =
        read_waiting(&state, &topic, wait, || state.broker.read(&topic, partition, offset, max)).await?;
    let next = records.last().map_or(offset, |r| r.offset + 1);
    let messages: Vec<Value> = records.iter().map(record_json).collect();
    Ok(Json(json!({ "messages": messages, "next_offset": next })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubscriptionReadQuery {
    /// Most messages (1 to 1000, default 100), shared fairly between partitions.
    max: Option<usize>,
    /// Wait this long for a message when there is none yet, ms (default 0).
    wait_ms: Option<u64>,
}

/// `GET /v1/topics/{topic}/subscriptions/{sub}/messages?max=&wait_ms=`: a stream
/// subscription's messages from its committed offsets.
pub(super) async fn read_subscription(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((topic, sub)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<SubscriptionReadQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Consume, Some(&topic))?;
    let (topic, sub) = (topic_name(&topic)?, subscription_name(&sub)?);
    let max = max_messages(query.max, 100)?;
    let stats = state.broker.stats(&topic, &sub)?;
    if stats.mode != SubscriptionMode::Stream {
        return Err(BrokerError::WrongMode { subscription: sub, actual: "queue", expected: "stream" }.into());
    }
    let wait = wait_limit(&state, query.wait_ms);
    let records = read_waiting(&state, &topic, wait, || {
        // Committed offsets (or the oldest retained, if retention passed them), read again each
        // time: a commit may land while we wait.
        let floors: Vec<(u32, u64)> = state
            .broker
            .stats(&topic, &sub)?
            .partitions
            .iter()
            .map(|p| (p.partition, p.floor.max(p.start_offset)))
            .collect();
        read_fairly(&state, &topic, &floors, max)
    })
    .await?;
    let messages: Vec<Value> = records.iter().map(record_json).collect();
    Ok(Json(json!({ "messages": messages })))
}

/// Up to `max` records over partitions starting at `floors`: each partition first gets an
/// equal share, then what is left goes to partitions that had more.
fn read_fairly(
    state: &AppState,
    topic: &TopicName,
    floors: &[(u32, u64)],
    max: usize,
) -> Result<Vec<LogRecord>, BrokerError> {
    let share = max.div_ceil(floors.len().max(1));
    let mut per_partition = Vec::with_capacity(floors.len());
    for &(p, floor) in floors {
        per_partition.push(state.broker.read(topic, p, floor, share)?);
    }
    let mut total: usize = per_partition.iter().map(Vec::len).sum();
    for (i, &(p, _)) in floors.iter().enumerate() {
        let got = &mut per_partition[i];
        if total >= max || got.len() < share {
            continue;
        }
        let from = got.last().map_or(0, |r| r.offset + 1);
        let more = state.broker.read(topic, p, from, max - total)?;
        total += more.len();
        got.extend(more);
    }
    let mut records: Vec<LogRecord> = per_partition.into_iter().flatten().collect();
    records.truncate(max);
    Ok(records)
}

fn wait_limit(state: &AppState, wait_ms: Option<u64>) -> Duration {
    Duration::from_millis(wait_ms.unwrap_or(0).min(state.config.limits.max_wait_ms))
}

/// Reads; while nothing is there, `wait` has not passed and the server is not shutting down,
/// waits for a publish and reads again.
async fn read_waiting(
    state: &AppState,
    topic: &TopicName,
    wait: Duration,
    read: impl Fn() -> Result<Vec<LogRecord>, BrokerError>,
) -> Result<Vec<LogRecord>, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let seen = state.broker.publish_count(topic)?;
        let records = read()?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !records.is_empty() || left.is_zero() || !state.is_ready() {
            return Ok(records);
        }
        state.broker.wait_for_publish(topic, seen, left.min(WAIT_SLICE)).await?;
    }
}

fn record_json(r: &LogRecord) -> Value {
    json!({
        "partition": r.partition,
        "offset": r.offset,
        "published_at": time::format(r.published_at),
        "event": cloudevents::encode(&r.message),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitRequest {
    partition: u32,
    /// The next offset to read: the processed message's offset plus one.
    offset: u64,
}

/// `POST …/commit {"partition", "offset"}` (204).
pub(super) async fn commit(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((topic, sub)): ApiPath<(String, String)>,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    caller.check(Action::Consume, Some(&topic))?;
    let (topic, sub) = (topic_name(&topic)?, subscription_name(&sub)?);
    let request: CommitRequest = json(&body)?;
    state.broker.commit(&topic, &sub, request.partition, request.offset).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeekRequest {
    to: Value,
}

/// `POST …/seek {"to": "earliest" | "latest" | {"partition", "offset"} | {"time"}}` (204).
pub(super) async fn seek(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((topic, sub)): ApiPath<(String, String)>,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    caller.check(Action::Consume, Some(&topic))?;
    let (topic, sub) = (topic_name(&topic)?, subscription_name(&sub)?);
    let request: SeekRequest = json(&body)?;
    let to = seek_target(&request.to)?;
    state.broker.seek(&topic, &sub, to).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn seek_target(to: &Value) -> Result<SeekTo, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "`to` must be \"earliest\", \"latest\", {{\"partition\": p, \"offset\": o}} or {{\"time\": t}}, not {to}"
        ))
    };
    match to {
        Value::String(s) if s == "earliest" => Ok(SeekTo::Earliest),
        Value::String(s) if s == "latest" => Ok(SeekTo::Latest),
        Value::Object(o) if o.len() == 1 && o.contains_key("time") => {
            let t = match &o["time"] {
                Value::String(s) => time::parse(s),
                Value::Number(n) => n.as_u64().map(switchboard_core::Timestamp).ok_or_else(|| n.to_string()),
                _ => return Err(bad()),
            };
            t.map(SeekTo::Time).map_err(|e| ApiError::BadRequest(format!("time: {e}")))
        }
        Value::Object(o) if o.len() == 2 => {
            let field = |k: &str| o.get(k).and_then(Value::as_u64).ok_or_else(bad);
            let partition = u32::try_from(field("partition")?).map_err(|_| bad())?;
            Ok(SeekTo::Offset { partition, offset: field("offset")? })
        }
        _ => Err(bad()),
    }
}
