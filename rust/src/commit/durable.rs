//! Where a batch becomes durable: the one step between deciding a batch and answering it.
//!
//! The engine decides a batch (validation, idempotency, conflicts, timestamps) and encodes every
//! new decision as a record (`record.rs`). [`DurableStep`] makes those records durable; nothing
//! before it (validation, checking) or after it (recording, answering) knows which kind it is:
//! - [`DurableStep::Memory`]: nowhere (tests and benchmarks; everything is lost on restart).
//! - [`DurableStep::Local`]: the local [`CommitLog`], standalone mode: ONE `write` per batch and,
//!   in `sync` durability, ONE `fdatasync`, inside the engine's call; answers follow at once.
//!   Retention (checkpoints of the log) lives here too.
//!   *Pipelined syncs* ([`LocalLog::pipeline_syncs`], `sync` durability): the engine's call only
//!   writes; the batch is numbered and parked exactly as an external step's (below), and another
//!   thread syncs the log on a second handle of its file, outside the engine's lock
//!   ([`LocalLog::sync_point`], then [`LocalLog::synced`], which confirms every batch written
//!   before the sync began). So batch k+1 is decided and written while batch k's `fdatasync`
//!   runs, and answers still go out only once their records are on disk. A failed `fdatasync`
//!   aborts the process, as the log's own sync does (never retried). Each write publishes its
//!   sync point to the log's [`SyncWake`], on which the sync thread waits without the engine's
//!   lock (or Python's GIL), so it starts the `fdatasync` as soon as the write is done.
//! - [`DurableStep::External`]: a store the engine cannot write itself (clustered mode: one fenced
//!   etcd txn per batch, written by Python). Two-phase:
//!   1. deciding a batch hands out its records as numbered *pieces* `(batch_seq, bytes)` (a batch
//!      larger than `max_batch_bytes` is split, never refused) and parks the answers;
//!   2. the caller writes each piece and reports [`ExternalBatches::confirm`] (durable) or
//!      [`ExternalBatches::fail`] (failed, or outcome unknown).
//!
//!   While pieces are pending, later batches are decided against them (the engine records a
//!   decision in its conflict detector and decisions index when it hands it out), so a few
//!   batches can be in flight to hide the store's latency. Answers are released in the order the
//!   batches were decided, each once every piece up to its last one is confirmed, so an answer
//!   that repeats a pending decision (an idempotent resubmission) never goes out before that
//!   decision is durable. A failure answers every pending batch "outcome unknown" (the next
//!   leader decides by reading the store; nothing is guessed here) and stops the engine: every
//!   later batch is refused until the engine is opened again.
//!
//! A piece's format is in [`super::piece`] (version 2, compact; version 1 pieces, the commit
//! log's records framed, still replay).

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::commit::Outcome;
use crate::commit::SubmitError;
use crate::conflict::TxnId;
use crate::log::{CommitLog, LogError, SyncPoint};
use crate::timestamp::Timestamp;

/// Default cap of one piece: etcd refuses requests over 1.5 MiB by default, and the txn that
/// carries a piece adds its key, the fence compares and gRPC framing.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1 << 20;
/// Smallest accepted piece cap (one small record and the piece header must fit).
pub const MIN_MAX_BATCH_BYTES: usize = 256;

/// The answers of one decided batch, with what it adds to the engine's totals.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Released {
    /// Which `decide` call these answers belong to.
    pub ticket: u64,
    /// The id of each request, in request order.
    pub txn_ids: Vec<TxnId>,
    pub answers: Vec<Result<Outcome, SubmitError>>,
    pub(crate) committed: u64,
    pub(crate) aborted: u64,
}

/// What one `decide` call hands back: the pieces to make durable (external step only), and the
/// answers that can go out now (this batch's, or earlier ones' in the external step).
#[derive(Debug, Default)]
pub struct Handout {
    pub ticket: u64,
    pub pieces: Vec<(u64, Vec<u8>)>,
    pub released: Vec<Released>,
}

