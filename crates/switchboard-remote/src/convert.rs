//! Messages as CloudEvents (protobuf format) and back, and the SDK's subscription settings
//! as `switchboard.v1` ones.
//!
//! The mapping mirrors the server's (`switchboard-server/src/grpc/convert.rs`) in reverse, so
//! a message comes back from the server as it was published: attributes travel as strings,
//! `dataschema` as a URI, data as text, protobuf or bytes by its content type.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use bytes::Bytes;
use switchboard_core::contract::{Mode, Start, SubscriptionSpec, SubscriptionStats};
use switchboard_core::{Message, SPEC_VERSION, Timestamp};
use switchboard_proto::io::cloudevents::v1 as ce;
use switchboard_proto::switchboard::v1 as api;

use ce::cloud_event::cloud_event_attribute_value::Attr;
use ce::cloud_event::{CloudEventAttributeValue, Data};

/// The media type of `proto_data`.
const PROTOBUF_MEDIA_TYPE: &str = "application/protobuf";

/// Milliseconds since the epoch as a protobuf timestamp.
pub(crate) fn timestamp_to_proto(t: Timestamp) -> prost_types::Timestamp {
    let ms = t.as_millis();
    prost_types::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

/// A protobuf timestamp as milliseconds since the epoch (before 1970: 0).
pub(crate) fn timestamp_from_proto(t: prost_types::Timestamp) -> Timestamp {
    let t = t.normalized();
    let seconds = u64::try_from(t.seconds).unwrap_or(0);
    let millis = u64::try_from(t.nanos).unwrap_or(0) / 1_000_000;
    Timestamp(seconds.saturating_mul(1000).saturating_add(millis))
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

/// A message as a CloudEvent. `time` goes as the string it is (the server checks and stores it
/// unchanged), `dataschema` as a URI, every other attribute as a string.
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
        put("time", Attr::CeString(t));
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

/// The CloudEvents canonical string form of an attribute value.
fn canonical_string(attr: Attr) -> String {
    match attr {
        Attr::CeBoolean(b) => b.to_string(),
        Attr::CeInteger(i) => i.to_string(),
        Attr::CeString(s) | Attr::CeUri(s) | Attr::CeUriRef(s) => s,
        Attr::CeBytes(b) => base64::engine::general_purpose::STANDARD.encode(b),
        Attr::CeTimestamp(t) => t.normalized().to_string(),
    }
}

/// A delivered CloudEvent as a message. The server validated it when it was published, so
/// nothing is checked again here.
pub(crate) fn message_from_event(event: ce::CloudEvent) -> Message {
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
        let Some(attr) = value.attr else { continue };
        let value = canonical_string(attr);
        match name.as_str() {
            "subject" => m.subject = Some(value),
            "time" => m.time = Some(value),
            "datacontenttype" => m.datacontenttype = Some(value),
            "dataschema" => m.dataschema = Some(value),
            _ => {
                m.extensions.insert(name, value);
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
    m
}

/// The server-side settings of a subscription opened with `spec`. The prefetch becomes the
/// per-consumer in-flight cap, so the server enforces the same back-pressure as the credits.
pub(crate) fn subscription_config(spec: &SubscriptionSpec) -> api::SubscriptionConfig {
    let queue = spec.mode == Mode::Queue;
    api::SubscriptionConfig {
        mode: match spec.mode {
            Mode::Queue => api::SubscriptionMode::Queue,
            Mode::Stream => api::SubscriptionMode::Stream,
        } as i32,
        start: match spec.start {
            Start::Earliest => api::StartPosition::Earliest,
            Start::Latest => api::StartPosition::Latest,
        } as i32,
        lease_ms: Some(u64::try_from(spec.lease.as_millis()).unwrap_or(u64::MAX)),
        // 0 means "never dead-letter" on the wire.
        max_deliveries: Some(if queue { spec.max_deliveries.unwrap_or(0) } else { 0 }),
        dead_letter_topic: if queue {
            spec.dead_letter_topic.as_ref().map(ToString::to_string)
        } else {
            None
        },
        ordered_by_key: spec.ordered_by_key,
        max_in_flight_per_consumer: Some(spec.prefetch),
    }
}

/// The server's counts in the contract's shape.
pub(crate) fn stats_from_proto(s: api::SubscriptionStats) -> SubscriptionStats {
    let queue = s.mode == api::SubscriptionMode::Queue as i32;
    SubscriptionStats::new(s.backlog, s.in_flight, s.lag).with_dead_lettered(queue.then_some(s.dead_lettered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_survives_the_trip() {
        let mut m = Message::new("/shop", "order.created", r#"{"n":1}"#)
            .with_subject("o-1")
            .with_content_type("application/json")
            .with_key("c-7")
            .with_extension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        m.time = Some("2026-11-26T10:00:00.500Z".into());
        m.dataschema = Some("https://x/schema".into());
        let e = event_from_message(m.clone());
        assert_eq!(e.data, Some(Data::TextData(r#"{"n":1}"#.into())));
        assert_eq!(message_from_event(e), m);

        let bin = Message::new("/s", "t", vec![0xff, 0]);
        assert_eq!(message_from_event(event_from_message(bin.clone())), bin);
        let mut proto = Message::new("/s", "t", vec![8, 1]).with_content_type("application/protobuf");
        proto.dataschema = Some("type.x/a.B".into());
        let e = event_from_message(proto.clone());
        assert!(matches!(e.data, Some(Data::ProtoData(_))));
        assert_eq!(message_from_event(e), proto);
    }

    #[test]
    fn typed_attributes_arrive_as_canonical_strings() {
        let mut e = event_from_message(Message::new("/s", "t", ""));
        let mut put = |k: &str, a| e.attributes.insert(k.into(), CloudEventAttributeValue { attr: Some(a) });
        put("urgent", Attr::CeBoolean(true));
        put("blob", Attr::CeBytes(Bytes::from_static(b"\x00\x01")));
        put("time", Attr::CeTimestamp(prost_types::Timestamp { seconds: 1_764_151_200, nanos: 500_000_000 }));
        let m = message_from_event(e);
        assert_eq!(m.extensions["urgent"], "true");
        assert_eq!(m.extensions["blob"], "AAE=");
        assert_eq!(m.time.as_deref(), Some("2025-11-26T10:00:00.500Z"));
    }

    #[test]
    fn timestamps() {
        let t = Timestamp(2007);
        assert_eq!(timestamp_from_proto(timestamp_to_proto(t)), t);
    }
}
