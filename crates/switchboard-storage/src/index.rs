//! Sparse offset and time indexes of a segment, in memory and on disk.
//!
//! Index files are a cache: the log is the truth. They are written when a segment is sealed,
//! never synced on their own, and validated before use; a missing or damaged index is rebuilt
//! by scanning its segment. The active segment's indexes live only in memory (rebuilt from
//! the log at open).
//!
//! File layout, version 1 (little-endian; `.index` and `.timeindex` share it):
//!
//! ```text
//! byte  size  field
//!    0     4  magic            b"SBIX"
//!    4     2  version          1
//!    6     2  kind             1 = offset index, 2 = time index
//!    8     4  entry_count
//!   12     4  entries_crc      CRC32C of the entries
//!   16     8  log_len          length of the .log file this index describes
//!   24     8  base_offset      first offset of the segment
//!   32     8  end_offset       one past the last offset of the segment
//!   40     8  max_timestamp    newest record of the segment (ms)
//!   48     8  first_timestamp  oldest record of the segment (ms)
//!   56     4  reserved         0
//!   60     4  header_crc       CRC32C of bytes 0..60
//!   64        entries          entry_count times 16 bytes:
//!                              offset index: (offset u64, byte position u64)
//!                              time index:   (timestamp u64, offset u64)
//! ```
//!
//! The header alone (checked at open, one small read per segment) tells the segment's extent
//! and newest timestamp without scanning it; the entries are loaded on first use.

/// `b"SBIX"`.
const MAGIC: [u8; 4] = *b"SBIX";
const VERSION: u16 = 1;
/// Size of the index file header.
pub(crate) const HEADER_LEN: usize = 64;
/// Size of one entry.
pub(crate) const ENTRY_LEN: usize = 16;

/// Which index a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IndexKind {
    /// `.index`: offset → byte position.
    Offset = 1,
    /// `.timeindex`: timestamp → offset.
    Time = 2,
}

/// What a sealed segment holds, as recorded in its index headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    pub(crate) log_len: u64,
    pub(crate) base_offset: u64,
    pub(crate) end_offset: u64,
    pub(crate) max_timestamp: u64,
    pub(crate) first_timestamp: u64,
}

/// The sparse entries of one segment. Every entry points at the start of a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Entries {
    /// `(offset, position)`, both strictly increasing.
    pub(crate) offsets: Vec<(u64, u64)>,
    /// `(timestamp, offset)`: timestamps non-decreasing, offsets strictly increasing.
    pub(crate) times: Vec<(u64, u64)>,
}

impl Entries {
    /// Byte position of the batch to start scanning at to find `offset` (0 if before every
    /// entry).
    pub(crate) fn position_for(&self, offset: u64) -> (u64, Option<u64>) {
        let i = self.offsets.partition_point(|&(o, _)| o <= offset);
        if i == 0 { (0, None) } else { (self.offsets[i - 1].1, Some(self.offsets[i - 1].0)) }
    }

    /// Offset of a batch at or before the first batch with timestamp >= `ts`.
    pub(crate) fn offset_before_time(&self, ts: u64) -> Option<u64> {
        let i = self.times.partition_point(|&(t, _)| t < ts);
        if i == 0 { None } else { Some(self.times[i - 1].1) }
    }

    /// Adds entries for the batch at `pos` (base `offset`, timestamp `ts`).
    pub(crate) fn push(&mut self, offset: u64, pos: u64, ts: u64) {
        self.offsets.push((offset, pos));
        self.times.push((ts, offset));
    }

    /// Drops entries pointing at or after byte `pos` (used when the log is cut back).
    pub(crate) fn truncate_to(&mut self, pos: u64) {
        let keep = self.offsets.partition_point(|&(_, p)| p < pos);
        self.offsets.truncate(keep);
        let last_offset = self.offsets.last().map(|&(o, _)| o);
        let keep_t = match last_offset {
            Some(o) => self.times.partition_point(|&(_, off)| off <= o),
            None => 0,
        };
        self.times.truncate(keep_t);
    }
}

