//! Entry points for the fuzz targets in `fuzz/` at the repository root. Not a stable API:
//! hidden from the docs and free to change with the targets.
//!
//! Each function runs exactly the parsing and checks that a request handler runs before it
//! touches the broker, by calling the handler's own code; nothing here re-implements it.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use switchboard_broker::{SubscriptionConfig, TopicConfig};
use switchboard_core::{Message, Timestamp, TopicName};

use crate::config::Limits;
use crate::error::ApiError;
use crate::grpc::pb::io::cloudevents::v1::CloudEvent;
use crate::grpc::pb::switchboard::v1 as api;

/// `POST /v1/topics/{topic}/events` after authentication: the `deliver_at` query parameter
/// (if any), then the `switchboard-deliver-at` header and the CloudEvents of the body in
/// binary, structured or batch mode. Returns the delivery time and the messages to publish.
///
/// `headers` are what the client sent; a pair that is not a valid HTTP header is skipped,
/// as the HTTP server would have refused the request before the handler ran.
/// `content_type`, if given, is added as the `Content-Type` header.
///
/// # Errors
/// What the handler answers with.
pub fn rest_publish(
    query_deliver_at: Option<&str>,
    content_type: Option<&[u8]>,
    headers: &[(&[u8], &[u8])],
    body: &[u8],
    limits: &Limits,
) -> Result<(Option<Timestamp>, Vec<Message>), ApiError> {
    let mut map = HeaderMap::new();
    let content_type = content_type.map(|v| (&b"content-type"[..], v));
    for &(name, value) in content_type.iter().chain(headers) {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(name, value);
        }
    }
    crate::rest::decode_publish(query_deliver_at, &map, Bytes::copy_from_slice(body), limits)
}

/// A message as the REST API hands it to consumers (a structured-mode JSON event).
pub fn rest_event(message: &Message) -> serde_json::Value {
    crate::rest::encode_event(message)
}

/// `Publish` (and each batch of `PublishStream`) after authentication: the topic name, the
/// batch limits, `deliver_at` and every event.
///
/// # Errors
/// What the call answers with.
pub fn grpc_publish(
    request: api::PublishRequest,
    limits: &Limits,
) -> Result<(TopicName, Option<Timestamp>, Vec<Message>), ApiError> {
    crate::grpc::decode_publish(request, limits)
}

/// A message as the gRPC API hands it to consumers.
pub fn grpc_event(message: Message) -> CloudEvent {
    CloudEvent::from(message)
}

/// The settings of a `CreateTopic` request over the server's topic defaults.
///
/// # Errors
/// What the call answers with.
pub fn grpc_topic_config(
    config: Option<api::TopicConfig>,
    defaults: &TopicConfig,
) -> Result<TopicConfig, ApiError> {
    crate::grpc::topic_config_from_proto(config, defaults)
}

/// The settings of a `CreateSubscription` request.
///
/// # Errors
/// What the call answers with.
pub fn grpc_subscription_config(
    config: Option<api::SubscriptionConfig>,
) -> Result<SubscriptionConfig, ApiError> {
    crate::grpc::subscription_config_from_proto(config)
}

/// A protobuf timestamp of a request (`Seek` to a time, `deliver_at`).
///
/// # Errors
/// What the call answers with.
pub fn grpc_timestamp(t: prost_types::Timestamp) -> Result<Timestamp, ApiError> {
    crate::grpc::timestamp_from_proto(t, "time")
}

/// The per-receipt outcomes of the receipts of a consume stream's ack, nack or extend, as far
/// as parsing decides them.
pub fn grpc_receipts(receipts: Vec<String>) -> Vec<api::consume_response::Outcome> {
    crate::grpc::parse_receipts(receipts)
}
