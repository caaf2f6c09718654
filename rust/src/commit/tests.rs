//! The batch hot path on a real log: decisions, idempotency, fencing, bad input, recovery.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;
use crate::conflict::{Conflict, ConflictKind, LostTo, Transaction};
use crate::hlc::{Clock, ClockConfig, ManualClock, PhysicalSource};
use crate::timestamp::{Timestamp, MAX_LOGICAL};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "hlc-commit-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn clock_at(physical: &Arc<ManualClock>) -> Clock {
    let mut config = ClockConfig::new(1, 1_000);
    config.source = PhysicalSource::Manual(physical.clone());
    Clock::new(config)
}

fn config(dir: &TempDir) -> EngineConfig {
    let mut config = EngineConfig::new(Durability::Sync, Some(dir.0.clone()));
    config.log_options.segment_size = 4096;
    config
}

fn txn(id: u64, start: Timestamp, reads: &[&str], writes: &[&str]) -> Transaction {
    Transaction::new(id, start, reads.iter(), writes.iter(), None)
}

fn committed(answer: &Result<Outcome, SubmitError>) -> Timestamp {
    match answer {
        Ok(Outcome::Committed(ts)) => *ts,
        other => panic!("expected a commit, got {other:?}"),
    }
}

fn conflict(answer: &Result<Outcome, SubmitError>) -> &Conflict {
    match answer {
        Ok(Outcome::Aborted(AbortReason::Conflict(conflict))) => conflict,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn batch_decides_first_committer_wins_with_increasing_commit_timestamps() {
    let dir = TempDir::new("batch");
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let (mut engine, _) = CommitEngine::open(config(&dir), &clock).unwrap();
    let start = clock.now().unwrap();
    let a = txn(1, start, &[], &["x", "y"]);
    let b = txn(2, start, &[], &["y"]);
    let c = txn(3, start, &["y"], &["z"]);
    let answers = engine.process(
        &clock,
        &[
            Request::Commit(&a),
            Request::Commit(&b),
            Request::Commit(&c),
        ],
    );
    let ts_a = committed(&answers[0]);
    let lost = conflict(&answers[1]);
    assert_eq!(lost.kind, ConflictKind::WriteWrite);
    assert_eq!(lost.key.as_deref(), Some(&b"y"[..]));
    assert_eq!(lost.lost_to, LostTo::BatchMember(1));
    let ts_c = committed(&answers[2]); // snapshot isolation: reads do not conflict
    assert!(ts_a > start && ts_c > ts_a);

    // Against history: a transaction that started before `a` committed loses to it.
    let d = txn(4, start, &[], &["x"]);
    let later = clock.now().unwrap();
    let e = txn(5, later, &[], &["x"]);
    let answers = engine.process(&clock, &[Request::Commit(&d), Request::Commit(&e)]);
    assert_eq!(conflict(&answers[0]).lost_to, LostTo::Commit(ts_a));
    assert!(committed(&answers[1]) > ts_c);
    assert_eq!(engine.totals(), (3, 2, 2));
}

#[test]
fn resubmission_is_idempotent_and_different_contents_are_refused() {
    let dir = TempDir::new("idempotent");
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let (mut engine, _) = CommitEngine::open(config(&dir), &clock).unwrap();
    let start = clock.now().unwrap();
    let a = txn(9, start, &["r"], &["w"]);
    let first = engine.process(&clock, &[Request::Commit(&a), Request::Commit(&a)]);
    assert_eq!(first[0], first[1]);
    let seq = engine.log().unwrap().next_seq();
    let again = engine.process(&clock, &[Request::Commit(&a)]);
    assert_eq!(again[0], first[0]);
    assert_eq!(
        engine.log().unwrap().next_seq(),
        seq,
        "nothing logged for a resubmission"
    );
    let changed = txn(9, start, &["r"], &["other"]);
    assert_eq!(
        engine.process(&clock, &[Request::Commit(&changed)])[0],
        Err(SubmitError::Mismatch { txn_id: 9 })
    );
    let b1 = txn(10, start, &[], &["p"]);
    let b2 = txn(10, start, &[], &["q"]);
    let answers = engine.process(&clock, &[Request::Commit(&b1), Request::Commit(&b2)]);
    committed(&answers[0]);
    assert_eq!(answers[1], Err(SubmitError::Mismatch { txn_id: 10 }));
}

#[test]
fn abort_fences_a_late_commit_and_never_undoes_a_commit() {
    let dir = TempDir::new("fence");
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let (mut engine, _) = CommitEngine::open(config(&dir), &clock).unwrap();
    let start = clock.now().unwrap();
    let fenced = txn(20, start, &[], &["k"]);
    assert_eq!(
        engine.process(&clock, &[Request::Abort(20, None)])[0],
        Ok(Outcome::Aborted(AbortReason::Requested))
    );
    assert_eq!(
        engine.process(&clock, &[Request::Commit(&fenced)])[0],
        Ok(Outcome::Aborted(AbortReason::Requested))
    );
    let done = txn(21, start, &[], &["k"]);
    let answers = engine.process(&clock, &[Request::Commit(&done), Request::Abort(21, None)]);
    let ts = committed(&answers[0]);
    assert_eq!(answers[1], Ok(Outcome::Committed(ts)));
    assert_eq!(
        engine.process(&clock, &[Request::Abort(21, None)])[0],
        Ok(Outcome::Committed(ts))
    );
    assert_eq!(engine.status(21), Some(Outcome::Committed(ts)));
    assert_eq!(
        engine.status(20),
        Some(Outcome::Aborted(AbortReason::Requested))
    );
    assert_eq!(engine.status(22), None);
}

#[test]
fn bad_input_is_refused_and_not_logged() {
    let dir = TempDir::new("bad");
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let mut config = config(&dir);
    config.limits = Limits {
        max_read_keys: 2,
        max_write_keys: 2,
        max_key_bytes: 4,
    };
    let (mut engine, _) = CommitEngine::open(config, &clock).unwrap();
    let start = clock.now().unwrap();
    let future = Timestamp::new(1_000_000 + 1_001, 0, 1).unwrap();
    let cases = [
        txn(0, start, &[], &["k"]),
        txn(1, start, &["r"], &[]),
        txn(2, start, &["a", "b", "c"], &["k"]),
        txn(3, start, &[], &["a", "b", "c"]),
        txn(4, start, &[], &["a", "toolong"]),
        txn(5, future, &[], &["k"]),
    ];
    let requests: Vec<Request<'_>> = cases.iter().map(Request::Commit).collect();
    let answers = engine.process(&clock, &requests);
    let messages: Vec<String> = answers
        .iter()
        .map(|a| a.as_ref().unwrap_err().to_string())
        .collect();
    assert!(
        messages[0].contains("txn_id must be in 1.."),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].contains("write_set is empty"),
        "{}",
        messages[1]
    );
    assert!(messages[2].contains("read_set has 3 keys, over the limit of 2"));
    assert!(messages[3].contains("write_set has 3 keys, over the limit of 2"));
    assert!(messages[4].contains("write_set[1] is 7 bytes, over the limit of 4"));
    assert!(messages[5].contains("in the future"), "{}", messages[5]);
    assert_eq!(
        engine.process(&clock, &[Request::Abort(0, None)])[0],
        Err(SubmitError::InvalidTxnId)
    );
    assert_eq!(engine.log().unwrap().next_seq(), 1, "nothing logged");
    // The engine keeps going.
    committed(&engine.process(&clock, &[Request::Commit(&txn(6, start, &[], &["k"]))])[0]);
}

#[test]
fn recovery_rebuilds_decisions_history_and_clock_floor() {
    let dir = TempDir::new("recover");
    let physical = Arc::new(ManualClock::new(5_000_000).unwrap());
    let clock = clock_at(&physical);
    let start;
    let last_commit;
    {
        let (mut engine, _) = CommitEngine::open(config(&dir), &clock).unwrap();
        start = clock.now().unwrap();
        let mut answers = Vec::new();
        for id in 1..=50u64 {
            let key = format!("k{}", id % 10);
            let t = txn(id, start, &[], &[&key]);
            answers.extend(engine.process(&clock, &[Request::Commit(&t)]));
        }
        engine.process(&clock, &[Request::Abort(77, None)]);
        last_commit = answers
            .iter()
            .filter_map(|a| match a {
                Ok(Outcome::Committed(ts)) => Some(*ts),
                _ => None,
            })
            .max()
            .unwrap();
    }
    // A fresh clock whose physical time went backwards: the floor still holds.
    physical.set(4_999_500).unwrap();
    let clock = clock_at(&physical);
    let (mut engine, recovery) = CommitEngine::open(config(&dir), &clock).unwrap();
    assert_eq!(recovery.commits, 10);
    assert_eq!(recovery.aborts, 41);
    assert_eq!(recovery.floor, Some(last_commit));
    assert!(clock.last() >= last_commit);
    assert_eq!(
        engine.status(1).map(|o| matches!(o, Outcome::Committed(_))),
        Some(true)
    );
    assert_eq!(
        engine.status(77),
        Some(Outcome::Aborted(AbortReason::Requested))
    );
    // History is back: the same old start loses to the logged commit of its key.
    let late = txn(100, start, &[], &["k3"]);
    let answer = engine.process(&clock, &[Request::Commit(&late)]);
    assert!(matches!(conflict(&answer[0]).lost_to, LostTo::Commit(_)));
    let fresh = txn(101, clock.now().unwrap(), &[], &["k3"]);
    assert!(committed(&engine.process(&clock, &[Request::Commit(&fresh)])[0]) > last_commit);
}

#[test]
fn retention_keeps_few_segments_and_refuses_starts_before_the_checkpoint() {
    let dir = TempDir::new("retention");
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let mut config = config(&dir);
    config.retain_segments = 2;
    let old_start;
    {
        let (mut engine, _) = CommitEngine::open(config.clone(), &clock).unwrap();
        old_start = clock.now().unwrap();
        for id in 1..=400u64 {
            let key = format!("key-{id}");
            let start = clock.now().unwrap();
            let t = txn(id, start, &[], &[&key]);
            committed(&engine.process(&clock, &[Request::Commit(&t)])[0]);
        }
        assert!(engine.log().unwrap().segment_paths().len() <= 3);
    }
    let (mut engine, recovery) = CommitEngine::open(config, &clock).unwrap();
    assert!(recovery.commits < 400);
    assert!(engine.detector().low_watermark().is_some());
    let stale = txn(1_000, old_start, &[], &["new-key"]);
    assert!(matches!(
        engine.process(&clock, &[Request::Commit(&stale)])[0],
        Err(SubmitError::StartTooOld { .. })
    ));
}

#[test]
fn memory_durability_needs_no_directory() {
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let (mut engine, recovery) =
        CommitEngine::open(EngineConfig::new(Durability::Memory, None), &clock).unwrap();
    assert!(recovery.log.is_none());
    let start = clock.now().unwrap();
    committed(&engine.process(&clock, &[Request::Commit(&txn(1, start, &[], &["k"]))])[0]);
    assert!(engine.log().is_none());
    assert!(CommitEngine::open(EngineConfig::new(Durability::Sync, None), &clock).is_err());
}

#[test]
fn forgotten_decisions_are_never_taken_again() {
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let mut config = EngineConfig::new(Durability::Memory, None);
    config.retained_decisions = 4;
    let (mut engine, _) = CommitEngine::open(config, &clock).unwrap();
    let start = clock.now().unwrap();
    let first = txn(1, start, &[], &["a"]);
    committed(&engine.process(&clock, &[Request::Commit(&first)])[0]);
    let in_doubt = txn(2, start, &[], &["b"]);
    engine.process(&clock, &[Request::Abort(2, None)]);
    for id in 3..=8u64 {
        let key = format!("k{id}");
        committed(
            &engine.process(
                &clock,
                &[Request::Commit(&txn(
                    id,
                    clock.now().unwrap(),
                    &[],
                    &[&key],
                ))],
            )[0],
        );
    }
    assert_eq!(engine.status(1), None, "forgotten");
    // Neither the resubmission of a forgotten commit nor the late commit of a forgotten abort
    // may be decided again.
    for late in [&first, &in_doubt] {
        assert!(matches!(
            engine.process(&clock, &[Request::Commit(late)])[0],
            Err(SubmitError::StartTooOld { .. })
        ));
    }
    committed(
        &engine.process(
            &clock,
            &[Request::Commit(&txn(9, clock.now().unwrap(), &[], &["a"]))],
        )[0],
    );
}

#[test]
fn recovery_restores_the_floor_even_after_the_wall_clock_stepped_back_past_max_offset() {
    let dir = TempDir::new("floor-back");
    let physical = Arc::new(ManualClock::new(50_000_000).unwrap());
    let last_commit;
    {
        let clock = clock_at(&physical);
        let (mut engine, _) = CommitEngine::open(config(&dir), &clock).unwrap();
        let t = txn(1, clock.now().unwrap(), &[], &["k"]);
        last_commit = committed(&engine.process(&clock, &[Request::Commit(&t)])[0]);
    }
    // Ten seconds back, far past the clock's max offset (1 ms here).
    physical.set(40_000_000).unwrap();
    let clock = clock_at(&physical);
    let (mut engine, recovery) = CommitEngine::open(config(&dir), &clock).unwrap();
    assert_eq!(recovery.floor, Some(last_commit));
    let t = txn(2, clock.now().unwrap(), &[], &["k"]);
    assert!(committed(&engine.process(&clock, &[Request::Commit(&t)])[0]) > last_commit);
}

#[test]
fn a_decided_id_gets_its_decision_even_below_the_low_watermark() {
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let mut config = EngineConfig::new(Durability::Memory, None);
    config.max_keys = 2;
    let (mut engine, _) = CommitEngine::open(config, &clock).unwrap();
    let first = txn(1, clock.now().unwrap(), &[], &["a"]);
    let ts = committed(&engine.process(&clock, &[Request::Commit(&first)])[0]);
    for id in 2..=5u64 {
        let key = format!("k{id}");
        let t = txn(id, clock.now().unwrap(), &[], &[&key]);
        committed(&engine.process(&clock, &[Request::Commit(&t)])[0]);
    }
    // The detector forgot key "a": its watermark is past the first start timestamp.
    assert!(engine.detector().low_watermark().unwrap() >= first.start_ts);
    let again = engine.process(&clock, &[Request::Commit(&first)]);
    assert_eq!(committed(&again[0]), ts);
    let changed = txn(1, first.start_ts, &[], &["other"]);
    assert!(matches!(
        engine.process(&clock, &[Request::Commit(&changed)])[0],
        Err(SubmitError::Mismatch { txn_id: 1 })
    ));
}

#[test]
fn a_forgotten_abort_fences_late_commits_from_a_clock_ahead() {
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical); // max offset 1,000 us
    let mut config = EngineConfig::new(Durability::Memory, None);
    config.retained_decisions = 2;
    let (mut engine, _) = CommitEngine::open(config, &clock).unwrap();
    engine.process(&clock, &[Request::Abort(100, None)]);
    // Forget the abort once physical time has passed its fence (abort + max offset).
    physical.advance(2_000).unwrap();
    for id in 1..=3u64 {
        let key = format!("k{id}");
        let t = txn(id, clock.now().unwrap(), &[], &[&key]);
        committed(&engine.process(&clock, &[Request::Commit(&t)])[0]);
    }
    assert_eq!(engine.status(100), None, "forgotten");
    // Start timestamps from peers ahead of the oracle at the time of the abort, up to the whole
    // max offset (and any logical counter and node there).
    for ahead in [
        Timestamp::new(1_000_900, 0, 7).unwrap(),
        Timestamp::new(1_001_000, MAX_LOGICAL, 65_535).unwrap(),
    ] {
        assert!(matches!(
            engine.process(&clock, &[Request::Commit(&txn(100, ahead, &[], &["x"]))])[0],
            Err(SubmitError::StartTooOld { .. })
        ));
    }
}

