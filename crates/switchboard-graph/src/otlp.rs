//! OTLP trace export requests, decoded into [`SpanRecord`]s: protobuf (the
//! `opentelemetry-proto` messages) and OTLP/JSON (read here, since its encoding differs from
//! protobuf's JSON mapping: ids are hex, not base64; 64-bit integers may be strings; enums
//! are integers). As the OTLP specification asks, unknown fields are ignored, so newer
//! exporters keep working; a malformed document or an invalid id is refused whole.

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use prost::Message as _;
use serde::Deserialize;

use crate::span::{Kind, SpanId, SpanRecord, TraceId};

/// How a request body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

impl Encoding {
    /// The encoding a `Content-Type` names, ignoring parameters; `None` for anything else.
    pub fn from_content_type(content_type: &str) -> Option<Encoding> {
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }

    /// Its content type, for the response.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a valid protobuf `ExportTraceServiceRequest`.
    #[error("malformed OTLP protobuf: {0}")]
    Protobuf(String),
    /// Not a valid OTLP/JSON document.
    #[error("malformed OTLP/JSON: {0}")]
    Json(String),
    /// A trace or span id of the wrong length or not hex.
    #[error("span {index}: {what} must be {bytes} bytes ({hex} hex digits), got {got:?}")]
    InvalidId {
        /// The span's position in the request.
        index: usize,
        /// `traceId`, `spanId`, `parentSpanId` or a link's id.
        what: &'static str,
        /// Bytes expected.
        bytes: usize,
        /// Hex digits expected.
        hex: usize,
        /// What came, cut short.
        got: String,
    },
}

/// Decodes a request body.
///
/// # Errors
/// A malformed body or an invalid id: nothing of the request is taken.
pub fn decode(body: &[u8], encoding: Encoding) -> Result<Vec<SpanRecord>, DecodeError> {
    match encoding {
        Encoding::Protobuf => {
            let request =
                ExportTraceServiceRequest::decode(body).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
            from_proto(request)
        }
        Encoding::Json => {
            let request: JsonRequest =
                serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
            from_json(request)
        }
    }
}

/// The response: empty success, or a partial success saying how many spans were rejected and
/// why.
pub fn response_message(rejected: u64, message: Option<&str>) -> ExportTraceServiceResponse {
    let partial_success = (rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: rejected as i64,
        error_message: message.unwrap_or_default().to_owned(),
    });
    ExportTraceServiceResponse { partial_success }
}

/// The response body: empty success, or a partial success saying how many spans were
/// rejected and why.
pub fn response(encoding: Encoding, rejected: u64, message: Option<&str>) -> Vec<u8> {
    let response = response_message(rejected, message);
    let partial = response.partial_success.clone();
    match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => {
            let body = match partial {
                Some(p) => {
                    serde_json::json!({"partialSuccess": {"rejectedSpans": p.rejected_spans.to_string(), "errorMessage": p.error_message}})
                }
                None => serde_json::json!({}),
            };
            body.to_string().into_bytes()
        }
    }
}

fn kind(code: i64) -> Kind {
    match code {
        2 => Kind::Server,
        3 => Kind::Client,
        4 => Kind::Producer,
        5 => Kind::Consumer,
        _ => Kind::Internal,
    }
}

/// What the graph reads from a span's attributes.
#[derive(Default)]
struct Attributes {
    destination: Option<String>,
    consumer_group: Option<String>,
    peer_service: Option<String>,
    server_address: Option<String>,
    error_type: Option<String>,
}

impl Attributes {
    fn set(&mut self, key: &str, value: Option<String>) {
        let slot = match key {
            "messaging.destination.name" => &mut self.destination,
            "messaging.consumer.group.name" => &mut self.consumer_group,
            "peer.service" => &mut self.peer_service,
            "server.address" => &mut self.server_address,
            "error.type" => &mut self.error_type,
            _ => return,
        };
        *slot = value;
    }
}

fn fixed<const N: usize>(bytes: &[u8], index: usize, what: &'static str) -> Result<[u8; N], DecodeError> {
    bytes.try_into().map_err(|_| DecodeError::InvalidId {
        index,
        what,
        bytes: N,
        hex: 2 * N,
        got: format!("{} bytes", bytes.len()),
    })
}

fn hex<const N: usize>(s: &str, index: usize, what: &'static str) -> Result<[u8; N], DecodeError> {
    let invalid =
        || DecodeError::InvalidId { index, what, bytes: N, hex: 2 * N, got: s.chars().take(40).collect() };
    if s.len() != 2 * N {
        return Err(invalid());
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte =
            u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(invalid)?, 16).map_err(|_| invalid())?;
    }
    Ok(out)
}

struct Parts {
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    kind: Kind,
    start_ns: u64,
    end_ns: u64,
    error: bool,
    attributes: Attributes,
    links: Vec<(TraceId, SpanId)>,
}

fn record(service: &str, p: Parts) -> SpanRecord {
    let a = p.attributes;
    SpanRecord {
        trace_id: p.trace_id,
        span_id: p.span_id,
        parent_span_id: p.parent.filter(|id| *id != [0; 8]),
        kind: p.kind,
        service: service.to_owned(),
        start_ns: p.start_ns,
        end_ns: p.end_ns,
        error: p.error,
        destination: a.destination,
        consumer_group: a.consumer_group,
        peer: a.peer_service.or(a.server_address),
        error_type: a.error_type,
        links: p.links,
    }
}

fn proto_string(kv: &KeyValue) -> Option<String> {
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

/// `service.name` of a resource, `unknown_service` (the SDKs' default) without one.
fn service_name<'a>(names: impl Iterator<Item = (&'a str, Option<String>)>) -> String {
    names
        .into_iter()
        .find(|(k, _)| *k == "service.name")
        .and_then(|(_, v)| v)
        .unwrap_or_else(|| "unknown_service".into())
}

