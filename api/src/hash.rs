//! The one hash of the project: FNV-1a, 64 bit. Stable across versions and platforms, since its
//! values are part of formats: the CNI's link aliases and link groups, and the device names of
//! ResourceSlices.

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a of the parts joined with NUL bytes.
pub fn fnv1a64(parts: &[&str]) -> u64 {
    let mut hash = OFFSET_BASIS;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // The NUL separator: `hash ^= 0` is the identity, only the multiplication remains.
            hash = hash.wrapping_mul(PRIME);
        }
        for b in part.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        assert_eq!(fnv1a64(&[""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&["a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&["a", "b"]), fnv1a64(&["a\0b"]));
        assert_ne!(fnv1a64(&["ab"]), fnv1a64(&["a", "b"]));
    }
}
