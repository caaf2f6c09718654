//! Taking over while the decision history loads (durability `External`).
//!
//! A new clustered leader serves as soon as its window is saved; the decisions of earlier
//! leaders (the pieces in etcd) replay in the background, newest first. Until they all have,
//! the engine decides a request only when no piece still to load can hold its decision:
//!
//! * a commit of a transaction whose start `S` is above `B`, the bound on the readings of the
//!   pieces not loaded yet, unless its id was aborted by id before (`aborted_ids`, loaded before
//!   the leader serves);
//! * an abort by id that names the transaction's start `S` (optional on the wire), by the same
//!   rule as a commit with that start;
//! * a resubmission the decisions index already answers (decided in this term, or replayed).
//!
//! `B` starts at the low watermark `W` (the previous leader's window limit) and falls to the
//! reading of each version-3 piece replayed ([`CommitEngine::history_piece_loaded`]); a piece of
//! version 1 or 2 records no reading and leaves `B` where it was. Every other request (a commit
//! or an abort that started at or below `B`, an abort by id that names no start, a request about
//! an id in `aborted_ids`) waits:
//! [`CommitEngine::needs_history`] tells the scheduler which to hold (and, as `B` falls, which to
//! release), and `triage` refuses them (a retryable refusal, nothing decided) should one reach it
//! anyway. `B` only falls, so a request released once stays decidable.
//!
//! Why a piece still to load holds no decision about a transaction `T` that started above `B`:
//! - every stored decision about `T` has its start at or below the reading of its piece (the
//!   clock's `last` once the batch was decided: a commit's timestamp is above its start and
//!   came from that clock; the engine moves its clock past the start of every transaction it
//!   decides, aborted ones too, see `take_timestamps`; a too-old abort started at or below that
//!   leader's low watermark, below its clock);
//! - readings never decrease in key order (`piece.rs`), pieces load in descending key order, so
//!   every piece not loaded yet reads at or below each loaded one's reading;
//! - and no reading is above `W`: no leader's clock passes its saved window, and `W` is the
//!   newest saved window limit. So before any piece loads, and whatever the pieces' versions,
//!   every piece not loaded reads at or below `B`, and `T`, with `S > B`, is in none of them.
//! - an abort by id records no start timestamp, and the engine does not move its clock past a
//!   start an abort names: hence `aborted_ids` (every id a stored piece aborts by id, its own
//!   etcd key), so an abort by id decided in any term holds back later requests about its id.
//!
//! The start an abort (or a status query, in the scheduler) names is the caller's word, as a
//! commit's is: the history is searched for the transaction's decision only as far down as
//! that start. A start above the transaction's real one can let a new leader decide the abort
//! before the piece holding an earlier commit of it is loaded: the id then has two decisions,
//! the index answers the abort (replayed decisions replace none) while the client that
//! committed was told "committed". A start below the real one only waits longer. So a caller
//! names the start it took for that transaction, or none (the abort then waits for the whole
//! history, as before); a participant that does not know the start must name none.
//!
//! So when every piece with a reading at or above `S` is loaded and the index does not know
//! `T`, `T` was never decided: it is decided now (a start at or below `W` aborts as too old,
//! Apache Omid's rule). Pieces replay newest first, each one's decisions in front of (older
//! than) those replayed before it: the index forgets the oldest first, this term's last.
//! Replayed decisions never replace one already there (no id is stored twice: a decided id is
//! answered from the index, never decided again).

use std::collections::HashSet;

use crate::commit::{CommitEngine, Request};
use crate::conflict::TxnId;
use crate::timestamp::Timestamp;

/// What a leader knows while its history loads.
pub struct HistoryLoad {
    /// `B`: every piece not loaded yet reads at or below it (`None`: unknown, no window saved).
    unloaded_through: Option<Timestamp>,
    aborted_ids: HashSet<TxnId, foldhash::fast::RandomState>,
}

impl CommitEngine {
    /// From now until [`Self::end_history_load`], only requests no piece still to load can be
    /// about are decided (see the module documentation), and pieces replay newest first.
    /// `low_watermark`: the previous leader's window limit (also raised in the conflict
    /// detector); `None`: no leader saved a window, so every request that is not already
    /// answered waits until a version-3 piece has loaded.
    pub fn begin_history_load(
        &mut self,
        low_watermark: Option<Timestamp>,
        aborted_ids: impl IntoIterator<Item = TxnId>,
    ) {
        if let Some(ts) = low_watermark {
            self.detector.raise_low_watermark(ts);
        }
        self.history = Some(HistoryLoad {
            unloaded_through: low_watermark,
            aborted_ids: aborted_ids.into_iter().collect(),
        });
        self.decisions.set_replay_newest_first(true);
    }

