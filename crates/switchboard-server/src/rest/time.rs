//! RFC 3339 timestamps at the REST edge: the broker counts milliseconds since the epoch,
//! JSON speaks RFC 3339.

use switchboard_core::{Timestamp, is_rfc3339};

/// Formats as `2026-11-26T10:00:00.123Z` (UTC, milliseconds).
pub(super) fn format(t: Timestamp) -> String {
    let ms = t.as_millis();
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// Parses an RFC 3339 date-time or a number of milliseconds since the epoch.
pub(super) fn parse(s: &str) -> Result<Timestamp, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(Timestamp).map_err(|_| format!("{s:?} is too large a number of milliseconds"));
    }
    parse_rfc3339(s).ok_or_else(|| {
        format!("{s:?} is neither an RFC 3339 time such as 2026-11-26T10:00:00Z nor milliseconds since 1970")
    })
}

fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    if !is_rfc3339(s) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|d| d.parse::<i64>().ok());
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?.min(59));
    let mut i = 19;
    let mut millis = 0;
    if s.as_bytes()[i] == b'.' {
        let digits = s[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
        let frac = &s[i + 1..i + 1 + digits];
        let padded = format!("{:0<3}", &frac[..digits.min(3)]);
        millis = padded.parse::<i64>().ok()?;
        i += 1 + digits;
    }
    let offset_min = match &s[i..] {
        "Z" | "z" => 0,
        tz => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (tz.get(1..3)?.parse::<i64>().ok()? * 60 + tz.get(4..6)?.parse::<i64>().ok()?)
        }
    };
    let days = days_from_civil(y, mo, d);
    let ms = ((days * 24 + h) * 60 + mi - offset_min) * 60_000 + sec * 1000 + millis;
    u64::try_from(ms).ok().map(Timestamp)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_offsets() {
        for ms in [0, 951_782_400_000, 1_767_225_600_123, 4_102_444_799_999] {
            assert_eq!(parse(&format(Timestamp(ms))).unwrap(), Timestamp(ms), "{ms}");
        }
        assert_eq!(format(Timestamp(1_767_225_600_000)), "2026-01-01T00:00:00.000Z");
        assert_eq!(parse("2026-01-01T01:30:00+01:30").unwrap(), parse("2026-01-01T00:00:00Z").unwrap());
        assert_eq!(parse("2026-01-01T00:00:00.5Z").unwrap().as_millis() % 1000, 500);
        assert_eq!(parse("1767225600000").unwrap(), Timestamp(1_767_225_600_000));
        assert!(parse("yesterday").is_err() && parse("1969-12-31T23:59:59Z").is_err());
    }
}