/// The local commit log and its retention.
pub struct LocalLog {
    log: CommitLog,
    sync: bool,
    retain_segments: usize,
    /// `(last seq of a batch, newest `decided_at` up to it)`, for choosing checkpoints.
    batch_marks: VecDeque<(u64, Option<Timestamp>)>,
    /// Pipelined syncs: the batches written and not yet synced (one piece number per batch
    /// that wrote records), parked as an external step's are.
    parked: Option<Box<ExternalBatches>>,
    /// Pipelined syncs: where each write publishes its sync point for the sync thread.
    wake: Option<Arc<SyncWake>>,
}

/// One sync of the local log by another thread ([`LocalLog::sync_point`]): every batch numbered
/// up to `through_batch` is written before it.
pub struct LocalSyncPoint {
    /// None when the log is already synced that far (a rotation or a checkpoint synced it).
    log: Option<SyncPoint>,
    through_batch: u64,
}

impl LocalSyncPoint {
    /// `fdatasync` (a failure aborts the process); how long it took.
    pub fn sync(&self) -> std::time::Duration {
        self.log
            .as_ref()
            .map_or(std::time::Duration::ZERO, SyncPoint::sync)
    }

    /// The last batch this sync covers.
    pub fn through_batch(&self) -> u64 {
        self.through_batch
    }
}

/// Pipelined syncs: the hand-over from the writer (inside the engine's call, under its lock) to
/// the sync thread (which waits here holding neither that lock nor Python's GIL). Each write
/// publishes the point that covers every batch written so far; a newer point replaces an untaken
/// one (it covers more, and a rotation synced the older segment). So a sync always begins after
/// the writes it confirms.
#[derive(Default)]
pub struct SyncWake {
    state: Mutex<WakeState>,
    written: Condvar,
}

#[derive(Default)]
struct WakeState {
    point: Option<LocalSyncPoint>,
    stopped: bool,
}

impl SyncWake {
    fn state(&self) -> MutexGuard<'_, WakeState> {
        // Nothing panics while holding it; its state is whole either way.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A batch was written: `point` covers it and every batch before it.
    pub fn publish(&self, point: LocalSyncPoint) {
        self.state().point = Some(point);
        self.written.notify_one();
    }