    /// A piece recording `reading` (`None`: version 1 or 2) is replayed: every piece still to
    /// load reads at or below it (the module documentation), so starts above it are decided.
    pub fn history_piece_loaded(&mut self, reading: Option<Timestamp>) {
        if let (Some(history), Some(reading)) = (&mut self.history, reading) {
            history.unloaded_through = Some(
                history
                    .unloaded_through
                    .map_or(reading, |bound| bound.min(reading)),
            );
        }
    }

    /// `B` while the history loads: starts above it are decided (None: loaded, or unknown).
    pub fn history_unloaded_through(&self) -> Option<Timestamp> {
        self.history.as_ref().and_then(|h| h.unloaded_through)
    }

    /// The history is replayed: every request is decided again.
    pub fn end_history_load(&mut self) {
        self.history = None;
        self.decisions.set_replay_newest_first(false);
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
        let start = match request {
            Request::Commit(txn) => txn.start_ts,
            Request::Abort(_, Some(start)) => *start,
            Request::Abort(_, None) => return true,
        };
        history.held_at(txn_id, start)
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
        match start_ts {
            Some(start) => history.held_at(txn_id, start),
            // malformed: refused without a decision (unless its id was aborted by id)
            None => history.aborted_ids.contains(&txn_id),
        }
    }
}

