//! The group-commit hot path: one call per batch decides, timestamps, makes durable and records.
//!
//! [`CommitEngine::decide`] takes a batch of requests (commit a transaction, or abort an id) and,
//! in one pass without the GIL, runs these steps (each a method of the same name):
//! 1. `triage`: validates each transaction (bad input gets an error and never reaches the log),
//!    and answers ids that are already decided with their first decision (idempotency), after
//!    checking that a resubmitted transaction has the same contents (a fingerprint of start
//!    timestamp, read and write sets);
//! 2. `check_conflicts`: ONE `check_batch` over the new transactions (first committer wins);
//! 3. `take_timestamps`: the commit timestamps from the clock in ONE `reserve` (after moving the
//!    clock past the newest start timestamp, so every commit timestamp is greater than its
//!    transaction's start and than every earlier commit timestamp);
//!    `decide_requested_aborts`: the aborts asked for by id, with their fence;
//! 4. `make_durable`: encodes every new decision (commits, conflict aborts, requested aborts) and
//!    hands the records to the durable step ([`durable`]: the local commit log in ONE write and,
//!    in `sync` durability, ONE `fdatasync`; or pieces for an external store, clustered mode);
//! 5. `record`: the commits in the conflict detector, every decision in the decisions index;
//! 6. the answers: at once, or (external step) once the batch's pieces are confirmed durable.
//!
//! [`CommitEngine::process`] is `decide` for the local log (answers at once).
//!
//! Recovery ([`CommitEngine::open`]) replays the log: the decisions index (for `status` and
//! idempotency, within `retained_decisions`), the detector's history, and the clock's floor (the
//! clock is moved past the newest logged commit timestamp).
//!
//! Retention: when the log has more than `retain_segments` segments, a checkpoint (the newest
//! decision timestamp it covers) is written and the covered segments are deleted; after a restart
//! the detector's low watermark starts at that timestamp, so a transaction that started before it
//! is refused as too old rather than checked against forgotten history or forgotten decisions.
//! The same holds in memory: when the decisions index forgets its oldest decisions (past
//! `retained_decisions`), the low watermark rises to them, so a late resubmission of a forgotten
//! id (or a late commit of an id whose abort was forgotten) is refused, never decided again.
//!
//! Too old, refused or aborted: a transaction that started at or below the detector's low
//! watermark cannot have its conflicts checked. When its decision may have been forgotten (its
//! start is at or below `decisions_forgotten_through`: a checkpoint, or the decisions index's
//! cap) it is refused ([`SubmitError::StartTooOld`]), since deciding it could flip a forgotten
//! commit. Otherwise the index proves it undecided, and `check_conflicts` decides it Aborted
//! (conflict kind too old), recorded and made durable like every decision, so it can never flip:
//! Apache Omid's rule for the transactions a new leader inherits (its low watermark is the
//! previous leader's window limit), and the same rule for history the detector's memory bound
//! forgot.

mod decisions;
pub mod durable;
mod history;
pub mod piece;
pub mod record;
pub mod stream;
pub mod wire;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use crate::conflict::{Conflict, ConflictDetector, Isolation, Transaction, TxnId};
use crate::hlc::{Clock, ClockError};
use crate::log::{CommitLog, LogError, LogOptions, Recovered};
use crate::timestamp::{Timestamp, MAX_LOGICAL, MAX_PHYSICAL};

pub use decisions::{Decision, DecisionIndex};
pub use durable::{ConfirmError, Handout, Released};

use durable::{DurableStep, ExternalBatches, LocalLog};
use piece::PieceEncoder;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged after the batch is on disk (write + fdatasync).
    Sync,
    /// Acknowledged after the write, before the fdatasync: a machine crash can lose the batches
    /// whose fdatasync had not finished; a process crash loses nothing (the page cache survives).
    Async,
    /// No log at all: for tests and benchmarks. Everything is lost on restart.
    Memory,
    /// Acknowledged after an external store (clustered: etcd) confirms the batch's records,
    /// which the engine hands out from `decide` (see `durable.rs`).
    External,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortReason {
    Conflict(Conflict),
    /// `abort(txn_id)` was called before the transaction was decided.
    Requested,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Committed(Timestamp),
    Aborted(AbortReason),
}