    /// Waits until a written batch is unsynced (its point), or the waits are stopped and no
    /// point is left (None). A point published before the stop is still handed out.
    pub fn wait(&self) -> Option<LocalSyncPoint> {
        let mut state = self.state();
        loop {
            if let Some(point) = state.point.take() {
                return Some(point);
            }
            if state.stopped {
                return None;
            }
            state = self
                .written
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Ends the waits once the points published so far are taken (`discard`: at once, dropping
    /// them; the log was synced and its batches released).
    pub fn stop(&self, discard: bool) {
        let mut state = self.state();
        state.stopped = true;
        if discard {
            state.point = None;
        }
        drop(state);
        self.written.notify_all();
    }
}

impl LocalLog {
    pub fn new(
        log: CommitLog,
        sync: bool,
        retain_segments: usize,
        newest_decided: Option<Timestamp>,
    ) -> Self {
        let mut batch_marks = VecDeque::new();
        batch_marks.push_back((log.next_seq().saturating_sub(1), newest_decided));
        Self {
            log,
            sync,
            retain_segments,
            batch_marks,
            parked: None,
            wake: None,
        }
    }

    /// Pipelined syncs from now on (see the module documentation); only in `sync` durability
    /// (false otherwise, or once a batch was written).
    pub fn pipeline_syncs(&mut self) -> bool {
        if !self.sync || self.parked.is_some() {
            return self.parked.is_some();
        }
        self.sync = false;
        self.parked = Some(Box::new(ExternalBatches::new(1, usize::MAX)));
        self.wake = Some(Arc::new(SyncWake::default()));
        true
    }

    /// Pipelined syncs: where the sync thread waits for written batches.
    pub fn sync_wake(&self) -> Option<&Arc<SyncWake>> {
        self.wake.as_ref()
    }

    /// Pipelined syncs: what to sync now, when a written batch is unsynced.
    pub fn sync_point(&self) -> Option<LocalSyncPoint> {
        let parked = self.parked.as_ref()?;
        if parked.pending_pieces() == 0 {
            return None;
        }
        Some(LocalSyncPoint {
            log: self.log.sync_point(),
            through_batch: parked.next_batch_seq() - 1,
        })
    }

    /// `point` was synced (taking `took`): returns the answers this releases, in decision order.
    pub fn synced(&mut self, point: &LocalSyncPoint, took: std::time::Duration) -> Vec<Released> {
        if let Some(log_point) = &point.log {
            self.log.synced(log_point, took);
        }
        self.parked
            .as_mut()
            .map(|parked| parked.confirm_through(point.through_batch))
            .unwrap_or_default()
    }

    pub fn log(&self) -> &CommitLog {
        &self.log
    }

    /// Appends one batch's records in ONE write (+ ONE fdatasync when `sync`). An error (a new
    /// segment could not be created) means nothing of the batch was written; a failed write or
    /// fsync aborts the process inside the log.
    pub fn append(
        &mut self,
        payloads: &[&[u8]],
        newest_decided: Option<Timestamp>,
    ) -> Result<(), LogError> {
        if let Some((_, last)) = self.log.append(payloads, self.sync)? {
            self.batch_marks.push_back((last, newest_decided));
            if let Some(parked) = &mut self.parked {
                parked.hand_out(vec![Vec::new()]);
            }
            if let (Some(wake), Some(point)) = (&self.wake, self.sync_point()) {
                wake.publish(point);
            }
        }
        Ok(())
    }

    /// Syncs the log here (pipelined syncs: the next [`Self::synced`] releases the batches).
    pub fn sync(&mut self) {
        self.log.sync();
    }

    /// Pipelined syncs, closing: syncs here and releases every parked batch; the sync thread's
    /// wait ends.
    pub fn sync_and_release(&mut self) -> Vec<Released> {
        self.log.sync();
        if let Some(wake) = &self.wake {
            wake.stop(true);
        }
        match &mut self.parked {
            Some(parked) => parked.confirm_through(parked.next_batch_seq() - 1),
            None => Vec::new(),
        }
    }

    /// Checkpoints away all but the newest `retain_segments` segments.
    pub fn maybe_checkpoint(&mut self) {
        let firsts = self.log.segment_first_seqs();
        if firsts.len() <= self.retain_segments {
            return;
        }
        let keep_from = firsts[firsts.len() - self.retain_segments];
        let covered = keep_from - 1;
        // Segments hold whole batches, so a batch ends exactly at `covered`.
        while self.batch_marks.len() > 1 && self.batch_marks[1].0 <= covered {
            self.batch_marks.pop_front();
        }
        let Some(&(mark_seq, newest)) = self.batch_marks.front() else {
            return;
        };
        if mark_seq > covered {
            return;
        }
        let data = super::checkpoint::encode(newest);
        if let Err(err) = self.log.checkpoint(covered, &data) {
            // Retention is housekeeping: the log stays correct, it only grows.
            eprintln!("hlc-oracle: commit log checkpoint failed: {err}");
        }
    }
}

/// Why `confirm` refused a batch sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmError {
    /// Never handed out, or already confirmed.
    UnknownBatch { batch_seq: u64, pending: String },
    /// The engine stopped after a failure; nothing more is released.
    Stopped(String),
}

impl fmt::Display for ConfirmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownBatch { batch_seq, pending } => write!(
                f,
                "batch {batch_seq} is not pending (pending batches: {pending}); it was never \
                 handed out or is already confirmed"
            ),
            Self::Stopped(reason) => write!(
                f,
                "the commit engine stopped after a failed decision write ({reason}); reopen it"
            ),
        }
    }
}

struct ParkedBatch {
    released: Released,
    /// The batch's answers may go out once every piece up to this one is durable.
    last_seq: u64,
    /// Its new decisions: hidden from `status` until then.
    decided_ids: Vec<TxnId>,
}

