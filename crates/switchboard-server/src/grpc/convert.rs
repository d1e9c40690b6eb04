//! Conversions between the wire types of `switchboard.v1` and the broker's types. Messages
//! and timestamps are mapped by `switchboard-proto` (the mapping the SDK's remote backend
//! shares); what is checked here on top is the server's: limits, and errors as [`ApiError`]s
//! naming the bad value.

use switchboard_broker::{
    BrokerDelivery, BrokerError, Durability, FsyncPolicy, PartitionStats, PublishReceipt, RetentionConfig,
    StartPosition, SubscriptionConfig, SubscriptionMode, SubscriptionStats, TopicConfig, TopicInfo,
};
use switchboard_core::{Message, SubscriptionName, Timestamp, TopicName};
use switchboard_proto::timestamp;

use super::pb::io::cloudevents::v1 as ce;
use super::pb::switchboard::v1 as api;
use crate::error::ApiError;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

/// A topic name from the wire.
pub(super) fn topic_name(name: &str) -> Result<TopicName, ApiError> {
    TopicName::new(name).map_err(|e| BrokerError::from(e).into())
}

/// A subscription name from the wire.
pub(super) fn subscription_name(name: &str) -> Result<SubscriptionName, ApiError> {
    SubscriptionName::new(name).map_err(|e| BrokerError::from(e).into())
}

// ---------------------------------------------------------------------------------------------
// Time

/// A protobuf timestamp from a request as milliseconds since the epoch (sub-millisecond parts
/// dropped).
pub(crate) fn timestamp_from_proto(t: prost_types::Timestamp, what: &str) -> Result<Timestamp, ApiError> {
    timestamp::from_proto(t).ok_or_else(|| bad(format!("{what} is before 1970")))
}

// ---------------------------------------------------------------------------------------------
// CloudEvents