fn external_engine(clock: &Clock, max_batch_bytes: usize) -> CommitEngine {
    let mut config = EngineConfig::new(Durability::External, None);
    config.max_batch_bytes = max_batch_bytes;
    config.first_batch_seq = 10;
    CommitEngine::open(config, clock).unwrap().0
}

#[test]
fn external_step_hands_out_pieces_and_answers_only_once_confirmed_in_order() {
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let mut engine = external_engine(&clock, 1 << 20);
    let start = clock.now().unwrap();
    let a = txn(1, start, &[], &["x"]);
    let first = engine.decide(&clock, &[Request::Commit(&a)]);
    assert_eq!(first.pieces.len(), 1);
    assert_eq!(first.pieces[0].0, 10);
    assert!(first.released.is_empty(), "nothing answered before durable");
    assert_eq!(engine.status(1), None, "a pending decision is not reported");
    assert_eq!(engine.pending_batches(), 1);

    // A later batch is checked against the pending one, and a resubmission of the pending id
    // waits for it.
    let b = txn(2, start, &[], &["x"]);
    let second = engine.decide(&clock, &[Request::Commit(&b), Request::Commit(&a)]);
    assert_eq!(second.pieces[0].0, 11);
    assert!(second.released.is_empty());
    // A batch with nothing new to write still waits for the ones before it.
    let third = engine.decide(&clock, &[Request::Commit(&a)]);
    assert!(third.pieces.is_empty() && third.released.is_empty());

    // Confirmed out of order: nothing goes out until piece 10 is durable.
    assert!(engine.confirm(11).unwrap().is_empty());
    let released = engine.confirm(10).unwrap();
    assert_eq!(
        released.iter().map(|r| r.ticket).collect::<Vec<_>>(),
        vec![first.ticket, second.ticket, third.ticket]
    );
    let commit_ts = committed(&released[0].answers[0]);
    assert_eq!(released[0].txn_ids, vec![1]);
    assert_eq!(
        conflict(&released[1].answers[0]).key.as_deref(),
        Some(&b"x"[..])
    );
    assert_eq!(committed(&released[1].answers[1]), commit_ts);
    assert_eq!(committed(&released[2].answers[0]), commit_ts);
    assert_eq!(engine.status(1), Some(Outcome::Committed(commit_ts)));
    assert_eq!(engine.totals(), (1, 1, 3));
    assert_eq!(engine.pending_batches(), 0);

    // Confirming what is not pending is refused.
    assert!(matches!(
        engine.confirm(10),
        Err(ConfirmError::UnknownBatch { batch_seq: 10, .. })
    ));
    assert!(engine.confirm(99).is_err());
}

