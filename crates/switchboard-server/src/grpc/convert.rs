//! Conversions between the wire types of `switchboard.v1` / `io.cloudevents.v1` and the
//! broker's types. Everything a client sends is checked here or by the broker, and a bad
//! value becomes an [`ApiError`] naming it.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use bytes::Bytes;
use switchboard_broker::{
    BrokerDelivery, BrokerError, Durability, FsyncPolicy, PartitionStats, PublishReceipt, RetentionConfig,
    StartPosition, SubscriptionConfig, SubscriptionMode, SubscriptionStats, TopicConfig, TopicInfo,
};
use switchboard_core::{Message, SPEC_VERSION, SubscriptionName, Timestamp, TopicName};

use super::pb::io::cloudevents::v1 as ce;
use super::pb::switchboard::v1 as api;
use crate::error::ApiError;
use ce::cloud_event::cloud_event_attribute_value::Attr;
use ce::cloud_event::{CloudEventAttributeValue, Data};

/// The media type of `proto_data`.
const PROTOBUF_MEDIA_TYPE: &str = "application/protobuf";

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

/// Milliseconds since the epoch as a protobuf timestamp.
pub(super) fn timestamp_to_proto(t: Timestamp) -> prost_types::Timestamp {
    let ms = t.as_millis();
    prost_types::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// A protobuf timestamp as milliseconds since the epoch (sub-millisecond parts dropped).
pub(crate) fn timestamp_from_proto(t: prost_types::Timestamp, what: &str) -> Result<Timestamp, ApiError> {
    let t = t.normalized();
    let seconds = u64::try_from(t.seconds).map_err(|_| bad(format!("{what} is before 1970")))?;
    Ok(Timestamp(seconds.saturating_mul(1000).saturating_add(t.nanos as u64 / 1_000_000)))
}

fn rfc3339(t: prost_types::Timestamp) -> String {
    t.normalized().to_string()
}

// ---------------------------------------------------------------------------------------------
// CloudEvents

/// A CloudEvent from the wire as a message, validated against `max_bytes` (the topic's own
/// limit is checked again by the broker).
///
/// # Errors
/// A missing or malformed attribute ([`ApiError::BadRequest`] or an invalid-message error),
/// or a message over the limit (`TooLarge`).
pub(super) fn message_from_event(event: ce::CloudEvent, max_bytes: usize) -> Result<Message, ApiError> {
    let ce::CloudEvent { id, source, spec_version, r#type, attributes, data } = event;
    let mut m = Message {
        id,
        source,
        ty: r#type,
        specversion: if spec_version.is_empty() { SPEC_VERSION.to_owned() } else { spec_version },
        subject: None,
        time: None,
        datacontenttype: None,
        dataschema: None,
        extensions: BTreeMap::new(),
        data: Bytes::new(),
    };
    for (name, value) in attributes {
        let Some(attr) = value.attr else {
            return Err(bad(format!("attribute `{name}` has no value")));
        };
        match name.as_str() {
            "id" | "source" | "type" | "specversion" | "spec_version" => {
                return Err(bad(format!(
                    "`{name}` is a field of the CloudEvent message, not an entry of `attributes`"
                )));
            }
            "subject" => m.subject = Some(string_attribute(&name, attr)?),
            "datacontenttype" => m.datacontenttype = Some(string_attribute(&name, attr)?),
            "dataschema" => m.dataschema = Some(string_attribute(&name, attr)?),
            "time" => {
                m.time = Some(match attr {
                    Attr::CeTimestamp(t) => rfc3339(t),
                    Attr::CeString(s) => s,
                    _ => {
                        return Err(bad("attribute `time` must be a ce_timestamp or an RFC 3339 ce_string"));
                    }
                });
            }
            _ => {
                m.extensions.insert(name, canonical_string(attr));
            }
        }
    }
    m.data = match data {
        None => Bytes::new(),
        Some(Data::BinaryData(b)) => b,
        Some(Data::TextData(s)) => Bytes::from(s),
        Some(Data::ProtoData(any)) => {
            m.datacontenttype.get_or_insert_with(|| PROTOBUF_MEDIA_TYPE.to_owned());
            if m.dataschema.is_none() && !any.type_url.is_empty() {
                m.dataschema = Some(any.type_url);
            }
            Bytes::from(any.value)
        }
    };
    m.validate(max_bytes).map_err(BrokerError::from)?;
    Ok(m)
}

fn string_attribute(name: &str, attr: Attr) -> Result<String, ApiError> {
    match attr {
        Attr::CeString(s) | Attr::CeUri(s) | Attr::CeUriRef(s) => Ok(s),
        _ => Err(bad(format!("attribute `{name}` must be a ce_string, ce_uri or ce_uri_ref"))),
    }
}

/// The CloudEvents canonical string form of an attribute value.
fn canonical_string(attr: Attr) -> String {
    match attr {
        Attr::CeBoolean(b) => b.to_string(),
        Attr::CeInteger(i) => i.to_string(),
        Attr::CeString(s) | Attr::CeUri(s) | Attr::CeUriRef(s) => s,
        Attr::CeBytes(b) => base64::engine::general_purpose::STANDARD.encode(b),
        Attr::CeTimestamp(t) => rfc3339(t),
    }
}

/// Whether data of this media type is text (sent as `text_data`).
fn is_text(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence.starts_with("text/")
        || essence == "application/json"
        || essence.ends_with("+json")
        || essence == "application/xml"
        || essence.ends_with("+xml")
}

/// A message as a CloudEvent: `time` as a ce_timestamp, `dataschema` as a ce_uri, the other
/// attributes and extensions as ce_string. Data goes in `proto_data` when the content type is
/// `application/protobuf` and a `dataschema` names the type, in `text_data` when the content
/// type is text (`text/*`, JSON, XML) and the bytes are UTF-8, and in `binary_data` otherwise.
pub(crate) fn event_from_message(m: Message) -> ce::CloudEvent {
    let Message { id, source, ty, specversion, subject, time, datacontenttype, dataschema, extensions, data } =
        m;
    let mut attributes: HashMap<String, CloudEventAttributeValue> =
        HashMap::with_capacity(extensions.len() + 4);
    let mut put = |name: &str, attr: Attr| {
        attributes.insert(name.to_owned(), CloudEventAttributeValue { attr: Some(attr) });
    };
    if let Some(s) = subject {
        put("subject", Attr::CeString(s));
    }
    if let Some(t) = time {
        match t.parse::<prost_types::Timestamp>() {
            Ok(ts) => put("time", Attr::CeTimestamp(ts)),
            Err(_) => put("time", Attr::CeString(t)),
        }
    }
    let proto_type = match (&datacontenttype, &dataschema) {
        (Some(ct), Some(schema)) if ct.eq_ignore_ascii_case(PROTOBUF_MEDIA_TYPE) => Some(schema.clone()),
        _ => None,
    };
    let text = datacontenttype.as_deref().is_some_and(is_text);
    if let Some(ct) = datacontenttype {
        put("datacontenttype", Attr::CeString(ct));
    }
    if let Some(s) = dataschema {
        put("dataschema", Attr::CeUri(s));
    }
    for (k, v) in extensions {
        attributes.insert(k, CloudEventAttributeValue { attr: Some(Attr::CeString(v)) });
    }
    let data = if data.is_empty() {
        None
    } else if let Some(type_url) = proto_type {
        Some(Data::ProtoData(prost_types::Any { type_url, value: data.to_vec() }))
    } else if text {
        match std::str::from_utf8(&data) {
            Ok(s) => Some(Data::TextData(s.to_owned())),
            Err(_) => Some(Data::BinaryData(data)),
        }
    } else {
        Some(Data::BinaryData(data))
    };
    ce::CloudEvent { id, source, spec_version: specversion, r#type: ty, attributes, data }
}

// ---------------------------------------------------------------------------------------------
// Publishing and consuming

pub(super) fn receipt_to_proto(r: PublishReceipt) -> api::PublishReceipt {
    api::PublishReceipt {
        partition: r.partition,
        offset: r.offset,
        duplicate: r.duplicate,
        published_at: Some(timestamp_to_proto(r.timestamp)),
        fsynced: r.durability == Durability::Fsynced,
    }
}

pub(super) fn delivery_to_proto(d: BrokerDelivery) -> api::Delivery {
    api::Delivery {
        partition: d.partition,
        offset: d.offset,
        attempt: d.attempt,
        receipt: d.receipt.map(|r| r.to_string()).unwrap_or_default(),
        lease_expires_at: d.lease_expires_at.map(timestamp_to_proto),
        published_at: Some(timestamp_to_proto(d.published_at)),
        event: Some(event_from_message(d.message)),
    }
}

/// An error about one item of a stream.
pub(super) fn error_to_proto(e: &ApiError) -> api::Error {
    api::Error { code: e.grpc_code() as i32, message: e.to_string() }
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
    fn attributes_map_to_fields_and_extensions() {
        let mut e = event();
        let ts = prost_types::Timestamp { seconds: 1_764_151_200, nanos: 500_000_000 };
        e.attributes.insert("time".into(), attr(Attr::CeTimestamp(ts)));
        e.attributes.insert("subject".into(), attr(Attr::CeString("o-1".into())));
        e.attributes.insert("datacontenttype".into(), attr(Attr::CeString("application/json".into())));
        e.attributes.insert("dataschema".into(), attr(Attr::CeUri("https://x/schema".into())));
        e.attributes.insert("partitionkey".into(), attr(Attr::CeString("c-7".into())));
        e.attributes.insert("urgent".into(), attr(Attr::CeBoolean(true)));
        e.attributes.insert("priority".into(), attr(Attr::CeInteger(-3)));
        e.attributes.insert("blob".into(), attr(Attr::CeBytes(Bytes::from_static(b"\x00\x01"))));
        let m = message_from_event(e, 1 << 20).unwrap();
        assert_eq!(m.time.as_deref(), Some("2025-11-26T10:00:00.500Z"));
        assert_eq!(m.subject.as_deref(), Some("o-1"));
        assert_eq!(m.dataschema.as_deref(), Some("https://x/schema"));
        assert_eq!(m.partition_key(), Some("c-7"));
        assert_eq!(m.extensions["urgent"], "true");
        assert_eq!(m.extensions["priority"], "-3");
        assert_eq!(m.extensions["blob"], "AAE=");
        assert_eq!(&m.data[..], b"{\"n\":1}");

        let back = event_from_message(m);
        assert_eq!(back.attributes["time"], attr(Attr::CeTimestamp(ts)));
        assert_eq!(back.attributes["dataschema"], attr(Attr::CeUri("https://x/schema".into())));
        assert_eq!(back.attributes["urgent"], attr(Attr::CeString("true".into())));
        assert_eq!(back.data, Some(Data::TextData("{\"n\":1}".into())));
        assert_eq!(back.spec_version, "1.0");
    }

    #[test]
    fn data_kinds() {
        let mut e = event();
        e.data = Some(Data::ProtoData(prost_types::Any { type_url: "type.x/a.B".into(), value: vec![8, 1] }));
        let m = message_from_event(e, 1 << 20).unwrap();
        assert_eq!(m.datacontenttype.as_deref(), Some("application/protobuf"));
        assert_eq!(m.dataschema.as_deref(), Some("type.x/a.B"));
        let back = event_from_message(m);
        assert_eq!(
            back.data,
            Some(Data::ProtoData(prost_types::Any { type_url: "type.x/a.B".into(), value: vec![8, 1] }))
        );

        let mut e = event();
        e.data = Some(Data::BinaryData(Bytes::from_static(&[0xff, 0])));
        let back = event_from_message(message_from_event(e, 1 << 20).unwrap());
        assert_eq!(back.data, Some(Data::BinaryData(Bytes::from_static(&[0xff, 0]))));

        let mut e = event();
        e.spec_version.clear();
        e.data = None;
        let m = message_from_event(e, 1 << 20).unwrap();
        assert_eq!(m.specversion, "1.0");
        assert_eq!(event_from_message(m).data, None);
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
    fn timestamps() {
        let t = timestamp_from_proto(prost_types::Timestamp { seconds: 2, nanos: 7_900_000 }, "x").unwrap();
        assert_eq!(t, Timestamp(2007));
        assert_eq!(timestamp_to_proto(t), prost_types::Timestamp { seconds: 2, nanos: 7_000_000 });
        assert!(timestamp_from_proto(prost_types::Timestamp { seconds: -1, nanos: 0 }, "x").is_err());
    }
}