/// The spans of a request already decoded (OTLP over gRPC).
///
/// # Errors
/// An invalid id: nothing of the request is taken.
pub fn from_proto(request: ExportTraceServiceRequest) -> Result<Vec<SpanRecord>, DecodeError> {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let attrs = rs.resource.map(|r| r.attributes).unwrap_or_default();
        let service = service_name(attrs.iter().map(|kv| (kv.key.as_str(), proto_string(kv))));
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            let index = out.len();
            let mut attributes = Attributes::default();
            span.attributes.iter().for_each(|kv| attributes.set(&kv.key, proto_string(kv)));
            let links = span
                .links
                .iter()
                .map(|l| {
                    Ok((fixed(&l.trace_id, index, "link traceId")?, fixed(&l.span_id, index, "link spanId")?))
                })
                .collect::<Result<_, DecodeError>>()?;
            let parent = if span.parent_span_id.is_empty() {
                None
            } else {
                Some(fixed(&span.parent_span_id, index, "parentSpanId")?)
            };
            let parts = Parts {
                trace_id: fixed(&span.trace_id, index, "traceId")?,
                span_id: fixed(&span.span_id, index, "spanId")?,
                parent,
                kind: kind(i64::from(span.kind)),
                start_ns: span.start_time_unix_nano,
                end_ns: span.end_time_unix_nano,
                error: span.status.is_some_and(|s| s.code == 2),
                attributes,
                links,
            };
            out.push(record(&service, parts));
        }
    }
    Ok(out)
}

// OTLP/JSON, as the specification encodes it. Every field is optional but the ids.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonRequest {
    #[serde(default)]
    resource_spans: Vec<JsonResourceSpans>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonResourceSpans {
    #[serde(default)]
    resource: Option<JsonResource>,
    #[serde(default)]
    scope_spans: Vec<JsonScopeSpans>,
}

#[derive(Deserialize)]
struct JsonResource {
    #[serde(default)]
    attributes: Vec<JsonKeyValue>,
}

#[derive(Deserialize)]
struct JsonScopeSpans {
    #[serde(default)]
    spans: Vec<JsonSpan>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan {
    trace_id: String,
    span_id: String,
    #[serde(default)]
    parent_span_id: String,
    #[serde(default)]
    kind: JsonInt,
    #[serde(default)]
    start_time_unix_nano: JsonInt,
    #[serde(default)]
    end_time_unix_nano: JsonInt,
    #[serde(default)]
    attributes: Vec<JsonKeyValue>,
    #[serde(default)]
    links: Vec<JsonLink>,
    #[serde(default)]
    status: Option<JsonStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonLink {
    trace_id: String,
    span_id: String,
}

#[derive(Deserialize)]
struct JsonStatus {
    #[serde(default)]
    code: JsonInt,
}

#[derive(Deserialize)]
struct JsonKeyValue {
    key: String,
    #[serde(default)]
    value: Option<JsonAnyValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonAnyValue {
    #[serde(default)]
    string_value: Option<String>,
}

/// An integer as OTLP/JSON may write it: a number, or a decimal string (64-bit values).
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum JsonInt {
    #[default]
    Absent,
    Number(u64),
    Text(String),
}

impl JsonInt {
    fn value(&self, index: usize, what: &str) -> Result<u64, DecodeError> {
        match self {
            JsonInt::Absent => Ok(0),
            JsonInt::Number(n) => Ok(*n),
            JsonInt::Text(s) => s
                .parse()
                .map_err(|_| DecodeError::Json(format!("span {index}: {what} {s:?} is not an integer"))),
        }
    }
}

fn from_json(request: JsonRequest) -> Result<Vec<SpanRecord>, DecodeError> {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let attrs = rs.resource.map(|r| r.attributes).unwrap_or_default();
        let service = service_name(
            attrs.iter().map(|kv| (kv.key.as_str(), kv.value.as_ref().and_then(|v| v.string_value.clone()))),
        );
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            let index = out.len();
            let mut attributes = Attributes::default();
            for kv in &span.attributes {
                attributes.set(&kv.key, kv.value.as_ref().and_then(|v| v.string_value.clone()));
            }
            let links = span
                .links
                .iter()
                .map(|l| {
                    Ok((hex(&l.trace_id, index, "link traceId")?, hex(&l.span_id, index, "link spanId")?))
                })
                .collect::<Result<_, DecodeError>>()?;
            let parent = if span.parent_span_id.is_empty() {
                None
            } else {
                Some(hex(&span.parent_span_id, index, "parentSpanId")?)
            };
            let parts = Parts {
                trace_id: hex(&span.trace_id, index, "traceId")?,
                span_id: hex(&span.span_id, index, "spanId")?,
                parent,
                kind: kind(span.kind.value(index, "kind")? as i64),
                start_ns: span.start_time_unix_nano.value(index, "startTimeUnixNano")?,
                end_ns: span.end_time_unix_nano.value(index, "endTimeUnixNano")?,
                error: span.status.as_ref().map(|s| s.code.value(index, "status.code")).transpose()?
                    == Some(2),
                attributes,
                links,
            };
            out.push(record(&service, parts));
        }
    }
    Ok(out)
}

/// `google.rpc.Status`, the body OTLP/HTTP gives every refused request.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The body of a refused request, as OTLP/HTTP asks: a `google.rpc.Status` with the gRPC
/// code (3, invalid argument, for a bad request) and the message, in the request's encoding.
pub fn error_body(encoding: Encoding, code: i32, message: &str) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => RpcStatus { code, message: message.to_owned() }.encode_to_vec(),
        Encoding::Json => serde_json::json!({"code": code, "message": message}).to_string().into_bytes(),
    }
}
