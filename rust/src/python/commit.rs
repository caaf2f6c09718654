//! Python face of `commit`: the batch engine the `GroupCommitScheduler` drives, and the
//! `Committed` / `Aborted` answers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyInt, PyList, PyType};

use crate::commit::stream::StreamPool;
use crate::commit::wire::{self, IndexedResult, WireError, WireResult};
use crate::commit::{
    AbortReason, CommitEngine, ConfirmError, Durability, EngineConfig, EngineError, Handout,
    Limits, Outcome, Released, Request, SubmitError,
};
use crate::conflict::{Conflict, ConflictKind, Isolation, KeySet, LostTo, Transaction};
use crate::hlc::ClockError;
use crate::python::commit_parts::{
    decode_parts, part_data, part_results, parts_arg, recycle_parts, requests_of, split_answers,
    DecodedPart, PartData, PartLayout,
};
use crate::python::conflict::{PyConflict, PyTransaction};
use crate::python::errors::{
    CeilingReachedError, ClockSkewError, CommitLogCorruptError, CommitLogError,
    CommitOutcomeUnknownError, HlcError, InvalidTransactionError, StartTimestampError,
    TransactionMismatchError, TransactionTooLargeError,
};
use crate::python::hlc::{u64_arg, PyClock, PyTimestamp};
use crate::python::log::{log_options, path_arg, PyLogRecovery};
use crate::timestamp::Timestamp;

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "?".into(), |n| n.to_string())
}

impl From<EngineError> for PyErr {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Log(err) => err.into(),
            EngineError::BadRecord { .. } => CommitLogCorruptError::new_err(err.to_string()),
            EngineError::Clock(_) => ClockSkewError::new_err(err.to_string()),
            EngineError::InvalidConfig(_) => PyValueError::new_err(err.to_string()),
        }
    }
}

fn submit_error(err: &SubmitError) -> PyErr {
    let message = err.to_string();
    match err {
        SubmitError::InvalidTxnId | SubmitError::EmptyWriteSet { .. } => {
            InvalidTransactionError::new_err(message)
        }
        SubmitError::TooManyKeys { .. } | SubmitError::KeyTooLarge { .. } => {
            TransactionTooLargeError::new_err(message)
        }
        SubmitError::StartInFuture { .. } | SubmitError::StartTooOld { .. } => {
            StartTimestampError::new_err(message)
        }
        SubmitError::Mismatch { .. } => TransactionMismatchError::new_err(message),
        SubmitError::Clock(ClockError::CeilingReached { .. }) => {
            CeilingReachedError::new_err(message)
        }
        SubmitError::Clock(_) => HlcError::new_err(message),
        SubmitError::Log(_) => CommitLogError::new_err(message),
        SubmitError::OutcomeUnknown(_) => CommitOutcomeUnknownError::new_err(message),
    }
}

/// A committed transaction and its commit timestamp.
#[pyclass(name = "Committed", module = "hlc_oracle", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyCommitted {
    txn_id: u64,
    commit_ts: PyTimestamp,
}

#[pymethods]
impl PyCommitted {
    #[new]
    fn py_new(txn_id: &Bound<'_, PyAny>, commit_ts: &Bound<'_, PyTimestamp>) -> PyResult<Self> {
        Ok(Self {
            txn_id: u64_arg(txn_id, "txn_id")?,
            commit_ts: *commit_ts.get(),
        })
    }

    #[getter]
    fn txn_id(&self) -> u64 {
        self.txn_id
    }

    #[getter]
    fn commit_ts(&self) -> PyTimestamp {
        self.commit_ts
    }

    fn __repr__(&self) -> String {
        let ts = self.commit_ts.0;
        format!(
            "Committed(txn_id={}, commit_ts=Timestamp(physical={}, logical={}, node={}))",
            self.txn_id,
            ts.physical(),
            ts.logical(),
            ts.node()
        )
    }
}

const REASON_CONFLICT: &str = "conflict";
const REASON_REQUESTED: &str = "requested";

/// An aborted transaction: `reason` is "conflict" (with the `Conflict` it lost) or "requested"
/// (`abort(txn_id)` came first; `conflict` is None).
#[pyclass(name = "Aborted", module = "hlc_oracle", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyAborted {
    txn_id: u64,
    conflict: Option<Conflict>,
}

#[pymethods]
impl PyAborted {
    #[new]
    #[pyo3(signature = (txn_id, reason, conflict = None))]
    fn py_new(
        txn_id: &Bound<'_, PyAny>,
        reason: &str,
        conflict: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let txn_id = u64_arg(txn_id, "txn_id")?;
        let conflict = match conflict.filter(|c| !c.is_none()) {
            Some(value) => Some(
                value
                    .cast::<PyConflict>()
                    .map_err(|_| {
                        PyTypeError::new_err(format!(
                            "conflict must be a Conflict or None, got {}",
                            type_name(value)
                        ))
                    })?
                    .get()
                    .0
                    .clone(),
            ),
            None => None,
        };
        match (reason, &conflict) {
            (REASON_CONFLICT, Some(_)) | (REASON_REQUESTED, None) => Ok(Self { txn_id, conflict }),
            _ => {
                Err(PyValueError::new_err(format!(
                "reason must be \"conflict\" with a conflict or \"requested\" without one, got \
                 {reason:?} with conflict={}",
                if conflict.is_some() { "a Conflict" } else { "None" }
            )))
            }
        }
    }

