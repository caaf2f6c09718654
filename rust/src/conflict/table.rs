//! The detector's memory: the last commit timestamp of each remembered key, in one flat table
//! allocated once (after Apache Omid's `CommitHashMap`).
//!
//! Layout: `buckets` of [`SLOTS`] slots, each bucket 256 bytes (four cache lines, aligned). Line
//! one holds the slots' 32-bit short tags (a check of a key the table does not hold reads only
//! this line of each candidate), line two the rest of each tag (16 bits) beside the commit's node,
//! lines three and four the commits' packed timestamps: 16 bytes a slot. A short tag is never
//! zero, so a zero one is an empty slot. A bucket's slots are kept in commit order, occupied ones
//! first, so its oldest commit is its first slot. There are `ceil(max_keys / 16)` buckets: 16
//! bytes per key when `max_keys` is a multiple of 16, at most 32 bytes per key from `max_keys = 8`
//! up (a table of fewer keys still takes one bucket, 256 bytes).
//!
//! Each key has two candidate buckets (two choices, from its hash); it lives in at most one slot
//! of the two. Recording a key not in the table takes an empty slot of the emptier candidate
//! while fewer than `max_keys` keys are remembered; otherwise it evicts the oldest commit of its
//! 32 candidate slots and returns it, for the caller to raise the low watermark to it. Eviction
//! is therefore by bucket, not the least recently recorded key of all; with 32 candidates the
//! evicted commit is among the oldest of the table: when a full table of 1,000,000 keys takes
//! 400,000 new keys, the chance that every candidate of one of them is among those 400,000 (so
//! that the eviction refuses transactions that started before them) is about
//! `400,000 * 0.4^32`, 1e-7 (with 16 candidates it was 0.2, and tests saw it happen). The price
//! against a global least-recently-recorded order: a transaction may be refused as too old once
//! keys written after its start fill a large share of the table (at 70%, about 4% of 1,000-
//! transaction batches lost one in a test), where the global order waited for 100%. Size
//! `max_keys` for about three times the keys written during the longest transaction.
//!
//! The choice of bucket reads lines one and three of both candidates (their oldest commits'
//! `(physical, logical)`, not their nodes: equal ones go to the first candidate), so a record
//! loads the other lines of one bucket only: six lines a new key in a full table, not eight.
//!
//! Hash collisions: two keys whose hashes share a candidate bucket and the 48-bit tag are one
//! slot, holding the later of their commits. A check of either then sees a commit at or after its
//! own last one: a collision can cause a false conflict (probability at most 32 / 2^47, about
//! 2e-13, per key checked) and never hides one.

use crate::timestamp::Timestamp;

use super::zeroed::{AllocationError, Zeroable, ZeroedArray};

/// Slots per bucket.
pub const SLOTS: usize = 16;

/// Above this size (a core's L2 cache on common x86 hosts) a table is taken to miss the cache on
/// most keys: the checks' and records' second prefetch steps run only then. With 16,384 keys
/// (256 KiB, in the cache) they cost 350 ns a transaction against 255 ns without them.
pub const LARGE_TABLE_BYTES: usize = 1 << 20;

#[derive(Clone, Copy)]
#[repr(C, align(256))]
struct Bucket {
    /// The first 32 bits of each slot's tag, zero when the slot is empty.
    short: [u32; SLOTS],
    /// The other 16 bits of each slot's tag above its commit's node.
    rest_node: [u32; SLOTS],
    /// The packed `(physical, logical)` of each slot's commit.
    commits: [u64; SLOTS],
}

// SAFETY: integers only; all zeros is a bucket of empty slots.
unsafe impl Zeroable for Bucket {}

/// What one scan of a bucket's short tags found: bit `i` of `matching` is set when slot `i`'s
/// short tag is the wanted one, of `empty` when slot `i` is empty.
#[derive(Clone, Copy)]
struct Scan {
    matching: u32,
    empty: u32,
}

