//! The engine's public API: deciding a batch ([`CommitEngine::decide`], [`CommitEngine::process`]),
//! the external durable step's answers (`confirm`, `fail`), `status`, and the low watermarks.
//! Opening and replay are in `recovery.rs`; the steps of `decide` in `steps.rs`.

use crate::conflict::{ConflictDetector, FlatMap, TxnId};
use crate::hlc::Clock;
use crate::log::CommitLog;
use crate::timestamp::Timestamp;

use super::decisions::{Decision, DecisionIndex};
use super::durable::{
    ConfirmError, DurableStep, ExternalBatches, Handout, LocalSyncPoint, Released, SyncWake,
};
use super::history::HistoryLoad;
use super::types::{Durability, Limits, Outcome, Request, SubmitError};

/// The group-commit engine (see the module documentation of `commit`).
pub struct CommitEngine {
    pub(super) detector: ConflictDetector,
    /// Where a batch becomes durable (`durable.rs`).
    pub(super) durable: DurableStep,
    pub(super) durability: Durability,
    pub(super) limits: Limits,
    pub(super) decisions: DecisionIndex,
    pub(super) newest_commit: Option<Timestamp>,
    pub(super) newest_decided: Option<Timestamp>,
    /// Decisions of transactions that started at or below this may have been forgotten (a
    /// checkpoint, or the decisions index's cap): such a start is refused, never decided.
    pub(super) decisions_forgotten_through: Option<Timestamp>,
    pub(super) next_ticket: u64,
    /// Set while a new clustered leader's decision history loads (`history.rs`).
    pub(super) history: Option<HistoryLoad>,
    /// The first request of each id new in the batch `triage` sorts (kept between batches).
    pub(super) batch_ids: FlatMap,
    /// Reused encoding buffers.
    pub(super) buffer: Vec<u8>,
    pub(super) bounds: Vec<(usize, usize)>,
    pub(super) committed_total: u64,
    pub(super) aborted_total: u64,
    pub(super) batches_total: u64,
    pub(super) closed: bool,
}

impl CommitEngine {
    /// Aborts as too old (a recorded decision), from now on, every undecided transaction that
    /// started at or below `ts` (a new leader passes the previous leader's window limit, as
    /// Apache Omid does).
    pub fn raise_low_watermark(&mut self, ts: Timestamp) {
        self.detector.raise_low_watermark(ts);
    }

    /// Decisions of transactions that started at or below `ts` may be forgotten: such starts are
    /// refused from now on, never decided (a decision could flip a forgotten commit). A new
    /// clustered leader passes the newest decision retention trimmed from etcd.
    pub fn forget_decisions_through(&mut self, ts: Timestamp) {
        self.detector.raise_low_watermark(ts);
        self.decisions_forgotten_through = self.decisions_forgotten_through.max(Some(ts));
    }

    /// Puts a decision in the index; when that forgets older ones, transactions that started
    /// at or below them are refused from now on (raising the detector's low watermark), so a
    /// forgotten decision can never be taken a second time, differently.
    /// `now` is the clock's reading (in replay, the newest decision replayed so far).
    pub(super) fn remember(&mut self, txn_id: TxnId, decision: Decision, now: Timestamp) {
        self.newest_decided = self
            .newest_decided
            .max(Some(decision.watermark_when_forgotten(now)));
        if let Some(forgotten) = self.decisions.insert(txn_id, decision, now) {
            self.forget_decisions_through(forgotten);
        }
    }

