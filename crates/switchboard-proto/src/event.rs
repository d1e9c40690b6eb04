//! Messages as CloudEvents in their protobuf format (`io.cloudevents.v1.CloudEvent`) and back:
//! the one mapping that the server and the SDK's remote backend share, so a message comes back
//! from the server as it was published.
//!
//! - [`From<Message>`](#impl-From<Message>-for-CloudEvent): `time` as a `ce_timestamp` (when it
//!   parses), `dataschema` as a `ce_uri`, every other attribute and extension as a
//!   `ce_string`; data by its content type (see [`is_text`]).
//! - [`TryFrom<CloudEvent>`](#impl-TryFrom<CloudEvent>-for-Message): what a client sends,
//!   checked for structure ([`CloudEventError`]); the values themselves are checked by
//!   [`Message::validate`], which the caller runs with its own size limit.
//! - [`message_from_trusted`]: what a server sent, which it validated when it was published,
//!   taken as it is.

use std::collections::HashMap;
use std::convert::Infallible;

use base64::Engine as _;
use bytes::Bytes;
use switchboard_core::{Message, SPEC_VERSION};

use crate::io::cloudevents::v1::CloudEvent;
use crate::io::cloudevents::v1::cloud_event::cloud_event_attribute_value::Attr;
use crate::io::cloudevents::v1::cloud_event::{CloudEventAttributeValue, Data};

/// The media type of `proto_data`.
pub const PROTOBUF_MEDIA_TYPE: &str = "application/protobuf";

/// Why a CloudEvent from the wire is not a message. The values inside (names, sizes, `time`)
/// are [`Message::validate`]'s to check; these are the protobuf format's own rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloudEventError {
    /// An entry of `attributes` carries no value.
    #[error("attribute `{0}` has no value")]
    NoValue(String),
    /// `id`, `source`, `type` or `specversion` given as an entry of `attributes`.
    #[error("`{0}` is a field of the CloudEvent message, not an entry of `attributes`")]
    Reserved(String),
    /// `subject`, `datacontenttype` or `dataschema` with a value that is not a string.
    #[error("attribute `{0}` must be a ce_string, ce_uri or ce_uri_ref")]
    NotAString(String),
    /// `time` with a value that is neither a timestamp nor a string.
    #[error("attribute `time` must be a ce_timestamp or an RFC 3339 ce_string")]
    Time,
}

/// Whether data of this media type is text: `text/*`, JSON (`application/json`, `*+json`)
/// or XML (`application/xml`, `*+xml`), parameters and case ignored.
///
/// It lives here, next to the protobuf format that sends such data as `text_data`, because
/// this crate is the lowest one that both that format and the server's HTTP binding (which
/// sends it as a JSON string) depend on; `switchboard-core` stays the message model only.
pub fn is_text(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence.starts_with("text/")
        || essence == "application/json"
        || essence.ends_with("+json")
        || essence == "application/xml"
        || essence.ends_with("+xml")
}

