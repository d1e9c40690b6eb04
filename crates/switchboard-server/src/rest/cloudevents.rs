//! The CloudEvents 1.0 HTTP protocol binding and JSON event format.
//!
//! - **binary** mode: attributes in `ce-*` headers (percent-decoded), `Content-Type` is
//!   `datacontenttype`, the body is the data, byte for byte;
//! - **structured** mode: `application/cloudevents+json`, one JSON event;
//! - **batched** mode: `application/cloudevents-batch+json`, a JSON array of events.
//!
//! Outgoing events are always structured JSON: `data` as JSON when the content type is JSON
//! and the bytes parse, as a string for UTF-8 `text/*`, otherwise `data_base64`, so that
//! every byte comes back exactly as published. Extension values are stored as strings, so a
//! number or boolean extension published in JSON comes back as its string form.

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Map, Value};
use switchboard_broker::BrokerError;
use switchboard_core::{Message, MessageError};

use crate::config::Limits;
use crate::error::ApiError;

/// The media type of one structured event.
pub(super) const STRUCTURED: &str = "application/cloudevents+json";
/// The media type of a batch.
pub(super) const BATCH: &str = "application/cloudevents-batch+json";

/// The events of a publish request, in order. Every event is validated against the server's message size limit (the topic's own limit
/// is checked by the broker).
pub(super) fn decode(headers: &HeaderMap, body: Bytes, limits: &Limits) -> Result<Vec<Message>, ApiError> {
    let max_size = limits.max_message_bytes;
    let content_type = match headers.get(header::CONTENT_TYPE) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::BadRequest("the Content-Type header is not valid ASCII".into()))?,
        ),
        None => None,
    };
    let media = content_type.map(media_type);
    match media.as_deref() {
        Some(STRUCTURED) => Ok(vec![structured(parse_json(&body)?, max_size).map_err(|e| e.into_api(None))?]),
        Some(BATCH) => {
            let Value::Array(events) = parse_json(&body)? else {
                return Err(ApiError::BadRequest(format!("a {BATCH} body must be a JSON array of events")));
            };
            if events.is_empty() {
                return Err(ApiError::BadRequest(format!("a {BATCH} body must hold at least one event")));
            }
            if events.len() > limits.max_batch_messages {
                return Err(
                    BrokerError::BatchTooLarge { len: events.len(), max: limits.max_batch_messages }.into()
                );
            }
            events
                .into_iter()
                .enumerate()
                .map(|(i, e)| structured(e, max_size).map_err(|err| err.into_api(Some(i))))
                .collect()
        }
        Some(m) if m.starts_with("application/cloudevents") => Err(ApiError::UnsupportedMediaType(format!(
            "event format {m:?} is not supported; use {STRUCTURED}, {BATCH}, or binary mode"
        ))),
        _ if headers.keys().any(|k| k.as_str().starts_with("ce-")) => {
            Ok(vec![binary(headers, content_type, body, max_size).map_err(|e| e.into_api(None))?])
        }
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "{} is not a CloudEvent: send binary mode (ce-specversion, ce-id, ce-source and ce-type \
             headers with any Content-Type), or a body of type {STRUCTURED} or {BATCH}",
            content_type.map_or_else(|| "a request without Content-Type".to_owned(), |c| format!("{c:?}"))
        ))),
    }
}

/// Why one event could not be decoded.
enum EventError {
    /// The request is malformed.
    Bad(String),
    /// The attributes break a message rule.
    Invalid(MessageError),
}