    /// An abort by conflict from its parts (as they come over the wire): `kind` is
    /// "write_write", "read_write" or "too_old"; `commit_ts` the commit it lost to (the low
    /// watermark when too old) or `winner_txn_id` the earlier member of its batch.
    #[classmethod]
    #[pyo3(signature = (txn_id, kind, key = None, commit_ts = None, winner_txn_id = None))]
    fn from_conflict(
        _cls: &Bound<'_, PyType>,
        txn_id: &Bound<'_, PyAny>,
        kind: &str,
        key: Option<Vec<u8>>,
        commit_ts: Option<&Bound<'_, PyTimestamp>>,
        winner_txn_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let txn_id = u64_arg(txn_id, "txn_id")?;
        let kind = match kind {
            "write_write" => ConflictKind::WriteWrite,
            "read_write" => ConflictKind::ReadWrite,
            "too_old" => ConflictKind::TooOld,
            other => {
                return Err(PyValueError::new_err(format!(
                    "kind must be \"write_write\", \"read_write\" or \"too_old\", got {other:?}"
                )))
            }
        };
        let winner = winner_txn_id
            .filter(|w| !w.is_none())
            .map(|w| u64_arg(w, "winner_txn_id"))
            .transpose()?;
        let lost_to = match (commit_ts.map(|ts| ts.get().0), winner, kind) {
            (Some(ts), None, ConflictKind::TooOld) => LostTo::LowWatermark(ts),
            (Some(ts), None, _) => LostTo::Commit(ts),
            (None, Some(id), ConflictKind::WriteWrite | ConflictKind::ReadWrite) => {
                LostTo::BatchMember(id)
            }
            _ => {
                return Err(PyValueError::new_err(
                    "exactly one of commit_ts and winner_txn_id must be given (winner_txn_id \
                     only for write_write or read_write)",
                ))
            }
        };
        Ok(Self {
            txn_id,
            conflict: Some(Conflict {
                txn_id,
                kind,
                key,
                lost_to,
            }),
        })
    }

    #[getter]
    fn txn_id(&self) -> u64 {
        self.txn_id
    }

    #[getter]
    fn reason(&self) -> &'static str {
        if self.conflict.is_some() {
            REASON_CONFLICT
        } else {
            REASON_REQUESTED
        }
    }

    #[getter]
    fn conflict(&self) -> Option<PyConflict> {
        self.conflict.clone().map(PyConflict)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let conflict = match self.conflict() {
            Some(conflict) => Bound::new(py, conflict)?.repr()?.to_string(),
            None => "None".into(),
        };
        Ok(format!(
            "Aborted(txn_id={}, reason={:?}, conflict={conflict})",
            self.txn_id,
            self.reason()
        ))
    }
}

fn outcome_object<'py>(
    py: Python<'py>,
    txn_id: u64,
    outcome: &Outcome,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match outcome {
        Outcome::Committed(ts) => Bound::new(
            py,
            PyCommitted {
                txn_id,
                commit_ts: PyTimestamp(*ts),
            },
        )?
        .into_any(),
        Outcome::Aborted(reason) => Bound::new(
            py,
            PyAborted {
                txn_id,
                conflict: match reason {
                    AbortReason::Conflict(conflict) => Some(conflict.clone()),
                    AbortReason::Requested => None,
                },
            },
        )?
        .into_any(),
    })
}

fn durability_arg(value: &str) -> PyResult<Durability> {
    match value {
        "sync" => Ok(Durability::Sync),
        "async" => Ok(Durability::Async),
        "memory" => Ok(Durability::Memory),
        "external" => Ok(Durability::External),
        other => Err(PyValueError::new_err(format!(
            "durability must be \"sync\", \"async\", \"memory\" or \"external\", got {other:?}"
        ))),
    }
}

fn durability_name(durability: Durability) -> &'static str {
    match durability {
        Durability::Sync => "sync",
        Durability::Async => "async",
        Durability::Memory => "memory",
        Durability::External => "external",
    }
}

fn usize_arg(value: Option<&Bound<'_, PyAny>>, field: &str, default: usize) -> PyResult<usize> {
    match value.filter(|v| !v.is_none()) {
        None => Ok(default),
        Some(value) => {
            let n = u64_arg(value, field)?;
            if n == 0 {
                return Err(PyValueError::new_err(format!(
                    "{field} must be at least 1, got 0"
                )));
            }
            usize::try_from(n)
                .map_err(|_| PyValueError::new_err(format!("{field} is too large, got {n}")))
        }
    }
}

pub(crate) enum Item {
    Commit(Py<PyTransaction>),
    Abort(u64),
}

impl Item {
    fn txn_id(&self) -> u64 {
        match self {
            Self::Commit(txn) => txn.get().0.id,
            Self::Abort(id) => *id,
        }
    }

