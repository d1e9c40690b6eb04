//! CloudEvents attributes as NATS headers, following the CloudEvents NATS protocol binding
//! (binary content mode): the data is the NATS payload, every other attribute is a header
//! named `ce-<attribute>` (`ce-id`, `ce-source`, `ce-type`, `ce-specversion`, `ce-subject`,
//! `ce-time`, `ce-dataschema`, `ce-<extension>`, so `ce-traceparent`), and `datacontenttype`
//! is `Content-Type`.
//!
//! NATS trims header values and cannot carry line breaks, so values are percent-encoded the
//! way the CloudEvents HTTP binding does it: `%`, space and every byte outside printable
//! ASCII become `%XX`. Decoding reverses it exactly, so a round trip preserves every
//! attribute byte for byte.
//!
//! Messages published by non-Switchboard clients have no `ce-` headers; they still decode:
//! the id falls back to `Nats-Msg-Id` (else `<stream>-<sequence>`), the source to
//! `/nats/<subject>`, the type to [`FOREIGN_TYPE`].

use std::collections::BTreeMap;

use async_nats::HeaderMap;
use bytes::Bytes;
use switchboard_core::{Message, SPEC_VERSION};

/// Prefix of attribute headers.
const PREFIX: &str = "ce-";
/// JetStream's deduplication header.
pub(crate) const MSG_ID: &str = "Nats-Msg-Id";
/// Where `datacontenttype` goes.
const CONTENT_TYPE: &str = "Content-Type";
/// `type` of a message that was not published through Switchboard.
pub(crate) const FOREIGN_TYPE: &str = "io.nats.message";

/// The headers carrying `message`'s attributes, with `dedup_id` as `Nats-Msg-Id`.
pub(crate) fn encode(message: &Message, dedup_id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(MSG_ID, escape(dedup_id).as_str());
    let mut put =
        |name: &str, value: &str| h.insert(format!("{PREFIX}{name}").as_str(), escape(value).as_str());
    put("id", &message.id);
    put("source", &message.source);
    put("type", &message.ty);
    put("specversion", &message.specversion);
    for (name, value) in
        [("subject", &message.subject), ("time", &message.time), ("dataschema", &message.dataschema)]
    {
        if let Some(v) = value {
            put(name, v);
        }
    }
    for (name, value) in &message.extensions {
        put(name, value);
    }
    if let Some(ct) = &message.datacontenttype {
        h.insert(CONTENT_TYPE, escape(ct).as_str());
    }
    h
}

/// Rebuilds the message from a stored NATS message; `fallback_id` is used when the message
/// carries no id at all (see the module docs).
pub(crate) fn decode(
    headers: Option<&HeaderMap>,
    subject: &str,
    payload: Bytes,
    fallback_id: String,
) -> Message {
    let mut attrs: BTreeMap<String, String> = BTreeMap::new();
    let (mut msg_id, mut content_type) = (None, None);
    if let Some(h) = headers {
        for (name, values) in h.iter() {
            let Some(value) = values.last() else { continue };
            let name: &str = name.as_ref();
            let value = unescape(value.as_str());
            if let Some(attr) = name.strip_prefix(PREFIX) {
                attrs.insert(attr.to_owned(), value);
            } else if name == MSG_ID {
                msg_id = Some(value);
            } else if name == CONTENT_TYPE {
                content_type = Some(value);
            }
        }
    }
    let mut take = |k: &str| attrs.remove(k);
    let id = take("id").or(msg_id).unwrap_or(fallback_id);
    let source = take("source").unwrap_or_else(|| format!("/nats/{subject}"));
    let ty = take("type").unwrap_or_else(|| FOREIGN_TYPE.to_owned());
    let specversion = take("specversion").unwrap_or_else(|| SPEC_VERSION.to_owned());
    let mut message = Message::new(source, ty, payload).with_id(id);
    message.specversion = specversion;
    message.subject = take("subject");
    message.time = take("time");
    message.dataschema = take("dataschema");
    message.datacontenttype = content_type;
    message.extensions = attrs;
    message
}

/// Percent-encodes `%`, space and bytes outside printable ASCII.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b == b'%' || !(0x21..=0x7e).contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// Reverses [`escape`]; a malformed escape is kept as it is (headers written by other NATS
/// clients may hold a literal `%`), as is invalid UTF-8, lossily.
fn unescape(value: &str) -> String {
    // `percent_decode` decodes `%` and two hex digits exactly, and passes anything else
    // through, which is what this module always did, except that the hand-written decoder it
    // replaced read `%+5` as byte 5 (`u8::from_str_radix` accepts a sign).
    percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attribute_round_trips() {
        let mut m = Message::new("/shop order", "order.created", &b"{}"[..])
            .with_subject(" padded \u{e9}% ")
            .with_content_type("application/json; charset=utf-8")
            .with_extension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .with_extension("tracestate", "a=1,b=2")
            .with_key("k");
        m.time = Some("2026-11-26T10:00:00.123Z".into());
        m.dataschema = Some("https://x/s.json".into());
        let h = encode(&m, &m.id);
        let back = decode(Some(&h), "sb.t.x", m.data.clone(), "fallback".into());
        assert_eq!(back, m);
    }

    #[test]
    fn foreign_messages_get_defaults() {
        let m = decode(None, "sb.t.x", Bytes::from_static(b"hi"), "S-7".into());
        assert_eq!((m.id.as_str(), m.source.as_str(), m.ty.as_str()), ("S-7", "/nats/sb.t.x", FOREIGN_TYPE));
    }

    #[test]
    fn malformed_escapes_survive() {
        assert_eq!(unescape("100%"), "100%");
        assert_eq!(unescape("%zz%41"), "%zzA");
        assert_eq!(unescape("%+5%-5%4"), "%+5%-5%4");
        assert_eq!(unescape("%C3%A9%ff"), "\u{e9}\u{fffd}");
    }
}
