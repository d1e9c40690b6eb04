//! The W3C Trace Context `traceparent` value, parsed and formatted without a tracing library,
//! so the SDK (on messages) and `switchboard-sync` (on request headers) read and write it
//! one way, each converting to its tracer's span context at its edge.

use std::fmt;

/// A W3C `traceparent`: `<version>-<trace id>-<parent span id>-<flags>`, all lowercase hex,
/// e.g. `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
///
/// ```
/// use switchboard_core::TraceParent;
///
/// let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
/// assert!(tp.is_sampled());
/// assert_eq!(tp.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// assert_eq!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace's id (never all zeros).
    pub trace_id: [u8; 16],
    /// The caller's span id (never all zeros).
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    /// The "sampled" bit of [`TraceParent::flags`].
    pub const SAMPLED: u8 = 0x01;

    /// Parses a `traceparent` header or extension value (surrounding whitespace allowed).
    ///
    /// `None` for anything the specification says to ignore, so the receiver starts a new
    /// trace: wrong field lengths, non-hex or uppercase digits, version `ff`, an all-zero
    /// trace or span id, or version `00` with more than four fields. A later version may
    /// append fields, which are skipped.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut fields = value.trim().split('-');
        let version: [u8; 1] = hex_field(fields.next()?)?;
        let trace_id: [u8; 16] = hex_field(fields.next()?)?;
        let span_id: [u8; 8] = hex_field(fields.next()?)?;
        let [flags] = hex_field::<1>(fields.next()?)?;
        if version == [0xff] || (version == [0x00] && fields.next().is_some()) {
            return None;
        }
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent { trace_id, span_id, flags })
    }

    /// Whether the caller sampled (records) this trace.
    pub fn is_sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }
}

impl fmt::Display for TraceParent {
    /// Version `00`, the only version this crate writes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        self.trace_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str("-")?;
        self.span_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, "-{:02x}", self.flags)
    }
}

#[cfg(feature = "opentelemetry")]
impl TraceParent {
    /// The span context of this `traceparent` and an optional `tracestate`, as a remote
    /// parent. Only the sampled bit of the flags means something to the OpenTelemetry API.
    pub fn to_span_context(&self, tracestate: Option<&str>) -> opentelemetry::trace::SpanContext {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        let state = tracestate.and_then(|s| s.parse::<TraceState>().ok()).unwrap_or_default();
        let flags = TraceFlags::new(self.flags & Self::SAMPLED);
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            flags,
            true,
            state,
        )
    }

    /// The `traceparent` of a span context.
    pub fn from_span_context(sc: &opentelemetry::trace::SpanContext) -> TraceParent {
        TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        }
    }
}

/// Exactly `2 × N` lowercase hex digits as `N` bytes. Digits are checked here rather than by
/// `u8::from_str_radix`, which would also take a sign (`+f`) and uppercase.
fn hex_field<const N: usize>(field: &str) -> Option<[u8; N]> {
    let digits = field.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_value_round_trips() {
        let tp = TraceParent::parse(VALID).expect("valid");
        assert_eq!(tp.trace_id[..4], [0x4b, 0xf9, 0x2f, 0x35]);
        assert_eq!(tp.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(tp.flags, 0x01);
        assert!(tp.is_sampled());
        assert_eq!(tp.to_string(), VALID);
        assert_eq!(TraceParent::parse(&format!("  {VALID}\t")), Some(tp), "whitespace is trimmed");
        let unsampled = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(!unsampled.expect("valid").is_sampled());
    }

    #[test]
    fn a_later_version_may_carry_more_fields_and_is_written_as_version_00() {
        let tp = TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future")
            .expect("a later version is read by its first four fields");
        assert_eq!(tp.to_string(), VALID);
    }

    #[test]
    fn malformed_values_are_rejected() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-001",
            // Signs that `from_str_radix` would accept.
            "+0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-+0f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }
}