impl HistoryLoad {
    /// Whether a piece still to load may hold a decision about `txn_id`, which started at
    /// `start` (the caller's word): its id was aborted by id, or `start` is at or below `B`.
    fn held_at(&self, txn_id: TxnId, start: Timestamp) -> bool {
        self.aborted_ids.contains(&txn_id)
            || self.unloaded_through.is_none_or(|bound| start <= bound)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::commit::{
        AbortReason, CommitEngine, Durability, EngineConfig, Outcome, Request, SubmitError,
    };
    use crate::conflict::{ConflictKind, Transaction};
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
            &[Request::Commit(&committed), Request::Abort(2, None)],
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
            Request::Abort(1, None),
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

        // The history replays (newest first) behind this term's decisions, replacing none.
        for (seq, piece) in pieces.drain(..).chain(more.clone()).rev() {
            new.replay_piece(&new_clock, seq, &piece).unwrap();
        }
        new.end_history_load();
        assert_eq!(new.status(10), Some(fresh_outcome));
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
    fn an_abort_naming_its_start_waits_only_as_a_commit_with_that_start_would() {
        let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
        let old_clock = clock_at(&physical, 1, None);
        let mut old = engine(&old_clock);
        let old_start = old_clock.now().unwrap();
        let committed = txn(1, old_start, "a");
        let (_, pieces) = decide_all(&mut old, &old_clock, &[Request::Commit(&committed)]);
        let reading = crate::commit::piece::reading(&pieces[0].1)
            .unwrap()
            .unwrap();
        let window_limit = Timestamp::new(2_000_000, 0, 0).unwrap();

        physical.set(2_100_000).unwrap();
        let new_clock = clock_at(&physical, 3, None);
        new_clock.raise_floor(window_limit);
        let mut new = engine(&new_clock);
        new.begin_history_load(Some(window_limit), [7]);
        let fresh_start = new_clock.now().unwrap();
        // Held: no start; a start at or below the bound (the window limit, then each reading);
        // an id aborted by id before, whatever its start.
        for held in [
            Request::Abort(1, None),
            Request::Abort(1, Some(old_start)),
            Request::Abort(5, Some(window_limit)),
            Request::Abort(7, Some(fresh_start)),
        ] {
            assert!(new.needs_history(&held));
        }
        assert!(!new.needs_history(&Request::Abort(9, Some(fresh_start))));
        let (answers, _) = decide_all(
            &mut new,
            &new_clock,
            &[
                Request::Abort(9, Some(fresh_start)),
                Request::Abort(1, Some(old_start)),
            ],
        );
        assert_eq!(answers[0], Ok(Outcome::Aborted(AbortReason::Requested)));
        assert!(matches!(answers[1], Err(SubmitError::Log(ref m)) if m.contains("history")));

        // The piece loads: the bound falls to its reading. A start between the reading and
        // the window limit is free; the committed id is answered from the index, with its
        // commit (an abort never overrides a decision).
        for (seq, piece) in pieces.iter().rev() {
            new.replay_piece(&new_clock, *seq, piece).unwrap();
        }
        assert_eq!(new.history_unloaded_through(), Some(reading));
        assert!(!new.needs_history(&Request::Abort(5, Some(window_limit))));
        assert!(new.needs_history(&Request::Abort(6, Some(reading))));
        assert!(new.needs_history(&Request::Abort(6, None)));
        let (answers, _) = decide_all(
            &mut new,
            &new_clock,
            &[
                Request::Abort(1, Some(old_start)),
                Request::Abort(5, Some(window_limit)),
            ],
        );
        assert!(matches!(answers[0], Ok(Outcome::Committed(ts)) if ts < window_limit));
        assert_eq!(answers[1], Ok(Outcome::Aborted(AbortReason::Requested)));
    }

    /// An old leader's history: `batches` batches of 20 commits on colliding keys (starts two
    /// batches old, so some lose to earlier commits), a start taken and never submitted beside
    /// each (a caller's call in flight when the leader died), and the pieces.
    struct OldHistory {
        decided: Vec<(Transaction, Outcome)>,
        undecided: Vec<Transaction>,
        pieces: Vec<(u64, Vec<u8>)>,
    }

    fn old_history(
        physical: &Arc<ManualClock>,
        clock: &Clock,
        first_id: u64,
        first_batch_seq: u64,
        batches: u64,
    ) -> OldHistory {
        let mut config = EngineConfig::new(Durability::External, None);
        config.first_batch_seq = first_batch_seq;
        let mut old = CommitEngine::open(config, clock).unwrap().0;
        let mut history = OldHistory {
            decided: Vec::new(),
            undecided: Vec::new(),
            pieces: Vec::new(),
        };
        let mut starts = Vec::new();
        let mut next_id = first_id;
        for batch in 0..batches {
            starts.push(clock.now().unwrap());
            let start = starts[starts.len().saturating_sub(3)];
            let txns: Vec<Transaction> = (0..20)
                .map(|i| {
                    next_id += 1;
                    txn(next_id, start, &format!("k{}", (batch * 20 + i) % 37))
                })
                .collect();
            next_id += 1;
            history
                .undecided
                .push(txn(next_id, clock.now().unwrap(), "u"));
            let requests: Vec<Request<'_>> = txns.iter().map(Request::Commit).collect();
            let (answers, pieces) = decide_all(&mut old, clock, &requests);
            for (t, answer) in txns.into_iter().zip(answers) {
                history.decided.push((t, answer.unwrap()));
            }
            history.pieces.extend(pieces);
            physical.advance(100).unwrap();
        }
        history
    }

    /// Replays `pieces` newest first while `new`'s history loads; before each piece, no stored
    /// decision's transaction is decidable unless the index answers it, and each undecided start
    /// is decidable exactly when it is above the pieces still to load. Returns, for each piece
    /// loaded, how many undecided starts were then decidable.
    fn load_newest_first(
        new: &mut CommitEngine,
        clock: &Clock,
        pieces: &[(u64, Vec<u8>)],
        decided: &[(Transaction, Outcome)],
        undecided: &[Transaction],
    ) -> Vec<usize> {
        let mut released = Vec::new();
        for (at, (seq, piece)) in pieces.iter().enumerate().rev() {
            for (t, outcome) in decided {
                if !new.needs_history(&Request::Commit(t)) {
                    assert_eq!(new.status(t.id).as_ref(), Some(outcome), "txn {}", t.id);
                }
            }
            let unloaded_max = pieces[..=at]
                .iter()
                .filter_map(|(_, p)| crate::commit::piece::reading(p).unwrap())
                .max();
            let free = undecided
                .iter()
                .filter(|t| !new.needs_history(&Request::Commit(t)))
                .inspect(|t| assert!(unloaded_max.is_none_or(|r| t.start_ts > r)))
                .count();
            released.push(free);
            new.replay_piece(clock, *seq, piece).unwrap();
        }
        released
    }

    #[test]
    fn a_large_history_loads_newest_first_and_releases_each_start_once_it_cannot_be_held() {
        let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
        let old_clock = clock_at(&physical, 1, None);
        let history = old_history(&physical, &old_clock, 0, 1, 300);
        assert_eq!(history.pieces.len(), 300);
        assert!(history
            .decided
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Aborted(_))));
        // A call started after the last batch, in flight when the leader died.
        let late = txn(1 << 40, old_clock.now().unwrap(), "late");
        let window_limit = Timestamp::new(old_clock.last().physical() + 1_000, 0, 0).unwrap();