    /// [`Self::remember`] for a replayed decision: older than every decision taken here, and
    /// never replacing one already known.
    pub(super) fn remember_replayed(&mut self, txn_id: TxnId, decision: Decision, now: Timestamp) {
        self.newest_decided = self
            .newest_decided
            .max(Some(decision.watermark_when_forgotten(now)));
        if let Some(forgotten) = self.decisions.insert_replayed(txn_id, decision, now) {
            self.forget_decisions_through(forgotten);
        }
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn detector(&self) -> &ConflictDetector {
        &self.detector
    }

    /// The decision for `txn_id`, if it is decided (durably) and still retained.
    pub fn status(&self, txn_id: TxnId) -> Option<Outcome> {
        if self
            .durable
            .parked()
            .is_some_and(|parked| parked.is_pending(txn_id))
        {
            return None;
        }
        self.decisions.get(txn_id).map(|d| d.outcome)
    }

    pub fn retained_decisions(&self) -> usize {
        self.decisions.len()
    }

    /// `(committed, aborted, batches)` since start.
    pub fn totals(&self) -> (u64, u64, u64) {
        (self.committed_total, self.aborted_total, self.batches_total)
    }

    pub fn log(&self) -> Option<&CommitLog> {
        self.durable.log()
    }

    /// Syncs and closes the log (releasing its directory lock); later batches are refused.
    /// Batches still pending in an external store are answered "outcome unknown".
    pub fn close(&mut self) -> Vec<Released> {
        // Pipelined syncs: synced now, so those batches are answered as durable.
        let mut unanswered = self
            .durable
            .local_mut()
            .map(super::durable::LocalLog::sync_and_release)
            .unwrap_or_default();
        self.count_released(&unanswered);
        unanswered.extend(self.fail("the commit engine was closed"));
        self.durable = DurableStep::Memory;
        self.closed = true;
        unanswered
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// `fdatasync` of batches appended in `Async` durability (pipelined syncs: the next
    /// [`Self::synced`] releases what this synced).
    pub fn sync(&mut self) {
        self.durable.sync();
    }

    /// `Sync` durability with a local log: pipelined syncs from now on (see `durable.rs`):
    /// [`Self::decide`] writes a batch and parks its answers; another thread syncs the log
    /// ([`Self::sync_point`], `fdatasync` outside the engine's lock, then [`Self::synced`]) and
    /// releases them. False for another durability. `process` is refused from then on.
    pub fn pipeline_syncs(&mut self) -> bool {
        self.durability == Durability::Sync
            && self
                .durable
                .local_mut()
                .is_some_and(super::durable::LocalLog::pipeline_syncs)
    }

    /// Pipelined syncs: where a sync thread waits for the points each write publishes (without
    /// this engine's lock); its waits end when the engine is closed.
    pub fn sync_wake(&self) -> Option<std::sync::Arc<SyncWake>> {
        match &self.durable {
            DurableStep::Local(log) => log.sync_wake().cloned(),
            _ => None,
        }
    }

    /// Pipelined syncs: what to `fdatasync` now (None when no written batch is waiting).
    pub fn sync_point(&self) -> Option<LocalSyncPoint> {
        match &self.durable {
            DurableStep::Local(log) => log.sync_point(),
            _ => None,
        }
    }

    /// Pipelined syncs: `point` is synced (taking `took`); returns the answers this releases, in
    /// decision order (none once the engine is closed).
    pub fn synced(&mut self, point: &LocalSyncPoint, took: std::time::Duration) -> Vec<Released> {
        let released = self
            .durable
            .local_mut()
            .map(|log| log.synced(point, took))
            .unwrap_or_default();
        self.count_released(&released);
        released
    }

    /// Decides, timestamps, logs and records one batch; one answer per request, in order.
    /// With the local log or in memory; the external durable step goes through [`Self::decide`].
    pub fn process(
        &mut self,
        clock: &Clock,
        requests: &[Request<'_>],
    ) -> Vec<Result<Outcome, SubmitError>> {
        if self.durable.parked().is_some() {
            let refusal = SubmitError::Log(
                "the engine's batches are parked until durable (an external step, or pipelined \
                 syncs): use decide"
                    .into(),
            );
            return vec![Err(refusal); requests.len()];
        }
        let mut handout = self.decide(clock, requests);
        handout
            .released
            .pop()
            .map(|released| released.answers)
            .unwrap_or_default()
    }

    /// Decides one batch in named steps: validate and answer decided ids, check conflicts, take
    /// timestamps, make durable, record, answer. The answers are in `released` (in request
    /// order) at once, unless the durable step is external: then the batch's records are in
    /// `pieces`, and its answers come from [`Self::confirm`] once they are durable.
    pub fn decide(&mut self, clock: &Clock, requests: &[Request<'_>]) -> Handout {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        if let Some(refusal) = self.refusal() {
            return Handout {
                ticket,
                pieces: Vec::new(),
                released: vec![Released {
                    ticket,
                    txn_ids: requests.iter().map(Request::txn_id).collect(),
                    answers: vec![Err(refusal); requests.len()],
                    committed: 0,
                    aborted: 0,
                }],
            };
        }
        let physical_now = clock.physical_now();
        let mut batch = self.triage(clock, requests, physical_now);
        let (txns, checked) = self.check_conflicts(&batch);
        Self::take_timestamps(clock, &mut batch, &txns, checked);
        Self::decide_requested_aborts(clock, physical_now, &mut batch);
        let now = clock.last();
        let pieces = self.make_durable(&mut batch, now);
        let (committed, aborted) = self.record(&mut batch, now);
        self.batches_total += 1;
        self.durable.after_batch();
        let decided_ids = if self.durable.parked().is_some() {
            batch.recorded.iter().map(|&i| batch.txn_id(i)).collect()
        } else {
            Vec::new()
        };
        let txn_ids = requests.iter().map(Request::txn_id).collect();
        let released = Released {
            ticket,
            txn_ids,
            answers: batch.into_answers(),
            committed,
            aborted,
        };
        let released = self.durable.answer(released, decided_ids);
        self.count_released(&released);
        Handout {
            ticket,
            pieces,
            released,
        }
    }

    /// External durable step: piece `batch_seq` is durable. Returns the answers this releases
    /// (in decision order).
    pub fn confirm(&mut self, batch_seq: u64) -> Result<Vec<Released>, ConfirmError> {
        let Some(external) = self.durable.external_mut() else {
            return Err(ConfirmError::UnknownBatch {
                batch_seq,
                pending: "none: the durable step is not external".into(),
            });
        };
        let released = external.confirm(batch_seq)?;
        self.count_released(&released);
        Ok(released)
    }

    /// External durable step: a piece's write failed or its outcome is unknown. Every pending
    /// batch is answered [`SubmitError::OutcomeUnknown`], and every later batch is refused.
    pub fn fail(&mut self, reason: &str) -> Vec<Released> {
        self.durable
            .external_mut()
            .map(|external| external.fail(reason))
            .unwrap_or_default()
    }

    /// Batches decided and not yet answered (external durable step).
    pub fn pending_batches(&self) -> usize {
        self.durable
            .parked()
            .map_or(0, ExternalBatches::pending_batches)
    }

    /// A standby engine (external durable step, nothing decided yet) numbers its pieces from
    /// `first_batch_seq`; false when a piece was already handed out, or the step is local.
    pub fn start_batches_at(&mut self, first_batch_seq: u64) -> bool {
        self.durable
            .external_mut()
            .is_some_and(|external| external.start_at(first_batch_seq))
    }

    /// Faults the conflict table and the decisions index in now (see `conflict/zeroed.rs`):
    /// built ahead of need and prefaulted, an engine's first calls touch no fresh page.
    pub fn prefault(&mut self) {
        self.detector.prefault();
        self.decisions.prefault();
    }

    /// The sequence number the next piece will get (external durable step).
    pub fn next_batch_seq(&self) -> Option<u64> {
        self.durable.external().map(ExternalBatches::next_batch_seq)
    }

    fn count_released(&mut self, released: &[Released]) {
        for batch in released {
            self.committed_total += batch.committed;
            self.aborted_total += batch.aborted;
        }
    }

    /// Why every request is refused now (closed, or stopped after a failed external write).
    fn refusal(&self) -> Option<SubmitError> {
        if self.closed {
            return Some(SubmitError::Log("the commit engine is closed".into()));
        }
        let stopped = self.durable.parked().and_then(ExternalBatches::stopped)?;
        Some(SubmitError::Log(format!(
            "the commit engine stopped after a failed decision write ({stopped}); it must be \
             reopened"
        )))
    }
}