#[test]
fn external_failure_answers_every_pending_batch_outcome_unknown_and_stops() {
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let mut engine = external_engine(&clock, 1 << 20);
    let start = clock.now().unwrap();
    let a = txn(1, start, &[], &["x"]);
    let b = txn(2, start, &[], &["y"]);
    let first = engine.decide(&clock, &[Request::Commit(&a)]);
    let second = engine.decide(&clock, &[Request::Commit(&b), Request::Abort(3, None)]);
    assert!(engine.confirm(second.pieces[0].0).unwrap().is_empty());
    let failed = engine.fail("etcd txn timed out");
    assert_eq!(
        failed.iter().map(|r| r.ticket).collect::<Vec<_>>(),
        vec![first.ticket, second.ticket]
    );
    for answer in failed.iter().flat_map(|r| &r.answers) {
        assert!(
            matches!(answer, Err(SubmitError::OutcomeUnknown(reason)) if reason == "etcd txn timed out")
        );
    }
    assert_eq!(engine.totals().0, 0, "nothing counted as committed");
    // Stopped: later work is refused, nothing is guessed.
    let later = engine.decide(&clock, &[Request::Commit(&txn(4, start, &[], &["z"]))]);
    assert!(later.pieces.is_empty());
    assert!(matches!(
        later.released[0].answers[0],
        Err(SubmitError::Log(_))
    ));
    assert!(matches!(
        engine.confirm(first.pieces[0].0),
        Err(ConfirmError::Stopped(_))
    ));
    assert_eq!(engine.status(1), None);
}

