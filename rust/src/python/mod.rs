//! The pyo3 glue: each submodule wraps one core module; nothing here holds logic of its own.
//!
//! By concept, each leaning only on those above it: `args` (argument converters), `errors` (the
//! exception classes), the wrappers of the core's values (`hlc`, `vclock`, `conflict`, `log`),
//! `requests` (what the commit engine is asked) and `answers` (what it answers), then `engine`
//! (`CommitEngine`), `pending` (the group-commit scheduler's queue) and `wire` (the
//! `CommitStream` codec). `untracked` registers the classes whose instances hold no Python
//! object, allocated untracked by the cyclic collector.

pub mod answers;
pub mod args;
pub mod conflict;
pub mod engine;
pub mod errors;
pub mod hlc;
pub mod log;
pub mod pending;
pub mod requests;
pub mod untracked;
pub mod vclock;
pub mod wire;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};

/// Makes `name` a Python `enum.Enum` class with `members` (name, value) in `module`. The core's
/// enums are Python enums rather than `#[pyclass]` enums because only a real `Enum` iterates
/// (`list(Ordering)`), indexes by name and value (`Ordering["BEFORE"]`, `Ordering("before")`) and
/// has `.name`/`.value`: iterating a class needs a metaclass, which a `#[pyclass]` cannot have.
/// Returns the members in the order given, for the glue to hand out without a lookup.
pub(crate) fn python_enum(
    module: &Bound<'_, PyModule>,
    name: &str,
    doc: &str,
    members: &[(&str, &str)],
) -> PyResult<Vec<Py<PyAny>>> {
    let py = module.py();
    let options = PyDict::new(py);
    options.set_item("module", "hlc_oracle")?;
    options.set_item("qualname", name)?;
    let class = py
        .import("enum")?
        .getattr("Enum")?
        .call((name, members.to_vec()), Some(&options))?
        .cast_into::<PyType>()?;
    class.setattr("__doc__", doc)?;
    module.add(name, &class)?;
    members
        .iter()
        .map(|(member, _)| Ok(class.getattr(*member)?.unbind()))
        .collect()
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("HlcError", py.get_type::<errors::HlcError>())?;
    module.add("ClockSkewError", py.get_type::<errors::ClockSkewError>())?;
    module.add("CommitLogError", py.get_type::<errors::CommitLogError>())?;
    module.add(
        "CommitLogCorruptError",
        py.get_type::<errors::CommitLogCorruptError>(),
    )?;
    for (name, error) in [
        (
            "CommitOutcomeUnknownError",
            py.get_type::<errors::CommitOutcomeUnknownError>(),
        ),
        (
            "InvalidTransactionError",
            py.get_type::<errors::InvalidTransactionError>(),
        ),
        (
            "TransactionTooLargeError",
            py.get_type::<errors::TransactionTooLargeError>(),
        ),
        (
            "StartTimestampError",
            py.get_type::<errors::StartTimestampError>(),
        ),
        (
            "TransactionMismatchError",
            py.get_type::<errors::TransactionMismatchError>(),
        ),
        (
            "SchedulerOverloadedError",
            py.get_type::<errors::SchedulerOverloadedError>(),
        ),
        (
            "SchedulerClosedError",
            py.get_type::<errors::SchedulerClosedError>(),
        ),
    ] {
        module.add(name, error)?;
    }
    module.add_class::<engine::PyCommitEngine>()?;
    module.add_class::<pending::PyPendingQueue>()?;
    module.add_class::<pending::PyPendingBatch>()?;
    module.add_class::<pending::PyFutureResolution>()?;
    module.add_class::<pending::PyCommitFuture>()?;
    module.add_function(wrap_pyfunction!(wire::decode_commit_request, module)?)?;
    module.add_function(wrap_pyfunction!(wire::count_commit_request, module)?)?;
    module.add_function(wrap_pyfunction!(wire::piece_requested_aborts, module)?)?;
    module.add_function(wrap_pyfunction!(wire::encode_commit_request, module)?)?;
    module.add_function(wrap_pyfunction!(wire::decode_commit_results, module)?)?;
    module.add_class::<wire::PyCommitResults>()?;
    module.add_function(wrap_pyfunction!(wire::encode_commit_results, module)?)?;
    module.add_function(wrap_pyfunction!(wire::encode_commit_result, module)?)?;
    module.add_function(wrap_pyfunction!(wire::decode_commit_result, module)?)?;
    untracked::add_untracked_class::<answers::PyCommitted>(module)?;
    untracked::add_untracked_class::<answers::PyAborted>(module)?;
    untracked::add_untracked_class::<answers::PyStreamResult>(module)?;
    untracked::add_untracked_class::<log::PyCommitLog>(module)?;
    module.add_class::<log::PyLogRecovery>()?;
    module.add(
        "CeilingReachedError",
        py.get_type::<errors::CeilingReachedError>(),
    )?;
    untracked::add_untracked_class::<hlc::PyTimestamp>(module)?;
    untracked::add_untracked_class::<hlc::PyTimestampRange>(module)?;
    module.add_class::<hlc::PyClock>()?;
    untracked::add_untracked_class::<hlc::PySystemClock>(module)?;
    untracked::add_untracked_class::<hlc::PyManualClock>(module)?;
    untracked::add_untracked_class::<hlc::TimestampRangeIterator>(module)?;
    vclock::register_ordering(module)?;
    untracked::add_untracked_class::<vclock::PyVectorClock>(module)?;
    untracked::add_untracked_class::<conflict::PyTransaction>(module)?;
    conflict::register_conflict_kind(module)?;
    untracked::add_untracked_class::<conflict::PyConflict>(module)?;
    module.add_class::<conflict::PyBatchDecision>()?;
    untracked::add_untracked_class::<conflict::PyConflictDetector>(module)?;
    module.add("MAX_RESERVE", crate::hlc::MAX_RESERVE)?;
    module.add("LOGICAL_BITS", crate::timestamp::LOGICAL_BITS)?;
    module.add("MAX_PHYSICAL", crate::timestamp::MAX_PHYSICAL)?;
    module.add("MAX_LOGICAL", crate::timestamp::MAX_LOGICAL)?;
    module.add("MAX_NODE", crate::timestamp::MAX_NODE)?;
    module.add("ERROR_CODES", errors::error_codes(py)?)?;
    module.add("COMMIT_DEFAULTS", engine::commit_defaults(py)?)?;
    module.add(
        "SYNC_BUCKET_BOUNDS_US",
        pyo3::types::PyTuple::new(py, crate::log::SYNC_BUCKET_BOUNDS_US)?,
    )?;
    Ok(())
}
