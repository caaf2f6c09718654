//! Python face of `conflict`: `Transaction`, `ConflictDetector`, `Conflict`, `BatchDecision`.
//!
//! Keys are converted to bytes (and hashed) when a `Transaction` is built, so the batch calls only
//! collect references to the Rust transactions and then run with the GIL released.

use std::sync::{Mutex, MutexGuard};

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::conflict::{
    concurrent_writes, Conflict, ConflictDetector, ConflictError, ConflictKind, Isolation, KeySet,
    LostTo, Transaction, DEFAULT_MAX_KEYS,
};
use crate::python::args::{cast_arg, key_set_arg, list_arg, optional_cast_arg, type_name, u64_arg};
use crate::python::errors::HlcError;
use crate::python::hlc::PyTimestamp;
use crate::python::python_enum;
use crate::python::vclock::PyVectorClock;

impl From<ConflictError> for PyErr {
    fn from(err: ConflictError) -> Self {
        PyValueError::new_err(err.to_string())
    }
}

fn keys_tuple<'py>(py: Python<'py>, keys: &KeySet) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, keys.iter().map(|key| PyBytes::new(py, key)))
}

/// What a transaction read and wrote: `Transaction(txn_id, start_ts, read_set=(), write_set=(),
/// clock=None)`. Keys are `bytes` or `str` (stored as UTF-8 bytes); immutable.
#[pyclass(name = "Transaction", module = "hlc_oracle", frozen)]
pub struct PyTransaction(pub Transaction);

#[pymethods]
impl PyTransaction {
    #[new]
    #[pyo3(signature = (txn_id, start_ts, read_set = None, write_set = None, clock = None))]
    fn py_new(
        txn_id: &Bound<'_, PyAny>,
        start_ts: &Bound<'_, PyAny>,
        read_set: Option<&Bound<'_, PyAny>>,
        write_set: Option<&Bound<'_, PyAny>>,
        clock: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let id = u64_arg(txn_id, "txn_id")?;
        let start_ts = cast_arg::<PyTimestamp>(start_ts, "start_ts")?;
        let clock = optional_cast_arg::<PyVectorClock>(clock, "clock")?
            .map(|clock| clock.borrow().0.clone());
        Ok(Self(Transaction {
            id,
            start_ts: start_ts.get().0,
            reads: key_set_arg(read_set, "read_set")?,
            writes: key_set_arg(write_set, "write_set")?,
            clock,
        }))
    }

    #[getter]
    fn txn_id(&self) -> u64 {
        self.0.id
    }

    #[getter]
    fn start_ts(&self) -> PyTimestamp {
        PyTimestamp(self.0.start_ts)
    }

    #[getter]
    fn read_set<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        keys_tuple(py, &self.0.reads)
    }

    #[getter]
    fn write_set<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        keys_tuple(py, &self.0.writes)
    }

    /// A copy of the transaction's vector clock (or `None`).
    #[getter]
    fn clock(&self) -> Option<PyVectorClock> {
        self.0.clock.clone().map(PyVectorClock)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Transaction(txn_id={}, start_ts={}, read_set={}, write_set={}, clock={})",
            self.0.id,
            Bound::new(py, PyTimestamp(self.0.start_ts))?.repr()?,
            keys_tuple(py, &self.0.reads)?.repr()?,
            keys_tuple(py, &self.0.writes)?.repr()?,
            match &self.0.clock {
                Some(clock) => PyVectorClock(clock.clone()).__repr__(),
                None => "None".into(),
            }
        ))
    }
}

static CONFLICT_KIND_MEMBERS: PyOnceLock<[Py<PyAny>; 3]> = PyOnceLock::new();

/// Adds the `ConflictKind` enum to the module. Its values are the names the gRPC service sends
/// (`Conflict.kind`), so `ConflictKind("write_write")` reads one.
pub(crate) fn register_conflict_kind(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let members = python_enum(
        module,
        "ConflictKind",
        "Why a transaction was rejected: WRITE_WRITE (it writes a key committed after its \
         start), READ_WRITE (serializable: it reads one), TOO_OLD (it started at or below the \
         low watermark, so it cannot be verified).",
        &ConflictKind::ALL
            .map(|kind| (kind_name(kind), kind.name()))
            .iter()
            .map(|(member, value)| (member.as_str(), *value))
            .collect::<Vec<_>>(),
    )?;
    let members: [Py<PyAny>; 3] = members
        .try_into()
        .map_err(|_| PyRuntimeError::new_err("ConflictKind has three members"))?;
    // Set once per process; a second registration (another interpreter) keeps the first set.
    let _ = CONFLICT_KIND_MEMBERS.set(module.py(), members);
    Ok(())
}

/// The Python enum member's name: its value (the kind's name) in capitals.
fn kind_name(kind: ConflictKind) -> String {
    kind.name().to_ascii_uppercase()
}

/// A rejection: the transaction, the kind, its conflicting key, and what it lost to: a recorded
/// commit (`commit_ts`), an earlier member of the same batch (`winner_txn_id`), or the low
/// watermark (`commit_ts`, kind `TOO_OLD`).
#[pyclass(name = "Conflict", module = "hlc_oracle", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyConflict(pub Conflict);