    pub(crate) fn request(&self) -> Request<'_> {
        match self {
            Self::Commit(txn) => Request::Commit(&txn.get().0),
            Self::Abort(id) => Request::Abort(*id),
        }
    }
}

pub(crate) fn items_arg(requests: &Bound<'_, PyAny>) -> PyResult<Vec<Item>> {
    let iterator = requests.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "requests must be an iterable of Transaction or int, got {}",
            type_name(requests)
        ))
    })?;
    let mut items = Vec::new();
    for (index, item) in iterator.enumerate() {
        let item = item?;
        if let Ok(txn) = item.cast::<PyTransaction>() {
            items.push(Item::Commit(txn.clone().unbind()));
        } else if item.is_instance_of::<PyInt>() && !item.is_instance_of::<PyBool>() {
            items.push(Item::Abort(u64_arg(&item, &format!("requests[{index}]"))?));
        } else {
            return Err(PyTypeError::new_err(format!(
                "requests[{index}] must be a Transaction or an int transaction id, got {}",
                type_name(&item)
            )));
        }
    }
    Ok(items)
}

fn item_requests(items: &[Item]) -> Vec<Request<'_>> {
    items.iter().map(Item::request).collect()
}

pub(crate) fn answer_object<'py>(
    py: Python<'py>,
    txn_id: u64,
    answer: &Result<Outcome, SubmitError>,
) -> PyResult<Bound<'py, PyAny>> {
    match answer {
        Ok(outcome) => outcome_object(py, txn_id, outcome),
        Err(err) => Ok(submit_error(err).into_value(py).into_bound(py).into_any()),
    }
}

/// A decided batch for Python: `(ticket, [(batch_seq, bytes), ...], released)`.
fn handout_tuple<'py>(
    py: Python<'py>,
    handout: &Handout,
    layouts: &Mutex<HashMap<u64, Vec<PartLayout>>>,
) -> PyResult<(u64, Bound<'py, PyList>, Bound<'py, PyList>)> {
    let pieces = PyList::empty(py);
    for (seq, bytes) in &handout.pieces {
        pieces.append((*seq, PyBytes::new(py, bytes)))?;
    }
    Ok((
        handout.ticket,
        pieces,
        released_list(py, &handout.released, layouts)?,
    ))
}

/// `[(ticket, answers), ...]`: `answers` a list per request (for `decide`), or the per-part
/// results of `decide_parts` (see `commit_parts`) when `layouts` knows the ticket.
fn released_list<'py>(
    py: Python<'py>,
    released: &[Released],
    layouts: &Mutex<HashMap<u64, Vec<PartLayout>>>,
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for batch in released {
        let layout = layouts
            .lock()
            .map_err(|_| HlcError::new_err("the commit engine lock is poisoned"))?
            .remove(&batch.ticket);
        let answers = match layout {
            Some(layout) => part_results(
                py,
                split_answers(&layout, batch),
                &batch.txn_ids,
                &batch.answers,
            )?,
            None => {
                let answers = PyList::empty(py);
                for (txn_id, answer) in batch.txn_ids.iter().zip(&batch.answers) {
                    answers.append(answer_object(py, *txn_id, answer)?)?;
                }
                answers
            }
        };
        out.append((batch.ticket, answers))?;
    }
    Ok(out)
}

/// The per-batch hot path of group commit: validate, `check_batch`, one clock `reserve`, one log
/// append (write + fdatasync), record. Driven by `GroupCommitScheduler`; usable on its own.
#[pyclass(name = "CommitEngine", module = "hlc_oracle", frozen)]
pub struct PyCommitEngine {
    engine: Mutex<CommitEngine>,
    clock: Py<PyClock>,
    recovery: Option<Py<PyLogRecovery>>,
    recovered_commits: u64,
    recovered_aborts: u64,
    floor: Option<PyTimestamp>,
    path: Option<PathBuf>,
    /// How to split the answers of `decide_parts` batches not yet released.
    layouts: Mutex<HashMap<u64, Vec<PartLayout>>>,
    /// Decoded `CommitStream` messages, refilled by later ones.
    streams: Mutex<StreamPool>,
}

impl PyCommitEngine {
    fn lock(&self) -> PyResult<MutexGuard<'_, CommitEngine>> {
        self.engine
            .lock()
            .map_err(|_| HlcError::new_err("the commit engine lock is poisoned"))
    }

    /// Decodes the parts with the pool of decoded messages (taken out for the decode only).
    fn decode_parts<'i>(&self, data: &[PartData<'i>]) -> Vec<DecodedPart<'i>> {
        let mut pool = self
            .streams
            .lock()
            .map(|mut pool| std::mem::take(&mut *pool))
            .unwrap_or_default();
        let decoded = decode_parts(data, &mut pool);
        self.give_back(pool);
        decoded
    }

    fn recycle_parts(&self, decoded: Vec<DecodedPart<'_>>) {
        let mut pool = StreamPool::default();
        recycle_parts(decoded, &mut pool);
        self.give_back(pool);
    }

    fn give_back(&self, pool: StreamPool) {
        if let Ok(mut kept) = self.streams.lock() {
            kept.absorb(pool);
        }
    }
}