/// A CloudEvent from the wire as a message, validated against `max_bytes` (the topic's own
/// limit is checked again by the broker).
///
/// # Errors
/// An attribute the protobuf format does not allow ([`ApiError::BadRequest`]), a value that
/// breaks a message rule (an invalid-message error), or a message over the limit (`TooLarge`).
pub(super) fn message_from_event(event: ce::CloudEvent, max_bytes: usize) -> Result<Message, ApiError> {
    let m = Message::try_from(event).map_err(|e| bad(e.to_string()))?;
    m.validate(max_bytes).map_err(BrokerError::from)?;
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// Publishing and consuming

pub(super) fn receipt_to_proto(r: PublishReceipt) -> api::PublishReceipt {
    api::PublishReceipt {
        partition: r.partition,
        offset: r.offset,
        duplicate: r.duplicate,
        published_at: Some(timestamp::to_proto(r.timestamp)),
        fsynced: r.durability == Durability::Fsynced,
    }
}

pub(super) fn delivery_to_proto(d: BrokerDelivery) -> api::Delivery {
    api::Delivery {
        partition: d.partition,
        offset: d.offset,
        attempt: d.attempt,
        receipt: d.receipt.map(|r| r.to_string()).unwrap_or_default(),
        lease_expires_at: d.lease_expires_at.map(timestamp::to_proto),
        published_at: Some(timestamp::to_proto(d.published_at)),
        event: Some(ce::CloudEvent::from(d.message)),
    }
}

/// An error about one item of a stream, with the same reason and metadata a failed call's
/// status carries (`about`: the resources of the request, see [`ApiError::metadata_about`]).
pub(super) fn error_to_proto(e: &ApiError, about: &[(&'static str, &str)]) -> api::Error {
    api::Error {
        code: e.grpc_code() as i32,
        message: e.to_string(),
        reason: e.reason().as_str().to_owned(),
        metadata: e.metadata_about(about).into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Topics and subscriptions

fn usize_field(v: u64, what: &str) -> Result<usize, ApiError> {
    usize::try_from(v).map_err(|_| bad(format!("{what} {v} is too large")))
}

/// Settings of a new topic: the request's fields over the server's topic defaults.
pub(crate) fn topic_config_from_proto(
    c: Option<api::TopicConfig>,
    defaults: &TopicConfig,
) -> Result<TopicConfig, ApiError> {
    let mut t = defaults.clone();
    let Some(c) = c else { return Ok(t) };
    if let Some(p) = c.partitions {
        t.partitions = p;
    }
    let default_interval = match defaults.fsync {
        FsyncPolicy::Interval { ms } => Some(ms),
        _ => None,
    };
    t.fsync = match api::FsyncPolicy::try_from(c.fsync) {
        Ok(api::FsyncPolicy::Unspecified) => match c.fsync_interval_ms {
            None => defaults.fsync,
            Some(ms) if default_interval.is_some() => FsyncPolicy::Interval { ms },
            Some(_) => return Err(bad("fsync_interval_ms needs fsync FSYNC_POLICY_INTERVAL")),
        },
        Ok(api::FsyncPolicy::Interval) => FsyncPolicy::Interval {
            ms: c
                .fsync_interval_ms
                .or(default_interval)
                .ok_or_else(|| bad("fsync FSYNC_POLICY_INTERVAL needs fsync_interval_ms"))?,
        },
        Ok(other) if c.fsync_interval_ms.is_some() => {
            return Err(bad(format!("fsync_interval_ms does not apply to fsync {}", other.as_str_name())));
        }
        Ok(api::FsyncPolicy::Always) => FsyncPolicy::Always,
        Ok(api::FsyncPolicy::Never) => FsyncPolicy::Never,
        Err(_) => return Err(bad(format!("fsync policy {} is unknown", c.fsync))),
    };
    let nonzero = |v: u64| (v > 0).then_some(v);
    if let Some(v) = c.retention_max_age_ms {
        t.retention.max_age_ms = nonzero(v);
    }
    if let Some(v) = c.retention_max_bytes {
        t.retention.max_bytes = nonzero(v);
    }
    if let Some(v) = c.retention_until_acked {
        t.retention.until_acked = v;
    }
    if let Some(v) = c.max_message_bytes {
        t.max_message_bytes = usize_field(v, "max_message_bytes")?;
    }
    if let Some(v) = c.dedup_window_ms {
        t.dedup_window_ms = v;
    }
    if let Some(v) = c.dedup_max_entries {
        t.dedup_max_entries = usize_field(v, "dedup_max_entries")?;
    }
    if let Some(v) = c.segment_bytes {
        t.segment_bytes = v;
    }
    if let Some(v) = c.segment_ms {
        t.segment_ms = v;
    }
    Ok(t)
}

pub(super) fn topic_config_to_proto(t: &TopicConfig) -> api::TopicConfig {
    let (fsync, fsync_interval_ms) = match t.fsync {
        FsyncPolicy::Always => (api::FsyncPolicy::Always, None),
        FsyncPolicy::Interval { ms } => (api::FsyncPolicy::Interval, Some(ms)),
        FsyncPolicy::Never => (api::FsyncPolicy::Never, None),
    };
    let RetentionConfig { max_age_ms, max_bytes, until_acked } = t.retention;
    api::TopicConfig {
        partitions: Some(t.partitions),
        fsync: fsync as i32,
        fsync_interval_ms,
        retention_max_age_ms: Some(max_age_ms.unwrap_or(0)),
        retention_max_bytes: Some(max_bytes.unwrap_or(0)),
        retention_until_acked: Some(until_acked),
        max_message_bytes: Some(t.max_message_bytes as u64),
        dedup_window_ms: Some(t.dedup_window_ms),
        dedup_max_entries: Some(t.dedup_max_entries as u64),
        segment_bytes: Some(t.segment_bytes),
        segment_ms: Some(t.segment_ms),
    }
}

/// Settings of a new subscription: the request's fields over the defaults.
pub(crate) fn subscription_config_from_proto(
    c: Option<api::SubscriptionConfig>,
) -> Result<SubscriptionConfig, ApiError> {
    let c = c.unwrap_or_default();
    let mode = match api::SubscriptionMode::try_from(c.mode) {
        Ok(api::SubscriptionMode::Unspecified | api::SubscriptionMode::Queue) => SubscriptionMode::Queue,
        Ok(api::SubscriptionMode::Stream) => SubscriptionMode::Stream,
        Err(_) => return Err(bad(format!("subscription mode {} is unknown", c.mode))),
    };
    let start = match api::StartPosition::try_from(c.start) {
        Ok(api::StartPosition::Unspecified | api::StartPosition::Earliest) => StartPosition::Earliest,
        Ok(api::StartPosition::Latest) => StartPosition::Latest,
        Err(_) => return Err(bad(format!("start position {} is unknown", c.start))),
    };
    let mut s = SubscriptionConfig { mode, start, ..SubscriptionConfig::default() };
    if let Some(ms) = c.lease_ms {
        s.lease_ms = ms;
    }
    match c.max_deliveries {
        None => {}
        Some(0) => s.max_deliveries = None,
        Some(n) => s.max_deliveries = Some(n),
    }
    s.dead_letter_topic = c.dead_letter_topic.as_deref().map(topic_name).transpose()?;
    s.ordered_by_key = c.ordered_by_key;
    if let Some(n) = c.max_in_flight_per_consumer {
        s.max_in_flight_per_consumer = n as usize;
    }
    Ok(s)
}

fn mode_to_proto(m: SubscriptionMode) -> api::SubscriptionMode {
    match m {
        SubscriptionMode::Queue => api::SubscriptionMode::Queue,
        SubscriptionMode::Stream => api::SubscriptionMode::Stream,
    }
}

pub(super) fn subscription_to_proto(
    topic: &TopicName,
    name: &SubscriptionName,
    c: &SubscriptionConfig,
) -> api::Subscription {
    let start = match c.start {
        StartPosition::Earliest => api::StartPosition::Earliest,
        StartPosition::Latest => api::StartPosition::Latest,
    };
    api::Subscription {
        topic: topic.to_string(),
        name: name.to_string(),
        config: Some(api::SubscriptionConfig {
            mode: mode_to_proto(c.mode) as i32,
            start: start as i32,
            lease_ms: Some(c.lease_ms),
            max_deliveries: Some(c.max_deliveries.unwrap_or(0)),
            dead_letter_topic: c.dead_letter_topic.as_ref().map(ToString::to_string),
            ordered_by_key: c.ordered_by_key,
            max_in_flight_per_consumer: Some(u32::try_from(c.max_in_flight_per_consumer).unwrap_or(u32::MAX)),
        }),
    }
}

pub(super) fn topic_to_proto(t: TopicInfo) -> api::Topic {
    api::Topic {
        config: Some(topic_config_to_proto(&t.config)),
        partitions: t
            .partitions
            .iter()
            .map(|p| api::PartitionInfo {
                partition: p.partition,
                start_offset: p.start_offset,
                end_offset: p.end_offset,
                size_bytes: p.size_bytes,
            })
            .collect(),
        subscriptions: t.subscriptions.iter().map(|(n, c)| subscription_to_proto(&t.name, n, c)).collect(),
        name: t.name.to_string(),
    }
}

pub(super) fn stats_to_proto(s: SubscriptionStats) -> api::SubscriptionStats {
    api::SubscriptionStats {
        mode: mode_to_proto(s.mode) as i32,
        backlog: s.backlog,
        in_flight: s.in_flight,
        lag: s.lag,
        scheduled: s.scheduled,
        dead_lettered: s.dead_lettered,
        consumers: u32::try_from(s.consumers).unwrap_or(u32::MAX),
        partitions: s
            .partitions
            .into_iter()
            .map(|p: PartitionStats| api::PartitionStats {
                partition: p.partition,
                start_offset: p.start_offset,
                end_offset: p.end_offset,
                floor: p.floor,
                backlog: p.backlog,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bytes::Bytes;
    use ce::cloud_event::cloud_event_attribute_value::Attr;
    use ce::cloud_event::{CloudEventAttributeValue, Data};

    use super::*;

    fn attr(a: Attr) -> CloudEventAttributeValue {
        CloudEventAttributeValue { attr: Some(a) }
    }

    fn event() -> ce::CloudEvent {
        ce::CloudEvent {
            id: "e1".into(),
            source: "/shop".into(),
            spec_version: "1.0".into(),
            r#type: "order.created".into(),
            attributes: HashMap::new(),
            data: Some(Data::TextData("{\"n\":1}".into())),
        }
    }

    #[test]
    fn bad_events_are_refused() {
        let code = |e: ce::CloudEvent| message_from_event(e, 64).unwrap_err().grpc_code();
        let mut e = event();
        e.id.clear();
        assert_eq!(code(e), tonic::Code::InvalidArgument);
        let mut e = event();
        e.attributes.insert("id".into(), attr(Attr::CeString("x".into())));
        assert_eq!(code(e), tonic::Code::InvalidArgument);
        let mut e = event();
        e.attributes.insert("time".into(), attr(Attr::CeString("yesterday".into())));
        assert_eq!(code(e), tonic::Code::InvalidArgument);
        let mut e = event();
        e.attributes.insert("Bad-Name".into(), attr(Attr::CeString("x".into())));
        assert_eq!(code(e), tonic::Code::InvalidArgument);
        let mut e = event();
        e.attributes.insert("subject".into(), CloudEventAttributeValue { attr: None });
        assert_eq!(code(e), tonic::Code::InvalidArgument);
        let mut e = event();
        e.data = Some(Data::BinaryData(Bytes::from(vec![0u8; 100])));
        assert_eq!(code(e), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn timestamps_before_1970_are_refused() {
        let t = timestamp_from_proto(prost_types::Timestamp { seconds: 2, nanos: 7_900_000 }, "x").unwrap();
        assert_eq!(t, Timestamp(2007));
        let e =
            timestamp_from_proto(prost_types::Timestamp { seconds: -1, nanos: 0 }, "deliver_at").unwrap_err();
        assert_eq!(e.to_string(), "deliver_at is before 1970");
    }
}
