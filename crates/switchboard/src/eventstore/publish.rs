//! An event as the CloudEvent other services see on the bus.

use switchboard_core::{EXT_TRACEPARENT, Message, Timestamp, TraceParent, is_extension_name};

use super::Metadata;
use super::database::EventRow;
use crate::layers::{EXT_CAUSATION_ID, EXT_CORRELATION_ID};

/// The extension carrying the event's version in its stream.
pub const EXT_STREAM_VERSION: &str = "streamversion";
/// The extension carrying the event's schema version.
pub const EXT_SCHEMA_VERSION: &str = "schemaversion";

/// The message for `row`: the event's id (so a re-publish is recognised), type, data as
/// JSON, the stream as `subject` and partition key, the append time as `time`.
pub(crate) fn to_message(source: &str, row: &EventRow, metadata: Metadata) -> Message {
    let mut message = Message::new(source, row.ty.as_str(), row.data.clone())
        .with_id(row.id.as_str())
        .with_subject(row.stream.as_str())
        .with_key(row.stream.as_str())
        .with_content_type("application/json")
        .with_extension(EXT_STREAM_VERSION, row.version.to_string())
        .with_extension(EXT_SCHEMA_VERSION, row.schema_version.to_string());
    message.time = Some(Timestamp(u64::try_from(row.recorded_at).unwrap_or(0)).to_rfc3339());
    if let Some(id) = metadata.correlation_id {
        message = message.with_extension(EXT_CORRELATION_ID, id);
    }
    if let Some(id) = metadata.causation_id {
        message = message.with_extension(EXT_CAUSATION_ID, id);
    }
    // A malformed trace context would make the message invalid: it is dropped, not the event.
    if let Some(tp) = metadata.traceparent.filter(|tp| TraceParent::parse(tp).is_some()) {
        message = message.with_extension(EXT_TRACEPARENT, tp);
    }
    for (name, value) in metadata.extra {
        if is_extension_name(&name) && !message.extensions.contains_key(&name) {
            message = message.with_extension(name, value);
        }
    }
    message
}