#[pymethods]
impl PyCommitEngine {
    #[new]
    #[pyo3(signature = (
        path,
        clock,
        *,
        durability = "sync",
        isolation = "snapshot",
        max_keys = None,
        max_read_keys = None,
        max_write_keys = None,
        max_key_bytes = None,
        retained_decisions = None,
        segment_size = None,
        retain_segments = None,
        preallocate = true,
        max_batch_bytes = None,
        first_batch_seq = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        py: Python<'_>,
        path: Option<&Bound<'_, PyAny>>,
        clock: &Bound<'_, PyAny>,
        durability: &str,
        isolation: &str,
        max_keys: Option<&Bound<'_, PyAny>>,
        max_read_keys: Option<&Bound<'_, PyAny>>,
        max_write_keys: Option<&Bound<'_, PyAny>>,
        max_key_bytes: Option<&Bound<'_, PyAny>>,
        retained_decisions: Option<&Bound<'_, PyAny>>,
        segment_size: Option<&Bound<'_, PyAny>>,
        retain_segments: Option<&Bound<'_, PyAny>>,
        preallocate: bool,
        max_batch_bytes: Option<&Bound<'_, PyAny>>,
        first_batch_seq: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let durability = durability_arg(durability)?;
        let path = match path.filter(|p| !p.is_none()) {
            Some(path) => Some(path_arg(path, "path")?),
            None => None,
        };
        let clock = clock
            .cast::<PyClock>()
            .map_err(|_| {
                PyTypeError::new_err(format!("clock must be a Clock, got {}", type_name(clock)))
            })?
            .clone()
            .unbind();
        let mut config = EngineConfig::new(durability, path.clone());
        config.isolation = match isolation {
            "snapshot" => Isolation::Snapshot,
            "serializable" => Isolation::Serializable,
            other => {
                return Err(PyValueError::new_err(format!(
                    "isolation must be \"snapshot\" or \"serializable\", got {other:?}"
                )))
            }
        };
        let defaults = Limits::default();
        config.max_keys = usize_arg(max_keys, "max_keys", config.max_keys)?;
        config.limits = Limits {
            max_read_keys: usize_arg(max_read_keys, "max_read_keys", defaults.max_read_keys)?,
            max_write_keys: usize_arg(max_write_keys, "max_write_keys", defaults.max_write_keys)?,
            max_key_bytes: usize_arg(max_key_bytes, "max_key_bytes", defaults.max_key_bytes)?,
        };
        config.retained_decisions = usize_arg(
            retained_decisions,
            "retained_decisions",
            config.retained_decisions,
        )?;
        config.retain_segments =
            usize_arg(retain_segments, "retain_segments", config.retain_segments)?;
        config.log_options = log_options(segment_size, preallocate)?;
        config.max_batch_bytes =
            usize_arg(max_batch_bytes, "max_batch_bytes", config.max_batch_bytes)?;
        if let Some(first) = first_batch_seq.filter(|v| !v.is_none()) {
            config.first_batch_seq = u64_arg(first, "first_batch_seq")?;
            if config.first_batch_seq == 0 {
                return Err(PyValueError::new_err(
                    "first_batch_seq must be at least 1, got 0",
                ));
            }
        }
        let clock_ref = clock.clone_ref(py);
        let (engine, recovery) =
            py.detach(|| CommitEngine::open(config, clock_ref.get().core()))?;
        let log_recovery = match (&recovery.log, engine.log()) {
            (Some(recovered), Some(log)) => Some(Py::new(
                py,
                PyLogRecovery::new(py, recovered, PyList::empty(py), log.next_seq()),
            )?),
            _ => None,
        };
        Ok(Self {
            engine: Mutex::new(engine),
            clock,
            recovery: log_recovery,
            recovered_commits: recovery.commits,
            recovered_aborts: recovery.aborts,
            floor: recovery.floor.map(PyTimestamp),
            path,
            layouts: Mutex::new(HashMap::new()),
            streams: Mutex::new(StreamPool::default()),
        })
    }

    /// Decides one batch. Each request is a `Transaction` (commit it) or an `int` (abort that id).
    /// Returns one answer per request, in order: `Committed`, `Aborted`, or the exception that
    /// refused it (not raised: a bad request does not fail the others).
    fn process<'py>(
        &self,
        py: Python<'py>,
        requests: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let items = items_arg(requests)?;
        let answers = py.detach(|| {
            let requests = item_requests(&items);
            Ok::<_, PyErr>(self.lock()?.process(self.clock.get().core(), &requests))
        })?;
        let out = PyList::empty(py);
        for (item, answer) in items.iter().zip(&answers) {
            out.append(answer_object(py, item.txn_id(), answer)?)?;
        }
        Ok(out)
    }

    /// Decides one batch of parts (see `commit_parts`): each part a list of requests or one
    /// serialized `CommitStreamRequest`. Returns per part, in order: the list of answers, or
    /// `(response bytes, committed, aborted, refused, ceiling)` for a message (a `ValueError`, not
    /// raised, when the message is malformed). Local log or memory only, like `process`.
    fn process_parts<'py>(
        &self,
        py: Python<'py>,
        parts: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let inputs = parts_arg(parts)?;
        let data = part_data(&inputs);
        let (txn_ids, answers, split) = py.detach(|| {
            let decoded = self.decode_parts(&data);
            let (requests, layout) = requests_of(&decoded);
            let answers = self.lock()?.process(self.clock.get().core(), &requests);
            let released = Released {
                ticket: 0,
                txn_ids: requests.iter().map(Request::txn_id).collect(),
                answers,
                ..Released::default()
            };
            drop(requests);
            self.recycle_parts(decoded);
            let split = split_answers(&layout, &released);
            Ok::<_, PyErr>((released.txn_ids, released.answers, split))
        })?;
        part_results(py, split, &txn_ids, &answers)
    }

    /// `decide` for a batch of parts (see `process_parts`): `(ticket, pieces, released)`, where
    /// each released batch's answers are per-part results when it was decided by this method.
    fn decide_parts<'py>(
        &self,
        py: Python<'py>,
        parts: &Bound<'py, PyAny>,
    ) -> PyResult<(u64, Bound<'py, PyList>, Bound<'py, PyList>)> {
        let inputs = parts_arg(parts)?;
        let data = part_data(&inputs);
        let handout = py.detach(|| {
            let decoded = self.decode_parts(&data);
            let (requests, layout) = requests_of(&decoded);
            let mut engine = self.lock()?;
            let handout = engine.decide(self.clock.get().core(), &requests);
            drop(requests);
            self.recycle_parts(decoded);
            // Registered before the engine lock is released: a confirmation cannot release the
            // batch before its layout is known.
            self.layouts
                .lock()
                .map_err(|_| HlcError::new_err("the commit engine lock is poisoned"))?
                .insert(handout.ticket, layout);
            Ok::<_, PyErr>(handout)
        })?;
        handout_tuple(py, &handout, &self.layouts)
    }

    /// Decides one batch like `process`, for any durable step: returns `(ticket, pieces,
    /// released)`. `pieces` are `(batch_seq, bytes)` to make durable (durability "external"
    /// only; empty otherwise); `released` are `(ticket, answers)` that can go out now, this
    /// batch's or (external) earlier ones', in decision order.
    fn decide<'py>(
        &self,
        py: Python<'py>,
        requests: &Bound<'py, PyAny>,
    ) -> PyResult<(u64, Bound<'py, PyList>, Bound<'py, PyList>)> {
        let items = items_arg(requests)?;
        let handout = py.detach(|| {
            let requests = item_requests(&items);
            Ok::<_, PyErr>(self.lock()?.decide(self.clock.get().core(), &requests))
        })?;
        handout_tuple(py, &handout, &self.layouts)
    }

    /// Durability "external": piece `batch_seq` is durable. Returns the `(ticket, answers)` this
    /// releases, in decision order. `ValueError` for a batch that is not pending;
    /// `CommitLogError` once the engine has stopped.
    fn confirm<'py>(&self, py: Python<'py>, batch_seq: u64) -> PyResult<Bound<'py, PyList>> {
        let released = py
            .detach(|| Ok::<_, PyErr>(self.lock()?.confirm(batch_seq)))?
            .map_err(|err| match err {
                ConfirmError::UnknownBatch { .. } => PyValueError::new_err(err.to_string()),
                ConfirmError::Stopped(_) => CommitLogError::new_err(err.to_string()),
            })?;
        released_list(py, &released, &self.layouts)
    }

    /// Durability "external": a piece's write failed or its outcome is unknown (`reason` says
    /// which). Returns every pending batch's `(ticket, answers)`, each answer a
    /// `CommitOutcomeUnknownError`; every later batch is refused until the engine is reopened.
    fn fail<'py>(&self, py: Python<'py>, reason: &str) -> PyResult<Bound<'py, PyList>> {
        let released = py.detach(|| Ok::<_, PyErr>(self.lock()?.fail(reason)))?;
        released_list(py, &released, &self.layouts)
    }

    /// Recovery on promotion (durability "external"): replays one stored piece's decisions (in
    /// batch order) into the decisions index and conflict history, and moves the clock past its
    /// newest commit. Returns `(commits, aborts)` replayed; `CommitLogCorruptError` naming
    /// `batch_seq` when the piece does not decode (it is never skipped).
    fn replay_piece(
        &self,
        py: Python<'_>,
        batch_seq: u64,
        data: &Bound<'_, PyBytes>,
    ) -> PyResult<(u64, u64)> {
        let data = data.as_bytes().to_vec();
        let recovery = py.detach(|| {
            let mut engine = self.lock()?;
            Ok::<_, PyErr>(engine.replay_piece(self.clock.get().core(), batch_seq, &data)?)
        })?;
        Ok((recovery.commits, recovery.aborts))
    }

    /// A new clustered leader serves while its decision history loads: until
    /// `end_history_load`, only requests no stored decision can be about are decided (see
    /// `rust/src/commit/history.rs`). `low_watermark`: the previous leader's window limit (raised
    /// in the conflict detector too), or None; `aborted_ids`: the ids earlier leaders aborted by
    /// id.
    #[pyo3(signature = (low_watermark, aborted_ids))]
    fn begin_history_load(
        &self,
        low_watermark: Option<PyRef<'_, PyTimestamp>>,
        aborted_ids: Vec<u64>,
    ) -> PyResult<()> {
        self.lock()?
            .begin_history_load(low_watermark.map(|ts| ts.0), aborted_ids);
        Ok(())
    }

    /// The history is replayed: every request is decided again.
    fn end_history_load(&self) -> PyResult<()> {
        self.lock()?.end_history_load();
        Ok(())
    }

    /// Whether the decision history is still loading.
    #[getter]
    fn history_loading(&self) -> PyResult<bool> {
        Ok(self.lock()?.history_loading())
    }

    /// Whether a queued request must wait for the decision history: a `Transaction`, an `int`
    /// (an abort by id), a list of them (any one), or a serialized `CommitStreamRequest` (any of
    /// its transactions). False once the history is loaded.
    fn needs_history(&self, py: Python<'_>, request: &Bound<'_, PyAny>) -> PyResult<bool> {
        if let Ok(message) = request.cast::<PyBytes>() {
            let Ok(starts) = wire::request_ids_and_starts(message.as_bytes()) else {
                return Ok(false); // malformed: refused whole, nothing decided
            };
            return py.detach(|| {
                let engine = self.lock()?;
                Ok(starts
                    .iter()
                    .any(|&(txn_id, start)| engine.needs_history_of(txn_id, start)))
            });
        }
        let items = if request.is_instance_of::<PyList>() {
            items_arg(request)?
        } else {
            items_arg(&PyList::new(py, [request])?.into_any())?
        };
        let engine = self.lock()?;
        Ok(items
            .iter()
            .any(|item| engine.needs_history(&item.request())))
    }

    /// Aborts as too old (a recorded decision), from now on, every undecided transaction that
    /// started at or below `ts` (a new leader passes the previous leader's window limit).
    fn raise_low_watermark(&self, ts: &Bound<'_, PyTimestamp>) -> PyResult<()> {
        self.lock()?.raise_low_watermark(ts.get().0);
        Ok(())
    }

    /// Decisions of transactions that started at or below `ts` may have been forgotten (a new
    /// leader passes the newest decision retention trimmed from etcd): such starts are refused
    /// (`StartTimestampError`, OUT_OF_RANGE) from now on, never decided, so a forgotten commit
    /// cannot flip to aborted.
    fn raise_forgotten_through(&self, ts: &Bound<'_, PyTimestamp>) -> PyResult<()> {
        self.lock()?.forget_decisions_through(ts.get().0);
        Ok(())
    }

    /// Batches decided and not yet answered (durability "external"; 0 otherwise).
    #[getter]
    fn pending_batches(&self) -> PyResult<usize> {
        Ok(self.lock()?.pending_batches())
    }

    /// The sequence number the next piece will get (None unless durability is "external").
    #[getter]
    fn next_batch_seq(&self) -> PyResult<Option<u64>> {
        Ok(self.lock()?.next_batch_seq())
    }

    /// The decision for `txn_id` (`Committed` or `Aborted`), or None when unknown (never decided,
    /// or older than the retained decisions).
    fn status<'py>(
        &self,
        py: Python<'py>,
        txn_id: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let txn_id = u64_arg(txn_id, "txn_id")?;
        let outcome = py.detach(|| Ok::<_, PyErr>(self.lock()?.status(txn_id).cloned()))?;
        outcome
            .map(|outcome| outcome_object(py, txn_id, &outcome))
            .transpose()
    }

    /// fdatasync of batches processed in "async" durability.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            self.lock()?.sync();
            Ok(())
        })
    }

    /// Syncs and closes the log, releasing the directory; later batches are refused. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            // Pending external batches were answered by the scheduler's drain before this.
            let _unanswered = self.lock()?.close();
            Ok(())
        })
    }

    #[getter]
    fn closed(&self) -> PyResult<bool> {
        Ok(self.lock()?.is_closed())
    }

    #[getter]
    fn durability(&self) -> PyResult<&'static str> {
        Ok(durability_name(self.lock()?.durability()))
    }

    #[getter]
    fn clock(&self, py: Python<'_>) -> Py<PyClock> {
        self.clock.clone_ref(py)
    }

    #[getter]
    fn path(&self) -> Option<String> {
        self.path.as_ref().map(|p| p.display().to_string())
    }

    /// What the log replay found (None in "memory" durability).
    #[getter]
    fn recovery(&self, py: Python<'_>) -> Option<Py<PyLogRecovery>> {
        self.recovery.as_ref().map(|r| r.clone_ref(py))
    }

    /// Figures: committed, aborted, batches (since start), recovered_commits, recovered_aborts,
    /// retained_decisions, remembered_keys, next_seq (None without a log).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let engine = self.lock()?;
        let (committed, aborted, batches) = engine.totals();
        let stats = PyDict::new(py);
        stats.set_item("committed", committed)?;
        stats.set_item("aborted", aborted)?;
        stats.set_item("batches", batches)?;
        stats.set_item("recovered_commits", self.recovered_commits)?;
        stats.set_item("recovered_aborts", self.recovered_aborts)?;
        stats.set_item("retained_decisions", engine.retained_decisions())?;
        stats.set_item("remembered_keys", engine.detector().len())?;
        stats.set_item("next_seq", engine.log().map(|log| log.next_seq()))?;
        Ok(stats)
    }

    /// How long the log's `fdatasync`s took since it was opened: the count per bucket (upper
    /// bounds in µs: `SYNC_BUCKET_BOUNDS_US`, then one unbounded bucket) and the sum of the
    /// durations in nanoseconds; None without a log (durability "memory", clustered).
    fn sync_timings(&self) -> PyResult<Option<(Vec<u64>, u64)>> {
        let engine = self.lock()?;
        Ok(engine.log().map(|log| {
            let timings = log.sync_timings();
            (timings.counts.to_vec(), timings.total_ns)
        }))
    }

    /// The newest commit timestamp found on recovery (the clock runs above it), or None.
    #[getter]
    fn floor(&self) -> Option<PyTimestamp> {
        self.floor
    }

    /// Transactions that started at or below this are too old: aborted (and recorded) when
    /// undecided, refused when their decision may be forgotten (None: nothing forgotten yet).
    #[getter]
    fn low_watermark(&self) -> PyResult<Option<PyTimestamp>> {
        Ok(self.lock()?.detector().low_watermark().map(PyTimestamp))
    }

    /// `(max_read_keys, max_write_keys, max_key_bytes)`.
    #[getter]
    fn limits(&self) -> PyResult<(usize, usize, usize)> {
        let limits = self.lock()?.limits();
        Ok((
            limits.max_read_keys,
            limits.max_write_keys,
            limits.max_key_bytes,
        ))
    }

    fn __repr__(&self) -> PyResult<String> {
        let path = self
            .path()
            .map_or_else(|| "None".to_string(), |p| format!("{p:?}"));
        Ok(format!(
            "CommitEngine(path={path}, durability={:?})",
            self.durability()?
        ))
    }
}