#[pymethods]
impl PyConflict {
    #[getter]
    fn txn_id(&self) -> u64 {
        self.0.txn_id
    }

    #[getter]
    fn kind(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        // The enum member itself, so `conflict.kind is ConflictKind.TOO_OLD` holds.
        let members = CONFLICT_KIND_MEMBERS.get(py).ok_or_else(|| {
            PyRuntimeError::new_err("hlc_oracle._core.ConflictKind is not registered")
        })?;
        Ok(members[self.0.kind.index()].clone_ref(py))
    }

    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.0.key.as_deref().map(|key| PyBytes::new(py, key))
    }

    /// The commit it lost to, or the low watermark when too old; `None` when it lost to a member
    /// of its own batch (which has no commit timestamp yet).
    #[getter]
    fn commit_ts(&self) -> Option<PyTimestamp> {
        match self.0.lost_to {
            LostTo::Commit(ts) | LostTo::LowWatermark(ts) => Some(PyTimestamp(ts)),
            LostTo::BatchMember(_) => None,
        }
    }

    /// The id of the earlier transaction of the same batch it lost to, else `None`.
    #[getter]
    fn winner_txn_id(&self) -> Option<u64> {
        match self.0.lost_to {
            LostTo::BatchMember(id) => Some(id),
            _ => None,
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Conflict(txn_id={}, kind=ConflictKind.{}, key={}, commit_ts={}, winner_txn_id={})",
            self.0.txn_id,
            kind_name(self.0.kind),
            match self.key(py) {
                Some(key) => key.repr()?.to_string(),
                None => "None".into(),
            },
            match self.commit_ts() {
                Some(ts) => Bound::new(py, ts)?.repr()?.to_string(),
                None => "None".into(),
            },
            self.winner_txn_id()
                .map_or_else(|| "None".into(), |id| id.to_string()),
        ))
    }
}

/// The outcome of `check_batch`: accepted and rejected transactions, in submission order.
#[pyclass(name = "BatchDecision", module = "hlc_oracle", frozen)]
pub struct PyBatchDecision {
    txns: Vec<Py<PyTransaction>>,
    outcomes: Vec<Option<Box<Conflict>>>,
}

#[pymethods]
impl PyBatchDecision {
    #[getter]
    fn accepted<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(
            py,
            self.txns
                .iter()
                .zip(&self.outcomes)
                .filter(|(_, outcome)| outcome.is_none())
                .map(|(txn, _)| txn.clone_ref(py)),
        )
    }

    /// `(transaction, conflict)` pairs.
    #[getter]
    fn rejected<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let pairs = self
            .txns
            .iter()
            .zip(&self.outcomes)
            .filter_map(|(txn, outcome)| {
                outcome
                    .as_ref()
                    .map(|conflict| (txn.clone_ref(py), PyConflict((**conflict).clone())))
            })
            .collect::<Vec<_>>();
        PyList::new(py, pairs)
    }

    /// One entry per submitted transaction: `None` when accepted, else its `Conflict`.
    #[getter]
    fn outcomes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(
            py,
            self.outcomes
                .iter()
                .map(|outcome| outcome.as_deref().cloned().map(PyConflict)),
        )
    }

    fn __len__(&self) -> usize {
        self.outcomes.len()
    }

    fn __repr__(&self) -> String {
        let rejected = self.outcomes.iter().filter(|o| o.is_some()).count();
        format!(
            "BatchDecision(accepted={}, rejected={})",
            self.outcomes.len() - rejected,
            rejected
        )
    }
}

fn isolation_name(isolation: Isolation) -> &'static str {
    match isolation {
        Isolation::Snapshot => "snapshot",
        Isolation::Serializable => "serializable",
    }
}

/// Decides whether transactions may commit; see the `hlc_oracle` docs and `rust/src/conflict.rs`.
/// Thread-safe; the batch calls release the GIL.
#[pyclass(name = "ConflictDetector", module = "hlc_oracle", frozen)]
pub struct PyConflictDetector {
    detector: Mutex<ConflictDetector>,
}

impl PyConflictDetector {
    /// The core detector, for Rust callers that decide and record inside their own GIL-released
    /// section.
    pub fn core(&self) -> &Mutex<ConflictDetector> {
        &self.detector
    }

    fn lock(&self) -> PyResult<MutexGuard<'_, ConflictDetector>> {
        self.detector.lock().map_err(|_| {
            HlcError::new_err("the conflict detector is unusable: a thread panicked while using it")
        })
    }
}