#[test]
fn external_pieces_split_by_size_and_replay_on_another_engine() {
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let mut engine = external_engine(&clock, 300);
    let start = clock.now().unwrap();
    let keys: Vec<String> = (0..40).map(|i| format!("key-{i:04}")).collect();
    let txns: Vec<Transaction> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| txn(i as u64 + 1, start, &[], &[key.as_str()]))
        .collect();
    let requests: Vec<Request<'_>> = txns.iter().map(Request::Commit).collect();
    let handout = engine.decide(&clock, &requests);
    assert!(handout.pieces.len() > 1, "split, never refused");
    assert!(handout.pieces.iter().all(|(_, piece)| piece.len() <= 300));
    let mut released = Vec::new();
    for (seq, _) in handout.pieces.iter().rev() {
        released.extend(engine.confirm(*seq).unwrap());
    }
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].answers.len(), 40);

    // A new leader replays the pieces: decisions and clock floor (no conflict history: its low
    // watermark, the previous leader's window limit, aborts what started under that leader).
    let other_physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let other_clock = clock_at(&other_physical);
    let mut successor = external_engine(&other_clock, 300);
    let mut commits = 0;
    for (seq, piece) in &handout.pieces {
        commits += successor
            .replay_piece(&other_clock, *seq, piece)
            .unwrap()
            .commits;
    }
    assert_eq!(commits, 40);
    let last_ts = committed(&released[0].answers[39]);
    assert_eq!(successor.status(40), Some(Outcome::Committed(last_ts)));
    assert!(other_clock.last() >= last_ts);
    successor.raise_low_watermark(clock.last());
    let late = successor.decide(
        &other_clock,
        &[Request::Commit(&txn(99, start, &[], &["key-0001"]))],
    );
    assert!(late.released.is_empty(), "parked until durable");
    assert_eq!(late.pieces.len(), 1);
    let answers = successor.confirm(late.pieces[0].0).unwrap();
    conflict(&answers[0].answers[0]);
    assert!(matches!(
        successor.replay_piece(&other_clock, 7, &[1, 9, 0, 0, 0]),
        Err(EngineError::BadRecord { seq: 7, .. })
    ));
}

