//! On-disk record batch format, version 1.
//!
//! A segment file (`<base offset, 20 digits>.log`) is a sequence of batches. Every integer is
//! little-endian. A batch is written with one `write_at` and is atomic: recovery keeps it
//! whole or drops it whole.
//!
//! ```text
//! byte  size  field
//!    0     4  magic            b"SBLG"
//!    4     2  format version   1
//!    6     2  flags            0 (no flags are defined; readers reject others)
//!    8     4  crc              CRC32C (Castagnoli) of bytes 12..total_len
//!   12     4  total_len        length of the whole batch, header included
//!   16     8  base_offset      offset of the first record; record i has base_offset + i
//!   24     4  record_count     >= 1
//!   28     8  timestamp        append time, ms since the Unix epoch (never decreases in a log)
//!   36        records          record_count times: u32 length, then that many payload bytes
//! ```
//!
//! The magic and version sit before the checksum so that a reader can tell "not a batch"
//! from "damaged batch"; both are checked explicitly. A new layout gets a new version number;
//! readers reject versions they do not know.

use bytes::Bytes;

/// `b"SBLG"`: Switchboard log.
pub(crate) const MAGIC: [u8; 4] = *b"SBLG";
/// The only version this code writes and reads.
pub(crate) const VERSION: u16 = 1;
/// Size of the batch header.
pub(crate) const HEADER_LEN: usize = 36;
/// Where the checksummed part starts.
const CRC_START: usize = 12;
/// Per-record overhead (the length prefix).
pub(crate) const RECORD_OVERHEAD: usize = 4;
/// Above this many payload bytes, the payload checksum is computed before taking the append
/// lock and combined with the header's (combining costs a few microseconds, so small
/// batches just checksum everything under the lock, which takes well under a microsecond).
const PRECOMPUTE_CRC_ABOVE: usize = 256 * 1024;

/// Encoded size of a batch holding `records`.
pub(crate) fn encoded_len(records: &[Bytes]) -> usize {
    HEADER_LEN + records.iter().map(|r| RECORD_OVERHEAD + r.len()).sum::<usize>()
}

/// A batch encoded except for its base offset, timestamp and checksum, which are assigned
/// under the append lock by [`EncodedBatch::seal`].
pub(crate) struct EncodedBatch {
    buf: Vec<u8>,
    body_crc: Option<u32>,
}

impl EncodedBatch {
    /// Encodes `records` (non-empty; `encoded_len(records)` must fit in a `u32`).
    pub(crate) fn new(records: &[Bytes], len: usize) -> EncodedBatch {
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&[0; 4]); // crc, set by seal
        buf.extend_from_slice(&(len as u32).to_le_bytes());
        buf.extend_from_slice(&[0; 8]); // base offset, set by seal
        buf.extend_from_slice(&(records.len() as u32).to_le_bytes());
        buf.extend_from_slice(&[0; 8]); // timestamp, set by seal
        for r in records {
            buf.extend_from_slice(&(r.len() as u32).to_le_bytes());
            buf.extend_from_slice(r);
        }
        debug_assert_eq!(buf.len(), len);
        let body = len - HEADER_LEN;
        let body_crc = (body > PRECOMPUTE_CRC_ABOVE).then(|| crc32c::crc32c(&buf[HEADER_LEN..]));
        EncodedBatch { buf, body_crc }
    }

    /// Fills in the base offset and timestamp and computes the checksum.
    pub(crate) fn seal(&mut self, base_offset: u64, timestamp: u64) -> &[u8] {
        self.buf[16..24].copy_from_slice(&base_offset.to_le_bytes());
        self.buf[28..36].copy_from_slice(&timestamp.to_le_bytes());
        let crc = match self.body_crc {
            Some(body_crc) => {
                let head = crc32c::crc32c(&self.buf[CRC_START..HEADER_LEN]);
                crc32c::crc32c_combine(head, body_crc, self.buf.len() - HEADER_LEN)
            }
            None => crc32c::crc32c(&self.buf[CRC_START..]),
        };
        self.buf[8..12].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }

    /// Encoded length.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }
}

