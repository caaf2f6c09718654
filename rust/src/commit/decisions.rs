//! The decisions index: the outcome of the most recent `capacity` decided transaction ids, for
//! `status` and idempotent resubmission. Older ids are forgotten oldest first.

use std::collections::{HashMap, VecDeque};

use crate::commit::Outcome;
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

pub struct DecisionIndex {
    // Transaction ids are chosen by clients: a seeded hasher keeps them from forcing collisions.
    map: HashMap<TxnId, Decision, foldhash::fast::RandomState>,
    order: VecDeque<TxnId>,
    capacity: usize,
}

impl DecisionIndex {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::default(),
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

    /// Remembers `decision`; returns the newest `decided_at` of the decisions this forgot.
    pub fn insert(&mut self, id: TxnId, decision: Decision) -> Option<Timestamp> {
        let mut forgotten: Option<Timestamp> = None;
        if self.map.insert(id, decision).is_none() {
            self.order.push_back(id);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    if let Some(gone) = self.map.remove(&old) {
                        forgotten = forgotten.max(Some(gone.decided_at));
                    }
                }
            }
        }
        forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::AbortReason;

    #[test]
    fn keeps_the_newest_capacity_ids() {
        let mut index = DecisionIndex::new(3);
        let mut forgotten = Vec::new();
        for id in 1..=5 {
            forgotten.push(index.insert(
                id,
                Decision {
                    outcome: Outcome::Aborted(AbortReason::Requested),
                    fingerprint: None,
                    decided_at: Timestamp::new(id * 10, 0, 0).unwrap(),
                },
            ));
        }
        assert_eq!(index.len(), 3);
        let at = |us| Some(Timestamp::new(us, 0, 0).unwrap());
        assert_eq!(forgotten, vec![None, None, None, at(10), at(20)]);
        assert!(index.get(2).is_none());
        assert!(index.get(3).is_some() && index.get(5).is_some());
    }
}
