//! Taking over while the decision history loads (durability `External`).
//!
//! A new clustered leader serves as soon as its window is saved; the decisions of earlier
//! leaders (the pieces in etcd) replay in the background. Until they have, the engine decides a
//! request only when no stored decision can be about it:
//!
//! * a commit of a transaction that started above the low watermark `W` (the previous leader's
//!   window limit), unless its id was aborted by id before (`aborted_ids`, loaded before the
//!   leader serves);
//! * a resubmission the decisions index already answers (decided in this term, or replayed).
//!
//! Every other request (a commit that started at or below `W`, an abort by id, a commit of an id
//! in `aborted_ids`) waits for the history: [`CommitEngine::needs_history`] tells the scheduler
//! which to hold, and `triage` refuses them (a retryable refusal, nothing decided) should one
//! reach it anyway.
//!
//! Why nothing else can flip: a stored decision about a transaction `T` that started above `W`
//! would be one of
//! - a commit: its timestamp is above `T`'s start, so above `W`; but no leader hands out a
//!   timestamp above its saved window, and `W` is the newest saved window limit;
//! - a conflict abort: `T`'s start is at or below the clock of the leader that decided it (the
//!   engine moves its clock past the start of every transaction it decides, aborted ones too,
//!   see `take_timestamps`), so at or below `W`;
//! - a too-old abort: `T` started at or below that leader's low watermark, at or below `W`;
//! - an abort by id: carries no start timestamp, hence `aborted_ids`.
//!
//! Replayed decisions go into the decisions index behind this term's (they are older: the index
//! forgets them first), and never replace a decision already there.

use std::collections::HashSet;

use crate::commit::{CommitEngine, Request};
use crate::conflict::TxnId;
use crate::timestamp::Timestamp;

/// What a leader knows while its history loads.
pub struct HistoryLoad {
    low_watermark: Option<Timestamp>,
    aborted_ids: HashSet<TxnId, foldhash::fast::RandomState>,
}

impl CommitEngine {
    /// From now until [`Self::end_history_load`], only requests no stored decision can be about
    /// are decided (see the module documentation). `low_watermark`: the previous leader's
    /// window limit (also raised in the conflict detector); `None`: no leader saved a window,
    /// so every request that is not already answered waits.
    pub fn begin_history_load(
        &mut self,
        low_watermark: Option<Timestamp>,
        aborted_ids: impl IntoIterator<Item = TxnId>,
    ) {
        if let Some(ts) = low_watermark {
            self.detector.raise_low_watermark(ts);
        }
        self.history = Some(HistoryLoad {
            low_watermark,
            aborted_ids: aborted_ids.into_iter().collect(),
        });
    }

    /// The history is replayed: every request is decided again.
    pub fn end_history_load(&mut self) {
        self.history = None;
    }

    pub fn history_loading(&self) -> bool {
        self.history.is_some()
    }

    /// Whether `request` must wait for the history (false once it is loaded).
    pub fn needs_history(&self, request: &Request<'_>) -> bool {
        let Some(history) = &self.history else {
            return false;
        };
        let txn_id = request.txn_id();
        if txn_id == 0 || self.decisions.get(txn_id).is_some() {
            return false; // refused as malformed, or answered from the index
        }
        match request {
            Request::Abort(_) => true,
            Request::Commit(txn) => {
                history.aborted_ids.contains(&txn_id)
                    || history
                        .low_watermark
                        .is_none_or(|watermark| txn.start_ts <= watermark)
            }
        }
    }

