//! FNV-1a, 64 bit: the one stable hash of the workspace.
//!
//! Used wherever a hash must give the same answer in every process, on every platform and
//! after every upgrade (partition choice, names derived from names), which `std`'s
//! randomly seeded `DefaultHasher` does not promise. Not for untrusted keys in hash tables:
//! FNV is easy to flood.

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// The 64-bit FNV-1a hash of `bytes`, as specified by Fowler, Noll and Vo (the
/// `draft-eastlake-fnv` test vectors hold).
///
/// ```
/// assert_eq!(switchboard_core::fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
/// ```
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(OFFSET_BASIS, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::fnv1a_64;

    #[test]
    fn published_test_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"b"), 0xaf63_df4c_8601_f1a5);
        assert_eq!(fnv1a_64(b"c"), 0xaf63_de4c_8601_eff2);
        assert_eq!(fnv1a_64(b"foo"), 0xdcb2_7518_fed9_d577);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a_64(b"chongo was here!\n"), 0x4681_0940_eff5_f915);
    }
}
