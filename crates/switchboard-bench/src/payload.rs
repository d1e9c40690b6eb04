//! Message bodies that carry their own send time, so a consumer can tell end-to-end latency.
//!
//! The first 8 bytes are nanoseconds since this process's origin (publishers and consumers
//! run in the bench process, so one monotonic clock serves both); the rest is filler.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// A body of `size` bytes (at least 8) stamped with `sent`.
pub(crate) fn stamped(sent: Instant, size: usize) -> Bytes {
    let nanos = sent.saturating_duration_since(origin()).as_nanos() as u64;
    let mut b = BytesMut::with_capacity(size.max(8));
    b.put_u64_le(nanos);
    b.resize(size.max(8), b'x');
    b.freeze()
}

/// The send time stamped in `payload`, if it has one.
pub(crate) fn sent_at(payload: &[u8]) -> Option<Instant> {
    let nanos = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    Some(origin() + Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_to_the_nanosecond() {
        let sent = origin() + Duration::from_nanos(123_456_789);
        let p = stamped(sent, 16);
        assert_eq!(p.len(), 16);
        assert_eq!(sent_at(&p), Some(sent));
        assert_eq!(stamped(sent, 1024).len(), 1024);
        assert_eq!(sent_at(b"short"), None);
    }
}