impl Scan {
    /// The bucket's occupied slots: they are a prefix, so the count is the first empty slot (a
    /// bit scan; a population count is a long sequence without the POPCNT extension).
    #[inline(always)]
    fn occupied(self) -> usize {
        (self.empty | 1 << SLOTS).trailing_zeros() as usize
    }
}

impl Bucket {
    /// Compares the 16 short tags with `wanted` and with zero (empty): one load of the line, eight
    /// vector compares.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn scan(&self, wanted: u32) -> Scan {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi32, _mm_load_si128, _mm_movemask_epi8, _mm_packs_epi16,
            _mm_packs_epi32, _mm_set1_epi32, _mm_setzero_si128,
        };
        let lanes = self.short.as_ptr().cast::<__m128i>();
        // SAFETY: SSE2 is part of every x86_64 target; the four loads read the 64 bytes of
        // `self.short`, which is 16-byte aligned (first field of a 256-byte aligned struct).
        unsafe {
            let loaded = [0, 1, 2, 3].map(|n| _mm_load_si128(lanes.add(n)));
            let bits = |value: __m128i| {
                let equal = loaded.map(|lane| _mm_cmpeq_epi32(lane, value));
                let low = _mm_packs_epi32(equal[0], equal[1]);
                let high = _mm_packs_epi32(equal[2], equal[3]);
                _mm_movemask_epi8(_mm_packs_epi16(low, high)) as u32
            };
            Scan {
                matching: bits(_mm_set1_epi32(wanted as i32)),
                empty: bits(_mm_setzero_si128()),
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    fn scan(&self, wanted: u32) -> Scan {
        let (mut matching, mut empty) = (0, 0);
        for (at, &word) in self.short.iter().enumerate() {
            matching |= u32::from(word == wanted) << at;
            empty |= u32::from(word == 0) << at;
        }
        Scan { matching, empty }
    }

    /// The slot holding `tag` among the `matching` ones of a scan, if any.
    #[inline(always)]
    fn find(&self, tag: Tag, matching: u32) -> Option<usize> {
        let mut candidates = matching;
        while candidates != 0 {
            let at = candidates.trailing_zeros() as usize;
            if self.rest_node[at] >> 16 == tag.rest {
                return Some(at);
            }
            candidates &= candidates - 1;
        }
        None
    }

    #[inline]
    fn commit(&self, at: usize) -> Timestamp {
        Timestamp::from_packed(self.commits[at], self.rest_node[at] as u16)
    }

    /// Removes slot `at` of the `occupied` first, keeping the order of the others.
    fn remove(&mut self, at: usize, occupied: usize) {
        self.short.copy_within(at + 1..occupied, at);
        self.rest_node.copy_within(at + 1..occupied, at);
        self.commits.copy_within(at + 1..occupied, at);
        self.short[occupied - 1] = 0;
    }

    /// Drops slot `at` of the `occupied` first and appends `tag` at `commit`, which is at or
    /// after every other commit of the bucket (the common case: commits arrive in order).
    #[inline(always)]
    fn shift_in_newest(&mut self, at: usize, occupied: usize, tag: Tag, commit: Timestamp) {
        if at == 0 && occupied == SLOTS {
            // A full bucket's oldest makes room, the steady state of a full table: moves of a
            // fixed length, a few vector instructions instead of three `memmove` calls.
            self.short.copy_within(1.., 0);
            self.rest_node.copy_within(1.., 0);
            self.commits.copy_within(1.., 0);
        } else {
            self.short.copy_within(at + 1..occupied, at);
            self.rest_node.copy_within(at + 1..occupied, at);
            self.commits.copy_within(at + 1..occupied, at);
        }
        self.short[occupied - 1] = tag.short;
        self.rest_node[occupied - 1] = tag.rest << 16 | u32::from(commit.node());
        self.commits[occupied - 1] = commit.packed();
    }

    /// Replaces slot `at` of the `occupied` first by `tag` at `commit`, keeping commit order.
    #[inline(always)]
    fn move_to(&mut self, at: usize, occupied: usize, tag: Tag, commit: Timestamp) {
        if self.commit(occupied - 1) <= commit {
            self.shift_in_newest(at, occupied, tag, commit);
        } else {
            self.remove(at, occupied);
            self.insert(occupied - 1, tag, commit);
        }
    }

    /// Inserts `tag` at `commit` in commit order among the `occupied` first slots (fewer than
    /// [`SLOTS`]); commits mostly arrive in order, so the search starts from the newest.
    fn insert(&mut self, occupied: usize, tag: Tag, commit: Timestamp) {
        let mut at = occupied;
        while at > 0 && self.commit(at - 1) > commit {
            at -= 1;
        }
        // Commits mostly arrive in order: the new one goes last, and nothing moves.
        if at < occupied {
            self.short.copy_within(at..occupied, at + 1);
            self.rest_node.copy_within(at..occupied, at + 1);
            self.commits.copy_within(at..occupied, at + 1);
        }
        self.short[at] = tag.short;
        self.rest_node[at] = tag.rest << 16 | u32::from(commit.node());
        self.commits[at] = commit.packed();
    }
}

/// A key hash's 48-bit tag: `short` is never zero.
#[derive(Clone, Copy)]
struct Tag {
    short: u32,
    rest: u32,
}

/// Where a key hash lives: its two candidate buckets and its tag.
#[derive(Clone, Copy)]
struct Place {
    first: usize,
    second: usize,
    tag: Tag,
}

/// `value * range / 2^64`: a uniform index in `0..range` from a uniform 64-bit value.
fn reduce(value: u64, range: usize) -> usize {
    ((u128::from(value) * range as u128) >> 64) as usize
}

/// A second, independent-looking 64-bit value from the hash: one multiplication by 2^64 / phi
/// (Fibonacci hashing), whose high bits depend on every bit of the hash.
#[inline(always)]
fn remix(x: u64) -> u64 {
    x.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

pub struct KeyTable {
    buckets: ZeroedArray<Bucket>,
    max_keys: usize,
    len: usize,
}

impl KeyTable {
    /// A table for `max_keys` keys (at least 1), allocated and zeroed now (on huge pages where
    /// the system offers them, see `zeroed.rs`).
    pub fn new(max_keys: usize) -> Result<Self, AllocationError> {
        let count = max_keys.max(1).div_ceil(SLOTS);
        Ok(Self {
            buckets: ZeroedArray::new(count)?,
            max_keys: max_keys.max(1),
            len: 0,
        })
    }

    /// Faults the whole table in now (see [`ZeroedArray::prefault`]).
    pub fn prefault(&mut self) {
        self.buckets.prefault();
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is larger than [`LARGE_TABLE_BYTES`]: the second prefetch steps
    /// (`prefetch_slot`, `prefetch_record`) pay only for a table that misses the cache.
    #[inline(always)]
    pub fn is_large(&self) -> bool {
        self.memory_bytes() > LARGE_TABLE_BYTES
    }

    /// Bytes of the table (fixed at creation).
    pub fn memory_bytes(&self) -> usize {
        self.buckets.len() * size_of::<Bucket>()
    }

    /// Bucket `index`, which `place` made (below the bucket count).
    #[inline(always)]
    fn bucket(&self, index: usize) -> &Bucket {
        debug_assert!(index < self.buckets.len());
        // SAFETY: every index comes from `place`, whose `reduce(_, count)` is below `count`, the
        // number of buckets (fixed at creation).
        unsafe { self.buckets.get_unchecked(index) }
    }

    /// Bucket `index` to change (see [`Self::bucket`]).
    #[inline(always)]
    fn bucket_mut(&mut self, index: usize) -> &mut Bucket {
        debug_assert!(index < self.buckets.len());
        // SAFETY: as in `bucket`.
        unsafe { self.buckets.get_unchecked_mut(index) }
    }

    #[inline(always)]
    fn place(&self, hash: u64) -> Place {
        let count = self.buckets.len();
        Place {
            first: reduce(hash, count),
            second: reduce(remix(hash), count),
            // The hash's low 48 bits (the bucket indices come from its high bits and the remix),
            // with one bit forced so that no short tag is zero.
            tag: Tag {
                short: hash as u32 | 1,
                rest: (hash >> 32) as u32 & 0xffff,
            },
        }
    }

    /// Asks the CPU to start loading `hash`'s two buckets (a no-op where unsupported): issued a
    /// few keys ahead, the cache misses of a batch overlap instead of following one another.
    /// Only the short tags' line, what a check reads first (a record prefetches in its own two
    /// steps: [`Self::prefetch_record_choice`], [`Self::prefetch_record`]).
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let place = self.place(hash);
            for index in [place.first, place.second] {
                let line = std::ptr::from_ref(self.bucket(index)).cast::<i8>();
                // SAFETY: SSE is part of every x86_64 target, and a prefetch only hints the cache
                // (it never faults); the address is the bucket's own.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(line) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// The second step of a check's prefetch: once `hash`'s short-tag lines are loaded (by an
    /// earlier [`Self::prefetch`]), starts loading the lines of the slot whose short tag matches,
    /// if any. Without it, a check of a remembered key waits for those lines after the tags.
    /// Returns whether a candidate holds a matching short tag: when none does, the table does
    /// not hold `hash` (its lookup, [`Self::get`], would find nothing).
    #[inline]
    pub fn prefetch_slot(&self, hash: u64) -> bool {
        let place = self.place(hash);
        for index in [place.first, place.second] {
            let bucket = self.bucket(index);
            let matching = bucket.scan(place.tag.short).matching;
            if matching != 0 {
                #[cfg(target_arch = "x86_64")]
                {
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    let at = matching.trailing_zeros() as usize;
                    for line in [
                        std::ptr::from_ref(&bucket.rest_node[at]).cast::<i8>(),
                        std::ptr::from_ref(&bucket.commits[at]).cast::<i8>(),
                    ] {
                        // SAFETY: SSE is part of every x86_64 target; a prefetch only hints the
                        // cache (it never faults), and the addresses are in the bucket anyway.
                        unsafe { _mm_prefetch::<_MM_HINT_T0>(line) };
                    }
                }
                return true;
            }
        }
        false
    }

    /// The first step of a record's prefetch: the short-tag line and the line of the eight oldest
    /// commits (the third) of both candidate buckets, all [`Self::prefetch_record`] reads to
    /// choose the bucket the record changes.
    #[inline]
    pub fn prefetch_record_choice(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let place = self.place(hash);
            for index in [place.first, place.second] {
                let line = std::ptr::from_ref(self.bucket(index)).cast::<i8>();
                // SAFETY: SSE is part of every x86_64 target, and a prefetch only hints the cache
                // (it never faults); both addresses are inside the bucket anyway.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(line);
                    _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(128));
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// The second step of a record's prefetch: once the lines of the first step are loaded (by an
    /// earlier [`Self::prefetch_record_choice`]), starts loading the other lines of the one
    /// bucket the record will change: the one that holds its tag, else the one [`Self::home`]
    /// chooses (the other candidate's node and newer commits are never read).
    #[inline]
    pub fn prefetch_record(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let place = self.place(hash);
            let candidates = [place.first, place.second];
            let bucket = |n: usize| self.bucket(candidates[n]);
            let matching = [0, 1].map(|n| bucket(n).scan(place.tag.short).matching);
            let changed = match matching.iter().position(|&bits| bits != 0) {
                Some(n) => n,
                // A full table (the steady state) needs no slot counts: a candidate is occupied
                // when its first slot is.
                None if self.len >= self.max_keys => {
                    self.older(candidates, [0, 1].map(|n| bucket(n).short[0] != 0))
                }
                None => {
                    let occupied = [0, 1].map(|n| bucket(n).scan(place.tag.short).occupied());
                    self.home(candidates, occupied).0
                }
            };
            let line = std::ptr::from_ref(self.bucket(candidates[changed])).cast::<i8>();
            // SAFETY: SSE is part of every x86_64 target; a prefetch only hints the cache (it
            // never faults), and the addresses are in the bucket anyway.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(64));
                _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(128));
                _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(192));
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// Which candidate (0 or 1) takes a key neither holds, given their `occupied` slot counts, and
    /// whether it evicts: while fewer than `max_keys` keys are remembered and it has room, the
    /// emptier; otherwise the occupied one whose oldest commit (its first slot) is older, the
    /// first when their `(physical, logical)` are equal. Reads the candidates' short-tag lines
    /// and the line of their oldest commits, not their nodes (in another line).
    #[inline(always)]
    fn home(&self, candidates: [usize; 2], occupied: [usize; 2]) -> (usize, bool) {
        let emptier = usize::from(occupied[1] < occupied[0]);
        if self.len < self.max_keys && occupied[emptier] < SLOTS {
            return (emptier, false);
        }
        // When the table is full at most 15 of its slots are empty, so a candidate is occupied.
        (
            self.older(candidates, occupied.map(|count| count > 0)),
            true,
        )
    }

    /// Of the `occupied` candidates (at least one), the one whose oldest commit (its first slot)
    /// is older, the first when their `(physical, logical)` are equal.
    #[inline(always)]
    fn older(&self, candidates: [usize; 2], occupied: [bool; 2]) -> usize {
        let oldest = |n: usize| self.bucket(candidates[n]).commits[0];
        usize::from(!occupied[0] || occupied[1] && oldest(1) < oldest(0))
    }

    /// The commit remembered for `hash`, if any.
    #[inline]
    pub fn get(&self, hash: u64) -> Option<Timestamp> {
        let place = self.place(hash);
        [place.first, place.second].into_iter().find_map(|index| {
            let bucket = self.bucket(index);
            let scan = bucket.scan(place.tag.short);
            bucket
                .find(place.tag, scan.matching)
                .map(|at| bucket.commit(at))
        })
    }

    /// Remembers `commit` for `hash` (a key's commit only moves forward). Returns the commit it
    /// evicted to make room, if it did.
    pub fn record(&mut self, hash: u64, commit: Timestamp) -> Option<Timestamp> {
        let place = self.place(hash);
        let candidates = [place.first, place.second];
        let mut occupied = [0; 2];
        for (n, index) in candidates.into_iter().enumerate() {
            let bucket = self.bucket_mut(index);
            let scan = bucket.scan(place.tag.short);
            if let Some(at) = bucket.find(place.tag, scan.matching) {
                if bucket.commit(at) < commit {
                    bucket.move_to(at, scan.occupied(), place.tag, commit);
                }
                return None;
            }
            occupied[n] = scan.occupied();
        }
        let (home, evicts) = self.home(candidates, occupied);
        let bucket = self.bucket_mut(candidates[home]);
        if !evicts {
            bucket.insert(occupied[home], place.tag, commit);
            self.len += 1;
            return None;
        }
        // The oldest commit of the bucket (its first slot) makes room.
        let evicted = bucket.commit(0);
        bucket.move_to(0, occupied[home], place.tag, commit);
        Some(evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conflict::key_hash;

    fn ts(packed: u64) -> Timestamp {
        Timestamp::from_packed(packed, 0)
    }

    #[test]
    fn a_bucket_is_four_cache_lines_and_a_slot_16_bytes() {
        assert_eq!(size_of::<Bucket>(), 256);
        assert_eq!(size_of::<Bucket>() / SLOTS, 16);
        assert_eq!(align_of::<Bucket>(), 256);
    }

    #[test]
    fn at_most_32_bytes_per_key_from_8_keys_and_16_at_multiples_of_16() {
        for max_keys in (8..2_000).chain([1_000_000, 1_000_001]) {
            let table = KeyTable::new(max_keys).unwrap();
            assert!(table.memory_bytes() <= 32 * max_keys, "{max_keys}");
            if max_keys % SLOTS == 0 {
                assert_eq!(table.memory_bytes(), 16 * max_keys);
            }
        }
        assert_eq!(KeyTable::new(1).unwrap().memory_bytes(), 256);
    }

    #[test]
    fn a_key_moves_only_forward_and_is_found_again() {
        let mut table = KeyTable::new(100).unwrap();
        let h = key_hash(b"k");
        assert_eq!(table.get(h), None);
        assert_eq!(table.record(h, ts(10)), None);
        assert_eq!(table.record(h, ts(5)), None);
        assert_eq!(table.get(h), Some(ts(10)));
        table.record(h, Timestamp::from_packed(10, 7));
        assert_eq!(table.get(h), Some(Timestamp::from_packed(10, 7)));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn when_full_the_oldest_candidate_is_evicted_and_returned() {
        let mut table = KeyTable::new(3).unwrap();
        for (n, key) in [b"a", b"b", b"c"].iter().enumerate() {
            assert_eq!(table.record(key_hash(*key), ts(10 + n as u64)), None);
        }
        // One bucket: every key's candidates are the whole table.
        assert_eq!(table.record(key_hash(b"d"), ts(20)), Some(ts(10)));
        assert_eq!(table.get(key_hash(b"a")), None);
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn a_full_table_evicts_old_commits_only() {
        // Rounds of 80,000 new keys into 200,000 (the proportion of the commit benchmark's rounds
        // to the default table): no commit of the running round is evicted (which would refuse
        // the round's transactions as too old).
        let max_keys = 200_000;
        let mut table = KeyTable::new(max_keys).unwrap();
        let mut commit = 0u64;
        for round in 0..8 {
            let round_start = commit;
            let mut newest_evicted = None;
            for _ in 0..80_000 {
                commit += 1;
                let hash = key_hash(&commit.to_le_bytes());
                newest_evicted = newest_evicted.max(table.record(hash, ts(commit)));
            }
            if let Some(evicted) = newest_evicted {
                assert!(
                    evicted < ts(round_start),
                    "round {round}: evicted {evicted}"
                );
            }
            assert!(table.len() <= max_keys);
        }
        assert_eq!(table.len(), max_keys);
    }

    #[test]
    fn a_full_table_evicts_the_older_of_the_two_candidates() {
        // After a fill in commit order, each eviction gives up the older of the two candidate
        // buckets' oldest commits (keys whose two candidates are one bucket included).
        let max_keys = 64;
        let mut table = KeyTable::new(max_keys).unwrap();
        let mut n = 0u64;
        while table.len() < max_keys {
            n += 1;
            table.record(key_hash(&n.to_le_bytes()), ts(n));
        }
        for _ in 0..1_000 {
            n += 1;
            let hash = key_hash(&n.to_le_bytes());
            let place = table.place(hash);
            let oldest = [place.first, place.second]
                .map(|index| table.bucket(index).commit(0))
                .into_iter()
                .min();
            assert_eq!(table.record(hash, ts(n)), oldest);
        }
    }

    #[test]
    fn every_recorded_key_is_found_or_its_commit_evicted() {
        let mut table = KeyTable::new(50).unwrap();
        let mut evicted_max = None;
        let mut recorded = Vec::new();
        for n in 1..500u64 {
            let key = (n * 7919 % 97).to_le_bytes();
            let hash = key_hash(&key);
            evicted_max = evicted_max.max(table.record(hash, ts(n)));
            recorded.push((hash, n));
        }
        // The newest commit of each key is remembered, or at or below the newest eviction.
        let mut newest = std::collections::HashMap::new();
        for (hash, n) in recorded {
            newest.insert(hash, n);
        }
        for (hash, n) in newest {
            match table.get(hash) {
                Some(found) => assert_eq!(found, ts(n)),
                None => assert!(Some(ts(n)) <= evicted_max),
            }
        }
        assert!(table.len() <= 50);
    }
}
