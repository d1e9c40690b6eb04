//! The durable state of a subscription, as an append-only journal of entries.
//!
//! Each subscription has one journal (a storage [`Log`](switchboard_storage::Log), so it
//! shares the log's checksums, torn-tail recovery and group commit). One journal record holds
//! a batch of [`Entry`]s. The rule that keeps compaction simple: **state changes in memory
//! before its entry is appended**, and replay *merges* (sets grow, counts take the maximum,
//! commits are last-writer-wins by sequence number). So a snapshot taken at any moment,
//! appended after entries it already contains or before entries it lacks, replays to the
//! right state.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use switchboard_core::Timestamp;

/// One change to a subscription's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Queue: the message was handed out for the `attempt`-th time.
    Delivered { partition: u32, offset: u64, attempt: u32 },
    /// Queue: the message was acked.
    Acked { partition: u32, offset: u64 },
    /// Queue: the message went to the dead-letter topic.
    DeadLettered { partition: u32, offset: u64 },
    /// Queue: the message was nacked with a delay; not to be delivered before `not_before`.
    Delayed { partition: u32, offset: u64, not_before: Timestamp },
    /// Stream: the next offset to read in `partition` is `offset`.
    Committed { partition: u32, offset: u64, seq: u64 },
    /// The whole state at one moment.
    Snapshot(Snapshot),
}

/// Whole-state image written at compaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) partitions: Vec<PartitionSnapshot>,
    pub(crate) dead_lettered: u64,
}

/// One partition's share of a [`Snapshot`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PartitionSnapshot {
    /// Queue: every offset below is done. Stream: the committed offset.
    pub(crate) floor: u64,
    /// Stream: sequence number of the commit that set `floor`.
    pub(crate) seq: u64,
    /// Queue: done offsets at or above the floor.
    pub(crate) done: Vec<u64>,
    /// Queue: delivery counts of messages not yet done.
    pub(crate) attempts: Vec<(u64, u32)>,
    /// Queue: nack delays still pending.
    pub(crate) delays: Vec<(u64, Timestamp)>,
}

const DELIVERED: u8 = 1;
const ACKED: u8 = 2;
const DEAD_LETTERED: u8 = 3;
const DELAYED: u8 = 4;
const COMMITTED: u8 = 5;
const SNAPSHOT: u8 = 6;

