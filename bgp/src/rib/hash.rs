//! The hasher of the prefix tables.
//!
//! Table keys are one or two machine words, hashed a million times per
//! full table, so SipHash's per-call cost shows (about a fifth of ingest
//! time). This is a folded multiply (the 128-bit product of key and an
//! odd constant, high half xor low half), seeded per RIB: fast, mixes
//! every key bit into the low bits hashbrown indexes by (plain multiply
//! would not: /24 keys share their low 16 bits), and with a secret seed
//! from the speaker ([`RibConfig::hash_seed`](super::RibConfig)) a peer
//! cannot precompute colliding prefixes.

use std::hash::{BuildHasher, Hasher};

const K: u64 = 0x9E37_79B9_7F4A_7C15;

fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    // Truncations intended: the halves of the product.
    (p as u64) ^ ((p >> 64) as u64)
}

/// Builds [`KeyHasher`]s with the RIB's seed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KeyHashBuilder {
    pub(crate) seed: u64,
}

/// See the module docs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyHasher {
    h: u64,
}

impl BuildHasher for KeyHashBuilder {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher { h: self.seed }
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            if let Some(dst) = b.get_mut(..c.len()) {
                dst.copy_from_slice(c);
            }
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.h = fold(self.h ^ i, K);
    }
    fn write_u128(&mut self, i: u128) {
        self.write_u64(i as u64);
        self.write_u64((i >> 64) as u64);
    }
    fn finish(&self) -> u64 {
        self.h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn slash_24_keys_spread_over_low_bits() {
        let b = KeyHashBuilder { seed: 1 };
        let buckets: HashSet<u64> = (0..4096u64)
            .map(|i| b.hash_one(((0x0a00_0000 + (i << 8)) << 8) | 24) & 0xfff)
            .collect();
        // A uniform hash fills about 63% of 4096 buckets with 4096 keys.
        assert!(buckets.len() > 2400, "{}", buckets.len());
        let other = KeyHashBuilder { seed: 2 };
        assert_ne!(b.hash_one(5u64), other.hash_one(5u64));
    }
}
