//! The steps of [`CommitEngine::decide`], in order: `triage` (with `validate`),
//! `check_conflicts`, `take_timestamps`, `decide_requested_aborts`, `make_durable`, `record`;
//! and the [`Batch`] they pass along.

use crate::conflict::{id_hash, Conflict, Transaction, TxnId};
use crate::hlc::Clock;
use crate::timestamp::{Timestamp, MAX_LOGICAL, MAX_PHYSICAL};

use super::decisions::Decision;
use super::durable::DurableStep;
use super::piece::PieceEncoder;
use super::record;
use super::types::{fingerprint_in, AbortReason, Outcome, Request, SubmitError};
use super::CommitEngine;

/// Decisions the `record` step looks ahead when it prefetches the detector's buckets: the lines
/// that choose the bucket twice this far ahead, the rest of that bucket this far (the detector's
/// two-step prefetch, with the distances `bench/rust/conflict_table.rs` measured).
const RECORD_PREFETCH_AHEAD: usize = 1;

/// Decisions the `record` step looks ahead when it prefetches their slots of the decisions index.
const RECORD_INDEX_PREFETCH_AHEAD: usize = 8;

/// Requests `triage` looks ahead when it prefetches their slots of the decisions index.
const TRIAGE_PREFETCH_AHEAD: usize = 8;

impl CommitEngine {
    pub(super) fn validate(
        &self,
        txn: &Transaction,
        clock: &Clock,
        physical_now: u64,
    ) -> Result<(), SubmitError> {
        let txn_id = txn.id;
        if txn_id == 0 {
            return Err(SubmitError::InvalidTxnId);
        }
        if txn.writes.is_empty() {
            return Err(SubmitError::EmptyWriteSet { txn_id });
        }
        for (field, keys, limit) in [
            ("write_set", &txn.writes, self.limits.max_write_keys),
            ("read_set", &txn.reads, self.limits.max_read_keys),
        ] {
            if keys.len() > limit {
                return Err(SubmitError::TooManyKeys {
                    txn_id,
                    field,
                    count: keys.len(),
                    limit,
                });
            }
            if keys.longest() <= self.limits.max_key_bytes {
                continue;
            }
            if let Some((index, key)) = keys
                .iter()
                .enumerate()
                .find(|(_, key)| key.len() > self.limits.max_key_bytes)
            {
                return Err(SubmitError::KeyTooLarge {
                    txn_id,
                    field,
                    index,
                    len: key.len(),
                    limit: self.limits.max_key_bytes,
                });
            }
        }
        // A start timestamp this clock handed out is never in the future, even when the clock
        // runs ahead of physical time (after a restart above a persisted window); anything else
        // may lead the physical clock by at most max_offset_us, as for a receive event.
        if txn.start_ts.physical() > physical_now.saturating_add(clock.max_offset_us())
            && txn.start_ts > clock.last()
        {
            return Err(SubmitError::StartInFuture {
                txn_id,
                start_ts: txn.start_ts,
                physical_now,
                max_offset_us: clock.max_offset_us(),
            });
        }
        // Below the detector's low watermark but above this, the transaction is provably
        // undecided: `check_conflicts` aborts it as too old, and that abort is recorded.
        if let Some(low_watermark) = self.decisions_forgotten_through {
            if txn.start_ts <= low_watermark {
                return Err(SubmitError::StartTooOld {
                    txn_id,
                    start_ts: txn.start_ts,
                    low_watermark,
                });
            }
        }
        Ok(())
    }

