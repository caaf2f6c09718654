//! The decisions index: the outcome of the most recent `capacity` decided transaction ids, for
//! `status` and idempotent resubmission. Older ids are forgotten oldest first. Replayed decisions
//! (a log or a decision history, read after this engine may already have decided some) count as
//! older than every decision taken here: they are forgotten first.

use std::collections::{HashMap, VecDeque};

use crate::commit::{AbortReason, Outcome};
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

pub struct DecisionIndex {
    // Transaction ids are chosen by clients: a seeded hasher keeps them from forcing collisions.
    map: HashMap<TxnId, Decision, foldhash::fast::RandomState>,
    /// Replayed ids, oldest first: all older than `order`'s.
    replayed: VecDeque<TxnId>,
    /// Replay runs newest first (a new leader's history): each replayed id goes in front.
    replay_newest_first: bool,
    /// Ids decided here, in decision order.
    order: VecDeque<TxnId>,
    capacity: usize,
}

impl DecisionIndex {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::default(),
            replayed: VecDeque::new(),
            replay_newest_first: false,
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, id: TxnId) -> Option<&Decision> {
        self.map.get(&id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Remembers `decision`; returns where the low watermark must rise for the decisions this
    /// forgot (see [`Decision::watermark_when_forgotten`]), the clock reading `now`.
    pub fn insert(&mut self, id: TxnId, decision: Decision, now: Timestamp) -> Option<Timestamp> {
        if self.map.insert(id, decision).is_some() {
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
        if self.map.contains_key(&id) {
            return None;
        }
        self.map.insert(id, decision);
        if self.replay_newest_first {
            self.replayed.push_front(id);
        } else {
            self.replayed.push_back(id);
        }
        self.forget_over_capacity(now)
    }

    fn forget_over_capacity(&mut self, now: Timestamp) -> Option<Timestamp> {
        let mut forgotten: Option<Timestamp> = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(us: u64) -> Timestamp {
        Timestamp::new(us, 0, 0).unwrap()
    }

    #[test]
    fn keeps_the_newest_capacity_ids() {
        let mut index = DecisionIndex::new(3);
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
        let mut index = DecisionIndex::new(1);
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