#[test]
fn process_refuses_the_external_step_and_external_refuses_a_log_dir() {
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let mut engine = external_engine(&clock, 1 << 20);
    let start = clock.now().unwrap();
    let answers = engine.process(&clock, &[Request::Commit(&txn(1, start, &[], &["x"]))]);
    assert!(matches!(answers[0], Err(SubmitError::Log(_))));
    let dir = TempDir::new("external");
    let config = EngineConfig::new(Durability::External, Some(dir.0.clone()));
    assert!(matches!(
        CommitEngine::open(config, &clock),
        Err(EngineError::InvalidConfig(_))
    ));
}

#[test]
fn a_decisions_index_too_large_to_allocate_is_a_config_error() {
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    for retained in [usize::MAX, usize::MAX / 4] {
        let mut config = EngineConfig::new(Durability::Memory, None);
        config.retained_decisions = retained;
        match CommitEngine::open(config, &clock) {
            Err(EngineError::InvalidConfig(message)) => {
                assert!(message.contains("retained_decisions"), "{message}");
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("an index for {retained} decisions was allocated"),
        }
    }
}

#[test]
fn an_undecided_start_below_a_new_leaders_watermark_is_aborted_too_old_and_recorded() {
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let mut engine = external_engine(&clock, 1 << 20);
    let inherited = txn(7, clock.now().unwrap(), &[], &["k"]);
    // Promotion: the low watermark is the previous leader's window limit.
    let window_limit = clock.now().unwrap();
    engine.raise_low_watermark(window_limit);
    let handout = engine.decide(&clock, &[Request::Commit(&inherited)]);
    assert!(handout.released.is_empty(), "recorded like every decision");
    assert_eq!(handout.pieces.len(), 1);
    let answers = engine.confirm(handout.pieces[0].0).unwrap();
    let aborted = conflict(&answers[0].answers[0]).clone();
    assert_eq!(aborted.kind, ConflictKind::TooOld);
    assert_eq!(aborted.lost_to, LostTo::LowWatermark(window_limit));
    let outcome = Outcome::Aborted(AbortReason::Conflict(aborted));
    assert_eq!(engine.status(7), Some(outcome.clone()));
    // A resubmission gets the same abort, without a new record.
    let again = engine.decide(&clock, &[Request::Commit(&inherited)]);
    assert!(again.pieces.is_empty());
    assert_eq!(again.released[0].answers[0], Ok(outcome.clone()));

    // The next leader replays the piece: the abort cannot flip there either.
    let mut successor = external_engine(&clock, 1 << 20);
    successor
        .replay_piece(&clock, handout.pieces[0].0, &handout.pieces[0].1)
        .unwrap();
    assert_eq!(successor.status(7), Some(outcome.clone()));
    let retry = successor.decide(&clock, &[Request::Commit(&inherited)]);
    assert!(retry.pieces.is_empty());
    assert_eq!(retry.released[0].answers[0], Ok(outcome));
}

#[test]
fn a_too_old_abort_is_logged_and_survives_a_restart() {
    let dir = TempDir::new("too-old");
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let mut config = config(&dir);
    config.max_keys = 2;
    let stale = txn(1, clock.now().unwrap(), &[], &["fresh"]);
    let outcome;
    {
        let (mut engine, _) = CommitEngine::open(config.clone(), &clock).unwrap();
        for id in 2..=5u64 {
            let key = format!("k{id}");
            let t = txn(id, clock.now().unwrap(), &[], &[&key]);
            committed(&engine.process(&clock, &[Request::Commit(&t)])[0]);
        }
        // The detector's memory bound forgot history past the stale start; no decision was
        // forgotten, so the stale transaction is known undecided: aborted, not refused.
        assert!(engine.detector().low_watermark().unwrap() >= stale.start_ts);
        let answer = engine.process(&clock, &[Request::Commit(&stale)]);
        assert_eq!(conflict(&answer[0]).kind, ConflictKind::TooOld);
        outcome = answer[0].clone().unwrap();
    }
    let (mut engine, recovery) = CommitEngine::open(config, &clock).unwrap();
    assert_eq!(recovery.aborts, 1);
    assert_eq!(engine.status(1), Some(outcome.clone()));
    assert_eq!(
        engine.process(&clock, &[Request::Commit(&stale)])[0],
        Ok(outcome)
    );
}

#[test]
fn the_fingerprint_is_the_streaming_xxh3_of_its_fields_and_stays_fixed() {
    // The fields fed one by one to a streaming xxh3, as the logged fingerprints were made.
    fn streamed(txn: &Transaction) -> u64 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(&txn.start_ts.packed().to_le_bytes());
        hasher.update(&txn.start_ts.node().to_le_bytes());
        for keys in [&txn.reads, &txn.writes] {
            hasher.update(&(keys.len() as u64).to_le_bytes());
            for key in keys.iter() {
                hasher.update(&(key.len() as u64).to_le_bytes());
                hasher.update(key);
            }
        }
        hasher.digest()
    }
    let start = Timestamp::new(1_000_000, 3, 7).unwrap();
    let long = "k".repeat(300);
    let cases = [
        txn(1, start, &[], &["a"]),
        txn(
            2,
            start,
            &["r1", "r2", "r3", "r4"],
            &["w1", "w2", "w3", "w4"],
        ),
        txn(3, start, &[long.as_str()], &["w", ""]),
    ];
    let mut buffer = Vec::new();
    for case in &cases {
        assert_eq!(fingerprint_in(case, &mut buffer), streamed(case));
        assert_eq!(fingerprint(case), streamed(case));
    }
    // Logged fingerprints are compared with new ones after a restart or an upgrade: pinned.
    assert_eq!(fingerprint(&cases[1]), 0xbfe7_2f3e_9c7d_f58f);
}