// ---- the CommitStream wire messages, encoded in Rust (see `commit::wire`) ----------------------

fn wire_error(kind: &str, err: &WireError) -> PyErr {
    PyValueError::new_err(format!("malformed {kind}: {err}"))
}

/// The transactions of a serialized `CommitStreamRequest`: a `Transaction` each, or
/// `(txn_id, InvalidTransactionError)` (not raised) for one that cannot be built. `ValueError`
/// when the message itself does not parse.
#[pyfunction]
pub fn decode_commit_request<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyBytes>,
) -> PyResult<Bound<'py, PyList>> {
    let txns = wire::decode_request(data.as_bytes())
        .map_err(|err| wire_error("CommitStreamRequest", &err))?;
    let out = PyList::empty(py);
    for txn in txns {
        let start = match txn.start_ts {
            None => Err(format!("transaction {}: start_ts is required", txn.txn_id)),
            Some(ts) => Timestamp::new(ts.physical, ts.logical, ts.node)
                .map_err(|err| format!("transaction {}: malformed start_ts: {err}", txn.txn_id)),
        };
        match start {
            Ok(start_ts) => out.append(Bound::new(
                py,
                PyTransaction(Transaction {
                    id: txn.txn_id,
                    start_ts,
                    reads: KeySet::new(&txn.reads),
                    writes: KeySet::new(&txn.writes),
                    clock: None,
                }),
            )?)?,
            Err(message) => out.append((
                txn.txn_id,
                InvalidTransactionError::new_err(message).into_value(py),
            ))?,
        }
    }
    Ok(out)
}

