//! The decisions index: the outcome of the most recent `capacity` decided transaction ids, for
//! `status` and idempotent resubmission. Older ids are forgotten oldest first. Replayed decisions
//! (a log or a decision history, read after this engine may already have decided some) count as
//! older than every decision taken here: they are forgotten first.
//!
//! Layout: the decisions themselves sit in one FIFO in forgetting order (replayed ones in front,
//! then those taken here), 32 bytes each: the id, the fingerprint and one timestamp, which is the
//! whole decision of a commit or of an abort by request. A conflict abort (rare, and carrying its
//! conflict's key) keeps its full decision in a side map. They are found through a flat
//! open-addressing table (linear probing, at least twice the capacity, allocated zeroed, on huge
//! pages where offered, like the conflict table) of 16-byte slots, four a cache line: the id and
//! its stamp, which places the decision in the FIFO and tells its age.
//!
//! Forgetting a decision taken here touches only the FIFO's front: the oldest stamp still
//! retained rises past it, and a slot whose stamp is below that counts as free (a lookup stops
//! there, an insertion takes it). That is exact because every run of the table is kept in age
//! order: each slot between an id's home and its own holds a newer decision (an insertion takes
//! the first slot of its run holding an older one, which moves on, and so on to a free slot). The
//! oldest decision is thus on no younger decision's path, and forgetting it opens no gap any
//! lookup could stop at. Replayed decisions (stamps in a range of their own, older than every
//! decision taken here) are forgotten by emptying their slot, which the same rule allows.
//!
//! A lookup of an unknown id (every new transaction) and an insertion touch the id's home line
//! (rarely the next); forgetting touches no random line. Memory: the FIFO's 32 bytes and two to
//! four slots of 16 bytes per retained decision, 65.5 bytes at the default 1,000,000 (a 32 MiB
//! table: at 32-byte slots with a forgetting that found and shifted the oldest slot, 64 MiB and
//! a third random line per decision).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;

use crate::commit::{AbortReason, Outcome};
use crate::conflict::zeroed::{Zeroable, ZeroedArray};
use crate::conflict::TxnId;
use crate::timestamp::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// Content fingerprint of the submitted transaction; `None` for an abort by request (no
    /// content was ever seen, so any later submission of the id gets the abort).
    pub fingerprint: Option<u64>,
    /// At or above the start timestamp of the transaction the decision is about: once the
    /// decision is forgotten, transactions starting at or below it are refused as too old, so a
    /// late resubmission can never be decided a second time.
    pub decided_at: Timestamp,
}

impl Decision {
    /// Where the low watermark must stand once this decision is forgotten, the clock reading
    /// `now`: its `decided_at`, except that a requested abort's fence (up to the max offset past
    /// the abort) is taken only as far as `now`, so that forgetting never refuses transactions
    /// that start after it.
    pub fn watermark_when_forgotten(&self, now: Timestamp) -> Timestamp {
        match self.outcome {
            Outcome::Aborted(AbortReason::Requested) => self.decided_at.min(now),
            _ => self.decided_at,
        }
    }
}

/// `Committed(ts)`, decided at `ts`.
const COMMITTED: u8 = 1;
/// `Aborted(Requested)`, decided at `ts`.
const REQUESTED: u8 = 2;
/// Any other decision: in the side map.
const OTHER: u8 = 3;

/// Stamps at or above this are replayed decisions'; below, decisions taken here (from 1, in
/// decision order; 0 is a slot never written). Ranked by `stamp ^ REPLAYED`, every replayed
/// decision is older than every decision taken here.
const REPLAYED: u64 = 1 << 63;

/// The first replayed decision's stamp: room on both sides, for replays newest and oldest first.
const FIRST_REPLAYED: u64 = REPLAYED | 1 << 62;

/// Replayed ids ahead whose slots are prefetched while the oldest are forgotten (emptied).
const FORGET_PREFETCH_AHEAD: usize = 8;

/// A slot of the table: an id and its stamp. All zeros is never written (free), so the table is
/// allocated zeroed (untouched pages cost nothing until used); aligned so that no slot straddles
/// two cache lines.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(16))]
struct Slot {
    id: TxnId,
    stamp: u64,
}

// SAFETY: two integers; all zeros is the free slot.
unsafe impl Zeroable for Slot {}

/// A retained decision in the FIFO.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    id: TxnId,
    fingerprint: u64,
    packed: u64,
    node: u16,
    kind: u8,
    has_fingerprint: bool,
}

