//! W3C trace context on messages: `traceparent`/`tracestate` extensions written on publish
//! and read on consume, so a trace follows a request across synchronous and asynchronous
//! hops. Works with any OpenTelemetry SDK the service installs (through the `opentelemetry`
//! API's global tracer provider); without one, spans are no-ops but ids still propagate.

use opentelemetry::trace::{SpanContext, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, global};
use switchboard_core::{EXT_TRACEPARENT, EXT_TRACESTATE, Message, TopicName, TraceParent};

/// The instrumentation scope of every span the SDK starts.
pub use switchboard_core::TRACER_NAME;

/// Parses a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, see [`TraceParent::parse`]),
/// with an optional `tracestate`. Invalid or all-zero ids give `None` (a new trace is
/// started instead).
pub fn parse_traceparent(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    TraceParent::parse(traceparent).map(|tp| tp.to_span_context(tracestate))
}

/// Formats a span context as a `traceparent` value.
pub fn format_traceparent(sc: &SpanContext) -> String {
    TraceParent::from_span_context(sc).to_string()
}

/// The remote parent a message carries, as a context to start the consumer span in.
pub fn extract(message: &Message) -> Context {
    let tp = message.extensions.get(EXT_TRACEPARENT);
    let ts = message.extensions.get(EXT_TRACESTATE).map(String::as_str);
    match tp.and_then(|tp| parse_traceparent(tp, ts)) {
        Some(sc) => Context::new().with_remote_span_context(sc),
        None => Context::new(),
    }
}

/// Writes `cx`'s span into the message's `traceparent` (and `tracestate`), unless the
/// message already carries one (a handler forwarding a message keeps its trace).
pub fn inject(cx: &Context, mut message: Message) -> Message {
    if message.extensions.contains_key(EXT_TRACEPARENT) {
        return message;
    }
    let span = cx.span();
    let sc = span.span_context();
    if sc.is_valid() {
        message.extensions.insert(EXT_TRACEPARENT.into(), format_traceparent(sc));
        let state = sc.trace_state().header();
        if !state.is_empty() {
            message.extensions.insert(EXT_TRACESTATE.into(), state);
        }
    }
    message
}

/// Starts a producer span `send <topic>` under the current context and injects it into the
/// messages, so a consumer's span links to the publish.
pub(crate) fn start_send(
    backend: &'static str,
    topic: &TopicName,
    messages: Vec<Message>,
) -> (Context, Vec<Message>) {
    let tracer = global::tracer(TRACER_NAME);
    let span = tracer
        .span_builder(format!("send {topic}"))
        .with_kind(SpanKind::Producer)
        .with_attributes([
            KeyValue::new("messaging.system", backend),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.operation.name", "send"),
            KeyValue::new("messaging.destination.name", topic.to_string()),
            KeyValue::new("messaging.batch.message_count", messages.len() as i64),
        ])
        .start(&tracer);
    let cx = Context::current_with_span(span);
    let messages = messages.into_iter().map(|m| inject(&cx, m)).collect();
    (cx, messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_malformed_values() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(tp, Some("vendor=x")).expect("valid");
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(format_traceparent(&sc), tp);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(parse_traceparent(bad, None).is_none(), "{bad}");
        }
    }

    #[test]
    fn inject_keeps_an_existing_traceparent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let m = Message::new("/s", "t", "x").with_extension(EXT_TRACEPARENT, tp);
        let other = Context::new().with_remote_span_context(
            parse_traceparent("00-11111111111111111111111111111111-2222222222222222-01", None)
                .expect("valid"),
        );
        assert_eq!(inject(&other, m).extensions[EXT_TRACEPARENT], tp);
    }
}