/// The ids a decision piece aborts by id (`abort(txn_id)`: no start timestamp), in order;
/// `CommitLogCorruptError` when the piece does not decode.
#[pyfunction]
pub fn piece_requested_aborts(py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<Vec<u64>> {
    let data = data.as_bytes();
    let records = py
        .detach(|| crate::commit::piece::decode(data))
        .map_err(|err| CommitLogCorruptError::new_err(err.to_string()))?;
    Ok(records
        .iter()
        .filter_map(|record| match record {
            crate::commit::record::DecisionRecord::AbortRequested { txn_id, .. } => Some(*txn_id),
            _ => None,
        })
        .collect())
}

/// How many transactions a serialized `CommitStreamRequest` holds (only its outer framing is
/// read); `ValueError` when that is malformed.
#[pyfunction]
pub fn count_commit_request(data: &Bound<'_, PyBytes>) -> PyResult<usize> {
    wire::count_request_transactions(data.as_bytes())
        .map_err(|err| wire_error("CommitStreamRequest", &err))
}

/// A serialized `CommitStreamRequest` of `txns`.
#[pyfunction]
pub fn encode_commit_request<'py>(
    py: Python<'py>,
    txns: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::new();
    for (index, item) in txns.try_iter()?.enumerate() {
        let item = item?;
        let txn = item.cast::<PyTransaction>().map_err(|_| {
            PyTypeError::new_err(format!(
                "txns[{index}] must be a Transaction, got {}",
                type_name(&item)
            ))
        })?;
        let txn = &txn.get().0;
        wire::encode_transaction(
            &mut out,
            txn.id,
            txn.start_ts,
            txn.reads.iter(),
            txn.writes.iter(),
        );
    }
    Ok(PyBytes::new(py, &out))
}

