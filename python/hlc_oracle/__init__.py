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
"""

from hlc_oracle._core import (
    LOGICAL_BITS,
    MAX_LOGICAL,
    MAX_NODE,
    MAX_PHYSICAL,
    MAX_RESERVE,
    CeilingReachedError,
    Clock,
    ClockSkewError,
    CommitLog,
    CommitLogCorruptError,
    CommitLogError,
    HlcError,
    LogRecovery,
    ManualClock,
    SystemClock,
    Timestamp,
    TimestampRange,
)

__all__ = [
    "LOGICAL_BITS",
    "MAX_LOGICAL",
    "MAX_NODE",
    "MAX_PHYSICAL",
    "MAX_RESERVE",
    "CeilingReachedError",
    "Clock",
    "ClockSkewError",
    "CommitLog",
    "CommitLogCorruptError",
    "CommitLogError",
    "HlcError",
    "LogRecovery",
    "ManualClock",
    "SystemClock",
    "Timestamp",
    "TimestampRange",
]
