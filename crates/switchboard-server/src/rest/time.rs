//! RFC 3339 timestamps at the REST edge: the broker counts milliseconds since the epoch,
//! JSON speaks RFC 3339.

use switchboard_core::Timestamp;

/// Formats as `2026-11-26T10:00:00.123Z` (UTC, milliseconds).
pub(super) fn format(t: Timestamp) -> String {
    t.to_rfc3339()
}

/// Parses an RFC 3339 date-time or a number of milliseconds since the epoch.
pub(super) fn parse(s: &str) -> Result<Timestamp, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(Timestamp).map_err(|_| format!("{s:?} is too large a number of milliseconds"));
    }
    Timestamp::parse_rfc3339(s).ok_or_else(|| {
        format!("{s:?} is neither an RFC 3339 time such as 2026-11-26T10:00:00Z nor milliseconds since 1970")
    })
}