    /// Step 1: validate each request and answer decided ids with their first decision; sort the
    /// rest into new commits, new aborts, and repeats of an id new in this batch.
    pub(super) fn triage<'r, 'a>(
        &mut self,
        clock: &Clock,
        requests: &'r [Request<'a>],
        physical_now: u64,
    ) -> Batch<'r, 'a> {
        let mut batch = Batch::new(requests);
        // First request of each id new in this batch; later ones copy its answer.
        let mut first_of = std::mem::take(&mut self.batch_ids);
        first_of.reset(requests.len());
        let mut hashed = Vec::new();
        for request in requests.iter().take(TRIAGE_PREFETCH_AHEAD) {
            self.decisions.prefetch(request.txn_id());
        }
        for (i, request) in requests.iter().enumerate() {
            if let Some(ahead) = requests.get(i + TRIAGE_PREFETCH_AHEAD) {
                self.decisions.prefetch(ahead.txn_id());
            }
            let (txn_id, fingerprint) = match request {
                Request::Commit(txn) => (txn.id, Some(fingerprint_in(txn, &mut hashed))),
                Request::Abort(id, _) => (*id, None),
            };
            if txn_id == 0 {
                batch.answers[i] = Some(Err(SubmitError::InvalidTxnId));
                continue;
            }
            batch.fingerprints[i] = fingerprint;
            // A decided id gets its first decision before any check of the request: a retry
            // must hear "committed" even after the low watermark passed its start timestamp.
            if let Some(decided) = self.decisions.get(txn_id) {
                batch.answers[i] = Some(match (decided.fingerprint, fingerprint) {
                    (Some(first), Some(now)) if first != now => {
                        Err(SubmitError::Mismatch { txn_id })
                    }
                    _ => Ok(decided.outcome.clone()),
                });
                continue;
            }
            if self.needs_history(request) {
                // The scheduler holds these until the history is loaded: none should get here.
                batch.answers[i] = Some(Err(SubmitError::Log(format!(
                    "transaction {txn_id}: taking over: the decision history is still loading \
                     and may hold this transaction's decision; retry"
                ))));
                continue;
            }
            if let Request::Commit(txn) = request {
                if let Err(err) = self.validate(txn, clock, physical_now) {
                    batch.answers[i] = Some(Err(err));
                    continue;
                }
            }
            let spread = id_hash(txn_id);
            if let Some(first) = first_of.get(txn_id, spread) {
                let first = first as usize;
                match (batch.fingerprints[first], fingerprint) {
                    (Some(a), Some(b)) if a != b => {
                        batch.answers[i] = Some(Err(SubmitError::Mismatch { txn_id }));
                    }
                    _ => batch.followers.push((i, first)),
                }
                continue;
            }
            first_of.insert(txn_id, spread, i as u64);
            match request {
                Request::Commit(_) => batch.fresh_commits.push(i),
                Request::Abort(..) => batch.fresh_aborts.push(i),
            }
        }
        self.batch_ids = first_of;
        batch
    }

    /// Step 2: ONE check over the new commits, first committer wins. Returns them with their
    /// conflicts (None: accepted).
    pub(super) fn check_conflicts<'a>(
        &self,
        batch: &Batch<'_, 'a>,
    ) -> (Vec<&'a Transaction>, Vec<Option<Box<Conflict>>>) {
        let txns: Vec<&'a Transaction> = batch
            .fresh_commits
            .iter()
            .filter_map(|&i| match batch.requests[i] {
                Request::Commit(txn) => Some(txn),
                Request::Abort(..) => None,
            })
            .collect();
        // Ids are unique by construction (`triage` keeps the first request of each id).
        let checked = self.detector.check_batch_of_unique_ids(&txns).outcomes;
        (txns, checked)
    }

    /// Step 3: ONE clock reservation for the accepted commits, above every start timestamp;
    /// decides the new commits (committed, or aborted by their conflict). When the clock
    /// refuses, the accepted ones are answered with its error and nothing is decided for them.
    pub(super) fn take_timestamps(
        clock: &Clock,
        batch: &mut Batch<'_, '_>,
        txns: &[&Transaction],
        checked: Vec<Option<Box<Conflict>>>,
    ) {
        let accepted = checked.iter().filter(|c| c.is_none()).count() as u64;
        // The clock passes the start of every transaction decided here, aborted ones too, so
        // every decision's start is at or below the window this leader saved (a new leader
        // relies on it while its history loads: `history.rs`).
        let newest_start = txns.iter().map(|txn| txn.start_ts).max();
        let reserved = match newest_start {
            Some(start) if start > clock.last() => clock.update(start).map(|_| ()),
            _ => Ok(()),
        }
        .and_then(|()| match accepted {
            0 => Ok(None),
            n => clock.reserve(n).map(Some),
        });
        let commit_range = match reserved {
            Ok(range) => range,
            Err(err) => {
                // Nothing of the new commits is decided: each is answered with the refusal.
                for &i in &batch.fresh_commits {
                    batch.answers[i] = Some(Err(SubmitError::Clock(err.clone())));
                }
                return;
            }
        };
        batch
            .decided
            .reserve(batch.fresh_commits.len() + batch.fresh_aborts.len());
        let mut next_commit = 0u64;
        for ((&i, conflict), txn) in batch.fresh_commits.iter().zip(checked).zip(txns) {
            let (outcome, decided_at) = match conflict {
                None => match commit_range.and_then(|range| range.get(next_commit)) {
                    Some(commit_ts) => {
                        next_commit += 1;
                        (Outcome::Committed(commit_ts), commit_ts)
                    }
                    None => continue, // the clock failed: answered above, nothing logged
                },
                Some(conflict) => (
                    Outcome::Aborted(AbortReason::Conflict(*conflict)),
                    txn.start_ts,
                ),
            };
            batch.decided.push((
                i,
                Decision {
                    outcome,
                    fingerprint: batch.fingerprints[i],
                    decided_at,
                },
            ));
        }
    }

    /// Step 4: decides the requested aborts.
    pub(super) fn decide_requested_aborts(
        clock: &Clock,
        physical_now: u64,
        batch: &mut Batch<'_, '_>,
    ) {
        // A late commit of an aborted id may carry a start timestamp from a clock up to
        // max_offset_us ahead of this one; once the abort is forgotten, the low watermark rises
        // to its `decided_at`, which must therefore be past every such start timestamp.
        let fence = abort_fence(clock, physical_now);
        for &i in &batch.fresh_aborts {
            batch.decided.push((
                i,
                Decision {
                    outcome: Outcome::Aborted(AbortReason::Requested),
                    fingerprint: None,
                    decided_at: fence,
                },
            ));
        }
    }

    /// Step 5: encodes the new decisions and hands them to the durable step. Returns the pieces
    /// handed out (external step). When the local log cannot take the batch, nothing of it is
    /// decided: its new decisions are answered with the error and forgotten.
    pub(super) fn make_durable(
        &mut self,
        batch: &mut Batch<'_, '_>,
        now: Timestamp,
    ) -> Vec<(u64, Vec<u8>)> {
        if batch.decided.is_empty() {
            return Vec::new();
        }
        let newest = self.newest_decided_after(&batch.decided, now);
        match &mut self.durable {
            DurableStep::Memory => return Vec::new(),
            DurableStep::External(external) => {
                // `now`, the clock's last once the batch is decided: the pieces' reading.
                let mut encoder = PieceEncoder::new(external.max_batch_bytes(), now);
                Self::encode_pieces(&mut encoder, batch);
                return external.hand_out(encoder.into_pieces());
            }
            DurableStep::Local(_) => {}
        }
        self.encode_decisions(batch);
        let payloads: Vec<&[u8]> = self
            .bounds
            .iter()
            .map(|&(start, end)| &self.buffer[start..end])
            .collect();
        if let Err(err) = self.durable.persist(&payloads, newest) {
            // Not logged, so not decided: answer with the error and remember nothing.
            let message = err.to_string();
            for (i, _) in batch.decided.drain(..) {
                batch.answers[i] = Some(Err(SubmitError::Log(message.clone())));
            }
        }
        Vec::new()
    }

    /// The batch's new decisions in an external step's pieces (no write sets: see `piece.rs`).
    fn encode_pieces(encoder: &mut PieceEncoder, batch: &Batch<'_, '_>) {
        for (i, decision) in &batch.decided {
            match (&decision.outcome, batch.requests[*i]) {
                (Outcome::Committed(commit_ts), Request::Commit(txn)) => encoder.committed(
                    txn.id,
                    decision.fingerprint.unwrap_or(0),
                    txn.start_ts,
                    *commit_ts,
                ),
                (Outcome::Aborted(AbortReason::Conflict(conflict)), Request::Commit(txn)) => {
                    encoder.aborted(decision.fingerprint.unwrap_or(0), txn.start_ts, conflict);
                }
                (_, Request::Abort(id, _)) => encoder.abort_requested(id, decision.decided_at),
                (_, Request::Commit(txn)) => encoder.abort_requested(txn.id, decision.decided_at),
            }
        }
    }

    /// The batch's new decisions as records, in `self.buffer` at `self.bounds`.
    fn encode_decisions(&mut self, batch: &Batch<'_, '_>) {
        self.buffer.clear();
        self.bounds.clear();
        for (i, decision) in &batch.decided {
            let start = self.buffer.len();
            match (&decision.outcome, batch.requests[*i]) {
                (Outcome::Committed(commit_ts), Request::Commit(txn)) => record::encode_committed(
                    &mut self.buffer,
                    txn.id,
                    decision.fingerprint.unwrap_or(0),
                    txn.start_ts,
                    *commit_ts,
                    txn.writes.iter(),
                ),
                (Outcome::Aborted(AbortReason::Conflict(conflict)), Request::Commit(txn)) => {
                    record::encode_aborted(
                        &mut self.buffer,
                        decision.fingerprint.unwrap_or(0),
                        txn.start_ts,
                        conflict,
                    );
                }
                (_, Request::Abort(id, _)) => {
                    record::encode_abort_requested(&mut self.buffer, id, decision.decided_at);
                }
                (_, Request::Commit(txn)) => {
                    record::encode_abort_requested(&mut self.buffer, txn.id, decision.decided_at);
                }
            }
            self.bounds.push((start, self.buffer.len()));
        }
    }

    /// Step 6: records the new decisions in the conflict detector and the decisions index, and
    /// answers them. Returns `(committed, aborted)`.
    pub(super) fn record(&mut self, batch: &mut Batch<'_, '_>, now: Timestamp) -> (u64, u64) {
        let (mut committed, mut aborted) = (0, 0);
        let decided = std::mem::take(&mut batch.decided);
        let requests = batch.requests;
        let order: Vec<usize> = decided.iter().map(|&(i, _)| i).collect();
        let commit_of = |at: usize| match order.get(at).map(|&i| requests[i]) {
            Some(Request::Commit(txn)) => Some(txn),
            _ => None,
        };
        // The detector's buckets of the next commits load while this one is recorded.
        for ahead in 0..2 * RECORD_PREFETCH_AHEAD {
            if let Some(txn) = commit_of(ahead) {
                self.detector.prefetch_writes_choice(txn);
            }
        }
        for ahead in 0..RECORD_PREFETCH_AHEAD {
            if let Some(txn) = commit_of(ahead) {
                self.detector.prefetch_writes_rest(txn);
            }
        }
        // The decisions index's slots too: triage loaded them, but the check since evicted them.
        for &i in order.iter().take(RECORD_INDEX_PREFETCH_AHEAD) {
            self.decisions.prefetch(requests[i].txn_id());
        }
        for (at, (i, decision)) in decided.into_iter().enumerate() {
            if let Some(&ahead) = order.get(at + RECORD_INDEX_PREFETCH_AHEAD) {
                self.decisions.prefetch(requests[ahead].txn_id());
            }
            if let Some(txn) = commit_of(at + 2 * RECORD_PREFETCH_AHEAD) {
                self.detector.prefetch_writes_choice(txn);
            }
            if let Some(txn) = commit_of(at + RECORD_PREFETCH_AHEAD) {
                self.detector.prefetch_writes_rest(txn);
            }
            match (&decision.outcome, batch.requests[i]) {
                (Outcome::Committed(commit_ts), Request::Commit(txn)) => {
                    let _ = self.detector.record(txn, *commit_ts);
                    self.newest_commit = self.newest_commit.max(Some(*commit_ts));
                    committed += 1;
                }
                _ => aborted += 1,
            }
            batch.answers[i] = Some(Ok(decision.outcome.clone()));
            batch.recorded.push(i);
            self.remember(batch.txn_id(i), decision, now);
        }
        (committed, aborted)
    }

    fn newest_decided_after(
        &self,
        decided: &[(usize, Decision)],
        now: Timestamp,
    ) -> Option<Timestamp> {
        decided
            .iter()
            .map(|(_, d)| d.watermark_when_forgotten(now))
            .max()
            .max(self.newest_decided)
    }
}