impl EventError {
    /// Single events keep the broker's error kinds; events of a batch name their index.
    fn into_api(self, index: Option<usize>) -> ApiError {
        match (self, index) {
            (EventError::Bad(m), None) => ApiError::BadRequest(m),
            (EventError::Bad(m), Some(i)) => ApiError::BadRequest(format!("event {i}: {m}")),
            (EventError::Invalid(e), None) => BrokerError::InvalidMessage(e).into(),
            (EventError::Invalid(e @ MessageError::TooLarge { .. }), Some(i)) => {
                ApiError::MessageTooLarge(format!("event {i}: {e}"))
            }
            (EventError::Invalid(e), Some(i)) => {
                ApiError::BadRequest(format!("event {i}: invalid message: {e}"))
            }
        }
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
}

/// `application/json; charset=utf-8` → `application/json`.
fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn is_json(content_type: &str) -> bool {
    let m = media_type(content_type);
    m == "application/json" || m == "text/json" || m.ends_with("+json")
}

/// Binary mode: attributes from `ce-*` headers.
fn binary(
    headers: &HeaderMap,
    content_type: Option<&str>,
    body: Bytes,
    max_size: usize,
) -> Result<Message, EventError> {
    let mut m =
        Message { datacontenttype: content_type.map(str::to_owned), data: body, ..Message::default() };
    for name in headers.keys() {
        let Some(attr) = name.as_str().strip_prefix("ce-") else { continue };
        let mut values = headers.get_all(name).iter();
        let (Some(raw), None) = (values.next(), values.next()) else {
            return Err(EventError::Bad(format!("header {name} is given more than once")));
        };
        let value = percent_decode(raw.as_bytes())
            .ok_or_else(|| EventError::Bad(format!("header {name} is not valid percent-encoded UTF-8")))?;
        match attr {
            "id" => m.id = value,
            "source" => m.source = value,
            "type" => m.ty = value,
            "specversion" => m.specversion = value,
            "subject" => m.subject = Some(value),
            "time" => m.time = Some(value),
            "dataschema" => m.dataschema = Some(value),
            "datacontenttype" => {
                return Err(EventError::Bad(
                    "binary mode carries datacontenttype in the Content-Type header, not ce-datacontenttype"
                        .into(),
                ));
            }
            ext => {
                m.extensions.insert(ext.to_owned(), value);
            }
        }
    }
    for (header, value) in
        [("ce-specversion", &m.specversion), ("ce-id", &m.id), ("ce-source", &m.source), ("ce-type", &m.ty)]
    {
        if value.is_empty() {
            return Err(EventError::Bad(format!(
                "header {header} is missing: binary-mode events need ce-specversion, ce-id, ce-source and ce-type"
            )));
        }
    }
    m.validate(max_size).map_err(EventError::Invalid)?;
    Ok(m)
}

/// Decodes `%XX` escapes (the HTTP binding percent-encodes spaces, `"`, `%` and everything
/// outside printable ASCII); `None` for a broken escape or invalid UTF-8.
fn percent_decode(raw: &[u8]) -> Option<String> {
    // `percent_decode` passes a broken escape through as it is; the binding has no literal
    // `%` (it is itself escaped), so one is refused. Two hex digits exactly: no sign, as
    // `u8::from_str_radix` (the decoder this replaced) allowed in `%+5`.
    let broken = raw.iter().enumerate().any(|(i, &b)| {
        b == b'%' && !raw.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if broken {
        return None;
    }
    percent_encoding::percent_decode(raw).decode_utf8().ok().map(std::borrow::Cow::into_owned)
}

/// Structured mode: one JSON event.
fn structured(event: Value, max_size: usize) -> Result<Message, EventError> {
    let Value::Object(fields) = event else {
        return Err(EventError::Bad("an event must be a JSON object".into()));
    };
    let mut m = Message::default();
    let mut data = None;
    let mut data_base64 = None;
    for (name, value) in fields {
        if value.is_null() {
            continue;
        }
        let string = |v: Value| match v {
            Value::String(s) => Ok(s),
            other => Err(EventError::Bad(format!("attribute `{name}` must be a string, not {other}"))),
        };
        match name.as_str() {
            "id" => m.id = string(value)?,
            "source" => m.source = string(value)?,
            "type" => m.ty = string(value)?,
            "specversion" => m.specversion = string(value)?,
            "subject" => m.subject = Some(string(value)?),
            "time" => m.time = Some(string(value)?),
            "datacontenttype" => m.datacontenttype = Some(string(value)?),
            "dataschema" => m.dataschema = Some(string(value)?),
            "data" => data = Some(value),
            "data_base64" => data_base64 = Some(string(value)?),
            _ => {
                let v = match value {
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(EventError::Bad(format!(
                            "extension `{name}` must be a string, number or boolean, not {other}"
                        )));
                    }
                };
                m.extensions.insert(name, v);
            }
        }
    }
    for (attr, value) in
        [("specversion", &m.specversion), ("id", &m.id), ("source", &m.source), ("type", &m.ty)]
    {
        if value.is_empty() {
            return Err(EventError::Bad(format!(
                "attribute `{attr}` is missing: events need specversion, id, source and type"
            )));
        }
    }
    m.data = match (data, data_base64) {
        (Some(_), Some(_)) => {
            return Err(EventError::Bad("an event may carry `data` or `data_base64`, not both".into()));
        }
        (None, Some(b64)) => STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| EventError::Bad(format!("data_base64 is not valid base64: {e}")))?
            .into(),
        (Some(value), None) => {
            let ct = m.datacontenttype.get_or_insert_with(|| "application/json".to_owned());
            match value {
                // A string under a non-JSON content type is the data itself (e.g. text/plain).
                Value::String(s) if !is_json(ct) => s.into(),
                other => serde_json::to_vec(&other).map_err(|e| EventError::Bad(e.to_string()))?.into(),
            }
        }
        (None, None) => Bytes::new(),
    };
    m.validate(max_size).map_err(EventError::Invalid)?;
    Ok(m)
}

/// A message as a structured JSON event.
pub(crate) fn encode(m: &Message) -> Value {
    let mut o = Map::new();
    o.insert("specversion".into(), m.specversion.clone().into());
    o.insert("id".into(), m.id.clone().into());
    o.insert("source".into(), m.source.clone().into());
    o.insert("type".into(), m.ty.clone().into());
    for (name, value) in [
        ("subject", &m.subject),
        ("time", &m.time),
        ("datacontenttype", &m.datacontenttype),
        ("dataschema", &m.dataschema),
    ] {
        if let Some(v) = value {
            o.insert(name.into(), v.clone().into());
        }
    }
    for (name, value) in &m.extensions {
        o.insert(name.clone(), value.clone().into());
    }
    if !m.data.is_empty() {
        let ct = m.datacontenttype.as_deref();
        let as_json = ct.filter(|c| is_json(c)).and_then(|_| serde_json::from_slice::<Value>(&m.data).ok());
        // A string under a JSON content type means that JSON string, not these bytes: JSON
        // content types that do not parse (e.g. `text/json`) go as base64. Only `text/*` goes
        // as a string: XML, which the protobuf format also sends as text
        // (`switchboard_proto::is_text`), has always gone here as `data_base64`, and REST
        // consumers may rely on that.
        let as_text = ct
            .filter(|c| media_type(c).starts_with("text/") && !is_json(c))
            .and_then(|_| std::str::from_utf8(&m.data).ok());
        match (as_json, as_text) {
            (Some(v), _) => o.insert("data".into(), v),
            (None, Some(s)) => o.insert("data".into(), s.into()),
            (None, None) => o.insert("data_base64".into(), STANDARD.encode(&m.data).into()),
        };
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn limits() -> Limits {
        Limits { max_message_bytes: 1024, ..Limits::default() }
    }

    const REQUIRED: [(&str, &str); 4] =
        [("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "/s"), ("ce-type", "t")];

    #[test]
    fn binary_mode_maps_headers_and_keeps_bytes() {
        let mut pairs = REQUIRED.to_vec();
        pairs.extend([
            ("ce-subject", "caf%C3%A9%20au%20lait"),
            ("ce-traceparent", "00-1"),
            ("content-type", "x/y"),
        ]);
        let m = decode(&headers(&pairs), Bytes::from_static(b"\x00\xff"), &limits()).unwrap().remove(0);
        assert_eq!(m.subject.as_deref(), Some("café au lait"));
        assert_eq!(m.extensions["traceparent"], "00-1");
        assert_eq!(m.datacontenttype.as_deref(), Some("x/y"));
        assert_eq!(&m.data[..], b"\x00\xff");
        assert_eq!(encode(&m)["data_base64"], "AP8=");
    }

    #[test]
    fn binary_mode_rejections() {
        let missing = headers(&[("ce-specversion", "1.0"), ("ce-source", "/s"), ("ce-type", "t")]);
        assert!(
            matches!(decode(&missing, Bytes::new(), &limits()), Err(ApiError::BadRequest(m)) if m.contains("ce-id"))
        );
        // `%+5` and `%-5`: the hand-written decoder this replaced read `+5` as hex 05.
        for broken in ["100%", "%zz", "%4", "%+5", "%-5", "%\u{e9}", "caf%C3"] {
            let mut h = headers(&REQUIRED);
            h.insert("ce-subject", HeaderValue::from_bytes(broken.as_bytes()).unwrap());
            assert!(matches!(decode(&h, Bytes::new(), &limits()), Err(ApiError::BadRequest(_))), "{broken}");
        }
        let mut h = headers(&REQUIRED);
        h.insert("ce-subject", HeaderValue::from_static("%41%c3%a9+"));
        assert_eq!(decode(&h, Bytes::new(), &limits()).unwrap()[0].subject.as_deref(), Some("A\u{e9}+"));
        assert!(matches!(
            decode(&headers(&[("content-type", "text/plain")]), Bytes::new(), &limits()),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }

    /// Found by the `cloudevents_http` fuzz target's round trip: `hello` published as
    /// `text/json` came back to REST consumers as the JSON string `"hello"`.
    #[test]
    fn json_typed_data_that_does_not_parse_goes_as_base64() {
        let mut pairs = REQUIRED.to_vec();
        pairs.push(("content-type", "text/json"));
        let m = decode(&headers(&pairs), Bytes::from_static(b"hello"), &limits()).unwrap().remove(0);
        let event = encode(&m);
        assert_eq!((event.get("data"), &event["data_base64"]), (None, &json!("aGVsbG8=")));
        let h = headers(&[("content-type", STRUCTURED)]);
        let again = decode(&h, serde_json::to_vec(&event).unwrap().into(), &limits()).unwrap().remove(0);
        assert_eq!(again, m);
    }

    /// Found by the `cloudevents_http` fuzz target: without correctly rounded float parsing
    /// (serde_json's `float_roundtrip`), a long JSON number came back to REST consumers off
    /// by one unit in the last place.
    #[test]
    fn json_numbers_come_back_exactly() {
        let number = "0.0000000000000000000000000000000000000000000000000000000000000000080000000000005";
        let mut pairs = REQUIRED.to_vec();
        pairs.push(("content-type", "application/json"));
        let body = Bytes::from(format!("[{number}]"));
        let m = decode(&headers(&pairs), body, &limits()).unwrap().remove(0);
        let expected: f64 = number.parse().unwrap();
        assert_eq!(encode(&m)["data"][0].as_f64(), Some(expected));
    }

    #[test]
    fn structured_data_forms() {
        let h = headers(&[("content-type", "application/cloudevents+json; charset=utf-8")]);
        let ev = |v: Value| decode(&h, serde_json::to_vec(&v).unwrap().into(), &limits());
        let base = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "n": 3, "ok": true});
        let mut with_data = base.clone();
        with_data["data"] = json!({"a": [1, 2]});
        let m = ev(with_data).unwrap().remove(0);
        assert_eq!(
            (&m.data[..], m.datacontenttype.as_deref()),
            (&br#"{"a":[1,2]}"#[..], Some("application/json"))
        );
        assert_eq!((m.extensions["n"].as_str(), m.extensions["ok"].as_str()), ("3", "true"));
        assert_eq!(encode(&m)["data"], json!({"a": [1, 2]}));
        let mut text = base.clone();
        text["data"] = json!("hello");
        text["datacontenttype"] = json!("text/plain");
        let m = ev(text).unwrap().remove(0);
        assert_eq!((&m.data[..], encode(&m)["data"].clone()), (&b"hello"[..], json!("hello")));
        let mut b64 = base.clone();
        b64["data_base64"] = json!("AP8=");
        assert_eq!(&ev(b64.clone()).unwrap()[0].data[..], b"\x00\xff");
        b64["data"] = json!(1);
        assert!(matches!(ev(b64), Err(ApiError::BadRequest(_))));
        let mut nested = base;
        nested["ext"] = json!({"x": 1});
        assert!(matches!(ev(nested), Err(ApiError::BadRequest(_))));
        assert!(matches!(ev(json!([])), Err(ApiError::BadRequest(_))));
    }
}
