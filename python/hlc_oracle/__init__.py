"""hlc-oracle: hybrid-logical-clock timestamps with a Rust core.

Guarantees of one :class:`Clock` (Kulkarni, Demirbas et al., "Logical Physical Clocks", 2014):

- ``now()`` (local or send event) returns a timestamp strictly greater than every timestamp the
  clock returned or observed before, from any thread, even when the physical clock steps back;
- ``update(remote)`` (receive event) returns a timestamp greater than ``remote`` and everything
  before, unless ``remote.physical`` is more than ``max_offset_us`` ahead of the local physical
  clock: then it raises :class:`ClockSkewError` and leaves the clock unchanged;
- ``reserve(n)`` hands out ``n`` consecutive timestamps in one atomic step, at a cost that does not
  depend on ``n``;
- a clock built with ``floor=`` only returns timestamps strictly above it, so a clock restored from
  a persisted timestamp never goes backwards across a restart;
- when the 12-bit logical counter would overflow inside one microsecond, physical moves forward
  by one microsecond instead.

The clock assumes physical clocks agree within ``max_offset_us``; it enforces that only on
receive. Timestamps order by ``(physical, logical, node)``.

:class:`VectorClock` orders events by happens-before (``compare`` gives an :class:`Ordering`;
``<`` and ``>`` are a partial order, all false for concurrent clocks). :class:`ConflictDetector`
decides whether a :class:`Transaction` may commit: under ``"snapshot"`` isolation it is rejected
when it writes a key whose last recorded commit is after its ``start_ts``; under
``"serializable"`` also when it reads one; and, whatever it touches, when its ``start_ts`` is at or
below the ``low_watermark`` (the newest commit the memory-bounded history has forgotten), since it
can no longer be verified. Deciding (``check``, ``check_batch``) never records; ``record`` does,
after the commit is durable.
"""

from hlc_oracle._core import (
    LOGICAL_BITS,
    MAX_LOGICAL,
    MAX_NODE,
    MAX_PHYSICAL,
    MAX_RESERVE,
    Aborted,
    BatchDecision,
    CeilingReachedError,
    Clock,
    ClockSkewError,
    CommitEngine,
    CommitFuture,
    CommitLog,
    CommitLogCorruptError,
    CommitLogError,
    CommitOutcomeUnknownError,
    Committed,
    Conflict,
    ConflictDetector,
    ConflictKind,
    HlcError,
    InvalidTransactionError,
    LogRecovery,
    ManualClock,
    Ordering,
    SchedulerClosedError,
    SchedulerOverloadedError,
    StartTimestampError,
    SystemClock,
    Timestamp,
    TimestampRange,
    Transaction,
    TransactionMismatchError,
    TransactionTooLargeError,
    VectorClock,
)
from hlc_oracle.scheduler import CommitOptions, GroupCommitScheduler

__all__ = [
    "LOGICAL_BITS",
    "MAX_LOGICAL",
    "MAX_NODE",
    "MAX_PHYSICAL",
    "MAX_RESERVE",
    "Aborted",
    "BatchDecision",
    "CeilingReachedError",
    "Clock",
    "ClockSkewError",
    "CommitEngine",
    "CommitFuture",
    "CommitLog",
    "CommitLogCorruptError",
    "CommitLogError",
    "CommitOptions",
    "CommitOutcomeUnknownError",
    "Committed",
    "Conflict",
    "ConflictDetector",
    "ConflictKind",
    "GroupCommitScheduler",
    "HlcError",
    "InvalidTransactionError",
    "LogRecovery",
    "ManualClock",
    "Ordering",
    "SchedulerClosedError",
    "SchedulerOverloadedError",
    "StartTimestampError",
    "SystemClock",
    "Timestamp",
    "TimestampRange",
    "Transaction",
    "TransactionMismatchError",
    "TransactionTooLargeError",
    "VectorClock",
]
