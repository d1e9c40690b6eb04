//! Topics and subscriptions: list, create, inspect, delete; subscription stats.
//!
//! Bodies mirror [`TopicConfig`](switchboard_broker::TopicConfig) and [`SubscriptionConfig`]: every field is optional and
//! defaulted, and an unknown field is an error rather than silently ignored.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use switchboard_broker::{SubscriptionConfig, TopicInfo};

use super::extract::{ApiPath, Body, json, subscription_name, topic_name};
use crate::auth::Action;
use crate::error::ApiError;
use crate::http::Caller;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    config: Option<Value>,
}

/// `GET /v1/topics`: the topics the caller may administer.
pub(super) async fn list_topics(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>, ApiError> {
    let topics: Vec<Value> = state
        .broker
        .topics()
        .iter()
        .filter(|t| caller.may(Action::Admin, t.name.as_str()))
        .map(topic_json)
        .collect();
    Ok(Json(json!({ "topics": topics })))
}

/// `POST /v1/topics {"name", "config"?}`: 201 when created, 200 when it already existed
/// with the same settings, 409 with others. Without `config` the server's topic defaults
/// apply.
pub(super) async fn create_topic(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: CreateRequest = json(&body)?;
    caller.check(Action::Admin, Some(&request.name))?;
    let name = topic_name(&request.name)?;
    let config = match request.config {
        Some(c) => config_from(c, &state.config.topic_defaults)?,
        None => state.config.topic_defaults.clone(),
    };
    let existed = state.broker.topic_info(&name).is_ok();
    let info = state.broker.create_topic(&name, config).await?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(topic_json(&info))))
}

/// `GET /v1/topics/{topic}`.
pub(super) async fn get_topic(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(topic): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Admin, Some(&topic))?;
    let info = state.broker.topic_info(&topic_name(&topic)?)?;
    Ok(Json(topic_json(&info)))
}

/// `DELETE /v1/topics/{topic}`: the topic, its subscriptions and its data (204).
pub(super) async fn delete_topic(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(topic): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.check(Action::Admin, Some(&topic))?;
    state.broker.delete_topic(&topic_name(&topic)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/topics/{topic}/subscriptions`.
pub(super) async fn list_subscriptions(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(topic): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Admin, Some(&topic))?;
    let info = state.broker.topic_info(&topic_name(&topic)?)?;
    let subs: Vec<Value> = info.subscriptions.iter().map(|(n, c)| subscription_json(n.as_str(), c)).collect();
    Ok(Json(json!({ "subscriptions": subs })))
}

/// `POST /v1/topics/{topic}/subscriptions {"name", "config"?}`: 201 when created, 200 when
/// it already existed with the same settings, 409 with others. Without `config`: a queue
/// subscription with defaults (and its dead-letter topic).
pub(super) async fn create_subscription(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath(topic): ApiPath<String>,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.check(Action::Admin, Some(&topic))?;
    let topic = topic_name(&topic)?;
    let request: CreateRequest = json(&body)?;
    let name = subscription_name(&request.name)?;
    let config = match request.config {
        Some(c) => config_from(c, &SubscriptionConfig::default())?,
        None => SubscriptionConfig::default(),
    };
    // The broker creates and writes the dead-letter topic: the caller must administer it.
    if let Some(dlq) = config.dead_letter_topic_for(&topic, &name)? {
        caller.check(Action::Admin, Some(dlq.as_str()))?;
    }
    let existed = |info: &TopicInfo| info.subscriptions.iter().any(|(n, _)| *n == name);
    let before = existed(&state.broker.topic_info(&topic)?);
    state.broker.create_subscription(&topic, &name, config).await?;
    // The stored settings, with the dead-letter topic the broker chose.
    let info = state.broker.topic_info(&topic)?;
    let config = info.subscriptions.iter().find(|(n, _)| *n == name).map(|(_, c)| c.clone());
    let config = config.ok_or_else(|| ApiError::NotFound(format!("subscription {name} vanished")))?;
    let status = if before { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(subscription_json(name.as_str(), &config))))
}

/// `GET /v1/topics/{topic}/subscriptions/{sub}`.
pub(super) async fn get_subscription(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((topic, sub)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Admin, Some(&topic))?;
    let (topic, sub) = (topic_name(&topic)?, subscription_name(&sub)?);
    let config = subscription_config(&state, &topic, &sub)?;
    Ok(Json(subscription_json(sub.as_str(), &config)))
}

/// The settings of one subscription.
pub(super) fn subscription_config(
    state: &AppState,
    topic: &switchboard_core::TopicName,
    sub: &switchboard_core::SubscriptionName,
) -> Result<SubscriptionConfig, ApiError> {
    let info = state.broker.topic_info(topic)?;
    info.subscriptions.into_iter().find(|(n, _)| n == sub).map(|(_, c)| c).ok_or_else(|| {
        switchboard_broker::BrokerError::SubscriptionNotFound {
            topic: topic.clone(),
            subscription: sub.clone(),
        }
        .into()
    })
}

/// `DELETE /v1/topics/{topic}/subscriptions/{sub}` (204; the dead-letter topic stays).
pub(super) async fn delete_subscription(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((topic, sub)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.check(Action::Admin, Some(&topic))?;
    let (topic, sub) = (topic_name(&topic)?, subscription_name(&sub)?);
    state.broker.delete_subscription(&topic, &sub).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/topics/{topic}/subscriptions/{sub}/stats`.
pub(super) async fn stats(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiPath((topic, sub)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Admin, Some(&topic))?;
    let (topic, sub) = (topic_name(&topic)?, subscription_name(&sub)?);
    Ok(Json(json!(state.broker.stats(&topic, &sub)?)))
}

fn topic_json(t: &TopicInfo) -> Value {
    let subs: Vec<Value> = t.subscriptions.iter().map(|(n, c)| subscription_json(n.as_str(), c)).collect();
    json!({ "name": t.name, "config": t.config, "partitions": t.partitions, "subscriptions": subs })
}

fn subscription_json(name: &str, c: &SubscriptionConfig) -> Value {
    json!({ "name": name, "config": c })
}

/// Settings from JSON over `defaults`, refusing fields the settings do not have (a typo
/// would otherwise be silently replaced by a default).
fn config_from<T: serde::Serialize + DeserializeOwned>(given: Value, defaults: &T) -> Result<T, ApiError> {
    let known = serde_json::to_value(defaults).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    unknown_fields(&given, &known, "config")?;
    let mut merged = known;
    merge(&mut merged, given);
    serde_json::from_value(merged).map_err(|e| ApiError::BadRequest(format!("invalid config: {e}")))
}

fn unknown_fields(given: &Value, known: &Value, path: &str) -> Result<(), ApiError> {
    let (Value::Object(g), Value::Object(k)) = (given, known) else { return Ok(()) };
    for (name, value) in g {
        match k.get(name) {
            None => {
                let mut names: Vec<&str> = k.keys().map(String::as_str).collect();
                names.sort_unstable();
                return Err(ApiError::BadRequest(format!(
                    "{path} has no field `{name}`; its fields are {}",
                    names.join(", ")
                )));
            }
            Some(inner) => unknown_fields(value, inner, &format!("{path}.{name}"))?,
        }
    }
    Ok(())
}

/// Overlays `given` on `base`, object by object, so a partial nested object (`retention`)
/// keeps the defaults it does not mention.
fn merge(base: &mut Value, given: Value) {
    match (base, given) {
        (Value::Object(b), Value::Object(g)) => {
            for (k, v) in g {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, g) => *slot = g,
    }
}