/// Decides where sparse entries go: the first batch of a segment, then the first batch after
/// every `interval` bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IndexBuilder {
    interval: u64,
    since_last: u64,
    have_any: bool,
}

impl IndexBuilder {
    pub(crate) fn new(interval: u32) -> IndexBuilder {
        IndexBuilder { interval: u64::from(interval), since_last: 0, have_any: false }
    }

    /// Accounts for a batch of `len` bytes; returns whether it gets index entries.
    pub(crate) fn observe(&mut self, len: u64) -> bool {
        let due = !self.have_any || self.since_last >= self.interval;
        if due {
            self.since_last = 0;
            self.have_any = true;
        }
        self.since_last += len;
        due
    }

    /// Makes the next batch get an entry (after the log was cut back).
    pub(crate) fn force_next(&mut self) {
        self.have_any = false;
    }
}

fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Encodes an index file.
pub(crate) fn encode(kind: IndexKind, summary: &SegmentSummary, entries: &[(u64, u64)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for &(a, b) in entries {
        put_u64(&mut body, a);
        put_u64(&mut body, b);
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(kind as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    put_u64(&mut out, summary.log_len);
    put_u64(&mut out, summary.base_offset);
    put_u64(&mut out, summary.end_offset);
    put_u64(&mut out, summary.max_timestamp);
    put_u64(&mut out, summary.first_timestamp);
    out.extend_from_slice(&[0; 4]);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);
    out.extend_from_slice(&body);
    out
}

/// Rewrites both checksums of an encoded index file at least a header long (for fuzzing, so
/// that mutated files get past the checksums to the checks behind them).
pub(crate) fn reseal(b: &mut [u8]) {
    if b.len() < HEADER_LEN {
        return;
    }
    let entries_crc = crc32c::crc32c(&b[HEADER_LEN..]);
    b[12..16].copy_from_slice(&entries_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&b[..60]);
    b[60..64].copy_from_slice(&header_crc.to_le_bytes());
}

/// Checks and decodes an index header; returns the summary and `(count, entries_crc)`.
pub(crate) fn decode_header(b: &[u8], kind: IndexKind) -> Result<(SegmentSummary, u32, u32), String> {
    if b.len() < HEADER_LEN {
        return Err(format!("index header is {} bytes, expected {HEADER_LEN}", b.len()));
    }
    if b[0..4] != MAGIC {
        return Err("no index magic".into());
    }
    if crc32c::crc32c(&b[..60]) != get_u32(b, 60) {
        return Err("index header checksum mismatch".into());
    }
    let version = u16::from_le_bytes([b[4], b[5]]);
    if version != VERSION {
        return Err(format!("unknown index version {version}"));
    }
    if u16::from_le_bytes([b[6], b[7]]) != kind as u16 {
        return Err("index of the wrong kind".into());
    }
    let summary = SegmentSummary {
        log_len: get_u64(b, 16),
        base_offset: get_u64(b, 24),
        end_offset: get_u64(b, 32),
        max_timestamp: get_u64(b, 40),
        first_timestamp: get_u64(b, 48),
    };
    if summary.end_offset < summary.base_offset {
        return Err("index header has end before base".into());
    }
    Ok((summary, get_u32(b, 8), get_u32(b, 12)))
}

/// Decodes and validates a whole index file against the segment it should describe.
pub(crate) fn decode(b: &[u8], kind: IndexKind, expect: &SegmentSummary) -> Result<Vec<(u64, u64)>, String> {
    let (summary, count, entries_crc) = decode_header(b, kind)?;
    if summary != *expect {
        return Err(format!("index describes {summary:?}, segment is {expect:?}"));
    }
    let body = &b[HEADER_LEN..];
    if !body.len().is_multiple_of(ENTRY_LEN) || body.len() / ENTRY_LEN != count as usize {
        return Err(format!("index holds {} bytes of entries, header says {count} entries", body.len()));
    }
    if crc32c::crc32c(body) != entries_crc {
        return Err("index entries checksum mismatch".into());
    }
    let entries: Vec<(u64, u64)> =
        body.chunks_exact(ENTRY_LEN).map(|c| (get_u64(c, 0), get_u64(c, 8))).collect();
    let in_segment = |o: u64| o >= expect.base_offset && o < expect.end_offset;
    match kind {
        IndexKind::Offset => {
            for (i, &(o, p)) in entries.iter().enumerate() {
                if !in_segment(o) || p >= expect.log_len {
                    return Err(format!("offset index entry {i} ({o}, {p}) points outside the segment"));
                }
                if i > 0 && (o <= entries[i - 1].0 || p <= entries[i - 1].1) {
                    return Err(format!("offset index entry {i} is not increasing"));
                }
            }
        }
        IndexKind::Time => {
            for (i, &(t, o)) in entries.iter().enumerate() {
                if !in_segment(o) || t > expect.max_timestamp {
                    return Err(format!("time index entry {i} ({t}, {o}) points outside the segment"));
                }
                if i > 0 && (o <= entries[i - 1].1 || t < entries[i - 1].0) {
                    return Err(format!("time index entry {i} is not increasing"));
                }
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn summary() -> SegmentSummary {
        SegmentSummary {
            log_len: 1000,
            base_offset: 10,
            end_offset: 50,
            max_timestamp: 99,
            first_timestamp: 5,
        }
    }

    #[test]
    fn roundtrip_and_validation() {
        let e = vec![(10, 0), (20, 400), (30, 800)];
        let raw = encode(IndexKind::Offset, &summary(), &e);
        assert_eq!(raw.len() % ENTRY_LEN, 0);
        assert_eq!(decode(&raw, IndexKind::Offset, &summary()).unwrap(), e);
        assert!(decode(&raw, IndexKind::Time, &summary()).is_err());
        let mut other = summary();
        other.log_len = 999;
        assert!(decode(&raw, IndexKind::Offset, &other).is_err());
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 1;
            assert!(decode(&bad, IndexKind::Offset, &summary()).is_err(), "flip at {i} unnoticed");
        }
        let not_monotonic = encode(IndexKind::Offset, &summary(), &[(20, 0), (10, 400)]);
        assert!(decode(&not_monotonic, IndexKind::Offset, &summary()).is_err());
        let outside = encode(IndexKind::Offset, &summary(), &[(10, 1000)]);
        assert!(decode(&outside, IndexKind::Offset, &summary()).is_err());
    }

    #[test]
    fn lookups() {
        let mut entries = Entries::default();
        let mut b = IndexBuilder::new(100);
        for (i, pos) in [0u64, 60, 120, 180, 240].iter().enumerate() {
            if b.observe(60) {
                entries.push(10 + i as u64 * 2, *pos, 1000 + i as u64);
            }
        }
        // entries at batches 0 (pos 0) and 2 (pos 120, after 120 >= 100 bytes) and 4.
        assert_eq!(entries.offsets, vec![(10, 0), (14, 120), (18, 240)]);
        assert_eq!(entries.position_for(9), (0, None));
        assert_eq!(entries.position_for(15), (120, Some(14)));
        assert_eq!(entries.offset_before_time(1002), Some(10));
        assert_eq!(entries.offset_before_time(1003), Some(14));
        entries.truncate_to(200);
        assert_eq!(entries.offsets, vec![(10, 0), (14, 120)]);
        assert_eq!(entries.times.len(), 2);
    }

    /// A version 1 `.index` fixture computed independently of this code (Python, bitwise
    /// CRC32C).
    #[test]
    fn version_1_fixture() {
        let hex = "534249580100010001000000ff3b78762a0000000000000005000000000000000600000000000000060000000000000006000000000000000000000023002e1a05000000000000000000000000000000";
        let fixture: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let summary = SegmentSummary {
            log_len: 42,
            base_offset: 5,
            end_offset: 6,
            max_timestamp: 6,
            first_timestamp: 6,
        };
        assert_eq!(encode(IndexKind::Offset, &summary, &[(5, 0)]), fixture);
        assert_eq!(decode(&fixture, IndexKind::Offset, &summary).unwrap(), vec![(5, 0)]);
    }
}