#[test]
fn pipelined_syncs_answer_in_decision_order_only_after_a_sync_that_began_after_the_write() {
    let dir = TempDir::new("pipelined");
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let (mut engine, _) = CommitEngine::open(config(&dir), &clock).unwrap();
    assert!(engine.sync_point().is_none(), "not pipelined yet");
    assert!(engine.pipeline_syncs());
    assert!(engine.pipeline_syncs(), "idempotent");
    let start = clock.now().unwrap();
    let a = txn(1, start, &[], &["x"]);
    let first = engine.decide(&clock, &[Request::Commit(&a)]);
    assert!(first.pieces.is_empty() && first.released.is_empty());
    assert_eq!(
        engine.status(1),
        None,
        "a decision not yet synced is not reported"
    );
    // Decided against the unsynced batch; the resubmission of its id waits for its sync.
    let b = txn(2, start, &[], &["x"]);
    let second = engine.decide(&clock, &[Request::Commit(&b), Request::Commit(&a)]);
    assert!(second.released.is_empty());
    assert_eq!(engine.pending_batches(), 2);
    let point = engine
        .sync_point()
        .expect("two batches are written and unsynced");
    // Written while that sync runs: not covered by it.
    let c = txn(3, start, &[], &["y"]);
    let third = engine.decide(&clock, &[Request::Commit(&c)]);
    let released = engine.synced(&point, point.sync());
    assert_eq!(
        released.iter().map(|r| r.ticket).collect::<Vec<_>>(),
        vec![first.ticket, second.ticket]
    );
    let commit_ts = committed(&released[0].answers[0]);
    assert_eq!(
        conflict(&released[1].answers[0]).key.as_deref(),
        Some(&b"x"[..])
    );
    assert_eq!(committed(&released[1].answers[1]), commit_ts);
    assert_eq!(engine.status(1), Some(Outcome::Committed(commit_ts)));
    assert_eq!(engine.status(3), None);
    let point = engine.sync_point().expect("the third batch is unsynced");
    let released = engine.synced(&point, point.sync());
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].ticket, third.ticket);
    assert!(engine.sync_point().is_none(), "nothing left to sync");
    assert_eq!(engine.totals(), (2, 1, 3));
    // A batch with nothing new to write (a repeat of a synced decision) goes out at once.
    let again = engine.decide(&clock, &[Request::Commit(&c)]);
    assert_eq!(again.released.len(), 1);
    // `process` would answer before the sync: refused.
    assert!(matches!(
        engine.process(&clock, &[Request::Commit(&txn(4, start, &[], &["z"]))])[0],
        Err(SubmitError::Log(_))
    ));
    drop(engine);
    let (engine, _) = CommitEngine::open(config(&dir), &clock).unwrap();
    assert_eq!(engine.status(1), Some(Outcome::Committed(commit_ts)));
    assert!(engine.status(3).is_some());
}

