//! The engine's vocabulary: requests, outcomes, limits, configuration, and its two errors (a
//! refused request, [`SubmitError`]; an engine that cannot open, [`EngineError`]).

use std::fmt;
use std::path::PathBuf;

use crate::conflict::{Conflict, Isolation, Transaction, TxnId};
use crate::hlc::ClockError;
use crate::log::{LogError, LogOptions, Recovered};
use crate::timestamp::Timestamp;

use super::durable;

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
    /// An abort by id, with the transaction's start timestamp when the caller gave it (only a
    /// new leader's history load looks at it: [`super::CommitEngine::needs_history`]).
    Abort(TxnId, Option<Timestamp>),
}

impl Request<'_> {
    pub fn txn_id(&self) -> TxnId {
        match self {
            Self::Commit(txn) => txn.id,
            Self::Abort(id, _) => *id,
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
    fingerprint_in(txn, &mut Vec::new())
}

/// [`fingerprint`], laying the hashed bytes out in `buffer` (reused between transactions) and
/// hashing them in one call: the same value as feeding them one by one to a streaming xxh3, in
/// far fewer instructions.
pub fn fingerprint_in(txn: &Transaction, buffer: &mut Vec<u8>) -> u64 {
    buffer.clear();
    buffer.extend_from_slice(&txn.start_ts.packed().to_le_bytes());
    buffer.extend_from_slice(&txn.start_ts.node().to_le_bytes());
    for keys in [&txn.reads, &txn.writes] {
        buffer.extend_from_slice(&(keys.len() as u64).to_le_bytes());
        // Each key after its length, as the set keeps them.
        buffer.extend_from_slice(keys.framed());
    }
    xxhash_rust::xxh3::xxh3_64(buffer)
}
