//! The `CommitStream` wire messages for Python, encoded and decoded in Rust (see
//! `commit::wire`): the server's and the client's one codec for `CommitStreamRequest` and
//! `CommitStreamResponse`.

use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PySlice};

use crate::commit::wire::{self, IndexedResult, WireError, WireResult};
use crate::commit::{AbortReason, Outcome};
use crate::conflict::{KeySet, Transaction};
use crate::python::answers::{outcome_object, PyAborted, PyCommitted};
use crate::python::args::{list_arg, type_name, wrong_type};
use crate::python::conflict::PyTransaction;
use crate::python::errors::{CommitLogCorruptError, InvalidTransactionError};
use crate::timestamp::Timestamp;

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
    // A list (the common argument) is read in place, without an iterator or a vector of
    // references; anything else is checked and made one first. One loop: with two, the field
    // writers no longer inlined into it (about 200 more instructions a transaction).
    let list = match txns.cast::<PyList>() {
        Ok(list) => list.clone(),
        Err(_) => PyList::new(py, list_arg::<PyTransaction>(txns, "txns")?)?,
    };
    let count = list.len();
    let mut out = Vec::new();
    for (index, item) in list.iter().enumerate() {
        let txn = item
            .cast::<PyTransaction>()
            .map_err(|_| wrong_type::<PyTransaction>(&item, &format!("txns[{index}]"), ""))?;
        let txn = &txn.get().0;
        wire::encode_transaction(
            &mut out,
            txn.id,
            txn.start_ts,
            txn.reads.iter(),
            txn.writes.iter(),
        );
        if index == 0 {
            // Room for the rest at about the first one's size: no regrowth in the usual case.
            out.reserve(out.len().saturating_mul(count));
        }
    }
    Ok(PyBytes::new(py, &out))
}

/// A result as given from Python: `Committed`, `Aborted` or `(txn_id, grpc_code, message)`.
/// `index`: its place in `results` (None: the one `result`), for the `TypeError`.
fn wire_result(item: &Bound<'_, PyAny>, index: Option<usize>) -> PyResult<WireResult> {
    Ok(if let Ok(committed) = item.cast::<PyCommitted>() {
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
            "{} must be Committed, Aborted or (txn_id, code, message), got {}",
            index.map_or_else(|| "result".into(), |i| format!("results[{i}]")),
            type_name(item)
        )));
    })
}

/// A decoded result as its Python object: `Committed`, `Aborted` or `(txn_id, grpc_code,
/// message)`.
fn result_object<'py>(py: Python<'py>, result: WireResult) -> PyResult<Bound<'py, PyAny>> {
    match result {
        WireResult::Decided(txn_id, outcome) => outcome_object(py, txn_id, &outcome),
        WireResult::Error {
            txn_id,
            code,
            message,
        } => Ok((txn_id, code, message).into_pyobject(py)?.into_any()),
    }
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
        let result = wire_result(&item?, Some(index))?;
        wire::encode_result(&mut out, &result);
    }
    Ok(PyBytes::new(py, &out))
}

/// One serialized `CommitResult` (the answer of a unary `Commit` or `Abort`): `result` is a
/// `Committed`, an `Aborted`, or `(txn_id, grpc_code, message)` for a refused transaction.
#[pyfunction]
pub fn encode_commit_result<'py>(
    py: Python<'py>,
    result: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::new();
    wire::encode_result_fields(&mut out, &wire_result(result, None)?);
    Ok(PyBytes::new(py, &out))
}

/// One serialized `CommitResult` decoded: `Committed`, `Aborted`, or `(txn_id, grpc_code,
/// message)` for a refused transaction. `ValueError` when malformed.
#[pyfunction]
pub fn decode_commit_result<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyBytes>,
) -> PyResult<Bound<'py, PyAny>> {
    let result =
        wire::decode_result(data.as_bytes()).map_err(|err| wire_error("CommitResult", &err))?;
    result_object(py, result)
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
    fn of_index(data: Py<PyBytes>, index: Vec<IndexedResult>) -> Self {
        Self {
            committed: index.iter().filter(|r| r.committed.is_some()).count(),
            refused: index.iter().filter(|r| r.refused).count(),
            data,
            index,
        }
    }

    fn item<'py>(&self, py: Python<'py>, entry: &IndexedResult) -> PyResult<Bound<'py, PyAny>> {
        if let Some(ts) = entry.committed {
            return outcome_object(py, entry.txn_id, &Outcome::Committed(ts));
        }
        let bytes = self.data.bind(py).as_bytes();
        let body = bytes.get(entry.start..entry.end).unwrap_or_default();
        let result =
            wire::decode_result(body).map_err(|err| wire_error("CommitStreamResponse", &err))?;
        result_object(py, result)
    }
}

#[pymethods]
impl PyCommitResults {
    #[new]
    fn py_new(data: &Bound<'_, PyBytes>) -> PyResult<Self> {
        let index = wire::index_response(data.as_bytes())
            .map_err(|err| wire_error("CommitStreamResponse", &err))?;
        Ok(Self::of_index(data.clone().unbind(), index))
    }

    fn __len__(&self) -> usize {
        self.index.len()
    }

    /// One result, built now; or, for a slice, the `CommitResults` of those results (over the
    /// same bytes, nothing built): how the client hands each caller its part of a shared message.
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Ok(slice) = index.cast::<PySlice>() {
            let count = isize::try_from(self.index.len()).unwrap_or(isize::MAX);
            let range = slice.indices(count)?;
            let mut picked = Vec::with_capacity(range.slicelength);
            let mut at = range.start;
            for _ in 0..range.slicelength {
                if let Some(entry) = usize::try_from(at).ok().and_then(|i| self.index.get(i)) {
                    picked.push(*entry);
                }
                at += range.step;
            }
            let part = Self::of_index(self.data.clone_ref(py), picked);
            return Ok(Bound::new(py, part)?.into_any());
        }
        let index: isize = index.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "CommitResults indices must be integers or slices, not {}",
                type_name(index)
            ))
        })?;
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
        out.append(result_object(py, result)?)?;
    }
    Ok(out)
}
