//! The answers of the commit engine as Python objects: `Committed`, `Aborted`, the exception of
//! a refused request (returned, not raised), and the per-part results of a batch of parts.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyType};

use crate::commit::batch::PartAnswers;
use crate::commit::stream::StreamCounts;
use crate::commit::{AbortReason, Outcome, SubmitError};
use crate::conflict::{Conflict, ConflictKind, LostTo};
use crate::python::args::{bytes_arg, optional_cast_arg, u64_arg};
use crate::python::conflict::PyConflict;
use crate::python::errors::refusal_error;
use crate::python::hlc::PyTimestamp;

/// A committed transaction and its commit timestamp.
#[pyclass(name = "Committed", module = "hlc_oracle", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyCommitted {
    pub(crate) txn_id: u64,
    pub(crate) commit_ts: PyTimestamp,
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
    pub(crate) txn_id: u64,
    pub(crate) conflict: Option<Conflict>,
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
        let conflict =
            optional_cast_arg::<PyConflict>(conflict, "conflict")?.map(|c| c.get().0.clone());
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
        let kind = ConflictKind::from_name(kind.as_bytes()).ok_or_else(|| {
            let names: Vec<String> = ConflictKind::ALL
                .iter()
                .map(|kind| format!("{:?}", kind.name()))
                .collect();
            PyValueError::new_err(format!(
                "kind must be one of {}, got {kind:?}",
                names.join(", ")
            ))
        })?;
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

pub(crate) fn outcome_object<'py>(
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

pub(crate) fn answer_object<'py>(
    py: Python<'py>,
    txn_id: u64,
    answer: &Result<Outcome, SubmitError>,
) -> PyResult<Bound<'py, PyAny>> {
    match answer {
        Ok(outcome) => outcome_object(py, txn_id, outcome),
        Err(err) => Ok(refusal_error(py, err.refusal(), err.to_string())
            .into_value(py)
            .into_bound(py)
            .into_any()),
    }
}

/// The answer to one serialized `CommitStreamRequest` decided as a part of a batch: the
/// serialized `CommitStreamResponse` and what it holds (the server's metrics count them; the
/// scheduler raises the clock's ceiling and retries when `ceiling`).
#[pyclass(name = "StreamResult", module = "hlc_oracle", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyStreamResult {
    response: Vec<u8>,
    counts: StreamCounts,
}

#[pymethods]
impl PyStreamResult {
    #[new]
    #[pyo3(signature = (response, committed, aborted, refused, ceiling = false))]
    fn py_new(
        response: &Bound<'_, PyAny>,
        committed: &Bound<'_, PyAny>,
        aborted: &Bound<'_, PyAny>,
        refused: &Bound<'_, PyAny>,
        ceiling: bool,
    ) -> PyResult<Self> {
        Ok(Self {
            response: bytes_arg(response, "response")?.as_bytes().to_vec(),
            counts: StreamCounts {
                committed: u64_arg(committed, "committed")?,
                aborted: u64_arg(aborted, "aborted")?,
                refused: u64_arg(refused, "refused")?,
                ceiling,
            },
        })
    }

    /// The serialized `CommitStreamResponse`: one result per transaction, in request order.
    #[getter]
    fn response<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.response)
    }

    /// How many transactions committed.
    #[getter]
    fn committed(&self) -> u64 {
        self.counts.committed
    }

    /// How many were aborted (a conflict, or an abort by id).
    #[getter]
    fn aborted(&self) -> u64 {
        self.counts.aborted
    }

    /// How many were refused (each with its error result and gRPC code in the response).
    #[getter]
    fn refused(&self) -> u64 {
        self.counts.refused
    }

    /// Whether some transaction was refused at the clock's ceiling.
    #[getter]
    fn ceiling(&self) -> bool {
        self.counts.ceiling
    }

    fn __repr__(&self) -> String {
        let counts = &self.counts;
        format!(
            "StreamResult(response=<{} bytes>, committed={}, aborted={}, refused={}, ceiling={})",
            self.response.len(),
            counts.committed,
            counts.aborted,
            counts.refused,
            if counts.ceiling { "True" } else { "False" }
        )
    }
}

/// The answers of `txn_ids`, one object each, in order.
pub(crate) fn answer_list<'py>(
    py: Python<'py>,
    txn_ids: &[u64],
    answers: &[Result<Outcome, SubmitError>],
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for (txn_id, answer) in txn_ids.iter().zip(answers) {
        out.append(answer_object(py, *txn_id, answer)?)?;
    }
    Ok(out)
}

/// The Python results of a batch of parts: per part, a list of answers, a `StreamResult`, or the
/// `ValueError` (not raised) of a malformed message.
pub(crate) fn part_results<'py>(
    py: Python<'py>,
    split: Vec<PartAnswers>,
    txn_ids: &[u64],
    answers: &[Result<Outcome, SubmitError>],
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for part in split {
        match part {
            PartAnswers::Requests(at, count) => out.append(answer_list(
                py,
                &txn_ids[at..at + count],
                &answers[at..at + count],
            )?)?,
            PartAnswers::Stream(response, counts) => {
                out.append(Bound::new(py, PyStreamResult { response, counts })?)?;
            }
            PartAnswers::Malformed(message) => {
                out.append(PyValueError::new_err(message).into_value(py))?;
            }
        }
    }
    Ok(out)
}
