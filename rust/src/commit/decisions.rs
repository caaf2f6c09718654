//! The decisions index: the outcome of the most recent `capacity` decided transaction ids, for
//! `status` and idempotent resubmission. Older ids are forgotten oldest first. Replayed decisions
//! (a log or a decision history, read after this engine may already have decided some) count as
//! older than every decision taken here: they are forgotten first.
//!
//! Layout: one flat open-addressing table (linear probing, at most half full, deletion by
//! backward shift, so no tombstones and no rehash; allocated zeroed at twice the capacity, on
//! huge pages where offered, like the conflict table) of 32-byte slots: the id,
//! the fingerprint and one timestamp, which is the whole decision of a commit or of an abort by
//! request. A conflict abort (rare, and carrying its conflict's key) keeps its full decision in a
//! side map. A lookup, an insertion and a forgetting touch one cache line each, where a hash map
//! of whole decisions (about 100 bytes each) touched two.

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

/// What a slot holds.
const EMPTY: u8 = 0;
/// `Committed(ts)`, decided at `ts`.
const COMMITTED: u8 = 1;
/// `Aborted(Requested)`, decided at `ts`.
const REQUESTED: u8 = 2;
/// Any other decision: in the side map.
const OTHER: u8 = 3;

/// Ids ahead whose slots are prefetched while the oldest are forgotten.
const FORGET_PREFETCH_AHEAD: usize = 8;

/// A slot as stored: id, fingerprint, timestamp (packed), then node | kind << 16 |
/// has_fingerprint << 24. All zeros is empty, so the table is allocated zeroed (untouched pages
/// cost nothing until used); aligned so that no slot straddles two cache lines.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
struct RawSlot([u64; 4]);

// SAFETY: four integers; all zeros is the empty slot.
unsafe impl Zeroable for RawSlot {}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    id: TxnId,
    fingerprint: u64,
    packed: u64,
    node: u16,
    kind: u8,
    has_fingerprint: bool,
}

impl Slot {
    fn load(&RawSlot(raw): &RawSlot) -> Self {
        Self {
            id: raw[0],
            fingerprint: raw[1],
            packed: raw[2],
            node: raw[3] as u16,
            kind: (raw[3] >> 16) as u8,
            has_fingerprint: (raw[3] >> 24) & 1 == 1,
        }
    }

    fn store(&self) -> RawSlot {
        RawSlot([
            self.id,
            self.fingerprint,
            self.packed,
            u64::from(self.node)
                | u64::from(self.kind) << 16
                | u64::from(self.has_fingerprint) << 24,
        ])
    }