/// One batch on its way through [`CommitEngine::decide`]'s steps.
pub(super) struct Batch<'r, 'a> {
    pub(super) requests: &'r [Request<'a>],
    pub(super) answers: Vec<Option<Result<Outcome, SubmitError>>>,
    pub(super) fingerprints: Vec<Option<u64>>,
    /// `(request, earlier request of the same id new in this batch)`: shares its answer.
    pub(super) followers: Vec<(usize, usize)>,
    /// Requests whose id is new in this batch, commits and aborts.
    pub(super) fresh_commits: Vec<usize>,
    pub(super) fresh_aborts: Vec<usize>,
    /// New decisions, in the order they are made durable.
    pub(super) decided: Vec<(usize, Decision)>,
    /// Requests whose new decision was recorded.
    pub(super) recorded: Vec<usize>,
}

impl<'r, 'a> Batch<'r, 'a> {
    pub(super) fn new(requests: &'r [Request<'a>]) -> Self {
        let count = requests.len();
        Self {
            requests,
            answers: vec![None; count],
            fingerprints: vec![None; count],
            followers: Vec::new(),
            fresh_commits: Vec::with_capacity(count),
            fresh_aborts: Vec::new(),
            decided: Vec::new(),
            recorded: Vec::new(),
        }
    }

    pub(super) fn txn_id(&self, i: usize) -> TxnId {
        self.requests[i].txn_id()
    }

    pub(super) fn into_answers(mut self) -> Vec<Result<Outcome, SubmitError>> {
        for &(i, first) in &self.followers {
            self.answers[i] = self.answers[first].clone();
        }
        self.answers
            .into_iter()
            .map(|answer| answer.unwrap_or(Err(SubmitError::InvalidTxnId)))
            .collect()
    }
}

/// The newest start timestamp a transaction aborted now could carry: the later of this clock and
/// physical time, plus the max offset, with the largest logical counter and node id there.
fn abort_fence(clock: &Clock, physical_now: u64) -> Timestamp {
    let last = clock.last();
    let physical = last
        .physical()
        .max(physical_now)
        .saturating_add(clock.max_offset_us())
        .min(MAX_PHYSICAL);
    Timestamp::new(physical, MAX_LOGICAL, u64::from(u16::MAX)).map_or(last, |fence| fence.max(last))
}
