//! What travels in request headers: the W3C trace context (`traceparent`, `tracestate`) and
//! the caller's deadline, as a relative timeout so clock skew between hosts does not matter.
//!
//! - gRPC: `grpc-timeout` in the gRPC wire format (`100m`, `2500u`, …), which tonic servers
//!   enforce on their own.
//! - HTTP: [`REQUEST_TIMEOUT_HEADER`] (`x-request-timeout-ms`), whole milliseconds, rounded
//!   down so the server stops no later than the caller.
//!
//! [`IncomingContextLayer`](crate::IncomingContextLayer) accepts either on the way in, so a
//! server that hosts gRPC and HTTP routes reads both the same way.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use switchboard_core::TraceParent;

use crate::deadline;

/// The W3C trace-context header naming the caller's span.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The W3C vendor trace-state header.
pub const TRACESTATE_HEADER: &str = "tracestate";
/// The gRPC deadline header.
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";
/// The deadline header of HTTP calls: the time the caller still waits, in whole milliseconds.
pub const REQUEST_TIMEOUT_HEADER: &str = "x-request-timeout-ms";

/// Formats a timeout in the gRPC wire format: at most 8 digits and a unit, the finest unit
/// that fits.
pub fn format_grpc_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let candidates = [
        (timeout.as_nanos(), 'n'),
        (timeout.as_micros(), 'u'),
        (timeout.as_millis(), 'm'),
        (u128::from(timeout.as_secs()), 'S'),
        (u128::from(timeout.as_secs() / 60), 'M'),
    ];
    candidates.iter().find(|(value, _)| *value <= MAX).map_or_else(
        || format!("{}H", (timeout.as_secs() / 3600).min(99_999_999)),
        |(v, u)| format!("{v}{u}"),
    )
}

/// Parses a `grpc-timeout` value; `None` if malformed.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let digits = value.get(..value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match value.as_bytes().last()? {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The deadline an incoming request carries: the smaller of `grpc-timeout` and
/// [`REQUEST_TIMEOUT_HEADER`]; malformed values are ignored.
pub fn incoming_timeout(headers: &HeaderMap) -> Option<Duration> {
    let grpc = header_str(headers, GRPC_TIMEOUT_HEADER).and_then(parse_grpc_timeout);
    let http = header_str(headers, REQUEST_TIMEOUT_HEADER)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis);
    match (grpc, http) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The remote parent an incoming request carries (an empty context without a valid one).
pub fn extract_context(headers: &HeaderMap) -> Context {
    let parent = header_str(headers, TRACEPARENT_HEADER)
        .and_then(|tp| parse_traceparent(tp, header_str(headers, TRACESTATE_HEADER)));
    match parent {
        Some(sc) => Context::new().with_remote_span_context(sc),
        None => Context::new(),
    }
}

/// Writes the current OpenTelemetry span as `traceparent`/`tracestate` (replacing any), if it
/// is valid.
pub fn inject_trace_context(headers: &mut HeaderMap) {
    let cx = Context::current();
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&format_traceparent(sc)) {
        headers.insert(TRACEPARENT_HEADER, v);
    }
    let state = sc.trace_state().header();
    if let Ok(v) = HeaderValue::from_str(&state)
        && !state.is_empty()
    {
        headers.insert(TRACESTATE_HEADER, v);
    }
}

/// Writes the ambient deadline's remaining time as `grpc-timeout`, keeping a shorter one
/// the request already has.
pub fn inject_grpc_timeout(headers: &mut HeaderMap) {
    let Some(remaining) = deadline::remaining() else { return };
    let existing = header_str(headers, GRPC_TIMEOUT_HEADER).and_then(parse_grpc_timeout);
    if existing.is_some_and(|e| e <= remaining) {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&format_grpc_timeout(remaining)) {
        headers.insert(GRPC_TIMEOUT_HEADER, v);
    }
}

/// Writes the ambient deadline's remaining time as [`REQUEST_TIMEOUT_HEADER`].
pub fn inject_request_timeout(headers: &mut HeaderMap) {
    if let Some(remaining) = deadline::remaining() {
        headers.insert(REQUEST_TIMEOUT_HEADER, HeaderValue::from(remaining.as_millis() as u64));
    }
}

/// The span context of a `traceparent`/`tracestate` pair, as a remote parent.
fn parse_traceparent(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    TraceParent::parse(traceparent).map(|tp| tp.to_span_context(tracestate))
}

fn format_traceparent(sc: &SpanContext) -> String {
    TraceParent::from_span_context(sc).to_string()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_round_trip_in_the_finest_unit_that_fits() {
        assert_eq!(format_grpc_timeout(Duration::from_millis(50)), "50000000n");
        assert_eq!(format_grpc_timeout(Duration::from_secs(30)), "30000000u");
        assert_eq!(format_grpc_timeout(Duration::from_secs(3600)), "3600000m");
        for d in [Duration::from_millis(50), Duration::from_secs(30), Duration::from_secs(3600)] {
            assert_eq!(parse_grpc_timeout(&format_grpc_timeout(d)), Some(d));
        }
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        for bad in ["", "m", "123456789m", "12x", "-1m", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn incoming_timeout_takes_the_smaller_header() {
        let mut h = HeaderMap::new();
        assert_eq!(incoming_timeout(&h), None);
        h.insert(REQUEST_TIMEOUT_HEADER, HeaderValue::from_static("250"));
        assert_eq!(incoming_timeout(&h), Some(Duration::from_millis(250)));
        h.insert(GRPC_TIMEOUT_HEADER, HeaderValue::from_static("100m"));
        assert_eq!(incoming_timeout(&h), Some(Duration::from_millis(100)));
    }

    #[test]
    fn trace_context_round_trips_through_headers() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT_HEADER, HeaderValue::from_static(tp));
        h.insert(TRACESTATE_HEADER, HeaderValue::from_static("vendor=x"));
        let cx = extract_context(&h);
        let mut out = HeaderMap::new();
        {
            let _attached = cx.attach();
            inject_trace_context(&mut out);
        }
        assert_eq!(out[TRACEPARENT_HEADER], tp);
        assert_eq!(out[TRACESTATE_HEADER], "vendor=x");
    }
}