impl Entry {
    fn new(id: TxnId, decision: &Decision) -> Self {
        Self {
            id,
            fingerprint: decision.fingerprint.unwrap_or(0),
            packed: decision.decided_at.packed(),
            node: decision.decided_at.node(),
            kind: match decision.outcome {
                Outcome::Committed(ts) if ts == decision.decided_at => COMMITTED,
                Outcome::Aborted(AbortReason::Requested) => REQUESTED,
                _ => OTHER,
            },
            has_fingerprint: decision.fingerprint.is_some(),
        }
    }

    /// The decision, but for an `OTHER` entry's (in the side map).
    fn compact(&self) -> Option<Decision> {
        let ts = Timestamp::from_packed(self.packed, self.node);
        let outcome = match self.kind {
            COMMITTED => Outcome::Committed(ts),
            REQUESTED => Outcome::Aborted(AbortReason::Requested),
            _ => return None,
        };
        Some(Decision {
            outcome,
            fingerprint: self.has_fingerprint.then_some(self.fingerprint),
            decided_at: ts,
        })
    }
}

pub struct DecisionIndex {
    /// Power-of-two length, at least twice the capacity: at most half of it retained, never
    /// grown. Each run in age order (the module's note).
    slots: ZeroedArray<Slot>,
    /// The retained decisions, oldest (the next forgotten) first: `replayed_len` replayed ones,
    /// then those taken here.
    fifo: VecDeque<Entry>,
    replayed_len: usize,
    /// The stamp of the FIFO's first replayed decision (the next ones count up from it).
    replayed_front: u64,
    /// The stamp of the oldest retained decision taken here: every stamp below it (and 0) is
    /// free.
    taken_front: u64,
    /// The full decision of each `OTHER` entry.
    others: HashMap<TxnId, Decision, foldhash::fast::RandomState>,
    // Transaction ids are chosen by clients: a seeded hasher keeps them from forcing collisions.
    hasher: foldhash::fast::RandomState,
    /// Replay runs newest first (a new leader's history): each replayed id goes in front.
    replay_newest_first: bool,
    capacity: usize,
}

/// The table for a capacity cannot be allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexTooLarge(pub usize);

impl fmt::Display for IndexTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retained_decisions {} is too large: its index of about {} bytes cannot be allocated",
            self.0,
            self.0.saturating_mul(64)
        )
    }
}

impl DecisionIndex {
    pub fn new(capacity: usize) -> Result<Self, IndexTooLarge> {
        let slots = capacity
            .max(1)
            .checked_mul(2)
            .and_then(usize::checked_next_power_of_two)
            .ok_or(IndexTooLarge(capacity))?
            .max(8);
        Self::with_slots(capacity, slots)
    }

    /// `slots` (a power of two above `capacity + 1`: an insertion needs a free slot).
    fn with_slots(capacity: usize, slots: usize) -> Result<Self, IndexTooLarge> {
        let too_large = IndexTooLarge(capacity);
        let capacity = capacity.max(1);
        let mut fifo = VecDeque::new();
        // One more than the capacity: an insertion goes in before the oldest is forgotten.
        fifo.try_reserve_exact(capacity.saturating_add(1))
            .map_err(|_| too_large)?;
        Ok(Self {
            slots: ZeroedArray::new(slots).map_err(|_| too_large)?,
            fifo,
            replayed_len: 0,
            replayed_front: FIRST_REPLAYED,
            taken_front: 1,
            others: HashMap::default(),
            hasher: foldhash::fast::RandomState::default(),
            replay_newest_first: false,
            capacity,
        })
    }

    /// Faults the whole table in now (see [`ZeroedArray::prefault`]), and the FIFO's room.
    pub fn prefault(&mut self) {
        self.slots.prefault();
        let retained = self.fifo.len();
        let room = self.fifo.capacity() - retained;
        self.fifo
            .extend(std::iter::repeat_n(Entry::default(), room));
        self.fifo.truncate(retained);
    }