    /// [`Self::needs_history`] of a commit known only by its id and start timestamp (a
    /// serialized request, looked at before it is queued).
    pub fn needs_history_of(&self, txn_id: TxnId, start_ts: Option<Timestamp>) -> bool {
        let Some(history) = &self.history else {
            return false;
        };
        if txn_id == 0 || self.decisions.get(txn_id).is_some() {
            return false;
        }
        history.aborted_ids.contains(&txn_id)
            || match (start_ts, history.low_watermark) {
                (Some(start), Some(watermark)) => start <= watermark,
                (None, _) => false, // malformed: refused without a decision
                (Some(_), None) => true,
            }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::commit::{
        AbortReason, CommitEngine, Durability, EngineConfig, Outcome, Request, SubmitError,
    };
    use crate::conflict::Transaction;
    use crate::hlc::{Clock, ClockConfig, ManualClock, PhysicalSource};
    use crate::timestamp::Timestamp;

    fn clock_at(physical: &Arc<ManualClock>, node: u16, ceiling: Option<u64>) -> Clock {
        let mut config = ClockConfig::new(node, 500_000);
        config.source = PhysicalSource::Manual(physical.clone());
        config.ceiling_physical = ceiling;
        Clock::new(config)
    }

    fn engine(clock: &Clock) -> CommitEngine {
        CommitEngine::open(EngineConfig::new(Durability::External, None), clock)
            .unwrap()
            .0
    }

    fn txn(id: u64, start: Timestamp, key: &str) -> Transaction {
        Transaction::new(
            id,
            start,
            Vec::<Vec<u8>>::new(),
            vec![key.as_bytes().to_vec()],
            None,
        )
    }

    type Answers = Vec<Result<Outcome, SubmitError>>;

    /// Decides `requests`, confirms every piece; the answers and the pieces.
    fn decide_all(
        engine: &mut CommitEngine,
        clock: &Clock,
        requests: &[Request<'_>],
    ) -> (Answers, Vec<(u64, Vec<u8>)>) {
        let handout = engine.decide(clock, requests);
        let mut answers: Vec<_> = handout
            .released
            .into_iter()
            .flat_map(|r| r.answers)
            .collect();
        for (seq, _) in &handout.pieces {
            for released in engine.confirm(*seq).unwrap() {
                answers.extend(released.answers);
            }
        }
        (answers, handout.pieces)
    }

    #[test]
    fn while_the_history_loads_only_requests_it_cannot_hold_are_decided() {
        let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
        let old_clock = clock_at(&physical, 1, None);
        let mut old = engine(&old_clock);
        let old_start = old_clock.now().unwrap();
        let committed = txn(1, old_start, "a");
        let (answers, mut pieces) = decide_all(
            &mut old,
            &old_clock,
            &[Request::Commit(&committed), Request::Abort(2)],
        );
        assert!(matches!(answers[0], Ok(Outcome::Committed(_))));
        let window_limit = Timestamp::new(2_000_000, 0, 0).unwrap();

        physical.set(2_100_000).unwrap();
        let new_clock = clock_at(&physical, 3, None);
        new_clock.raise_floor(window_limit);
        let mut new = engine(&new_clock);
        new.begin_history_load(Some(window_limit), [2]);
        let fresh_start = new_clock.now().unwrap();
        let fresh = txn(10, fresh_start, "a");
        let late_commit_of_aborted = txn(2, fresh_start, "b");
        let resubmitted = committed.clone();
        assert!(!new.needs_history(&Request::Commit(&fresh)));
        for waits in [
            Request::Commit(&resubmitted),
            Request::Commit(&late_commit_of_aborted),
            Request::Abort(1),
        ] {
            assert!(new.needs_history(&waits));
        }
        let (answers, more) = decide_all(
            &mut new,
            &new_clock,
            &[
                Request::Commit(&fresh),
                Request::Commit(&resubmitted),
                Request::Commit(&late_commit_of_aborted),
            ],
        );
        assert!(matches!(answers[0], Ok(Outcome::Committed(_))));
        assert!(matches!(answers[1], Err(SubmitError::Log(ref m)) if m.contains("history")));
        assert!(matches!(answers[2], Err(SubmitError::Log(ref m)) if m.contains("history")));
        let fresh_outcome = answers[0].clone().unwrap();

        // The history replays behind this term's decisions, replacing none of them.
        for (seq, piece) in pieces.drain(..).chain(more.clone()) {
            new.replay_piece(&new_clock, seq, &piece).unwrap();
        }
        new.end_history_load();
        assert_eq!(new.status(10), Some(&fresh_outcome));
        let (answers, _) = decide_all(
            &mut new,
            &new_clock,
            &[
                Request::Commit(&resubmitted),
                Request::Commit(&late_commit_of_aborted),
            ],
        );
        assert!(matches!(answers[0], Ok(Outcome::Committed(ts)) if ts < window_limit));
        assert_eq!(answers[1], Ok(Outcome::Aborted(AbortReason::Requested)));
    }

    #[test]
    fn replayed_decisions_are_forgotten_before_this_terms() {
        let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
        let old_clock = clock_at(&physical, 1, None);
        let mut old = engine(&old_clock);
        let start = old_clock.now().unwrap();
        let txns: Vec<Transaction> = (1..=3).map(|id| txn(id, start, "k")).collect();
        let requests: Vec<Request<'_>> = txns.iter().map(Request::Commit).collect();
        let (_, pieces) = decide_all(&mut old, &old_clock, &requests);
        let window_limit = Timestamp::new(2_000_000, 0, 0).unwrap();

        physical.set(2_100_000).unwrap();
        let new_clock = clock_at(&physical, 3, None);
        new_clock.raise_floor(window_limit);
        let mut config = EngineConfig::new(Durability::External, None);
        config.retained_decisions = 3;
        let mut new = CommitEngine::open(config, &new_clock).unwrap().0;
        new.begin_history_load(Some(window_limit), []);
        let fresh = txn(10, new_clock.now().unwrap(), "f");
        decide_all(&mut new, &new_clock, &[Request::Commit(&fresh)]);
        for (seq, piece) in &pieces {
            new.replay_piece(&new_clock, *seq, piece).unwrap();
        }
        new.end_history_load();
        // Capacity 3: the oldest replayed decision went, this term's stayed.
        assert!(new.status(10).is_some());
        assert!(new.status(1).is_none());
        assert!(new.status(2).is_some() && new.status(3).is_some());
        // Forgetting it refuses starts at or below it, not this term's.
        let later = txn(11, new_clock.now().unwrap(), "g");
        let (answers, _) = decide_all(&mut new, &new_clock, &[Request::Commit(&later)]);
        assert!(matches!(answers[0], Ok(Outcome::Committed(_))));
    }

    #[test]
    fn an_aborted_start_above_the_ceiling_waits_for_the_window_like_a_commit() {
        // A batch-member abort of a transaction that started past the clock's ceiling must not
        // be decided before the window covers its start (see the module documentation).
        let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
        let clock = clock_at(&physical, 1, Some(1_000_100));
        let mut engine = engine(&clock);
        let now = clock.now().unwrap();
        let ahead = Timestamp::new(1_200_000, 0, 9).unwrap();
        let winner = txn(1, now, "k");
        let loser = txn(2, ahead, "k");
        let (answers, _) = decide_all(
            &mut engine,
            &clock,
            &[Request::Commit(&winner), Request::Commit(&loser)],
        );
        assert!(answers
            .iter()
            .all(|a| matches!(a, Err(SubmitError::Clock(_)))));
        assert_eq!(engine.status(2), None);
        clock.raise_ceiling(2_000_000).unwrap();
        let (answers, _) = decide_all(
            &mut engine,
            &clock,
            &[Request::Commit(&winner), Request::Commit(&loser)],
        );
        assert!(matches!(answers[0], Ok(Outcome::Committed(_))));
        assert!(matches!(answers[1], Ok(Outcome::Aborted(_))));
        assert!(clock.last() > ahead);
    }
}