/// Batches handed out to an external store and not yet confirmed.
pub struct ExternalBatches {
    max_batch_bytes: usize,
    /// The next piece's sequence number.
    next_seq: u64,
    /// Every piece up to this one is confirmed.
    durable_through: u64,
    /// Pieces confirmed out of order, past `durable_through`.
    confirmed: BTreeSet<u64>,
    parked: VecDeque<ParkedBatch>,
    /// Ids whose decision is not yet durable (not answered by `status`).
    pending_ids: HashSet<TxnId, foldhash::fast::RandomState>,
    stopped: Option<String>,
}

impl ExternalBatches {
    /// The first piece gets `first_batch_seq` (a new leader continues after the stored ones).
    pub fn new(first_batch_seq: u64, max_batch_bytes: usize) -> Self {
        let first = first_batch_seq.max(1);
        Self {
            max_batch_bytes,
            next_seq: first,
            durable_through: first - 1,
            confirmed: BTreeSet::new(),
            parked: VecDeque::new(),
            pending_ids: HashSet::default(),
            stopped: None,
        }
    }

    /// Numbers the pieces from `first_batch_seq` (at least 1) instead, before any was handed
    /// out: a standby engine, built before its leader knew where the stored pieces end. Refused
    /// (false) once a piece was handed out.
    pub fn start_at(&mut self, first_batch_seq: u64) -> bool {
        if self.next_seq != self.durable_through + 1 || !self.confirmed.is_empty() {
            return false;
        }
        let first = first_batch_seq.max(1);
        self.next_seq = first;
        self.durable_through = first - 1;
        true
    }

    /// The largest piece handed out (a single larger record goes alone in its piece).
    pub fn max_batch_bytes(&self) -> usize {
        self.max_batch_bytes
    }

    /// Numbers the pieces of one batch (encoded by [`super::piece::PieceEncoder`]).
    pub fn hand_out(&mut self, pieces: Vec<Vec<u8>>) -> Vec<(u64, Vec<u8>)> {
        pieces
            .into_iter()
            .map(|piece| {
                let seq = self.next_seq;
                self.next_seq += 1;
                (seq, piece)
            })
            .collect()
    }

    fn park(&mut self, released: Released, decided_ids: Vec<TxnId>) {
        self.pending_ids.extend(decided_ids.iter().copied());
        self.parked.push_back(ParkedBatch {
            released,
            last_seq: self.next_seq - 1,
            decided_ids,
        });
    }

    /// The batches at the front whose pieces are all durable, in decision order.
    fn take_releasable(&mut self) -> Vec<Released> {
        let mut out = Vec::new();
        while self
            .parked
            .front()
            .is_some_and(|batch| batch.last_seq <= self.durable_through)
        {
            if let Some(batch) = self.parked.pop_front() {
                for id in &batch.decided_ids {
                    self.pending_ids.remove(id);
                }
                out.push(batch.released);
            }
        }
        out
    }

    /// Piece `batch_seq` is durable; returns the answers this releases.
    pub fn confirm(&mut self, batch_seq: u64) -> Result<Vec<Released>, ConfirmError> {
        if let Some(reason) = &self.stopped {
            return Err(ConfirmError::Stopped(reason.clone()));
        }
        if batch_seq <= self.durable_through
            || batch_seq >= self.next_seq
            || !self.confirmed.insert(batch_seq)
        {
            return Err(ConfirmError::UnknownBatch {
                batch_seq,
                pending: self.pending_range(),
            });
        }
        while self.confirmed.remove(&(self.durable_through + 1)) {
            self.durable_through += 1;
        }
        Ok(self.take_releasable())
    }

    /// Every piece up to `batch_seq` is durable (pipelined local syncs: one sync covers every
    /// batch written before it); returns the answers this releases. Nothing once stopped.
    pub fn confirm_through(&mut self, batch_seq: u64) -> Vec<Released> {
        let through = batch_seq.min(self.next_seq - 1);
        if self.stopped.is_some() || through <= self.durable_through {
            return Vec::new();
        }
        self.durable_through = through;
        self.confirmed.retain(|&seq| seq > through);
        while self.confirmed.remove(&(self.durable_through + 1)) {
            self.durable_through += 1;
        }
        self.take_releasable()
    }

