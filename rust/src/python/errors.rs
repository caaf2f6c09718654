//! The package's exception hierarchy: every error raised by hlc_oracle itself derives from
//! `HlcError`. Bad arguments raise the built-in `TypeError` and `ValueError`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;

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
    CeilingReachedError,
    HlcError,
    "A timestamp would pass the clock's ceiling (its persisted window): extend the window first."
);