    /// Bytes held for the decisions: the table and the FIFO (the side map's rare conflict aborts
    /// aside).
    pub fn footprint_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
            + self.fifo.capacity() * std::mem::size_of::<Entry>()
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, id: TxnId) -> usize {
        (self.hasher.hash_one(id) as usize) & self.mask()
    }

    /// Whether a slot holding `stamp` is free: never written, or its decision taken here and
    /// forgotten.
    fn free(&self, stamp: u64) -> bool {
        stamp < self.taken_front
    }

    /// Where the decision stamped `stamp` (retained) sits in the FIFO.
    fn position(&self, stamp: u64) -> usize {
        if stamp >= REPLAYED {
            (stamp - self.replayed_front) as usize
        } else {
            self.replayed_len + (stamp - self.taken_front) as usize
        }
    }

    /// Starts loading `id`'s home slot into the cache (a lookup of a large index misses it).
    pub fn prefetch(&self, id: TxnId) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let slot = std::ptr::from_ref(&self.slots[self.home(id)]).cast::<i8>();
            // SAFETY: SSE is part of every x86_64 target, and a prefetch only hints the cache:
            // it never faults, whatever the address (a slot of the table here, within one line).
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(slot);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = id;
    }

    /// The slot holding `id`, if it is retained.
    fn find(&self, id: TxnId) -> Option<usize> {
        self.find_from(id, self.home(id))
    }

    /// [`Self::find`], `id`'s home slot given.
    fn find_from(&self, id: TxnId, home: usize) -> Option<usize> {
        let mask = self.mask();
        let mut at = home;
        loop {
            let slot = self.slots[at];
            if self.free(slot.stamp) {
                return None;
            }
            if slot.id == id {
                return Some(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// The FIFO's entry for the retained id in slot `at`.
    fn entry_at(&self, at: usize) -> &Entry {
        &self.fifo[self.position(self.slots[at].stamp)]
    }

    pub fn get(&self, id: TxnId) -> Option<Decision> {
        let entry = self.entry_at(self.find(id)?);
        entry.compact().or_else(|| self.others.get(&id).cloned())
    }

    pub fn contains(&self, id: TxnId) -> bool {
        self.find(id).is_some()
    }

    pub fn len(&self) -> usize {
        self.fifo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fifo.is_empty()
    }

    /// Puts `id`, new, in the table with `stamp`: its run stays in age order (the module's
    /// note), each older decision moving one place on, to the first free slot.
    fn place(&mut self, id: TxnId, home: usize, stamp: u64) {
        let mask = self.mask();
        let mut carried = Slot { id, stamp };
        let mut at = home;
        loop {
            let here = self.slots[at];
            if self.free(here.stamp) {
                self.slots[at] = carried;
                return;
            }
            if here.stamp ^ REPLAYED < carried.stamp ^ REPLAYED {
                self.slots[at] = carried;
                carried = here;
            }
            at = (at + 1) & mask;
        }
    }

    /// Replaces the decision of a retained id (in slot `at`), keeping its age.
    fn replace(&mut self, at: usize, id: TxnId, decision: Decision) {
        let position = self.position(self.slots[at].stamp);
        let entry = Entry::new(id, &decision);
        if self.fifo[position].kind == OTHER {
            self.others.remove(&id);
        }
        if entry.kind == OTHER {
            self.others.insert(id, decision);
        }
        self.fifo[position] = entry;
    }

    /// Remembers `decision`; returns where the low watermark must rise for the decisions this
    /// forgot (see [`Decision::watermark_when_forgotten`]), the clock reading `now`.
    pub fn insert(&mut self, id: TxnId, decision: Decision, now: Timestamp) -> Option<Timestamp> {
        let home = self.home(id);
        if let Some(at) = self.find_from(id, home) {
            self.replace(at, id, decision);
            return None;
        }
        let stamp = self.taken_front + (self.fifo.len() - self.replayed_len) as u64;
        let entry = Entry::new(id, &decision);
        if entry.kind == OTHER {
            self.others.insert(id, decision);
        }
        self.fifo.push_back(entry);
        self.place(id, home, stamp);
        self.forget_over_capacity(now)
    }

    /// From now on, replayed decisions arrive newest first (`true`) or oldest first.
    pub fn set_replay_newest_first(&mut self, newest_first: bool) {
        self.replay_newest_first = newest_first;
    }

    /// Remembers a replayed decision, older than every one taken here (and, replaying newest
    /// first, than every one replayed before); an id already known keeps its decision.
    pub fn insert_replayed(
        &mut self,
        id: TxnId,
        decision: Decision,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let home = self.home(id);
        if self.find_from(id, home).is_some() {
            return None;
        }
        let entry = Entry::new(id, &decision);
        if entry.kind == OTHER {
            self.others.insert(id, decision);
        }
        let stamp = if self.replay_newest_first {
            self.replayed_front -= 1;
            self.fifo.push_front(entry);
            self.replayed_front
        } else {
            // Behind the replayed ones, in front of those taken here (none, but in a replay
            // after decisions were taken).
            self.fifo.insert(self.replayed_len, entry);
            self.replayed_front + self.replayed_len as u64
        };
        self.replayed_len += 1;
        self.place(id, home, stamp);
        self.forget_over_capacity(now)
    }

    /// Empties the slot of the oldest retained decision, replayed (the module's note: no
    /// decision's path runs through it).
    fn empty_slot_of(&mut self, id: TxnId) {
        if let Some(at) = self.find(id) {
            self.slots[at] = Slot { id: 0, stamp: 0 };
        }
    }

    fn forget_over_capacity(&mut self, now: Timestamp) -> Option<Timestamp> {
        let mut forgotten: Option<Timestamp> = None;
        while self.fifo.len() > self.capacity {
            let Some(oldest) = self.fifo.pop_front() else {
                break;
            };
            if self.replayed_len > 0 {
                // Replayed ones are forgotten by their slot: theirs load a few ahead.
                self.replayed_len -= 1;
                self.replayed_front += 1;
                if let Some(ahead) = self.replayed_len.checked_sub(1) {
                    self.prefetch(self.fifo[ahead.min(FORGET_PREFETCH_AHEAD)].id);
                }
                self.empty_slot_of(oldest.id);
            } else {
                // Taken here: its slot is free from now on, untouched.
                self.taken_front += 1;
            }
            let watermark = match oldest.compact() {
                Some(decision) => Some(decision.watermark_when_forgotten(now)),
                None => self
                    .others
                    .remove(&oldest.id)
                    .map(|decision| decision.watermark_when_forgotten(now)),
            };
            forgotten = forgotten.max(watermark);
        }
        forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(us: u64) -> Timestamp {
        Timestamp::new(us, 0, 0).unwrap()
    }

    /// The index as it was (a hash map of whole decisions and the two orders), as the model.
    struct Model {
        map: HashMap<TxnId, Decision>,
        replayed: VecDeque<TxnId>,
        order: VecDeque<TxnId>,
        capacity: usize,
    }

    impl Model {
        fn forget(&mut self, now: Timestamp) -> Option<Timestamp> {
            let mut forgotten = None;
            while self.map.len() > self.capacity {
                let Some(old) = self.replayed.pop_front().or_else(|| self.order.pop_front()) else {
                    break;
                };
                if let Some(gone) = self.map.remove(&old) {
                    forgotten = forgotten.max(Some(gone.watermark_when_forgotten(now)));
                }
            }
            forgotten
        }
    }

    /// Every kind of decision, new and repeated ids, replays oldest and newest first, against
    /// the model: the same answers, the same forgetting, the same watermarks. Also in crowded
    /// tables (two slots more than the capacity, or fewer than twice it), whose long runs wrap
    /// around and hold forgotten slots between retained ones.
    #[test]
    fn the_flat_table_decides_as_the_model() {
        use crate::conflict::{Conflict, ConflictKind, LostTo};
        let tables = [
            (1, None),
            (5, None),
            (37, None),
            (200, None),
            (6, Some(8)),
            (30, Some(32)),
            (40, Some(64)),
            (250, Some(256)),
        ];
        for (capacity, slots) in tables {
            let mut index = match slots {
                None => DecisionIndex::new(capacity).unwrap(),
                Some(slots) => DecisionIndex::with_slots(capacity, slots).unwrap(),
            };
            let mut model = Model {
                map: HashMap::new(),
                replayed: VecDeque::new(),
                order: VecDeque::new(),
                capacity,
            };
            let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ capacity as u64;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let ids = 3 * capacity as u64 + 10;
            for step in 0..20_000u64 {
                let r = next();
                let id = r % ids;
                let ts = at(1_000 + step);
                let decision = match (r >> 20) % 5 {
                    0 | 1 => Decision {
                        outcome: Outcome::Committed(ts),
                        fingerprint: Some(r >> 8),
                        decided_at: ts,
                    },
                    2 => Decision {
                        outcome: Outcome::Aborted(AbortReason::Requested),
                        fingerprint: None,
                        decided_at: at(5_000 + step),
                    },
                    3 => Decision {
                        outcome: Outcome::Aborted(AbortReason::Conflict(Conflict {
                            txn_id: id,
                            kind: ConflictKind::WriteWrite,
                            key: Some(vec![b'k'; (r % 7) as usize]),
                            lost_to: LostTo::Commit(at(step)),
                        })),
                        fingerprint: Some(r),
                        decided_at: at(step),
                    },
                    _ => Decision {
                        outcome: Outcome::Committed(ts),
                        fingerprint: None,
                        decided_at: at(step), // not the commit timestamp: kept whole
                    },
                };
                let now = at(3_000 + step);
                let (got, expected) = match (r >> 40) % 8 {
                    0 => {
                        let newest_first = r & 1 == 0;
                        index.set_replay_newest_first(newest_first);
                        let got = index.insert_replayed(id, decision.clone(), now);
                        let expected = match model.map.entry(id) {
                            std::collections::hash_map::Entry::Occupied(_) => None,
                            std::collections::hash_map::Entry::Vacant(vacant) => {
                                vacant.insert(decision);
                                if newest_first {
                                    model.replayed.push_front(id);
                                } else {
                                    model.replayed.push_back(id);
                                }
                                model.forget(now)
                            }
                        };
                        (got, expected)
                    }
                    _ => {
                        let got = index.insert(id, decision.clone(), now);
                        let expected = if model.map.insert(id, decision).is_some() {
                            None
                        } else {
                            model.order.push_back(id);
                            model.forget(now)
                        };
                        (got, expected)
                    }
                };
                assert_eq!(
                    got, expected,
                    "capacity {capacity} in {slots:?}, step {step}"
                );
                assert_eq!(index.len(), model.map.len());
                if step % 97 == 0 || capacity <= 5 {
                    for id in 0..ids {
                        assert_eq!(index.get(id), model.map.get(&id).cloned(), "id {id}");
                        assert_eq!(index.contains(id), model.map.contains_key(&id));
                    }
                }
            }
        }
    }

    /// The module's note: 32 bytes of FIFO and two to four 16-byte slots per retained decision,
    /// 65.5 bytes at the default capacity.
    #[test]
    fn memory_per_retained_decision() {
        assert_eq!(std::mem::size_of::<Slot>(), 16);
        assert_eq!(std::mem::size_of::<Entry>(), 32);
        for capacity in [1_000, 1_000_000, 1 << 20] {
            let index = DecisionIndex::new(capacity).unwrap();
            let per_decision = index.footprint_bytes() as f64 / capacity as f64;
            assert!(
                (64.0..=96.1).contains(&per_decision),
                "{capacity}: {per_decision} bytes"
            );
            if capacity == 1_000_000 {
                assert!(per_decision < 65.6, "{per_decision} bytes");
            }
        }
    }

    /// Prefaulting writes the FIFO's room, not its decisions, and grows nothing.
    #[test]
    fn prefault_keeps_the_decisions() {
        let mut index = DecisionIndex::new(100).unwrap();
        let decision = |id| Decision {
            outcome: Outcome::Committed(at(id)),
            fingerprint: Some(id),
            decided_at: at(id),
        };
        for id in 1..=150 {
            index.insert(id, decision(id), at(1_000));
        }
        let footprint = index.footprint_bytes();
        index.prefault();
        assert_eq!(index.footprint_bytes(), footprint);
        assert_eq!(index.len(), 100);
        assert_eq!(index.get(50), None);
        for id in 51..=150 {
            assert_eq!(index.get(id), Some(decision(id)));
        }
        assert_eq!(index.insert(151, decision(151), at(1_000)), Some(at(51)));
    }

    #[test]
    fn keeps_the_newest_capacity_ids() {
        let mut index = DecisionIndex::new(3).unwrap();
        let mut forgotten = Vec::new();
        for id in 1..=5 {
            forgotten.push(index.insert(
                id,
                Decision {
                    outcome: Outcome::Committed(at(id * 10)),
                    fingerprint: Some(id),
                    decided_at: at(id * 10),
                },
                at(1_000),
            ));
        }
        assert_eq!(index.len(), 3);
        assert_eq!(
            forgotten,
            vec![None, None, None, Some(at(10)), Some(at(20))]
        );
        assert!(index.get(2).is_none());
        assert!(index.get(3).is_some() && index.get(5).is_some());
    }

    #[test]
    fn a_requested_abort_fences_only_up_to_the_clock_when_forgotten() {
        let mut index = DecisionIndex::new(1).unwrap();
        let abort = Decision {
            outcome: Outcome::Aborted(AbortReason::Requested),
            fingerprint: None,
            decided_at: at(500),
        };
        let commit = |ts| Decision {
            outcome: Outcome::Committed(at(ts)),
            fingerprint: Some(ts),
            decided_at: at(ts),
        };
        index.insert(1, abort.clone(), at(100));
        // Forgotten before its fence has passed: the watermark goes only as far as the clock.
        assert_eq!(index.insert(2, commit(200), at(200)), Some(at(200)));
        index.insert(3, abort, at(300));
        // Forgotten after: the whole fence.
        assert_eq!(index.insert(4, commit(900), at(900)), Some(at(500)));
    }
}