    fn pending_range(&self) -> String {
        if self.durable_through + 1 >= self.next_seq {
            "none".into()
        } else {
            format!("{}..={}", self.durable_through + 1, self.next_seq - 1)
        }
    }

    /// A piece's write failed or its outcome is unknown: every parked batch is answered "outcome
    /// unknown", and the engine stops.
    pub fn fail(&mut self, reason: &str) -> Vec<Released> {
        if self.stopped.is_none() {
            self.stopped = Some(reason.to_string());
        }
        // `pending_ids` stay: `status` must not report decisions that may never have been stored.
        self.confirmed.clear();
        let unknown = SubmitError::OutcomeUnknown(reason.to_string());
        self.parked
            .drain(..)
            .map(|batch| Released {
                answers: vec![Err(unknown.clone()); batch.released.answers.len()],
                ticket: batch.released.ticket,
                txn_ids: batch.released.txn_ids,
                committed: 0,
                aborted: 0,
            })
            .collect()
    }

    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Batches decided and not yet released.
    pub fn pending_batches(&self) -> usize {
        self.parked.len()
    }

    /// Pieces handed out and not yet confirmed.
    pub fn pending_pieces(&self) -> u64 {
        self.next_seq - 1 - self.durable_through - self.confirmed.len() as u64
    }

    pub fn next_batch_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn is_pending(&self, txn_id: TxnId) -> bool {
        self.pending_ids.contains(&txn_id)
    }
}

/// The durable step of the engine; see the module documentation.
pub enum DurableStep {
    Memory,
    Local(LocalLog),
    External(ExternalBatches),
}

impl DurableStep {
    /// Makes one batch's records durable (memory: nowhere; the local log: one write). An error
    /// means nothing of the batch was written. An external step's pieces are encoded by the
    /// engine ([`super::piece`]) and numbered by [`ExternalBatches::hand_out`] instead.
    pub fn persist(
        &mut self,
        payloads: &[&[u8]],
        newest_decided: Option<Timestamp>,
    ) -> Result<(), LogError> {
        match self {
            Self::Local(log) => log.append(payloads, newest_decided),
            Self::Memory | Self::External(_) => Ok(()),
        }
    }

    /// Answers a decided batch: at once, or (external, pipelined local syncs) once its pieces
    /// are durable.
    pub fn answer(&mut self, released: Released, decided_ids: Vec<TxnId>) -> Vec<Released> {
        match self.parked_mut() {
            Some(parked) => {
                parked.park(released, decided_ids);
                parked.take_releasable()
            }
            None => vec![released],
        }
    }

    /// The batches decided and parked until durable: an external step's, or the local log's
    /// with pipelined syncs.
    pub fn parked(&self) -> Option<&ExternalBatches> {
        match self {
            Self::External(external) => Some(external),
            Self::Local(log) => log.parked.as_deref(),
            Self::Memory => None,
        }
    }

    fn parked_mut(&mut self) -> Option<&mut ExternalBatches> {
        match self {
            Self::External(external) => Some(external),
            Self::Local(log) => log.parked.as_deref_mut(),
            Self::Memory => None,
        }
    }

    pub fn local_mut(&mut self) -> Option<&mut LocalLog> {
        match self {
            Self::Local(log) => Some(log),
            _ => None,
        }
    }

    /// Housekeeping after a batch (the local log's retention).
    pub fn after_batch(&mut self) {
        if let Self::Local(log) = self {
            log.maybe_checkpoint();
        }
    }

    pub fn sync(&mut self) {
        if let Self::Local(log) = self {
            log.sync();
        }
    }

    pub fn log(&self) -> Option<&CommitLog> {
        match self {
            Self::Local(log) => Some(log.log()),
            _ => None,
        }
    }

    pub fn external(&self) -> Option<&ExternalBatches> {
        match self {
            Self::External(external) => Some(external),
            _ => None,
        }
    }