        physical.advance(5_000).unwrap();
        let new_clock = clock_at(&physical, 3, None);
        new_clock.raise_floor(window_limit);
        let mut new = engine(&new_clock);
        new.begin_history_load(Some(window_limit), []);
        assert!(new.needs_history(&Request::Commit(&late)));
        let mut undecided = history.undecided.clone();
        undecided.push(late.clone());
        let released = load_newest_first(
            &mut new,
            &new_clock,
            &history.pieces,
            &history.decided,
            &undecided,
        );
        // Nothing before the first piece; the late start after it; then one more start per
        // piece (each taken just before the batch after it decided): all but the two below the
        // two oldest pieces' readings before the last piece loads.
        assert_eq!(released[..3], [0, 1, 2]);
        assert!(released.windows(2).all(|w| w[0] + 1 == w[1]));
        assert_eq!(*released.last().unwrap(), undecided.len() - 2);

        // Decided mid-load: the late call is too old (it started below the window limit).
        let mut new = engine(&new_clock);
        new.begin_history_load(Some(window_limit), []);
        let (seq, piece) = history.pieces.last().unwrap();
        new.replay_piece(&new_clock, *seq, piece).unwrap();
        assert!(!new.needs_history(&Request::Commit(&late)));
        let (first, _) = history.decided.last().unwrap();
        assert!(new.needs_history(&Request::Commit(&history.decided[0].0)));
        let (answers, _) = decide_all(
            &mut new,
            &new_clock,
            &[Request::Commit(&late), Request::Commit(first)],
        );
        assert!(matches!(
            answers[0],
            Ok(Outcome::Aborted(AbortReason::Conflict(ref c))) if c.kind == ConflictKind::TooOld
        ));
        assert_eq!(answers[1], Ok(history.decided.last().unwrap().1.clone()));
    }

    #[test]
    fn version_2_pieces_of_an_older_term_load_under_the_oldest_reading_loaded() {
        // Rolling upgrade: term 1 ran the release before (version-2 pieces, no reading), term 2
        // this one; term 3 loads both, newest first.
        let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
        let first_clock = clock_at(&physical, 1, None);
        let mut first = old_history(&physical, &first_clock, 0, 1, 40);
        for (_, piece) in &mut first.pieces {
            *piece = crate::commit::piece::to_version_2(piece);
        }
        let first_limit = Timestamp::new(first_clock.last().physical() + 1_000, 0, 0).unwrap();
        physical.advance(2_000).unwrap();
        let second_clock = clock_at(&physical, 2, None);
        second_clock.raise_floor(first_limit);
        let second = old_history(&physical, &second_clock, 1 << 30, 41, 40);
        let second_limit = Timestamp::new(second_clock.last().physical() + 1_000, 0, 0).unwrap();

        physical.advance(2_000).unwrap();
        let new_clock = clock_at(&physical, 3, None);
        new_clock.raise_floor(second_limit);
        let mut new = engine(&new_clock);
        new.begin_history_load(Some(second_limit), []);
        let pieces: Vec<_> = first.pieces.iter().chain(&second.pieces).cloned().collect();
        let decided: Vec<_> = first
            .decided
            .iter()
            .chain(&second.decided)
            .cloned()
            .collect();
        let undecided: Vec<_> = first
            .undecided
            .iter()
            .chain(&second.undecided)
            .cloned()
            .collect();
        let released = load_newest_first(&mut new, &new_clock, &pieces, &decided, &undecided);
        // While term 1's pieces load, the bound stays at term 2's oldest reading: term 2's
        // starts are free (all but the one below its first piece's reading), term 1's held.
        assert!(released[40..]
            .iter()
            .all(|&n| n == second.undecided.len() - 1));
        assert!(first
            .undecided
            .iter()
            .all(|t| new.needs_history(&Request::Commit(t))));
        new.end_history_load();
        for (t, outcome) in &decided {
            assert_eq!(new.status(t.id).as_ref(), Some(outcome));
        }
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
        for (seq, piece) in pieces.iter().rev() {
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
