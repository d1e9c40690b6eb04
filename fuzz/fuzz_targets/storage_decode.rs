//! Storage record decoding: recovery's scan of a segment file and the read path's batch
//! decoding, on arbitrary bytes. Input: `[flags][base offset u64 LE][segment bytes]` (see
//! `switchboard_fuzz::storage_decode_input`); flag `DECODE_RESEAL` fixes the checksums first
//! so that mutations get past them.
//!
//! Never panics; what is kept is dense, inside the bytes, and re-encodes to exactly the bytes
//! it was decoded from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_fuzz::{DECODE_RESEAL, Reader};
use switchboard_storage::fuzzing::{decode_segment, encode_batch, reseal_batches};

fuzz_target!(|data: &[u8]| {
    let mut r = Reader(data);
    let flags = r.u8();
    let base = r.u64();
    let mut segment = r.rest().to_vec();
    if flags & DECODE_RESEAL != 0 {
        reseal_batches(&mut segment);
    }
    let decoded = decode_segment(&segment, base).expect("in-memory bytes cannot fail to read");
    assert!(decoded.valid_len <= segment.len() as u64);
    assert_eq!(decoded.stop.is_none(), decoded.valid_len == segment.len() as u64, "{decoded:?}");
    let mut next_offset = base;
    let mut next_pos = 0u64;
    for b in &decoded.batches {
        assert_eq!((b.position, b.base_offset), (next_pos, next_offset));
        assert!(!b.payloads.is_empty());
        let encoded = encode_batch(&b.payloads, b.base_offset, b.timestamp);
        let start = b.position as usize;
        assert_eq!(segment.get(start..start + encoded.len()), Some(&encoded[..]), "batch at {start}");
        next_pos += encoded.len() as u64;
        next_offset += b.payloads.len() as u64;
    }
    assert_eq!((next_pos, next_offset), (decoded.valid_len, decoded.end_offset));
});