#[pymethods]
impl PyConflictDetector {
    #[new]
    #[pyo3(signature = (isolation = None, max_keys = None))]
    fn py_new(
        isolation: Option<&Bound<'_, PyAny>>,
        max_keys: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let isolation = match isolation {
            None => Isolation::Snapshot,
            Some(value) => {
                let name = value.cast::<PyString>().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "isolation must be a str, got {}",
                        type_name(value)
                    ))
                })?;
                match name.to_str()? {
                    "snapshot" => Isolation::Snapshot,
                    "serializable" => Isolation::Serializable,
                    other => {
                        return Err(PyValueError::new_err(format!(
                            "isolation must be 'snapshot' or 'serializable', got {other:?}"
                        )))
                    }
                }
            }
        };
        let max_keys = match max_keys {
            None => DEFAULT_MAX_KEYS,
            Some(value) => usize::try_from(u64_arg(value, "max_keys")?).unwrap_or(usize::MAX),
        };
        Ok(Self {
            detector: Mutex::new(ConflictDetector::new(isolation, max_keys)?),
        })
    }

    #[getter]
    fn isolation(&self) -> PyResult<&'static str> {
        Ok(isolation_name(self.lock()?.isolation()))
    }

    #[getter]
    fn max_keys(&self) -> PyResult<usize> {
        Ok(self.lock()?.max_keys())
    }

    /// Transactions that started at or below it are rejected as too old; `None` until the
    /// detector first forgets a key (or it is raised).
    #[getter]
    fn low_watermark(&self) -> PyResult<Option<PyTimestamp>> {
        Ok(self.lock()?.low_watermark().map(PyTimestamp))
    }

    /// Bytes allocated for the remembered history.
    #[getter]
    fn memory_bytes(&self) -> PyResult<usize> {
        Ok(self.lock()?.memory_bytes())
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.lock()?.len())
    }

    fn raise_low_watermark(&self, ts: &Bound<'_, PyAny>) -> PyResult<()> {
        let ts = cast_arg::<PyTimestamp>(ts, "ts")?.get().0;
        self.lock()?.raise_low_watermark(ts);
        Ok(())
    }

    /// The last recorded commit of `key`, if it is still remembered.
    fn last_commit(&self, key: &Bound<'_, PyAny>) -> PyResult<Option<PyTimestamp>> {
        let list = PyList::new(key.py(), [key])?;
        let keys = key_set_arg(Some(list.as_any()), "key")?;
        let key = keys.get(0).unwrap_or_default();
        Ok(self.lock()?.last_commit(key).map(PyTimestamp))
    }

    /// `None` if `txn` may commit after the recorded history, else its first `Conflict`.
    fn check(&self, txn: &Bound<'_, PyAny>) -> PyResult<Option<PyConflict>> {
        let txn = &cast_arg::<PyTransaction>(txn, "txn")?.get().0;
        Ok(self.lock()?.check(txn).map(PyConflict))
    }

    /// Decides a batch in submission order, first committer wins; records nothing.
    fn check_batch(&self, py: Python<'_>, txns: &Bound<'_, PyAny>) -> PyResult<PyBatchDecision> {
        let txns = list_arg::<PyTransaction>(txns, "txns")?;
        let refs: Vec<&Transaction> = txns.iter().map(|txn| &txn.get().0).collect();
        let decision = py.detach(|| -> PyResult<_> { Ok(self.lock()?.check_batch(&refs)?) })?;
        Ok(PyBatchDecision {
            txns: txns.into_iter().map(Bound::unbind).collect(),
            outcomes: decision.outcomes,
        })
    }

    /// Remembers `txn`'s writes as committed at `commit_ts` (which must be after its start).
    fn record(&self, txn: &Bound<'_, PyAny>, commit_ts: &Bound<'_, PyAny>) -> PyResult<()> {
        let txn = &cast_arg::<PyTransaction>(txn, "txn")?.get().0;
        let commit_ts = cast_arg::<PyTimestamp>(commit_ts, "commit_ts")?.get().0;
        Ok(self.lock()?.record(txn, commit_ts)?)
    }

    /// Groups of mutually independent transactions (first fit, submission order).
    fn partition<'py>(
        &self,
        py: Python<'py>,
        txns: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let txns = list_arg::<PyTransaction>(txns, "txns")?;
        let refs: Vec<&Transaction> = txns.iter().map(|txn| &txn.get().0).collect();
        let groups = py.detach(|| -> PyResult<_> { Ok(self.lock()?.partition(&refs)?) })?;
        let out = PyList::empty(py);
        for group in groups {
            out.append(PyList::new(py, group.iter().map(|&i| txns[i].clone()))?)?;
        }
        Ok(out)
    }

    /// `(first, second, keys)` for each pair that writes a common key with concurrent clocks.
    fn check_concurrent_writes<'py>(
        &self,
        py: Python<'py>,
        txns: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let txns = list_arg::<PyTransaction>(txns, "txns")?;
        let refs: Vec<&Transaction> = txns.iter().map(|txn| &txn.get().0).collect();
        let found = py.detach(|| concurrent_writes(&refs))?;
        let out = PyList::empty(py);
        for pair in found {
            let keys = PyList::new(py, pair.keys.iter().map(|key| PyBytes::new(py, key)))?;
            out.append((txns[pair.first].clone(), txns[pair.second].clone(), keys))?;
        }
        Ok(out)
    }

    fn __repr__(&self) -> PyResult<String> {
        let detector = self.lock()?;
        Ok(format!(
            "ConflictDetector(isolation='{}', max_keys={}, remembered={})",
            isolation_name(detector.isolation()),
            detector.max_keys(),
            detector.len()
        ))
    }
}