/// A serialized `CommitStreamResponse`: each item is a `Committed`, an `Aborted`, or a
/// `(txn_id, grpc_code, message)` tuple for a refused transaction.
#[pyfunction]
pub fn encode_commit_results<'py>(
    py: Python<'py>,
    results: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::new();
    for (index, item) in results.try_iter()?.enumerate() {
        let item = item?;
        let result = if let Ok(committed) = item.cast::<PyCommitted>() {
            let committed = committed.get();
            WireResult::Decided(committed.txn_id, Outcome::Committed(committed.commit_ts.0))
        } else if let Ok(aborted) = item.cast::<PyAborted>() {
            let aborted = aborted.get();
            let reason = match &aborted.conflict {
                Some(conflict) => AbortReason::Conflict(conflict.clone()),
                None => AbortReason::Requested,
            };
            WireResult::Decided(aborted.txn_id, Outcome::Aborted(reason))
        } else if let Ok((txn_id, code, message)) = item.extract::<(u64, u32, String)>() {
            WireResult::Error {
                txn_id,
                code,
                message,
            }
        } else {
            return Err(PyTypeError::new_err(format!(
                "results[{index}] must be Committed, Aborted or (txn_id, code, message), got {}",
                type_name(&item)
            )));
        };
        wire::encode_result(&mut out, &result);
    }
    Ok(PyBytes::new(py, &out))
}