/// The fixed header of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub(crate) crc: u32,
    pub(crate) total_len: u32,
    pub(crate) base_offset: u64,
    pub(crate) count: u32,
    pub(crate) timestamp: u64,
}

impl BatchHeader {
    /// One past the last offset of the batch.
    pub(crate) fn end_offset(&self) -> u64 {
        self.base_offset + u64::from(self.count)
    }
}

/// Why bytes are not a valid batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BatchDefect {
    /// Fewer bytes than the header or than `total_len` says.
    Short,
    /// Not a batch at all.
    BadMagic,
    /// A format version this code does not know.
    BadVersion(u16),
    /// Flags this code does not know.
    BadFlags(u16),
    /// `total_len` or `record_count` impossible, or offsets past `u64::MAX`.
    BadLength,
    /// Checksum mismatch.
    BadCrc,
    /// The records do not fill the batch exactly.
    BadRecords,
}

impl std::fmt::Display for BatchDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchDefect::Short => f.write_str("batch is cut short"),
            BatchDefect::BadMagic => f.write_str("no batch magic"),
            BatchDefect::BadVersion(v) => write!(f, "unknown batch format version {v}"),
            BatchDefect::BadFlags(v) => write!(f, "unknown batch flags {v:#06x}"),
            BatchDefect::BadLength => f.write_str("impossible batch length or record count"),
            BatchDefect::BadCrc => f.write_str("batch checksum mismatch"),
            BatchDefect::BadRecords => f.write_str("records do not fill the batch"),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Parses a header from the first [`HEADER_LEN`] bytes of `b` (no checksum check).
pub(crate) fn parse_header(b: &[u8]) -> Result<BatchHeader, BatchDefect> {
    if b.len() < HEADER_LEN {
        return Err(BatchDefect::Short);
    }
    if b[0..4] != MAGIC {
        return Err(BatchDefect::BadMagic);
    }
    let version = u16::from_le_bytes([b[4], b[5]]);
    if version != VERSION {
        return Err(BatchDefect::BadVersion(version));
    }
    let flags = u16::from_le_bytes([b[6], b[7]]);
    if flags != 0 {
        return Err(BatchDefect::BadFlags(flags));
    }
    let h = BatchHeader {
        crc: u32_at(b, 8),
        total_len: u32_at(b, 12),
        base_offset: u64_at(b, 16),
        count: u32_at(b, 24),
        timestamp: u64_at(b, 28),
    };
    let min_len = HEADER_LEN as u64 + u64::from(h.count) * RECORD_OVERHEAD as u64;
    // The offsets must fit in a `u64` (`end_offset` must not overflow).
    let offsets_fit = h.base_offset.checked_add(u64::from(h.count)).is_some();
    if h.count == 0 || u64::from(h.total_len) < min_len || !offsets_fit {
        return Err(BatchDefect::BadLength);
    }
    Ok(h)
}

