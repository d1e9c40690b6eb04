//! RFC 3339 date-times: the broker counts milliseconds since the epoch, people and wire
//! formats (CloudEvents `time`, JSON, GraphQL) write `2026-11-26T10:00:00.123Z`.

use crate::Timestamp;
use crate::message::is_rfc3339;

impl Timestamp {
    /// This instant as RFC 3339 in UTC with milliseconds, e.g. `2026-11-26T10:00:00.123Z`.
    pub fn to_rfc3339(self) -> String {
        format(self)
    }

    /// Parses an RFC 3339 date-time (any offset; digits beyond milliseconds are dropped).
    /// `None` if it is not one, names a day its month does not have, or is before 1970.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        parse(s)
    }
}

const MS_PER_DAY: i64 = 86_400_000;

/// `ts` as RFC 3339 in UTC with milliseconds, e.g. `2026-11-26T10:00:00.123Z`.
pub(crate) fn format(ts: Timestamp) -> String {
    let ms = i64::try_from(ts.0).unwrap_or(i64::MAX);
    let (days, ms_of_day) = (ms.div_euclid(MS_PER_DAY), ms.rem_euclid(MS_PER_DAY));
    let (y, m, d) = civil_from_days(days);
    let (secs, millis) = (ms_of_day / 1000, ms_of_day % 1000);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Parses an RFC 3339 date-time (any offset; fractions beyond milliseconds are truncated).
/// `None` if it is not one, names a day the month does not have, or is before 1970.
pub(crate) fn parse(s: &str) -> Option<Timestamp> {
    if !is_rfc3339(s) {
        return None;
    }
    // The shape is checked: every slice below is ASCII digits at a known place.
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|d| d.parse::<i64>().ok());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if d > days_in_month(y, m) {
        return None;
    }
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &s[19..];
    let (frac, zone) = match rest.strip_prefix('.') {
        Some(f) => {
            let digits = f.bytes().take_while(u8::is_ascii_digit).count();
            (&f[..digits], &f[digits..])
        }
        None => ("", rest),
    };
    let millis =
        frac.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0, |acc, b| acc * 10 + i64::from(b - b'0'));
    let offset_minutes = match zone.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign, ..] => {
            let minutes = num(s.len() - 5..s.len() - 3)? * 60 + num(s.len() - 2..s.len())?;
            if *sign == b'-' { -minutes } else { minutes }
        }
        [] => return None,
    };
    let ms =
        days_from_civil(y, m, d) * MS_PER_DAY + ((hh * 60 + mm - offset_minutes) * 60 + ss) * 1000 + millis;
    u64::try_from(ms).ok().map(Timestamp)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
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
    fn formats_utc_with_millis() {
        assert_eq!(format(Timestamp(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(format(Timestamp(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(format(Timestamp(1_795_687_200_123)), "2026-11-26T10:00:00.123Z");
    }

    #[test]
    fn parses_offsets_and_fractions() {
        assert_eq!(parse("2026-11-26T10:00:00.123Z"), Some(Timestamp(1_795_687_200_123)));
        assert_eq!(parse("2026-11-26T11:30:00.1239+01:30"), Some(Timestamp(1_795_687_200_123)));
        assert_eq!(parse("2026-11-26T08:00:00-02:00"), Some(Timestamp(1_795_687_200_000)));
        assert_eq!(parse("1970-01-01t00:00:00z"), Some(Timestamp(0)));
    }

    #[test]
    fn refuses_what_is_not_a_time_after_the_epoch() {
        for bad in ["2026-02-30T00:00:00Z", "2025-02-29T00:00:00Z", "1969-12-31T23:59:59Z", "yesterday", ""] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert!(parse("2024-02-29T00:00:00Z").is_some());
    }

    #[test]
    fn round_trips() {
        for ms in [0, 1, 86_399_999, 86_400_000, 1_000_000_000_000, 4_102_444_800_000, 253_402_300_799_999] {
            assert_eq!(parse(&format(Timestamp(ms))), Some(Timestamp(ms)), "{ms}");
        }
    }
}
