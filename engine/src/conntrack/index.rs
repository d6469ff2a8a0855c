//! A shard's hash index: fixed size, one cache line per bucket, readable without the shard lock.
//!
//! Written by hand (rather than a `hashbrown::HashTable`) for one reason: a batch of packets must
//! be able to find the buckets and connection slots it will touch, and prefetch them, *before*
//! taking any lock. A lock's atomic read-modify-write is a full fence on x86, so misses behind a
//! per-packet lock are serialised; issued ahead, the misses of a whole batch overlap.
//!
//! Entries are `AtomicU64`: `tag << 32 | (value + 1)`, zero when empty, where `tag` is the high
//! half of the hash and `value` is a connection's slot. They are written only under the shard lock;
//! readers that do not hold it use what they read as a hint and verify under the lock.
//!
//! Collisions probe linearly over buckets. Each bucket counts the entries whose probe passed
//! through it (homed there or before, stored after); a lookup stops at a bucket whose count is
//! zero, and a removal decrements the counts it had raised, so no tombstones are needed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Entries per bucket; the eighth word is the pass-through count.
const WAYS: usize = 7;

#[repr(align(64))]
#[derive(Default)]
struct Bucket {
    entries: [AtomicU64; WAYS],
    /// Entries homed at or before this bucket that are stored after it.
    passing: AtomicU64,
}

pub(crate) struct Index {
    buckets: Box<[Bucket]>,
}

#[inline]
fn tag(h: u64) -> u64 {
    h >> 32
}

#[inline]
fn encode(h: u64, value: u32) -> u64 {
    tag(h) << 32 | (u64::from(value) + 1)
}

impl Index {
    /// An index for up to `entries` entries, kept at most two-thirds full.
    pub(crate) fn with_capacity(entries: usize) -> Index {
        let n = (entries * 3 / 2).div_ceil(WAYS).max(1);
        Index { buckets: (0..n).map(|_| Bucket::default()).collect() }
    }

    /// The home bucket of hash `h` (multiply-shift on the low half: no power-of-two rounding).
    #[inline]
    pub(crate) fn home(&self, h: u64) -> usize {
        (((h & 0xffff_ffff) * self.buckets.len() as u64) >> 32) as usize
    }

    #[inline]
    fn next(&self, b: usize) -> usize {
        if b + 1 == self.buckets.len() {
            0
        } else {
            b + 1
        }
    }

    /// The address of `h`'s home bucket, to prefetch.
    #[inline]
    pub(crate) fn bucket_addr(&self, h: u64) -> *const u8 {
        (&self.buckets[self.home(h)] as *const Bucket).cast()
    }

    /// A value in `h`'s home bucket whose tag matches: a hint of the slot a lookup will want.
    #[inline]
    pub(crate) fn hint(&self, h: u64) -> Option<u32> {
        let t = tag(h);
        self.buckets[self.home(h)].entries.iter().find_map(|e| {
            let v = e.load(Relaxed);
            (v != 0 && v >> 32 == t).then(|| (v as u32).wrapping_sub(1))
        })
    }

    /// The first value for hash `h` that `accept` takes. Always inlined: it is the lookup of
    /// every packet, and a call would keep the caller's values in memory across it.
    #[inline(always)]
    pub(crate) fn find(&self, h: u64, mut accept: impl FnMut(u32) -> bool) -> Option<u32> {
        let t = tag(h);
        let mut b = self.home(h);
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            for e in &bucket.entries {
                let v = e.load(Relaxed);
                if v != 0 && v >> 32 == t {
                    let value = (v as u32).wrapping_sub(1);
                    if accept(value) {
                        return Some(value);
                    }
                }
            }
            if bucket.passing.load(Relaxed) == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// Adds `value` under hash `h`; false when the index is full. Caller holds the shard lock.
    pub(crate) fn insert(&self, h: u64, value: u32) -> bool {
        let home = self.home(h);
        let mut b = home;
        for _ in 0..self.buckets.len() {
            if let Some(e) = self.buckets[b].entries.iter().find(|e| e.load(Relaxed) == 0) {
                let mut p = home;
                while p != b {
                    self.buckets[p].passing.fetch_add(1, Relaxed);
                    p = self.next(p);
                }
                e.store(encode(h, value), Relaxed);
                return true;
            }
            b = self.next(b);
        }
        false
    }

    /// Removes `value` stored under hash `h`; false if it is not there. Caller holds the lock.
    pub(crate) fn remove(&self, h: u64, value: u32) -> bool {
        let want = encode(h, value);
        let home = self.home(h);
        let mut b = home;
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            if let Some(e) = bucket.entries.iter().find(|e| e.load(Relaxed) == want) {
                e.store(0, Relaxed);
                let mut p = home;
                while p != b {
                    self.buckets[p].passing.fetch_sub(1, Relaxed);
                    p = self.next(p);
                }
                return true;
            }
            if bucket.passing.load(Relaxed) == 0 {
                return false;
            }
            b = self.next(b);
        }
        false
    }

    /// Empties the index. Caller holds the lock.
    pub(crate) fn clear(&self) {
        for b in self.buckets.iter() {
            for e in &b.entries {
                e.store(0, Relaxed);
            }
            b.passing.store(0, Relaxed);
        }
    }

    /// Bytes of memory the index occupies.
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn collisions_overflow_and_removal_keep_lookups_exact() {
        let ix = Index::with_capacity(20);
        // Twenty values on the same home bucket: they overflow into the following ones.
        let h = |i: u32| (u64::from(i) << 40) | 5;
        for i in 0..20 {
            assert!(ix.insert(h(i), i));
        }
        for i in 0..20 {
            assert_eq!(ix.find(h(i), |v| v == i), Some(i));
        }
        for i in (0..20).step_by(2) {
            assert!(ix.remove(h(i), i));
        }
        for i in 0..20 {
            let found = ix.find(h(i), |v| v == i);
            assert_eq!(found.is_some(), i % 2 == 1, "value {i}");
        }
        assert!(ix.buckets.iter().all(|b| b.passing.load(Relaxed) < 20));
    }

    proptest! {
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((any::<bool>(), 0u32..64, any::<u8>()), 1..400)) {
            let ix = Index::with_capacity(64);
            let mut model: HashMap<u32, u64> = HashMap::new();
            for (add, key, salt) in ops {
                // Few distinct hashes, so probes collide and overflow often.
                let h = (u64::from(salt % 4) << 36) ^ u64::from(key % 8).wrapping_mul(0x9e37_79b9);
                if add && !model.contains_key(&key) {
                    prop_assert!(ix.insert(h, key));
                    model.insert(key, h);
                } else if let Some(h) = model.remove(&key) {
                    prop_assert!(ix.remove(h, key));
                }
                for (&k, &h) in &model {
                    prop_assert_eq!(ix.find(h, |v| v == k), Some(k));
                }
            }
            for b in ix.buckets.iter() {
                // Every pass-through count is backed by an entry stored further on.
                prop_assert!(b.passing.load(Relaxed) as usize <= model.len());
            }
            for (k, h) in model {
                prop_assert!(ix.remove(h, k));
            }
            prop_assert!(ix.buckets.iter().all(|b| b.passing.load(Relaxed) == 0));
        }
    }
}