/// Limits on one transaction; a transaction over them is refused before it reaches the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_read_keys: usize,
    pub max_write_keys: usize,
    pub max_key_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_read_keys: 10_000,
            max_write_keys: 10_000,
            max_key_bytes: 4_096,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub isolation: Isolation,
    /// The conflict detector's memory bound (remembered keys).
    pub max_keys: usize,
    pub limits: Limits,
    /// Decided ids kept for `status` and idempotency.
    pub retained_decisions: usize,
    pub durability: Durability,
    /// The log directory; required unless durability is `Memory`.
    pub log_dir: Option<PathBuf>,
    pub log_options: LogOptions,
    /// Segments kept before older ones are checkpointed away.
    pub retain_segments: usize,
    /// `External`: the largest piece of a batch handed out (a larger batch is split).
    pub max_batch_bytes: usize,
    /// `External`: the sequence number of the first piece handed out.
    pub first_batch_seq: u64,
}

impl EngineConfig {
    pub fn new(durability: Durability, log_dir: Option<PathBuf>) -> Self {
        Self {
            isolation: Isolation::Snapshot,
            max_keys: crate::conflict::DEFAULT_MAX_KEYS,
            limits: Limits::default(),
            retained_decisions: 1_000_000,
            durability,
            log_dir,
            log_options: LogOptions::default(),
            retain_segments: 8,
            max_batch_bytes: durable::DEFAULT_MAX_BATCH_BYTES,
            first_batch_seq: 1,
        }
    }
}

/// Why one request was refused. Nothing is logged for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// Transaction id 0 is reserved (it is the "unset" value on the wire).
    InvalidTxnId,
    EmptyWriteSet {
        txn_id: TxnId,
    },
    TooManyKeys {
        txn_id: TxnId,
        field: &'static str,
        count: usize,
        limit: usize,
    },
    KeyTooLarge {
        txn_id: TxnId,
        field: &'static str,
        index: usize,
        len: usize,
        limit: usize,
    },
    StartInFuture {
        txn_id: TxnId,
        start_ts: Timestamp,
        physical_now: u64,
        max_offset_us: u64,
    },
    StartTooOld {
        txn_id: TxnId,
        start_ts: Timestamp,
        low_watermark: Timestamp,
    },
    /// The id was already submitted (or is in this batch) with different contents.
    Mismatch {
        txn_id: TxnId,
    },
    Clock(ClockError),
    /// The batch could not be written to the commit log (nothing of it was), or the engine is
    /// closed or stopped.
    Log(String),
    /// The external store's write of the batch failed or its outcome is unknown: the
    /// transaction may or may not be decided; the store (read by the next leader) says which.
    OutcomeUnknown(String),
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidTxnId => write!(
                f,
                "txn_id must be in 1..=18446744073709551615 (0 is reserved as unset), got 0"
            ),
            Self::EmptyWriteSet { txn_id } => write!(
                f,
                "transaction {txn_id}: write_set is empty (a read-only transaction has nothing \
                 to commit)"
            ),
            Self::TooManyKeys {
                txn_id,
                field,
                count,
                limit,
            } => write!(
                f,
                "transaction {txn_id}: {field} has {count} keys, over the limit of {limit}"
            ),
            Self::KeyTooLarge {
                txn_id,
                field,
                index,
                len,
                limit,
            } => write!(
                f,
                "transaction {txn_id}: {field}[{index}] is {len} bytes, over the limit of {limit}"
            ),
            Self::StartInFuture {
                txn_id,
                start_ts,
                physical_now,
                max_offset_us,
            } => write!(
                f,
                "transaction {txn_id}: start_ts {start_ts} is in the future (physical clock \
                 {physical_now} us, max_offset_us {max_offset_us})"
            ),
            Self::StartTooOld {
                txn_id,
                start_ts,
                low_watermark,
            } => write!(
                f,
                "transaction {txn_id}: start_ts {start_ts} is at or below the low watermark \
                 {low_watermark}, below which decisions are forgotten; it cannot be decided, \
                 restart it"
            ),
            Self::Mismatch { txn_id } => write!(
                f,
                "transaction {txn_id} was already submitted with different contents (start_ts, \
                 read_set or write_set)"
            ),
            Self::Clock(err) => write!(f, "cannot take commit timestamps: {err}"),
            Self::Log(message) => write!(f, "cannot write the commit log: {message}"),
            Self::OutcomeUnknown(reason) => write!(
                f,
                "outcome unknown: the decision write failed or was not confirmed ({reason}); \
                 ask the current leader for the transaction's status"
            ),
        }
    }
}