/// The results of a serialized `CommitStreamResponse`, decoded when asked for: a sequence of
/// `Committed`, `Aborted`, or `(txn_id, grpc_code, message)` for a refused transaction (the
/// items of `decode_commit_results`), built one at a time by indexing or iterating. Made from the
/// response in one pass that checks it (`ValueError` when malformed) and keeps, per result, its id
/// and commit timestamp or its place in the bytes: a caller pays for the objects it touches.
#[pyclass(name = "CommitResults", module = "hlc_oracle", frozen, sequence)]
pub struct PyCommitResults {
    data: Py<PyBytes>,
    index: Vec<IndexedResult>,
    committed: usize,
    refused: usize,
}

impl PyCommitResults {
    fn item<'py>(&self, py: Python<'py>, entry: &IndexedResult) -> PyResult<Bound<'py, PyAny>> {
        if let Some(ts) = entry.committed {
            return outcome_object(py, entry.txn_id, &Outcome::Committed(ts));
        }
        let bytes = self.data.bind(py).as_bytes();
        let body = bytes.get(entry.start..entry.end).unwrap_or_default();
        match wire::decode_result(body).map_err(|err| wire_error("CommitStreamResponse", &err))? {
            WireResult::Decided(txn_id, outcome) => outcome_object(py, txn_id, &outcome),
            WireResult::Error {
                txn_id,
                code,
                message,
            } => Ok((txn_id, code, message).into_pyobject(py)?.into_any()),
        }
    }
}

#[pymethods]
impl PyCommitResults {
    #[new]
    fn py_new(data: &Bound<'_, PyBytes>) -> PyResult<Self> {
        let index = wire::index_response(data.as_bytes())
            .map_err(|err| wire_error("CommitStreamResponse", &err))?;
        Ok(Self {
            committed: index.iter().filter(|r| r.committed.is_some()).count(),
            refused: index.iter().filter(|r| r.refused).count(),
            data: data.clone().unbind(),
            index,
        })
    }

    fn __len__(&self) -> usize {
        self.index.len()
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, PyAny>> {
        let count = self.index.len();
        let position = if index < 0 {
            count.checked_sub(index.unsigned_abs())
        } else {
            Some(index.unsigned_abs())
        };
        let entry = position.and_then(|i| self.index.get(i)).ok_or_else(|| {
            PyIndexError::new_err(format!(
                "CommitResults index {index} out of range for length {count}"
            ))
        })?;
        self.item(py, entry)
    }

    /// How many results are `Committed`.
    #[getter]
    fn committed(&self) -> usize {
        self.committed
    }

    /// How many results are refusals (`(txn_id, grpc_code, message)` tuples).
    #[getter]
    fn refused(&self) -> usize {
        self.refused
    }

    /// The transaction ids, in order.
    fn txn_ids(&self) -> Vec<u64> {
        self.index.iter().map(|r| r.txn_id).collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "CommitResults(len={}, committed={}, refused={})",
            self.index.len(),
            self.committed,
            self.refused
        )
    }
}

/// The results of a serialized `CommitStreamResponse`: `Committed`, `Aborted`, or a
/// `(txn_id, grpc_code, message)` tuple for a refused transaction. `ValueError` when malformed.
#[pyfunction]
pub fn decode_commit_results<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyBytes>,
) -> PyResult<Bound<'py, PyList>> {
    let results = wire::decode_response(data.as_bytes())
        .map_err(|err| wire_error("CommitStreamResponse", &err))?;
    let out = PyList::empty(py);
    for result in results {
        match result {
            WireResult::Decided(txn_id, outcome) => {
                out.append(outcome_object(py, txn_id, &outcome)?)?
            }
            WireResult::Error {
                txn_id,
                code,
                message,
            } => out.append((txn_id, code, message))?,
        }
    }
    Ok(out)
}