#[test]
fn pipelined_syncs_cross_segment_rotations_and_close_answers_what_it_synced() {
    let dir = TempDir::new("pipelined-rotation");
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let (mut engine, _) = CommitEngine::open(config(&dir), &clock).unwrap();
    assert!(engine.pipeline_syncs());
    let start = clock.now().unwrap();
    let mut tickets = Vec::new();
    let mut released = Vec::new();
    let mut points = 0;
    // Segments of 4 KiB: these batches rotate several times, some while a sync point is taken.
    for id in 1..=120u64 {
        let key = format!("key-{id}-{}", "k".repeat(60));
        let t = txn(id, start, &[], &[key.as_str()]);
        tickets.push(engine.decide(&clock, &[Request::Commit(&t)]).ticket);
        if id % 3 == 0 {
            if let Some(point) = engine.sync_point() {
                points += 1;
                let c = txn(1_000 + id, start, &[], &["other"]);
                tickets.push(engine.decide(&clock, &[Request::Commit(&c)]).ticket);
                released.extend(engine.synced(&point, point.sync()));
            }
        }
    }
    assert!(points > 10);
    assert!(engine.log().unwrap().segment_first_seqs().len() > 2);
    released.extend(engine.close());
    assert_eq!(
        released.iter().map(|r| r.ticket).collect::<Vec<_>>(),
        tickets,
        "every batch answered once, in decision order"
    );
    let (engine, _) = CommitEngine::open(config(&dir), &clock).unwrap();
    for id in 1..=120u64 {
        assert!(matches!(engine.status(id), Some(Outcome::Committed(_))));
    }
}