    /// The decision, but for an `OTHER` slot's (in the side map).
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
    /// Power-of-two length, at least twice the capacity: at most half full, never grown.
    slots: ZeroedArray<RawSlot>,
    len: usize,
    /// The full decision of each `OTHER` slot.
    others: HashMap<TxnId, Decision, foldhash::fast::RandomState>,
    // Transaction ids are chosen by clients: a seeded hasher keeps them from forcing collisions.
    hasher: foldhash::fast::RandomState,
    /// Replayed ids, oldest first: all older than `order`'s.
    replayed: VecDeque<TxnId>,
    /// Replay runs newest first (a new leader's history): each replayed id goes in front.
    replay_newest_first: bool,
    /// Ids decided here, in decision order.
    order: VecDeque<TxnId>,
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
        Ok(Self {
            slots: ZeroedArray::new(slots).map_err(|_| IndexTooLarge(capacity))?,
            len: 0,
            others: HashMap::default(),
            hasher: foldhash::fast::RandomState::default(),
            replayed: VecDeque::new(),
            replay_newest_first: false,
            order: VecDeque::new(),
            capacity: capacity.max(1),
        })
    }

    /// Faults the whole table in now (see [`ZeroedArray::prefault`]).
    pub fn prefault(&mut self) {
        self.slots.prefault();
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, id: TxnId) -> usize {
        (self.hasher.hash_one(id) as usize) & self.mask()
    }

    fn kind_at(&self, at: usize) -> u8 {
        (self.slots[at].0[3] >> 16) as u8
    }

    /// Starts loading `id`'s slot into the cache (a lookup of a large index misses it).
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

    /// The slot holding `id`, or the empty slot where it would go.
    fn find(&self, id: TxnId) -> (usize, bool) {
        let mask = self.mask();
        let mut at = self.home(id);
        loop {
            let RawSlot(raw) = &self.slots[at];
            if (raw[3] >> 16) as u8 == EMPTY {
                return (at, false);
            }
            if raw[0] == id {
                return (at, true);
            }
            at = (at + 1) & mask;
        }
    }

    pub fn get(&self, id: TxnId) -> Option<Decision> {
        match self.find(id) {
            (at, true) => Slot::load(&self.slots[at])
                .compact()
                .or_else(|| self.others.get(&id).cloned()),
            (_, false) => None,
        }
    }

    pub fn contains(&self, id: TxnId) -> bool {
        self.find(id).1
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Puts `decision` in `id`'s slot (found or empty); true when the id is new.
    fn put(&mut self, id: TxnId, decision: Decision) -> bool {
        let (at, found) = self.find(id);
        let compact = match decision.outcome {
            Outcome::Committed(ts) if ts == decision.decided_at => COMMITTED,
            Outcome::Aborted(AbortReason::Requested) => REQUESTED,
            _ => OTHER,
        };
        if found && self.kind_at(at) == OTHER {
            self.others.remove(&id);
        }
        self.slots[at] = Slot {
            id,
            fingerprint: decision.fingerprint.unwrap_or(0),
            packed: decision.decided_at.packed(),
            node: decision.decided_at.node(),
            kind: compact,
            has_fingerprint: decision.fingerprint.is_some(),
        }
        .store();
        if compact == OTHER {
            self.others.insert(id, decision);
        }
        if found {
            return false;
        }
        self.len += 1;
        true
    }

    /// Removes `id`; returns where the low watermark must rise for it, the clock reading `now`.
    fn remove(&mut self, id: TxnId, now: Timestamp) -> Option<Timestamp> {
        let (mut hole, found) = self.find(id);
        if !found {
            return None;
        }
        let slot = Slot::load(&self.slots[hole]);
        let watermark = match slot.compact() {
            Some(decision) => Some(decision.watermark_when_forgotten(now)),
            None => self
                .others
                .remove(&id)
                .map(|decision| decision.watermark_when_forgotten(now)),
        };
        self.len -= 1;
        // Backward shift: each later slot of the run that may sit in the hole moves into it.
        let mask = self.mask();
        let mut next = (hole + 1) & mask;
        loop {
            let candidate = self.slots[next];
            if (candidate.0[3] >> 16) as u8 == EMPTY {
                break;
            }
            let home = self.home(candidate.0[0]);
            // The candidate may move back to the hole when the hole lies between its home and
            // where it sits (cyclically).
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.slots[hole] = candidate;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[hole] = RawSlot([0; 4]);
        watermark
    }

    /// Remembers `decision`; returns where the low watermark must rise for the decisions this
    /// forgot (see [`Decision::watermark_when_forgotten`]), the clock reading `now`.
    pub fn insert(&mut self, id: TxnId, decision: Decision, now: Timestamp) -> Option<Timestamp> {
        if !self.put(id, decision) {
            return None;
        }
        self.order.push_back(id);
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
        if self.contains(id) {
            return None;
        }
        self.put(id, decision);
        if self.replay_newest_first {
            self.replayed.push_front(id);
        } else {
            self.replayed.push_back(id);
        }
        self.forget_over_capacity(now)
    }

    fn forget_over_capacity(&mut self, now: Timestamp) -> Option<Timestamp> {
        let mut forgotten: Option<Timestamp> = None;
        while self.len > self.capacity {
            let Some(old) = self.replayed.pop_front().or_else(|| self.order.pop_front()) else {
                break;
            };
            // The oldest are forgotten one per decision: their slots load a few ahead.
            let ahead = match self.replayed.len() {
                0 => self.order.get(FORGET_PREFETCH_AHEAD),
                n => self.replayed.get(FORGET_PREFETCH_AHEAD.min(n - 1)),
            };
            if let Some(&ahead) = ahead {
                self.prefetch(ahead);
            }
            forgotten = forgotten.max(self.remove(old, now));
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
    /// the model: the same answers, the same forgetting, the same watermarks.
    #[test]
    fn the_flat_table_decides_as_the_model() {
        use crate::conflict::{Conflict, ConflictKind, LostTo};
        for capacity in [1, 5, 37, 200] {
            let mut index = DecisionIndex::new(capacity).unwrap();
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
                assert_eq!(got, expected, "capacity {capacity}, step {step}");
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
