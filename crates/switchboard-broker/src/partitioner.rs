//! Which partition a message goes to.

/// FNV-1a, 64 bit, reduced modulo the partition count: fixed by definition, so a key maps to
/// the same partition in every process and after every restart (unlike `std`'s randomly
/// seeded hasher).
pub(crate) fn partition_for_key(key: &str, partitions: u32) -> u32 {
    (switchboard_core::fnv1a_64(key.as_bytes()) % u64::from(partitions)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned values: a key's partition must never change, or an upgrade would move keys
    /// between partitions and break their order. The hashes are the published FNV-1a-64 test
    /// vectors ("", "a", "foobar") and values computed by a separate implementation; the
    /// partitions are those hashes modulo the count, so a change of hash or of the reduction
    /// (e.g. to a multiply-shift or a jump hash) breaks this.
    #[test]
    fn keys_map_to_pinned_partitions() {
        let pinned: [(&str, u64, [u32; 4]); 5] = [
            // key, fnv1a64(key), partitions for 3, 8, 12 and 16 partitions
            ("", 0xcbf2_9ce4_8422_2325, [2, 5, 5, 5]),
            ("a", 0xaf63_dc4c_8601_ec8c, [1, 4, 4, 12]),
            ("foobar", 0x8594_4171_f739_67e8, [0, 0, 0, 8]),
            ("customer-1", 0x6603_0aab_83c7_0157, [2, 7, 11, 7]),
            ("order-42", 0x7d1d_eb86_a056_62d4, [2, 4, 8, 4]),
        ];
        for (key, hash, parts) in pinned {
            assert_eq!(switchboard_core::fnv1a_64(key.as_bytes()), hash, "hash of {key:?}");
            for (n, want) in [3, 8, 12, 16].into_iter().zip(parts) {
                assert_eq!(partition_for_key(key, n), want, "{key:?} over {n} partitions");
            }
            assert_eq!(partition_for_key(key, 1), 0);
        }
    }

    #[test]
    fn keys_spread_over_partitions() {
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[partition_for_key(&format!("k{i}"), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
