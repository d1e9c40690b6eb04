//! Which partition a message goes to.

/// FNV-1a, 64 bit: fixed by definition, so a key maps to the same partition in every
/// process and after every restart (unlike `std`'s randomly seeded hasher).
pub(crate) fn partition_for_key(key: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(partitions)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        // Pinned values: changing the hash would move keys between partitions on upgrade.
        assert_eq!(partition_for_key("customer-1", 8), partition_for_key("customer-1", 8));
        assert_eq!(partition_for_key("", 8), (0xcbf2_9ce4_8422_2325u64 % 8) as u32);
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[partition_for_key(&format!("k{i}"), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