/// A journal record that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("journal record is malformed: {0}")]
pub(crate) struct JournalDecodeError(&'static str);

pub(crate) fn encode(entries: &[Entry]) -> Bytes {
    let mut b = BytesMut::with_capacity(entries.len() * 17 + 8);
    for e in entries {
        match e {
            Entry::Delivered { partition, offset, attempt } => {
                b.put_u8(DELIVERED);
                b.put_u32_le(*partition);
                b.put_u64_le(*offset);
                b.put_u32_le(*attempt);
            }
            Entry::Acked { partition, offset } => {
                b.put_u8(ACKED);
                b.put_u32_le(*partition);
                b.put_u64_le(*offset);
            }
            Entry::DeadLettered { partition, offset } => {
                b.put_u8(DEAD_LETTERED);
                b.put_u32_le(*partition);
                b.put_u64_le(*offset);
            }
            Entry::Delayed { partition, offset, not_before } => {
                b.put_u8(DELAYED);
                b.put_u32_le(*partition);
                b.put_u64_le(*offset);
                b.put_u64_le(not_before.0);
            }
            Entry::Committed { partition, offset, seq } => {
                b.put_u8(COMMITTED);
                b.put_u32_le(*partition);
                b.put_u64_le(*offset);
                b.put_u64_le(*seq);
            }
            Entry::Snapshot(s) => {
                b.put_u8(SNAPSHOT);
                b.put_u64_le(s.dead_lettered);
                b.put_u32_le(s.partitions.len() as u32);
                for p in &s.partitions {
                    b.put_u64_le(p.floor);
                    b.put_u64_le(p.seq);
                    b.put_u32_le(p.done.len() as u32);
                    p.done.iter().for_each(|o| b.put_u64_le(*o));
                    b.put_u32_le(p.attempts.len() as u32);
                    for (o, a) in &p.attempts {
                        b.put_u64_le(*o);
                        b.put_u32_le(*a);
                    }
                    b.put_u32_le(p.delays.len() as u32);
                    for (o, t) in &p.delays {
                        b.put_u64_le(*o);
                        b.put_u64_le(t.0);
                    }
                }
            }
        }
    }
    b.freeze()
}

fn need(b: &Bytes, n: usize) -> Result<(), JournalDecodeError> {
    if b.remaining() < n { Err(JournalDecodeError("truncated entry")) } else { Ok(()) }
}

fn count(b: &mut Bytes, elem: usize) -> Result<usize, JournalDecodeError> {
    need(b, 4)?;
    let n = b.get_u32_le() as usize;
    // A count larger than the bytes left is corrupt; refusing it also bounds allocation.
    need(b, n.saturating_mul(elem))?;
    Ok(n)
}

pub(crate) fn decode(mut b: Bytes) -> Result<Vec<Entry>, JournalDecodeError> {
    let mut out = Vec::new();
    while b.has_remaining() {
        let tag = b.get_u8();
        let e = match tag {
            DELIVERED => {
                need(&b, 16)?;
                Entry::Delivered {
                    partition: b.get_u32_le(),
                    offset: b.get_u64_le(),
                    attempt: b.get_u32_le(),
                }
            }
            ACKED => {
                need(&b, 12)?;
                Entry::Acked { partition: b.get_u32_le(), offset: b.get_u64_le() }
            }
            DEAD_LETTERED => {
                need(&b, 12)?;
                Entry::DeadLettered { partition: b.get_u32_le(), offset: b.get_u64_le() }
            }
            DELAYED => {
                need(&b, 20)?;
                Entry::Delayed {
                    partition: b.get_u32_le(),
                    offset: b.get_u64_le(),
                    not_before: Timestamp(b.get_u64_le()),
                }
            }
            COMMITTED => {
                need(&b, 20)?;
                Entry::Committed { partition: b.get_u32_le(), offset: b.get_u64_le(), seq: b.get_u64_le() }
            }
            SNAPSHOT => {
                need(&b, 8)?;
                let dead_lettered = b.get_u64_le();
                let n = count(&mut b, 28)?;
                let mut partitions = Vec::with_capacity(n);
                for _ in 0..n {
                    need(&b, 16)?;
                    let (floor, seq) = (b.get_u64_le(), b.get_u64_le());
                    let nd = count(&mut b, 8)?;
                    let done = (0..nd).map(|_| b.get_u64_le()).collect();
                    let na = count(&mut b, 12)?;
                    let attempts = (0..na).map(|_| (b.get_u64_le(), b.get_u32_le())).collect();
                    let nl = count(&mut b, 16)?;
                    let delays = (0..nl).map(|_| (b.get_u64_le(), Timestamp(b.get_u64_le()))).collect();
                    partitions.push(PartitionSnapshot { floor, seq, done, attempts, delays });
                }
                Entry::Snapshot(Snapshot { partitions, dead_lettered })
            }
            _ => return Err(JournalDecodeError("unknown entry tag")),
        };
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_roundtrip_and_truncation_is_detected() {
        let entries = vec![
            Entry::Delivered { partition: 1, offset: 7, attempt: 2 },
            Entry::Acked { partition: 0, offset: 3 },
            Entry::DeadLettered { partition: 2, offset: 9 },
            Entry::Delayed { partition: 0, offset: 4, not_before: Timestamp(55) },
            Entry::Committed { partition: 3, offset: 100, seq: 8 },
            Entry::Snapshot(Snapshot {
                partitions: vec![PartitionSnapshot {
                    floor: 5,
                    seq: 2,
                    done: vec![7, 9],
                    attempts: vec![(6, 3)],
                    delays: vec![(6, Timestamp(77))],
                }],
                dead_lettered: 4,
            }),
        ];
        let enc = encode(&entries);
        assert_eq!(decode(enc.clone()).unwrap(), entries);
        for cut in 1..enc.len() {
            // A prefix either fails or decodes to a prefix of the entries, never to other entries.
            if let Ok(d) = decode(enc.slice(..cut)) {
                assert_eq!(&entries[..d.len()], &d[..]);
            }
        }
    }
}