#[derive(Debug)]
pub enum EngineError {
    Log(LogError),
    /// A record verified by its checksum but could not be decoded as a decision.
    BadRecord {
        seq: u64,
        detail: String,
    },
    /// The newest logged timestamp is too far ahead of the physical clock to continue from.
    Clock(ClockError),
    InvalidConfig(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Log(err) => err.fmt(f),
            Self::BadRecord { seq, detail } => {
                write!(f, "commit log record {seq}: {detail}")
            }
            Self::Clock(err) => write!(
                f,
                "cannot move the clock past the newest logged commit timestamp: {err}"
            ),
            Self::InvalidConfig(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<LogError> for EngineError {
    fn from(err: LogError) -> Self {
        Self::Log(err)
    }
}

/// One request of a batch.
#[derive(Clone, Copy)]
pub enum Request<'a> {
    Commit(&'a Transaction),
    Abort(TxnId),
}

impl Request<'_> {
    pub fn txn_id(&self) -> TxnId {
        match self {
            Self::Commit(txn) => txn.id,
            Self::Abort(id) => *id,
        }
    }
}

/// What recovery found, for the start-up log line.
#[derive(Debug, Default)]
pub struct EngineRecovery {
    pub log: Option<Recovered>,
    pub commits: u64,
    pub aborts: u64,
    /// The newest commit timestamp found (the clock now runs above it).
    pub floor: Option<Timestamp>,
}

/// Content fingerprint (xxh3, stable across processes and versions) of what a transaction asks
/// to commit.
pub fn fingerprint(txn: &Transaction) -> u64 {
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

const CHECKPOINT_VERSION: u8 = 1;

/// Decisions the `record` step looks ahead when it prefetches the detector's buckets.
const RECORD_PREFETCH_AHEAD: usize = 4;

pub struct CommitEngine {
    detector: ConflictDetector,
    /// Where a batch becomes durable (`durable.rs`).
    durable: DurableStep,
    durability: Durability,
    limits: Limits,
    decisions: DecisionIndex,
    newest_commit: Option<Timestamp>,
    newest_decided: Option<Timestamp>,
    /// Decisions of transactions that started at or below this may have been forgotten (a
    /// checkpoint, or the decisions index's cap): such a start is refused, never decided.
    decisions_forgotten_through: Option<Timestamp>,
    next_ticket: u64,
    /// Set while a new clustered leader's decision history loads (`history.rs`).
    history: Option<history::HistoryLoad>,
    /// Reused encoding buffers.
    buffer: Vec<u8>,
    bounds: Vec<(usize, usize)>,
    committed_total: u64,
    aborted_total: u64,
    batches_total: u64,
    closed: bool,
}

impl CommitEngine {
    /// Opens the log (unless `Memory`), replays it, and moves `clock` past the newest commit.
    pub fn open(
        config: EngineConfig,
        clock: &Clock,
    ) -> Result<(Self, EngineRecovery), EngineError> {
        let detector = ConflictDetector::new(config.isolation, config.max_keys)
            .map_err(|err| EngineError::InvalidConfig(err.to_string()))?;
        if config.retain_segments == 0 {
            return Err(EngineError::InvalidConfig(
                "retain_segments must be at least 1, got 0".into(),
            ));
        }
        let mut engine = Self {
            detector,
            durable: DurableStep::Memory,
            durability: config.durability,
            limits: config.limits,
            decisions: DecisionIndex::new(config.retained_decisions),
            newest_commit: None,
            newest_decided: None,
            decisions_forgotten_through: None,
            next_ticket: 1,
            history: None,
            buffer: Vec::new(),
            bounds: Vec::new(),
            committed_total: 0,
            aborted_total: 0,
            batches_total: 0,
            closed: false,
        };
        let mut recovery = EngineRecovery::default();
        if matches!(config.durability, Durability::Sync | Durability::Async) {
            let dir = config.log_dir.clone().ok_or_else(|| {
                EngineError::InvalidConfig(
                    "a log directory is required unless durability is \"memory\" or \"external\""
                        .into(),
                )
            })?;
            let mut replay_error = None;
            let (log, recovered) =
                CommitLog::open(&dir, config.log_options, &mut |seq, payload| {
                    if replay_error.is_some() {
                        return;
                    }
                    match record::decode(payload) {
                        Ok(decision) => engine.replay(decision, &mut recovery),
                        Err(err) => {
                            replay_error = Some(EngineError::BadRecord {
                                seq,
                                detail: err.to_string(),
                            });
                        }
                    }
                })?;
            if let Some(err) = replay_error {
                return Err(err);
            }
            if let Some((_, data)) = &recovered.checkpoint {
                if let Some(covered) = decode_checkpoint(data) {
                    engine.detector.raise_low_watermark(covered);
                    engine.forget_decisions_through(covered);
                    engine.newest_commit = engine.newest_commit.max(Some(covered));
                    engine.newest_decided = engine.newest_decided.max(Some(covered));
                }
            }
            engine.durable = DurableStep::Local(LocalLog::new(
                log,
                config.durability == Durability::Sync,
                config.retain_segments,
                engine.newest_decided,
            ));
            recovery.log = Some(recovered);
        }
        if config.durability == Durability::External {
            if let Some(dir) = &config.log_dir {
                return Err(EngineError::InvalidConfig(format!(
                    "durability \"external\" keeps no local log, but a log directory was given: \
                     {}",
                    dir.display()
                )));
            }
            if config.max_batch_bytes < durable::MIN_MAX_BATCH_BYTES {
                return Err(EngineError::InvalidConfig(format!(
                    "max_batch_bytes must be at least {}, got {}",
                    durable::MIN_MAX_BATCH_BYTES,
                    config.max_batch_bytes
                )));
            }
            engine.durable = DurableStep::External(ExternalBatches::new(
                config.first_batch_seq,
                config.max_batch_bytes,
            ));
        }
        if let Some(floor) = engine.newest_commit {
            clock.raise_floor(floor);
        }
        recovery.floor = engine.newest_commit;
        Ok((engine, recovery))
    }

    fn replay(&mut self, decision: record::DecisionRecord, recovery: &mut EngineRecovery) {
        // What the clock read when this record was written, as far as the log tells.
        let seen = self
            .newest_decided
            .max(self.newest_commit)
            .unwrap_or(Timestamp::from_packed(0, 0));
        match decision {
            record::DecisionRecord::Committed {
                txn_id,
                fingerprint,
                start_ts,
                commit_ts,
                writes,
            } => {
                if !writes.is_empty() {
                    // (A compact piece carries no write set: see `piece.rs`.)
                    let txn =
                        Transaction::new(txn_id, start_ts, Vec::<Vec<u8>>::new(), writes, None);
                    // A commit older than a key's remembered one changes nothing; a logged
                    // commit is always after its start, so recording cannot fail on a sound log.
                    let _ = self.detector.record(&txn, commit_ts);
                }
                self.remember_replayed(
                    txn_id,
                    Decision {
                        outcome: Outcome::Committed(commit_ts),
                        fingerprint: Some(fingerprint),
                        decided_at: commit_ts,
                    },
                    seen.max(commit_ts),
                );
                self.newest_commit = self.newest_commit.max(Some(commit_ts));
                recovery.commits += 1;
            }
            record::DecisionRecord::Aborted {
                fingerprint,
                start_ts,
                conflict,
            } => {
                self.remember_replayed(
                    conflict.txn_id,
                    Decision {
                        outcome: Outcome::Aborted(AbortReason::Conflict(conflict)),
                        fingerprint: Some(fingerprint),
                        decided_at: start_ts,
                    },
                    seen.max(start_ts),
                );
                recovery.aborts += 1;
            }
            record::DecisionRecord::AbortRequested { txn_id, decided_at } => {
                self.remember_replayed(
                    txn_id,
                    Decision {
                        outcome: Outcome::Aborted(AbortReason::Requested),
                        fingerprint: None,
                        decided_at,
                    },
                    seen,
                );
                recovery.aborts += 1;
            }
        }
    }

    /// Recovery on promotion (durability `External`): replays the decisions of one stored piece
    /// (in the order the pieces were handed out), and moves `clock` past its newest commit.
    /// A piece that does not decode is an error naming `batch_seq`, never skipped.
    pub fn replay_piece(
        &mut self,
        clock: &Clock,
        batch_seq: u64,
        piece: &[u8],
    ) -> Result<EngineRecovery, EngineError> {
        let bad = |err: record::RecordError| EngineError::BadRecord {
            seq: batch_seq,
            detail: format!("decision batch: {err}"),
        };
        let decisions = piece::decode(piece).map_err(bad)?;
        let mut recovery = EngineRecovery::default();
        for decision in decisions {
            self.replay(decision, &mut recovery);
        }
        if let Some(floor) = self.newest_commit {
            clock.raise_floor(floor);
        }
        recovery.floor = self.newest_commit;
        Ok(recovery)
    }

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
    fn remember(&mut self, txn_id: TxnId, decision: Decision, now: Timestamp) {
        self.newest_decided = self
            .newest_decided
            .max(Some(decision.watermark_when_forgotten(now)));
        if let Some(forgotten) = self.decisions.insert(txn_id, decision, now) {
            self.forget_decisions_through(forgotten);
        }
    }

    /// [`Self::remember`] for a replayed decision: older than every decision taken here, and
    /// never replacing one already known.
    fn remember_replayed(&mut self, txn_id: TxnId, decision: Decision, now: Timestamp) {
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
    pub fn status(&self, txn_id: TxnId) -> Option<&Outcome> {
        if self
            .durable
            .external()
            .is_some_and(|external| external.is_pending(txn_id))
        {
            return None;
        }
        self.decisions.get(txn_id).map(|d| &d.outcome)
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
        self.sync();
        let unanswered = self.fail("the commit engine was closed");
        self.durable = DurableStep::Memory;
        self.closed = true;
        unanswered
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// `fdatasync` of batches appended in `Async` durability.
    pub fn sync(&mut self) {
        self.durable.sync();
    }

    fn validate(
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

    /// Decides, timestamps, logs and records one batch; one answer per request, in order.
    /// With the local log or in memory; the external durable step goes through [`Self::decide`].
    pub fn process(
        &mut self,
        clock: &Clock,
        requests: &[Request<'_>],
    ) -> Vec<Result<Outcome, SubmitError>> {
        if self.durability == Durability::External {
            let refusal = SubmitError::Log(
                "the engine's durable step is external: use decide, then confirm or fail".into(),
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
        let decided_ids = if pieces.is_empty() {
            Vec::new()
        } else {
            batch.recorded.iter().map(|&i| batch.txn_id(i)).collect()
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
            .external()
            .map_or(0, ExternalBatches::pending_batches)
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
        let stopped = self.durable.external().and_then(ExternalBatches::stopped)?;
        Some(SubmitError::Log(format!(
            "the commit engine stopped after a failed decision write ({stopped}); it must be \
             reopened"
        )))
    }

    /// Step 1: validate each request and answer decided ids with their first decision; sort the
    /// rest into new commits, new aborts, and repeats of an id new in this batch.
    fn triage<'r, 'a>(
        &self,
        clock: &Clock,
        requests: &'r [Request<'a>],
        physical_now: u64,
    ) -> Batch<'r, 'a> {
        let mut batch = Batch::new(requests);
        // First request of each id new in this batch; later ones copy its answer.
        let mut first_of: HashMap<TxnId, usize, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(requests.len(), Default::default());
        for (i, request) in requests.iter().enumerate() {
            let (txn_id, fingerprint) = match request {
                Request::Commit(txn) => (txn.id, Some(fingerprint(txn))),
                Request::Abort(id) => (*id, None),
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
            if let Some(&first) = first_of.get(&txn_id) {
                match (batch.fingerprints[first], fingerprint) {
                    (Some(a), Some(b)) if a != b => {
                        batch.answers[i] = Some(Err(SubmitError::Mismatch { txn_id }));
                    }
                    _ => batch.followers.push((i, first)),
                }
                continue;
            }
            first_of.insert(txn_id, i);
            match request {
                Request::Commit(_) => batch.fresh_commits.push(i),
                Request::Abort(_) => batch.fresh_aborts.push(i),
            }
        }
        batch
    }

    /// Step 2: ONE check over the new commits, first committer wins. Returns them with their
    /// conflicts (None: accepted).
    fn check_conflicts<'a>(
        &self,
        batch: &Batch<'_, 'a>,
    ) -> (Vec<&'a Transaction>, Vec<Option<Conflict>>) {
        let txns: Vec<&'a Transaction> = batch
            .fresh_commits
            .iter()
            .filter_map(|&i| match batch.requests[i] {
                Request::Commit(txn) => Some(txn),
                Request::Abort(_) => None,
            })
            .collect();
        let checked = match self.detector.check_batch(&txns) {
            Ok(decision) => decision.outcomes,
            // Ids are unique by construction (`triage`); keep going if that ever changes.
            Err(_) => txns.iter().map(|txn| self.detector.check(txn)).collect(),
        };
        (txns, checked)
    }

    /// Step 3: ONE clock reservation for the accepted commits, above every start timestamp;
    /// decides the new commits (committed, or aborted by their conflict). When the clock
    /// refuses, the accepted ones are answered with its error and nothing is decided for them.
    fn take_timestamps(
        clock: &Clock,
        batch: &mut Batch<'_, '_>,
        txns: &[&Transaction],
        checked: Vec<Option<Conflict>>,
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
                    Outcome::Aborted(AbortReason::Conflict(conflict)),
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
    fn decide_requested_aborts(clock: &Clock, physical_now: u64, batch: &mut Batch<'_, '_>) {
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
    fn make_durable(&mut self, batch: &mut Batch<'_, '_>, now: Timestamp) -> Vec<(u64, Vec<u8>)> {
        if batch.decided.is_empty() {
            return Vec::new();
        }
        let newest = self.newest_decided_after(&batch.decided, now);
        match &mut self.durable {
            DurableStep::Memory => return Vec::new(),
            DurableStep::External(external) => {
                let mut encoder = PieceEncoder::new(external.max_batch_bytes());
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
                (_, Request::Abort(id)) => encoder.abort_requested(id, decision.decided_at),
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
                (_, Request::Abort(id)) => {
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
    fn record(&mut self, batch: &mut Batch<'_, '_>, now: Timestamp) -> (u64, u64) {
        let (mut committed, mut aborted) = (0, 0);
        let decided = std::mem::take(&mut batch.decided);
        let requests = batch.requests;
        let order: Vec<usize> = decided.iter().map(|&(i, _)| i).collect();
        let commit_of = |at: usize| match order.get(at).map(|&i| requests[i]) {
            Some(Request::Commit(txn)) => Some(txn),
            _ => None,
        };
        // The detector's buckets of a few commits ahead load while this one is recorded.
        for ahead in 0..RECORD_PREFETCH_AHEAD {
            if let Some(txn) = commit_of(ahead) {
                self.detector.prefetch_writes(txn);
            }
        }
        for (at, (i, decision)) in decided.into_iter().enumerate() {
            if let Some(txn) = commit_of(at + RECORD_PREFETCH_AHEAD) {
                self.detector.prefetch_writes(txn);
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
struct Batch<'r, 'a> {
    requests: &'r [Request<'a>],
    answers: Vec<Option<Result<Outcome, SubmitError>>>,
    fingerprints: Vec<Option<u64>>,
    /// `(request, earlier request of the same id new in this batch)`: shares its answer.
    followers: Vec<(usize, usize)>,
    /// Requests whose id is new in this batch, commits and aborts.
    fresh_commits: Vec<usize>,
    fresh_aborts: Vec<usize>,
    /// New decisions, in the order they are made durable.
    decided: Vec<(usize, Decision)>,
    /// Requests whose new decision was recorded.
    recorded: Vec<usize>,
}

impl<'r, 'a> Batch<'r, 'a> {
    fn new(requests: &'r [Request<'a>]) -> Self {
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

    fn txn_id(&self, i: usize) -> TxnId {
        self.requests[i].txn_id()
    }

    fn into_answers(mut self) -> Vec<Result<Outcome, SubmitError>> {
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

fn encode_checkpoint(newest_commit: Option<Timestamp>) -> Vec<u8> {
    let mut out = vec![CHECKPOINT_VERSION];
    match newest_commit {
        Some(ts) => {
            out.push(1);
            out.extend_from_slice(&ts.packed().to_le_bytes());
            out.extend_from_slice(&ts.node().to_le_bytes());
        }
        None => out.push(0),
    }
    out
}

fn decode_checkpoint(data: &[u8]) -> Option<Timestamp> {
    match data {
        [CHECKPOINT_VERSION, 1, rest @ ..] if rest.len() == 10 => {
            let mut packed = [0u8; 8];
            packed.copy_from_slice(&rest[..8]);
            Some(Timestamp::from_packed(
                u64::from_le_bytes(packed),
                u16::from_le_bytes([rest[8], rest[9]]),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