    pub fn external_mut(&mut self) -> Option<&mut ExternalBatches> {
        match self {
            Self::External(external) => Some(external),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_numbered_on_from_the_first_seq() {
        let mut external = ExternalBatches::new(5, 64);
        let pieces = external.hand_out(vec![vec![2], vec![2, 0]]);
        assert_eq!(
            pieces.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            vec![5, 6]
        );
        assert_eq!(external.next_batch_seq(), 7);
        assert_eq!(external.pending_pieces(), 2);
    }

    #[test]
    fn a_standby_starts_its_numbering_late_but_only_before_its_first_piece() {
        let mut external = ExternalBatches::new(1, 64);
        assert!(external.start_at(40));
        assert!(external.start_at(41)); // still nothing handed out
        let pieces = external.hand_out(vec![vec![2]]);
        assert_eq!(pieces[0].0, 41);
        assert_eq!(external.pending_pieces(), 1);
        assert!(!external.start_at(90));
        assert_eq!(external.next_batch_seq(), 42);
    }

    fn released(ticket: u64) -> Released {
        Released {
            ticket,
            txn_ids: vec![ticket],
            answers: vec![Ok(Outcome::Committed(Timestamp::new(1, 0, 0).unwrap()))],
            committed: 1,
            aborted: 0,
        }
    }

    #[test]
    fn confirm_through_releases_every_batch_written_before_it_in_order() {
        let mut parked = ExternalBatches::new(1, usize::MAX);
        for ticket in 0..3 {
            parked.hand_out(vec![Vec::new()]);
            parked.park(released(ticket), vec![ticket]);
        }
        // A batch that wrote nothing waits for the ones before it.
        parked.park(released(3), Vec::new());
        assert!(parked.is_pending(1));
        let out = parked.confirm_through(2);
        assert_eq!(out.iter().map(|r| r.ticket).collect::<Vec<_>>(), vec![0, 1]);
        assert!(!parked.is_pending(1) && parked.is_pending(2));
        assert!(parked.confirm_through(2).is_empty(), "already durable");
        let out = parked.confirm_through(99); // capped at the last handed out
        assert_eq!(out.iter().map(|r| r.ticket).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(parked.pending_pieces(), 0);
        assert_eq!(parked.next_batch_seq(), 4);
    }

    #[test]
    fn after_a_failure_nothing_parked_is_released_as_durable() {
        let mut parked = ExternalBatches::new(1, usize::MAX);
        for ticket in 0..2 {
            parked.hand_out(vec![Vec::new()]);
            parked.park(released(ticket), vec![ticket]);
        }
        let failed = parked.fail("fdatasync failed");
        assert_eq!(failed.len(), 2);
        assert!(failed.iter().all(|batch| batch
            .answers
            .iter()
            .all(|answer| matches!(answer, Err(SubmitError::OutcomeUnknown(_))))));
        assert!(parked.confirm_through(2).is_empty());
        assert!(parked.is_pending(0), "never reported by status");
    }

    fn point(through_batch: u64) -> LocalSyncPoint {
        LocalSyncPoint {
            log: None,
            through_batch,
        }
    }

    #[test]
    fn a_sync_wake_hands_out_the_newest_point_and_a_stop_ends_the_waits_after_it() {
        let wake = SyncWake::default();
        wake.publish(point(1));
        wake.publish(point(2));
        assert_eq!(
            wake.wait().map(|p| p.through_batch()),
            Some(2),
            "the newest"
        );
        wake.publish(point(3));
        wake.stop(false);
        assert_eq!(
            wake.wait().map(|p| p.through_batch()),
            Some(3),
            "a point published before the stop is still synced"
        );
        assert!(wake.wait().is_none());
        let closed = SyncWake::default();
        closed.publish(point(1));
        closed.stop(true);
        assert!(closed.wait().is_none(), "a close synced it already");
    }

    #[test]
    fn a_sync_wake_wakes_a_waiting_thread() {
        let wake = Arc::new(SyncWake::default());
        let waiter = {
            let wake = Arc::clone(&wake);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while let Some(point) = wake.wait() {
                    seen.push(point.through_batch());
                }
                seen
            })
        };
        wake.publish(point(1));
        wake.stop(false);
        let seen = waiter.join().expect("the waiter does not panic");
        assert!(seen.is_empty() || seen == [1], "{seen:?}");
    }
}