/// RFC 3339 in UTC, as the protobuf `Timestamp` writes itself.
fn rfc3339(t: prost_types::Timestamp) -> String {
    t.normalized().to_string()
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

fn string_attribute(name: &str, attr: Attr) -> Result<String, CloudEventError> {
    match attr {
        Attr::CeString(s) | Attr::CeUri(s) | Attr::CeUriRef(s) => Ok(s),
        _ => Err(CloudEventError::NotAString(name.to_owned())),
    }
}

/// One attribute of a client's event, under the protobuf format's rules.
fn strict_attribute(m: &mut Message, name: String, value: Option<Attr>) -> Result<(), CloudEventError> {
    let Some(attr) = value else { return Err(CloudEventError::NoValue(name)) };
    match name.as_str() {
        "id" | "source" | "type" | "specversion" | "spec_version" => {
            return Err(CloudEventError::Reserved(name));
        }
        "subject" => m.subject = Some(string_attribute(&name, attr)?),
        "datacontenttype" => m.datacontenttype = Some(string_attribute(&name, attr)?),
        "dataschema" => m.dataschema = Some(string_attribute(&name, attr)?),
        "time" => {
            m.time = Some(match attr {
                Attr::CeTimestamp(t) => rfc3339(t),
                Attr::CeString(s) => s,
                _ => return Err(CloudEventError::Time),
            });
        }
        _ => {
            m.extensions.insert(name, canonical_string(attr));
        }
    }
    Ok(())
}

/// One attribute of a server's event: anything is taken, as its canonical string.
fn trusted_attribute(m: &mut Message, name: String, value: Option<Attr>) -> Result<(), Infallible> {
    let Some(attr) = value else { return Ok(()) };
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
    Ok(())
}

/// The one decoding; only the reading of `attributes` differs between a client's event and
/// a server's, so the two cannot drift apart anywhere else.
fn decode<E>(
    event: CloudEvent,
    mut attribute: impl FnMut(&mut Message, String, Option<Attr>) -> Result<(), E>,
) -> Result<Message, E> {
    let CloudEvent { id, source, spec_version, r#type, attributes, data } = event;
    let mut m = Message {
        id,
        source,
        ty: r#type,
        specversion: if spec_version.is_empty() { SPEC_VERSION.to_owned() } else { spec_version },
        ..Message::default()
    };
    for (name, value) in attributes {
        attribute(&mut m, name, value.attr)?;
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
    Ok(m)
}

impl TryFrom<CloudEvent> for Message {
    type Error = CloudEventError;

    /// A CloudEvent a client sent. An empty `spec_version` means 1.0; `time` may be a
    /// timestamp or a string; other typed extension values become their canonical strings;
    /// `proto_data` sets `datacontenttype` (`application/protobuf`) and `dataschema` (the
    /// type URL) when they are not given.
    ///
    /// # Errors
    /// A [`CloudEventError`] for an attribute the protobuf format does not allow. The values
    /// are not checked here: call [`Message::validate`].
    fn try_from(event: CloudEvent) -> Result<Message, CloudEventError> {
        decode(event, strict_attribute)
    }
}

/// A CloudEvent that a Switchboard server delivered, as a message. The server validated it
/// when it was published and sent it through [`From<Message>`](CloudEvent#impl-From<Message>-for-CloudEvent),
/// so nothing is refused: an attribute without a value is skipped and every value is taken as
/// its canonical string.
pub fn message_from_trusted(event: CloudEvent) -> Message {
    match decode(event, trusted_attribute) {
        Ok(m) => m,
        Err(never) => match never {},
    }
}

impl From<Message> for CloudEvent {
    /// `time` as a `ce_timestamp` when it parses (else the string as it is), `dataschema` as a
    /// `ce_uri`, the other attributes and extensions as `ce_string`. Data goes in `proto_data`
    /// when the content type is `application/protobuf` and a `dataschema` names the type, in
    /// `text_data` when the content type [is text](is_text) and the bytes are UTF-8, and in
    /// `binary_data` otherwise.
    fn from(m: Message) -> CloudEvent {
        let Message {
            id,
            source,
            ty,
            specversion,
            subject,
            time,
            datacontenttype,
            dataschema,
            extensions,
            data,
        } = m;
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
        CloudEvent { id, source, spec_version: specversion, r#type: ty, attributes, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(a: Attr) -> CloudEventAttributeValue {
        CloudEventAttributeValue { attr: Some(a) }
    }

    fn event() -> CloudEvent {
        CloudEvent {
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
        let m = Message::try_from(e.clone()).unwrap();
        assert_eq!(m.time.as_deref(), Some("2025-11-26T10:00:00.500Z"));
        assert_eq!(m.subject.as_deref(), Some("o-1"));
        assert_eq!(m.dataschema.as_deref(), Some("https://x/schema"));
        assert_eq!(m.partition_key(), Some("c-7"));
        assert_eq!(m.extensions["urgent"], "true");
        assert_eq!(m.extensions["priority"], "-3");
        assert_eq!(m.extensions["blob"], "AAE=");
        assert_eq!(&m.data[..], b"{\"n\":1}");
        // What the strict reading accepts, the trusted one reads the same.
        assert_eq!(message_from_trusted(e), m);

        let back = CloudEvent::from(m);
        assert_eq!(back.attributes["time"], attr(Attr::CeTimestamp(ts)));
        assert_eq!(back.attributes["dataschema"], attr(Attr::CeUri("https://x/schema".into())));
        assert_eq!(back.attributes["urgent"], attr(Attr::CeString("true".into())));
        assert_eq!(back.data, Some(Data::TextData("{\"n\":1}".into())));
        assert_eq!(back.spec_version, "1.0");
    }

    #[test]
    fn a_message_survives_the_trip() {
        let mut m = Message::new("/shop", "order.created", r#"{"n":1}"#)
            .with_subject("o-1")
            .with_content_type("application/json")
            .with_key("c-7");
        m.time = Some("2026-11-26T10:00:00.500Z".into());
        m.dataschema = Some("https://x/schema".into());
        assert_eq!(Message::try_from(CloudEvent::from(m.clone())), Ok(m.clone()));
        assert_eq!(message_from_trusted(CloudEvent::from(m.clone())), m);
    }

    #[test]
    fn data_kinds() {
        let mut e = event();
        e.data = Some(Data::ProtoData(prost_types::Any { type_url: "type.x/a.B".into(), value: vec![8, 1] }));
        let m = Message::try_from(e).unwrap();
        assert_eq!(m.datacontenttype.as_deref(), Some("application/protobuf"));
        assert_eq!(m.dataschema.as_deref(), Some("type.x/a.B"));
        let back = CloudEvent::from(m);
        assert_eq!(
            back.data,
            Some(Data::ProtoData(prost_types::Any { type_url: "type.x/a.B".into(), value: vec![8, 1] }))
        );

        let mut e = event();
        e.data = Some(Data::BinaryData(Bytes::from_static(&[0xff, 0])));
        let back = CloudEvent::from(Message::try_from(e).unwrap());
        assert_eq!(back.data, Some(Data::BinaryData(Bytes::from_static(&[0xff, 0]))));

        // Text content type, bytes that are not UTF-8: binary.
        let m = Message::new("/s", "t", vec![0xff]).with_content_type("text/plain");
        assert_eq!(CloudEvent::from(m).data, Some(Data::BinaryData(Bytes::from_static(&[0xff]))));

        let mut e = event();
        e.spec_version.clear();
        e.data = None;
        let m = Message::try_from(e).unwrap();
        assert_eq!(m.specversion, "1.0");
        assert_eq!(CloudEvent::from(m).data, None);
    }

    #[test]
    fn a_client_event_breaking_the_format_is_refused_and_a_server_event_is_not() {
        let with = |name: &str, value: Option<Attr>| {
            let mut e = event();
            e.attributes.insert(name.into(), CloudEventAttributeValue { attr: value });
            e
        };
        let cases = [
            (with("id", Some(Attr::CeString("x".into()))), CloudEventError::Reserved("id".into())),
            (with("subject", None), CloudEventError::NoValue("subject".into())),
            (with("subject", Some(Attr::CeInteger(1))), CloudEventError::NotAString("subject".into())),
            (with("time", Some(Attr::CeBoolean(true))), CloudEventError::Time),
        ];
        for (e, expected) in cases {
            assert_eq!(Message::try_from(e.clone()), Err(expected));
            // The trusted reading takes what it can.
            assert_eq!(message_from_trusted(e).id, "e1");
        }
        assert_eq!(
            message_from_trusted(with("subject", Some(Attr::CeInteger(1)))).subject.as_deref(),
            Some("1")
        );
    }

    #[test]
    fn text_media_types() {
        for t in
            ["text/plain", "Application/JSON; charset=utf-8", "application/cloudevents+json", "image/svg+xml"]
        {
            assert!(is_text(t), "{t}");
        }
        for t in ["application/octet-stream", "application/protobuf", "", "image/png"] {
            assert!(!is_text(t), "{t}");
        }
    }
}
