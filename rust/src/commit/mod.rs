//! The group-commit hot path: one call per batch decides, timestamps, logs and records.
//!
//! [`CommitEngine::process`] takes a batch of requests (commit a transaction, or abort an id) and,
//! in one pass without the GIL:
//! 1. validates each transaction (bad input gets an error and never reaches the log);
//! 2. answers ids that are already decided with their first decision (idempotency), after checking
//!    that a resubmitted transaction has the same contents (a fingerprint of start timestamp, read
//!    and write sets);
//! 3. runs ONE `check_batch` over the new transactions (first committer wins);
//! 4. takes the commit timestamps from the clock in ONE `reserve` (after moving the clock past the
//!    newest start timestamp, so every commit timestamp is greater than its transaction's start and
//!    than every earlier commit timestamp);
//! 5. appends every new decision (commits, conflict aborts, requested aborts) to the commit log in
//!    ONE write and, in `sync` durability, ONE `fdatasync`;
//! 6. records the commits in the conflict detector and the decisions index, and returns the answers.
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

mod decisions;
pub mod record;
pub mod wire;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use crate::conflict::{Conflict, ConflictDetector, Isolation, Transaction, TxnId};
use crate::hlc::{Clock, ClockError};
use crate::log::{CommitLog, LogError, LogOptions, Recovered};
use crate::timestamp::{Timestamp, MAX_LOGICAL, MAX_PHYSICAL};

pub use decisions::{Decision, DecisionIndex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged after the batch is on disk (write + fdatasync).
    Sync,
    /// Acknowledged after the write, before the fdatasync: a machine crash can lose the batches
    /// whose fdatasync had not finished; a process crash loses nothing (the page cache survives).
    Async,
    /// No log at all: for tests and benchmarks. Everything is lost on restart.
    Memory,
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
    /// The batch could not be written to the commit log (nothing of it was).
    Log(String),
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
                 {low_watermark}; its conflicts can no longer be checked, restart it"
            ),
            Self::Mismatch { txn_id } => write!(
                f,
                "transaction {txn_id} was already submitted with different contents (start_ts, \
                 read_set or write_set)"
            ),
            Self::Clock(err) => write!(f, "cannot take commit timestamps: {err}"),
            Self::Log(message) => write!(f, "cannot write the commit log: {message}"),
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

