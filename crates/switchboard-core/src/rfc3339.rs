//! RFC 3339 date-times: the broker counts milliseconds since the epoch, people and wire
//! formats (CloudEvents `time`, JSON, GraphQL) write `2026-11-26T10:00:00.123Z`.
//!
//! One reader, [`read`], decides what a date-time is; [`is_valid`] (behind
//! `switchboard_core::is_rfc3339`, which checks a message's `time`) and [`parse`] (behind
//! [`Timestamp::parse_rfc3339`]) both use it, so a `time` that validation accepts always
//! parses, except before 1970, which a [`Timestamp`] cannot hold.

use crate::Timestamp;

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

/// The fields of an RFC 3339 date-time, each in its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DateTime {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    /// The fraction's first three digits; the rest is dropped.
    millis: i64,
    /// East of UTC.
    offset_minutes: i64,
}

/// Reads `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` (RFC 3339 §5.6; `T` and `Z` in either case,
/// or a space for `T` as §5.6's note allows), with every field in its range: the month
/// 01–12, the day within its month (leap years by the Gregorian rule), the hour 00–23, the
/// minute 00–59, the second 00–59, and offsets up to ±23:59.
///
/// Leap seconds (`23:59:60`) are refused. A [`Timestamp`] counts milliseconds on the POSIX
/// timescale, which has no leap seconds, so one has no instant to parse to, and each library
/// that accepts one moves it somewhere else (`time` to `:59.999999999`, others to the next
/// second): accepting it here would let validation pass a `time` that readers disagree on,
/// which is the disagreement this reader exists to end. Clocks that CloudEvents producers use
/// smear or repeat the second instead of writing `:60`, and no leap second is scheduled.
pub(crate) fn read(s: &str) -> Option<DateTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| {
        let digits = b.get(r)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let is = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(is(4, b"-") && is(7, b"-") && is(10, b"Tt ") && is(13, b":") && is(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // `num(17..19)` read two bytes there, so the string is at least 19 bytes long.
    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        millis = fraction[..digits].iter().chain(b"000").take(3).fold(0, |n, d| n * 10 + i64::from(d - b'0'));
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| {
                (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from((a - b'0') * 10 + (b - b'0')))
            };
            let (h, m) = (two(*h1, *h2)?, two(*m1, *m2)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'-' { -(h * 60 + m) } else { h * 60 + m }
        }
        _ => return None,
    };
    Some(DateTime { year, month, day, hour, minute, second, millis, offset_minutes })
}

/// Whether `s` is an RFC 3339 date-time (see [`read`]), at any year 0000–9999.
pub(crate) fn is_valid(s: &str) -> bool {
    read(s).is_some()
}

/// Parses an RFC 3339 date-time (see [`read`]; fractions beyond milliseconds are truncated).
/// `None` if it is not one, or is before 1970.
pub(crate) fn parse(s: &str) -> Option<Timestamp> {
    let DateTime { year, month, day, hour, minute, second, millis, offset_minutes } = read(s)?;
    let ms = days_from_civil(year, month, day) * MS_PER_DAY
        + ((hour * 60 + minute - offset_minutes) * 60 + second) * 1000
        + millis;
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
    fn validation_agrees_with_parsing() {
        for bad in [
            "2026-02-30T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-12-31T23:59:60Z",
            "2026-11-26T24:00:00Z",
            "2026-11-26T10:60:00Z",
            "2026-11-26T10:00:00+24:00",
            "2026-11-26T10:00:00+01:60",
            "2026-11-26T10:00:00+0100",
            "2026-11-26T10:00:00.Z",
            "2026-11-26T10:00:00",
            "2026-11-26x10:00:00Z",
            "+026-11-26T10:00:00Z",
            "2026-11-26T10:00:00Z ",
        ] {
            assert!(!is_valid(bad), "{bad}");
            assert_eq!(parse(bad), None, "{bad}");
        }
        for ok in ["2000-02-29T00:00:00Z", "2024-02-29 23:59:59.999999-23:59", "2026-11-26t10:00:00+00:00"] {
            assert!(is_valid(ok) && parse(ok).is_some(), "{ok}");
        }
        // Valid, but before what a `Timestamp` holds.
        assert!(is_valid("1969-12-31T23:59:59Z") && parse("1969-12-31T23:59:59Z").is_none());
        assert!(is_valid("0000-01-01T00:00:00Z"));
    }

    #[test]
    fn round_trips() {
        for ms in [0, 1, 86_399_999, 86_400_000, 1_000_000_000_000, 4_102_444_800_000, 253_402_300_799_999] {
            assert_eq!(parse(&format(Timestamp(ms))), Some(Timestamp(ms)), "{ms}");
        }
    }
}

/// Differential tests against the `time` crate's RFC 3339 parser over generated strings.
#[cfg(test)]
mod differential {
    use proptest::prelude::*;
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    use super::*;

    /// Date-times built from fields around and beyond their ranges, in forms that are and
    /// are not RFC 3339.
    fn built() -> impl Strategy<Value = String> {
        let year =
            prop_oneof![0u32..=9999, Just(1900u32), Just(2000), Just(2024), Just(2100), 1968u32..=1972];
        let sep = prop_oneof![Just("T"), Just("t"), Just(" "), Just("x"), Just("")];
        let frac = prop_oneof![Just(String::new()), Just(".".to_owned()), "\\.[0-9]{1,12}"];
        let zone = prop_oneof![
            Just("Z".to_owned()),
            Just("z".to_owned()),
            Just(String::new()),
            Just("+0100".to_owned()),
            (prop::sample::select(vec!['+', '-']), 0u32..=25, 0u32..=61)
                .prop_map(|(s, h, m)| format!("{s}{h:02}:{m:02}")),
        ];
        (year, 0u32..=13, 0u32..=32, 0u32..=24, 0u32..=60, 0u32..=61, sep, frac, zone).prop_map(
            |(y, mo, d, h, mi, s, sep, frac, zone)| {
                format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{zone}")
            },
        )
    }

    /// [`built`] strings with one byte replaced, removed or inserted, and free-form ones.
    fn candidate() -> impl Strategy<Value = String> {
        let mutated = (
            built(),
            any::<prop::sample::Index>(),
            prop::sample::select(b"0123456789-:.+TZtz x".to_vec()),
            0..3u8,
        )
            .prop_map(|(s, at, byte, how)| {
                let mut b = s.into_bytes();
                let i = at.index(b.len() + 1);
                match how {
                    0 if i < b.len() => b[i] = byte,
                    1 if i < b.len() => {
                        b.remove(i);
                    }
                    _ => b.insert(i, byte),
                }
                String::from_utf8(b).unwrap_or_default()
            });
        prop_oneof![4 => built(), 4 => mutated, 1 => "[0-9TZtz:. +-]{0,32}"]
    }

    /// Where `time` accepts and this module refuses, by decision: `time` takes any byte as
    /// the date-time separator (§5.6 allows `T` and, by its note, a space), and accepts a
    /// leap second at the end of a month (see [`read`]).
    fn refused_by_decision(s: &str) -> bool {
        let b = s.as_bytes();
        !matches!(b.get(10), Some(b'T' | b't' | b' ')) || s.get(17..19) == Some("60")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn agrees_with_the_time_crate(s in candidate()) {
            let ours = read(&s);
            prop_assert_eq!(is_valid(&s), ours.is_some());
            match (ours, OffsetDateTime::parse(&s, &Rfc3339)) {
                (Some(_), Ok(theirs)) => {
                    // The same instant, to the millisecond, where a `Timestamp` can hold it.
                    let ms = theirs.unix_timestamp_nanos().div_euclid(1_000_000);
                    let expected = u64::try_from(ms).ok().map(Timestamp);
                    prop_assert_eq!(parse(&s), expected, "{}", s);
                }
                (None, Err(_)) => prop_assert_eq!(parse(&s), None),
                (Some(_), Err(e)) => prop_assert!(false, "{s:?}: accepted here, refused by time ({e})"),
                (None, Ok(_)) => prop_assert!(refused_by_decision(&s), "{s:?}: refused here, accepted by time"),
            }
        }
    }

    #[test]
    fn the_decided_differences_are_real() {
        // Proof that `refused_by_decision` excuses something `time` really accepts.
        assert!(OffsetDateTime::parse("2016-12-31T23:59:60Z", &Rfc3339).is_ok());
        assert!(OffsetDateTime::parse("2026-11-26x10:00:00Z", &Rfc3339).is_ok());
        assert!(!is_valid("2016-12-31T23:59:60Z") && !is_valid("2026-11-26x10:00:00Z"));
    }
}
