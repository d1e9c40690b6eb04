//! CloudEvents attributes ⇄ AMQP 0-9-1 properties and headers.
//!
//! Binary content mode of the CloudEvents AMQP binding: the body is the data, and every
//! attribute and extension is an application header named `cloudEvents:<attribute>`, stored
//! as a long string so values up to the 4 KiB attribute limit fit. For interoperability
//! `id` is also set as `message_id` and `datacontenttype` as `content_type` (both AMQP short
//! strings, so only when the value fits in 255 bytes); reading prefers the headers, so the
//! round trip is exact either way. Messages are persistent (`delivery_mode` 2), and the
//! publish time goes into `timestamp` (seconds, per AMQP) and `sb-published-ms`.

use std::collections::BTreeMap;

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use switchboard_core::{Message, SPEC_VERSION, Timestamp};

/// Prefix of CloudEvents attribute headers (CloudEvents AMQP binding).
const PREFIX: &str = "cloudEvents:";
/// Header with the publish time in milliseconds since the epoch.
const PUBLISHED_MS: &str = "sb-published-ms";

/// Properties for publishing `message`, stamped with `published_at`.
pub(crate) fn encode(message: &Message, published_at: Timestamp) -> BasicProperties {
    let mut headers = FieldTable::default();
    let mut put = |name: &str, value: &str| {
        headers.insert(
            ShortString::from(format!("{PREFIX}{name}")),
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    };
    put("id", &message.id);
    put("source", &message.source);
    put("type", &message.ty);
    put("specversion", &message.specversion);
    for (name, value) in [
        ("subject", &message.subject),
        ("time", &message.time),
        ("datacontenttype", &message.datacontenttype),
        ("dataschema", &message.dataschema),
    ] {
        if let Some(v) = value {
            put(name, v);
        }
    }
    for (name, value) in &message.extensions {
        put(name, value);
    }
    headers.insert(ShortString::from(PUBLISHED_MS), AMQPValue::LongLongInt(published_at.0 as i64));
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_timestamp(published_at.0 / 1000)
        .with_headers(headers);
    if let Ok(id) = ShortString::try_new(message.id.as_str()) {
        props = props.with_message_id(id);
    }
    if let Some(ct) = message.datacontenttype.as_deref().and_then(|ct| ShortString::try_new(ct).ok()) {
        props = props.with_content_type(ct);
    }
    props
}

/// The message carried by a delivery. Lenient with messages not published by Switchboard:
/// a missing id, source or type falls back to `message_id`, `amqp` and `amqp.message`.
pub(crate) fn decode(props: &BasicProperties, data: Vec<u8>) -> Message {
    let mut attrs: BTreeMap<String, String> = BTreeMap::new();
    if let Some(headers) = props.headers() {
        for (key, value) in headers {
            if let (Some(name), Some(v)) = (key.as_str().strip_prefix(PREFIX), text(value)) {
                attrs.insert(name.to_owned(), v);
            }
        }
    }
    let short = |o: &Option<ShortString>| o.as_ref().map(|s| s.as_str().to_owned());
    let mut take = |name: &str| attrs.remove(name);
    let id = take("id").or_else(|| short(props.message_id())).unwrap_or_default();
    let source = take("source").unwrap_or_else(|| "amqp".to_owned());
    let ty = take("type").unwrap_or_else(|| "amqp.message".to_owned());
    let specversion = take("specversion").unwrap_or_else(|| SPEC_VERSION.to_owned());
    let subject = take("subject");
    let time = take("time");
    let datacontenttype = take("datacontenttype").or_else(|| short(props.content_type()));
    let dataschema = take("dataschema");
    let mut message = Message::new(source, ty, Bytes::from(data));
    if !id.is_empty() {
        message.id = id;
    }
    message.specversion = specversion;
    message.subject = subject;
    message.time = time;
    message.datacontenttype = datacontenttype;
    message.dataschema = dataschema;
    message.extensions = attrs;
    message
}

/// When the message was published, from `sb-published-ms` or the AMQP timestamp.
pub(crate) fn published_at(props: &BasicProperties) -> Option<Timestamp> {
    let ms = props.headers().as_ref().and_then(|h| h.inner().get(PUBLISHED_MS)).and_then(integer);
    match ms {
        Some(ms) => u64::try_from(ms).ok().map(Timestamp),
        None => props.timestamp().map(|s| Timestamp(s.saturating_mul(1000))),
    }
}

/// An integer header (`x-delivery-count`, `x-stream-offset`, …) whatever its AMQP width.
pub(crate) fn int_header(props: &BasicProperties, name: &str) -> Option<i64> {
    props.headers().as_ref().and_then(|h| h.inner().get(name)).and_then(integer)
}

fn integer(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::ByteArray(b) => Some(String::from_utf8_lossy(b.as_slice()).into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attribute_survives_the_round_trip() {
        let m = Message::new("/orders", "order.created", &b"{\"a\":1}"[..])
            .with_subject("o-1")
            .with_content_type("application/json")
            .with_key("customer-7")
            .with_extension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let mut m = m;
        m.time = Some("2026-11-26T10:00:00Z".into());
        m.dataschema = Some("https://example.com/schema".into());
        let props = encode(&m, Timestamp(1_700_000_000_123));
        let back = decode(&props, m.data.to_vec());
        assert_eq!(back, m);
        assert_eq!(published_at(&props), Some(Timestamp(1_700_000_000_123)));
    }

    #[test]
    fn long_ids_and_content_types_stay_exact() {
        let m = Message::new("s", "t", &b""[..]).with_id("i".repeat(1000)).with_content_type("c".repeat(300));
        let props = encode(&m, Timestamp(0));
        assert!(props.message_id().is_none());
        assert_eq!(decode(&props, Vec::new()), m);
    }
}
