//! The package's exception hierarchy: every error raised by hlc_oracle itself derives from
//! `HlcError`. Bad arguments raise the built-in `TypeError` and `ValueError`.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyTuple, PyType};

use crate::commit::refusal::Refusal;

create_exception!(
    hlc_oracle,
    HlcError,
    PyException,
    "Base class of every error raised by hlc_oracle."
);
create_exception!(
    hlc_oracle,
    ClockSkewError,
    HlcError,
    "A remote timestamp is further ahead of the local physical clock than max_offset_us."
);
create_exception!(
    hlc_oracle,
    CommitLogError,
    HlcError,
    "The commit log cannot be opened, written or used (I/O error, locked by another process, closed)."
);
create_exception!(
    hlc_oracle,
    CommitLogCorruptError,
    CommitLogError,
    "Acknowledged commit-log data is damaged; the message names the file and offset."
);
create_exception!(
    hlc_oracle,
    CommitOutcomeUnknownError,
    CommitLogError,
    "A batch's decision write failed or its outcome is unknown: the transaction may or may not be decided (ask the current leader); the engine stopped."
);
create_exception!(
    hlc_oracle,
    CeilingReachedError,
    HlcError,
    "A timestamp would pass the clock's ceiling (its persisted window): extend the window first."
);
create_exception!(
    hlc_oracle,
    InvalidTransactionError,
    HlcError,
    "A transaction submitted for commit is malformed (bad id, empty write set); nothing was logged."
);
create_exception!(
    hlc_oracle,
    TransactionTooLargeError,
    InvalidTransactionError,
    "A transaction has more keys, or longer keys, than the configured limits; nothing was logged."
);
create_exception!(
    hlc_oracle,
    StartTimestampError,
    InvalidTransactionError,
    "A transaction's start timestamp is in the future, or at or below forgotten decisions (the low \
     watermark after a checkpoint or the decisions index's cap)."
);
create_exception!(
    hlc_oracle,
    TransactionMismatchError,
    InvalidTransactionError,
    "A transaction id was already submitted with different contents."
);
create_exception!(
    hlc_oracle,
    SchedulerOverloadedError,
    HlcError,
    "The group-commit queue is full: retry later (back-pressure)."
);
create_exception!(
    hlc_oracle,
    SchedulerClosedError,
    HlcError,
    "The group-commit scheduler is closed (or not started)."
);

/// The exception class of each kind of refusal, and for `BadArgument` the second class answered
/// with the same code.
fn refusal_classes(
    py: Python<'_>,
    refusal: Refusal,
) -> (Bound<'_, PyType>, Option<Bound<'_, PyType>>) {
    let class = match refusal {
        Refusal::TooLarge => py.get_type::<TransactionTooLargeError>(),
        Refusal::StartTimestamp => py.get_type::<StartTimestampError>(),
        Refusal::Mismatch => py.get_type::<TransactionMismatchError>(),
        Refusal::InvalidTransaction => py.get_type::<InvalidTransactionError>(),
        Refusal::Overloaded => py.get_type::<SchedulerOverloadedError>(),
        Refusal::Closed => py.get_type::<SchedulerClosedError>(),
        Refusal::CeilingReached => py.get_type::<CeilingReachedError>(),
        Refusal::OutcomeUnknown => py.get_type::<CommitOutcomeUnknownError>(),
        Refusal::Log => py.get_type::<CommitLogError>(),
        Refusal::BadArgument => {
            return (
                py.get_type::<PyValueError>(),
                Some(py.get_type::<PyTypeError>()),
            )
        }
        Refusal::Internal => py.get_type::<HlcError>(),
    };
    (class, None)
}

/// The exception of a refusal, with `message`.
pub(crate) fn refusal_error(py: Python<'_>, refusal: Refusal, message: String) -> PyErr {
    PyErr::from_type(refusal_classes(py, refusal).0, message)
}

/// `ERROR_CODES`: `(exception class, gRPC code number)` for every kind of refusal, most specific
/// first (the first class an error is an instance of gives its code).
pub(crate) fn error_codes(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
    let mut rows = Vec::new();
    for refusal in Refusal::ALL {
        let (class, also) = refusal_classes(py, refusal);
        for class in std::iter::once(class).chain(also) {
            rows.push(PyTuple::new(
                py,
                [
                    class.into_any(),
                    refusal.code().into_pyobject(py)?.into_any(),
                ],
            )?);
        }
    }
    PyTuple::new(py, rows)
}
