//! A hash map split into a fixed number of independently growing shards.
//!
//! Why: a single hashbrown table doubles all at once, and while it moves
//! its entries both the old and the new slot arrays are alive. At a
//! million prefixes that is 33 MiB + 66 MiB at the same time, which made
//! the speaker's peak RSS about 1.5x what the table holds afterwards. With
//! [`SHARDS`] shards only one shard grows at a time, so the peak is the
//! table plus 1/64th of it. Lookups cost one extra hash of the key (a
//! folded multiply) to pick the shard.

use std::collections::{hash_map, HashMap};
use std::hash::{BuildHasher, Hash};

use super::hash::KeyHashBuilder;

/// Number of shards (a power of two).
const SHARDS: usize = 64;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct ShardedMap<K, V> {
    hasher: KeyHashBuilder,
    shards: Vec<HashMap<K, V, KeyHashBuilder>>,
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    pub(crate) fn with_hasher(hasher: KeyHashBuilder) -> Self {
        ShardedMap {
            hasher,
            shards: (0..SHARDS).map(|_| HashMap::with_hasher(hasher)).collect(),
        }
    }

    /// Picks the shard from hash bits hashbrown does not use for either
    /// the slot index (low bits) or the control byte (top 7 bits).
    fn index(&self, k: &K) -> usize {
        // Truncation intended: only six bits are kept.
        (self.hasher.hash_one(k) >> 40) as usize & (SHARDS - 1)
    }

    fn shard(&self, k: &K) -> Option<&HashMap<K, V, KeyHashBuilder>> {
        self.shards.get(self.index(k))
    }

    fn shard_mut(&mut self, k: &K) -> &mut HashMap<K, V, KeyHashBuilder> {
        let i = self.index(k);
        // `index` is always below SHARDS, the length of `shards`; the
        // fallback only satisfies the no-indexing rule.
        let fallback = self.shards.len() - 1;
        let i = if i < self.shards.len() { i } else { fallback };
        match self.shards.get_mut(i) {
            Some(s) => s,
            None => unreachable!("{SHARDS} shards are made in with_hasher"),
        }
    }

    pub(crate) fn entry(&mut self, k: K) -> hash_map::Entry<'_, K, V> {
        self.shard_mut(&k).entry(k)
    }

    pub(crate) fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.shard_mut(&k).insert(k, v)
    }

    pub(crate) fn get(&self, k: &K) -> Option<&V> {
        self.shard(k).and_then(|s| s.get(k))
    }

    pub(crate) fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.shard_mut(k).get_mut(k)
    }

    pub(crate) fn remove(&mut self, k: &K) -> Option<V> {
        self.shard_mut(k).remove(k)
    }
}

/// Whole-table walks: no bounds on the key.
impl<K, V> ShardedMap<K, V> {
    pub(crate) fn retain(&mut self, mut f: impl FnMut(&K, &mut V) -> bool) {
        for s in &mut self.shards {
            s.retain(&mut f);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(HashMap::iter)
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.shards.iter_mut().flat_map(HashMap::iter_mut)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.shards.iter().flat_map(HashMap::keys)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(HashMap::values)
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.shards.iter_mut().flat_map(HashMap::values_mut)
    }
}

#[cfg(test)]
// A panic is how a test reports failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_one_map_and_spreads_over_shards() {
        let mut m = ShardedMap::with_hasher(KeyHashBuilder { seed: 7 });
        for i in 0..10_000u64 {
            *m.entry(i << 8).or_insert(0) += i;
        }
        assert_eq!(m.len(), 10_000);
        assert_eq!(m.get(&(5 << 8)), Some(&5));
        *m.get_mut(&(5 << 8)).unwrap() = 1;
        assert_eq!(m.remove(&(5 << 8)), Some(1));
        assert_eq!(m.insert(5 << 8, 1), None);
        assert_eq!(m.remove(&(5 << 8)), Some(1));
        assert_eq!(m.get(&(5 << 8)), None);
        m.retain(|k, _| k % 512 == 0);
        assert_eq!(m.len(), 5_000);
        assert_eq!(m.iter().count(), m.values().count());
        assert_eq!(m.keys().count(), m.len());
        for v in m.values_mut() {
            *v = 0;
        }
        assert!(m.iter_mut().all(|(_, v)| *v == 0));
        // Every shard got a share (about 78 each).
        assert!(m.shards.iter().all(|s| s.len() > 30), "uneven shards");
    }
}