pub struct CommitEngine {
    detector: ConflictDetector,
    log: Option<CommitLog>,
    durability: Durability,
    limits: Limits,
    decisions: DecisionIndex,
    retain_segments: usize,
    /// `(last seq of a batch, newest `decided_at` up to it)`, for choosing checkpoints.
    batch_marks: std::collections::VecDeque<(u64, Option<Timestamp>)>,
    newest_commit: Option<Timestamp>,
    newest_decided: Option<Timestamp>,
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
            log: None,
            durability: config.durability,
            limits: config.limits,
            decisions: DecisionIndex::new(config.retained_decisions),
            retain_segments: config.retain_segments,
            batch_marks: std::collections::VecDeque::new(),
            newest_commit: None,
            newest_decided: None,
            buffer: Vec::new(),
            bounds: Vec::new(),
            committed_total: 0,
            aborted_total: 0,
            batches_total: 0,
            closed: false,
        };
        let mut recovery = EngineRecovery::default();
        if config.durability != Durability::Memory {
            let dir = config.log_dir.clone().ok_or_else(|| {
                EngineError::InvalidConfig(
                    "a log directory is required unless durability is \"memory\"".into(),
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
                    engine.newest_commit = engine.newest_commit.max(Some(covered));
                    engine.newest_decided = engine.newest_decided.max(Some(covered));
                }
            }
            engine
                .batch_marks
                .push_back((log.next_seq().saturating_sub(1), engine.newest_decided));
            engine.log = Some(log);
            recovery.log = Some(recovered);
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
                let txn = Transaction::new(txn_id, start_ts, Vec::<Vec<u8>>::new(), writes, None);
                // A commit older than a key's remembered one changes nothing; a logged commit is
                // always after its start, so recording cannot fail on a sound log.
                let _ = self.detector.record(&txn, commit_ts);
                self.remember(
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
                self.remember(
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
                self.remember(
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

    /// Puts a decision in the index; when that forgets older ones, transactions that started
    /// at or below them are refused from now on (raising the detector's low watermark), so a
    /// forgotten decision can never be taken a second time, differently.
    /// `now` is the clock's reading (in replay, the newest decision replayed so far).
    fn remember(&mut self, txn_id: TxnId, decision: Decision, now: Timestamp) {
        self.newest_decided = self
            .newest_decided
            .max(Some(decision.watermark_when_forgotten(now)));
        if let Some(forgotten) = self.decisions.insert(txn_id, decision, now) {
            self.detector.raise_low_watermark(forgotten);
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

    /// The decision for `txn_id`, if it is decided and still retained.
    pub fn status(&self, txn_id: TxnId) -> Option<&Outcome> {
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
        self.log.as_ref()
    }

    /// Syncs and closes the log (releasing its directory lock); later batches are refused.
    pub fn close(&mut self) {
        self.sync();
        self.log = None;
        self.closed = true;
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// `fdatasync` of batches appended in `Async` durability.
    pub fn sync(&mut self) {
        if let Some(log) = self.log.as_mut() {
            log.sync();
        }
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
        if let Some(low_watermark) = self.detector.low_watermark() {
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
    pub fn process(
        &mut self,
        clock: &Clock,
        requests: &[Request<'_>],
    ) -> Vec<Result<Outcome, SubmitError>> {
        let count = requests.len();
        if self.closed {
            let closed = SubmitError::Log("the commit engine is closed".into());
            return vec![Err(closed); count];
        }
        let mut answers: Vec<Option<Result<Outcome, SubmitError>>> = vec![None; count];
        let mut fingerprints: Vec<Option<u64>> = vec![None; count];
        // First request of each id new in this batch; later ones copy its answer.
        let mut first_of: HashMap<TxnId, usize, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(count, Default::default());
        let mut followers: Vec<(usize, usize)> = Vec::new();
        let mut fresh_commits: Vec<usize> = Vec::with_capacity(count);
        let mut fresh_aborts: Vec<usize> = Vec::new();
        let physical_now = clock.physical_now();

        for (i, request) in requests.iter().enumerate() {
            let (txn_id, fingerprint) = match request {
                Request::Commit(txn) => (txn.id, Some(fingerprint(txn))),
                Request::Abort(id) => (*id, None),
            };
            if txn_id == 0 {
                answers[i] = Some(Err(SubmitError::InvalidTxnId));
                continue;
            }
            fingerprints[i] = fingerprint;
            // A decided id gets its first decision before any check of the request: a retry
            // must hear "committed" even after the low watermark passed its start timestamp.
            if let Some(decided) = self.decisions.get(txn_id) {
                answers[i] = Some(match (decided.fingerprint, fingerprint) {
                    (Some(first), Some(now)) if first != now => {
                        Err(SubmitError::Mismatch { txn_id })
                    }
                    _ => Ok(decided.outcome.clone()),
                });
                continue;
            }
            if let Request::Commit(txn) = request {
                if let Err(err) = self.validate(txn, clock, physical_now) {
                    answers[i] = Some(Err(err));
                    continue;
                }
            }
            if let Some(&first) = first_of.get(&txn_id) {
                match (fingerprints[first], fingerprint) {
                    (Some(a), Some(b)) if a != b => {
                        answers[i] = Some(Err(SubmitError::Mismatch { txn_id }));
                    }
                    _ => followers.push((i, first)),
                }
                continue;
            }
            first_of.insert(txn_id, i);
            match request {
                Request::Commit(_) => fresh_commits.push(i),
                Request::Abort(_) => fresh_aborts.push(i),
            }
        }

        // ONE check over the batch, first committer wins.
        let txns: Vec<&Transaction> = fresh_commits
            .iter()
            .filter_map(|&i| match requests[i] {
                Request::Commit(txn) => Some(txn),
                Request::Abort(_) => None,
            })
            .collect();
        let checked = match self.detector.check_batch(&txns) {
            Ok(decision) => decision.outcomes,
            // Ids are unique by construction (`first_of`); keep going if that ever changes.
            Err(_) => txns.iter().map(|txn| self.detector.check(txn)).collect(),
        };

        // ONE reservation for the accepted ones, above every start timestamp.
        let accepted = checked.iter().filter(|c| c.is_none()).count() as u64;
        let mut commit_range = None;
        if accepted > 0 {
            let newest_start = txns
                .iter()
                .zip(&checked)
                .filter(|(_, c)| c.is_none())
                .map(|(txn, _)| txn.start_ts)
                .max();
            let reserved = match newest_start {
                Some(start) if start > clock.last() => clock.update(start).map(|_| ()),
                _ => Ok(()),
            }
            .and_then(|()| clock.reserve(accepted));
            match reserved {
                Ok(range) => commit_range = Some(range),
                Err(err) => {
                    for (&i, conflict) in fresh_commits.iter().zip(&checked) {
                        if conflict.is_none() {
                            answers[i] = Some(Err(SubmitError::Clock(err.clone())));
                        }
                    }
                }
            }
        }

        // Encode every new decision, in request order.
        let mut decided: Vec<(usize, Decision)> =
            Vec::with_capacity(fresh_commits.len() + fresh_aborts.len());
        let mut next_commit = 0u64;
        for ((&i, conflict), txn) in fresh_commits.iter().zip(checked).zip(&txns) {
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
            decided.push((
                i,
                Decision {
                    outcome,
                    fingerprint: fingerprints[i],
                    decided_at,
                },
            ));
        }
        // A late commit of an aborted id may carry a start timestamp from a clock up to
        // max_offset_us ahead of this one; once the abort is forgotten, the low watermark rises
        // to its `decided_at`, which must therefore be past every such start timestamp.
        let fence = abort_fence(clock, physical_now);
        let now = clock.last();
        for &i in &fresh_aborts {
            decided.push((
                i,
                Decision {
                    outcome: Outcome::Aborted(AbortReason::Requested),
                    fingerprint: None,
                    decided_at: fence,
                },
            ));
        }

        if !decided.is_empty() {
            if let Err(err) = self.write_decisions(requests, &decided, now) {
                // Not logged, so not decided: answer with the error and remember nothing.
                let message = err.to_string();
                for (i, _) in decided.drain(..) {
                    answers[i] = Some(Err(SubmitError::Log(message.clone())));
                }
            }
        }

        // Durable (or as durable as asked): record and answer.
        for (i, decision) in decided {
            match (&decision.outcome, requests[i]) {
                (Outcome::Committed(commit_ts), Request::Commit(txn)) => {
                    let _ = self.detector.record(txn, *commit_ts);
                    self.newest_commit = self.newest_commit.max(Some(*commit_ts));
                    self.committed_total += 1;
                }
                _ => self.aborted_total += 1,
            }
            let id = match requests[i] {
                Request::Commit(txn) => txn.id,
                Request::Abort(id) => id,
            };
            answers[i] = Some(Ok(decision.outcome.clone()));
            self.remember(id, decision, now);
        }
        for (i, first) in followers {
            answers[i] = answers[first].clone();
        }
        self.batches_total += 1;
        self.maybe_checkpoint();
        answers
            .into_iter()
            .map(|answer| answer.unwrap_or(Err(SubmitError::InvalidTxnId)))
            .collect()
    }

    fn write_decisions(
        &mut self,
        requests: &[Request<'_>],
        decided: &[(usize, Decision)],
        now: Timestamp,
    ) -> Result<(), LogError> {
        let newest = self.newest_decided_after(decided, now);
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        self.buffer.clear();
        self.bounds.clear();
        for (i, decision) in decided {
            let start = self.buffer.len();
            match (&decision.outcome, requests[*i]) {
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
        let payloads: Vec<&[u8]> = self
            .bounds
            .iter()
            .map(|&(start, end)| &self.buffer[start..end])
            .collect();
        // A failed write or fsync aborts the process inside the log; an error returned here
        // (a new segment could not be created) means nothing of the batch was written.
        if let Some((_, last)) = log.append(&payloads, self.durability == Durability::Sync)? {
            self.batch_marks.push_back((last, newest));
        }
        Ok(())
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

    /// Checkpoints away all but the newest `retain_segments` segments.
    fn maybe_checkpoint(&mut self) {
        let Some(log) = self.log.as_mut() else {
            return;
        };
        let firsts = log.segment_first_seqs();
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
        let data = encode_checkpoint(newest);
        if let Err(err) = log.checkpoint(covered, &data) {
            // Retention is housekeeping: the log stays correct, it only grows.
            eprintln!("hlc-oracle: commit log checkpoint failed: {err}");
        }
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
