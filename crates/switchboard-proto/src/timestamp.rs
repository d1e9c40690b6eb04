//! The broker's [`Timestamp`] (milliseconds since the epoch) as a protobuf
//! `google.protobuf.Timestamp` and back.

use switchboard_core::Timestamp;

/// Milliseconds since the epoch as a protobuf timestamp.
pub fn to_proto(t: Timestamp) -> prost_types::Timestamp {
    let ms = t.as_millis();
    prost_types::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        // Below 10^9, so it fits.
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

/// A protobuf timestamp as milliseconds since the epoch (sub-millisecond parts dropped);
/// `None` before 1970, which a [`Timestamp`] cannot hold: the server refuses such a value,
/// a client reads it as the epoch.
pub fn from_proto(t: prost_types::Timestamp) -> Option<Timestamp> {
    // Normalized, `nanos` is in 0..10^9 whatever the sign of `seconds`.
    let t = t.normalized();
    let seconds = u64::try_from(t.seconds).ok()?;
    let millis = u64::try_from(t.nanos).unwrap_or(0) / 1_000_000;
    Some(Timestamp(seconds.saturating_mul(1000).saturating_add(millis)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_survive_and_finer_parts_are_dropped() {
        let t = from_proto(prost_types::Timestamp { seconds: 2, nanos: 7_900_000 });
        assert_eq!(t, Some(Timestamp(2007)));
        assert_eq!(to_proto(Timestamp(2007)), prost_types::Timestamp { seconds: 2, nanos: 7_000_000 });
        assert_eq!(from_proto(to_proto(Timestamp(u64::MAX / 2))), Some(Timestamp(u64::MAX / 2)));
        assert_eq!(from_proto(prost_types::Timestamp { seconds: -1, nanos: 0 }), None);
        assert_eq!(from_proto(prost_types::Timestamp { seconds: 0, nanos: -1 }), None);
    }
}