#[test]
fn a_sync_thread_woken_by_each_write_answers_every_batch_once_in_order_and_close_ends_its_wait() {
    let dir = TempDir::new("pipelined-wake");
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let (mut engine, _) = CommitEngine::open(config(&dir), &clock).unwrap();
    assert!(engine.sync_wake().is_none(), "not pipelined yet");
    assert!(engine.pipeline_syncs());
    let wake = engine.sync_wake().expect("pipelined");
    let engine = Arc::new(std::sync::Mutex::new(engine));
    // The sync thread: waits without the engine's lock, takes it only to release.
    let syncer = {
        let engine = Arc::clone(&engine);
        std::thread::spawn(move || {
            let mut released = Vec::new();
            while let Some(point) = wake.wait() {
                let took = point.sync();
                let batch = engine.lock().unwrap().synced(&point, took);
                released.push((point.through_batch(), batch));
            }
            released
        })
    };
    let start = clock.now().unwrap();
    let mut tickets = Vec::new();
    // Segments of 4 KiB: these batches rotate several times while the sync thread runs.
    for id in 1..=120u64 {
        let key = format!("key-{id}-{}", "k".repeat(60));
        let t = txn(id, start, &[], &[key.as_str()]);
        let handout = engine
            .lock()
            .unwrap()
            .decide(&clock, &[Request::Commit(&t)]);
        assert!(handout.released.is_empty(), "parked until synced");
        tickets.push(handout.ticket);
        if id % 7 == 0 {
            std::thread::yield_now();
        }
    }
    let closed = engine.lock().unwrap().close();
    let rounds = syncer.join().expect("the sync thread does not panic");
    let mut released: Vec<u64> = Vec::new();
    for (through_batch, batch) in &rounds {
        // A round releases only batches its point covers (each batch wrote: seq = ticket).
        assert!(batch.iter().all(|r| r.ticket <= *through_batch));
        released.extend(batch.iter().map(|r| r.ticket));
    }
    released.extend(closed.iter().map(|r| r.ticket));
    assert_eq!(
        released, tickets,
        "every batch answered once, in decision order"
    );
    let (engine, _) = CommitEngine::open(config(&dir), &clock).unwrap();
    for id in 1..=120u64 {
        assert!(matches!(engine.status(id), Some(Outcome::Committed(_))));
    }
}

#[test]
fn pipelined_syncs_only_in_sync_durability_with_a_log() {
    let dir = TempDir::new("pipelined-async");
    let physical = Arc::new(ManualClock::new(1_000_000).unwrap());
    let clock = clock_at(&physical);
    let mut async_config = config(&dir);
    async_config.durability = Durability::Async;
    let (mut engine, _) = CommitEngine::open(async_config, &clock).unwrap();
    assert!(!engine.pipeline_syncs());
    let (mut memory, _) =
        CommitEngine::open(EngineConfig::new(Durability::Memory, None), &clock).unwrap();
    assert!(!memory.pipeline_syncs());
    assert!(!external_engine(&clock, 1 << 20).pipeline_syncs());
}