/// Rewrites the checksum of a whole batch after its bytes changed (fuzzing: a fuzzer cannot
/// guess a CRC, so it reseals what it mutated to reach the checks behind the checksum).
pub(crate) fn reseal(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// Checks the checksum of a whole batch (`b.len() == total_len`).
pub(crate) fn verify(h: &BatchHeader, b: &[u8]) -> Result<(), BatchDefect> {
    if b.len() != h.total_len as usize {
        return Err(BatchDefect::Short);
    }
    if crc32c::crc32c(&b[CRC_START..]) != h.crc {
        return Err(BatchDefect::BadCrc);
    }
    Ok(())
}

/// Iterates over the payloads of a verified batch held in `batch` (a `Bytes` of exactly
/// `total_len` bytes), yielding zero-copy slices.
pub(crate) fn records(h: &BatchHeader, batch: &Bytes) -> Result<RecordIter, BatchDefect> {
    let it = RecordIter { batch: batch.clone(), pos: HEADER_LEN, left: h.count };
    // Validate the framing up front so that callers never see half a batch.
    let mut pos = HEADER_LEN;
    for _ in 0..h.count {
        if pos + RECORD_OVERHEAD > batch.len() {
            return Err(BatchDefect::BadRecords);
        }
        let len = u32_at(batch, pos) as usize;
        pos += RECORD_OVERHEAD;
        if len > batch.len() - pos {
            return Err(BatchDefect::BadRecords);
        }
        pos += len;
    }
    if pos != batch.len() {
        return Err(BatchDefect::BadRecords);
    }
    Ok(it)
}

/// Payloads of one batch, in order.
pub(crate) struct RecordIter {
    batch: Bytes,
    pos: usize,
    left: u32,
}

impl Iterator for RecordIter {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let len = u32_at(&self.batch, self.pos) as usize;
        let start = self.pos + RECORD_OVERHEAD;
        self.pos = start + len;
        Some(self.batch.slice(start..start + len))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn encode(records: &[Bytes], base: u64, ts: u64) -> Vec<u8> {
        let mut b = EncodedBatch::new(records, encoded_len(records));
        b.seal(base, ts).to_vec()
    }

    #[test]
    fn roundtrip() {
        let recs = vec![Bytes::from_static(b"a"), Bytes::new(), Bytes::from(vec![7u8; 300])];
        let raw = encode(&recs, 42, 1_000);
        let h = parse_header(&raw).unwrap();
        assert_eq!((h.base_offset, h.count, h.timestamp, h.total_len as usize), (42, 3, 1_000, raw.len()));
        verify(&h, &raw).unwrap();
        let got: Vec<Bytes> = records(&h, &Bytes::from(raw)).unwrap().collect();
        assert_eq!(got, recs);
    }

    #[test]
    fn large_batch_checksum_is_combined_correctly() {
        let recs = vec![Bytes::from(vec![3u8; PRECOMPUTE_CRC_ABOVE + 10])];
        let raw = encode(&recs, 7, 9);
        let h = parse_header(&raw).unwrap();
        verify(&h, &raw).unwrap();
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let recs = vec![Bytes::from_static(b"hello"), Bytes::from_static(b"world")];
        let raw = encode(&recs, 1, 2);
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x40;
            let ok = parse_header(&bad).and_then(|h| verify(&h, &bad));
            assert!(ok.is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn offsets_past_u64_max_are_a_bad_length() {
        let raw = encode(&[Bytes::from_static(b"x")], u64::MAX, 1);
        assert_eq!(parse_header(&raw), Err(BatchDefect::BadLength));
        let raw = encode(&[Bytes::from_static(b"x")], u64::MAX - 1, 1);
        assert_eq!(parse_header(&raw).unwrap().end_offset(), u64::MAX);
    }

    /// A fixture of format version 1, computed independently of this code (Python, bitwise
    /// CRC32C), so that a change of layout or checksum cannot go unnoticed: bump `VERSION`
    /// and keep reading this one instead.
    const V1_FIXTURE: &str =
        "53424c4701000000cbebe2642a0000000500000000000000010000000600000000000000020000006869";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn version_1_fixture() {
        let fixture = unhex(V1_FIXTURE);
        assert_eq!(encode(&[Bytes::from_static(b"hi")], 5, 6), fixture);
        let h = parse_header(&fixture).unwrap();
        assert_eq!((h.base_offset, h.count, h.timestamp, h.total_len), (5, 1, 6, 42));
        verify(&h, &fixture).unwrap();
        let records: Vec<Bytes> = records(&h, &Bytes::from(fixture)).unwrap().collect();
        assert_eq!(records, vec![Bytes::from_static(b"hi")]);
    }
}
