"""Clock skew: NTP measurement, the max-offset guard and clock-jump detection.

An HLC is only as correct as its assumption that physical clocks agree within ``max_offset_us``.
This package measures how far the local clock is from NTP and stops the node from handing out
timestamps before that assumption breaks, instead of killing it without warning.

What it guarantees:

- :class:`SkewMonitor` polls the configured NTP servers with ``ntplib`` on its own thread; request
  handling never waits for it. Every answer becomes an :class:`NtpSample`; an unresolvable name, a
  timeout, a garbage packet, a kiss-o'-death, a leap alarm or a bad stratum is an *unhealthy*
  sample, never an exception that stops the monitor.
- The samples combine into one :class:`OffsetEstimate`: each server gives the interval
  ``offset +- (delay/2 + its own root distance)``; the largest set of servers whose intervals
  overlap (Marzullo) are the truechimers, the others falsetickers; the estimate is the median of
  the truechimers' offsets and its bound covers all their intervals.
- :class:`SkewGuard` turns estimates into a state: ``ok``, ``warning`` (past
  ``warning_fraction`` of the max offset), ``unsafe`` (past ``serving_fraction``, 80% by default as
  in CockroachDB) or ``unknown`` (no server gave a usable answer recently). ``unsafe`` is left only
  after the offset stayed under the serving level for ``recovery_hold_s``. Policies decide what a
  state does to serving: ``refuse`` (the default for ``unsafe``) or ``warn`` (the default for
  ``unknown``: an unreachable NTP server is not evidence of skew). A node that was ``unsafe``
  stays so while its servers are silent: silence is no evidence of recovery either.
- Forward and backward jumps of the wall clock are detected by comparing it with the monotonic
  clock between polls; forward jumps past a threshold (half the max offset by default) are counted,
  logged and, by option, fatal.

Offsets follow the NTP sign convention: ``server - local``; positive means the local clock is
behind. All figures are integer microseconds. ``ntplib`` works in float seconds, whose resolution
near the current NTP era is about one microsecond.

One concept per module:

===========  =====================================================================================
``ntp``      querying NTP servers: :class:`NtpServer`, :func:`query_server`, :class:`NtpSample`
``combine``  how samples are combined into an :class:`OffsetEstimate` (:func:`combine_samples`)
``guard``    the guard's configuration (:class:`SkewConfig`) and decisions (:class:`SkewGuard`)
``jumps``    clock-jump detection (:class:`JumpDetector`)
``monitor``  the polling thread (:class:`SkewMonitor`) and its snapshots (:class:`SkewStatus`)
``metrics``  the Prometheus collector (:class:`SkewMetricsCollector`)
===========  =====================================================================================

The ``hlc-oracle skew`` command (measure once, before a deploy) lives with the other commands,
in :mod:`hlc_oracle.cli.skew` (``python -m hlc_oracle.cli skew`` without the script).
"""

from __future__ import annotations

from hlc_oracle.skew.combine import OffsetEstimate, combine_samples
from hlc_oracle.skew.guard import (
    DEFAULT_MAX_OFFSET_US,
    GuardDecision,
    GuardPolicy,
    GuardState,
    SkewConfig,
    SkewGuard,
)
from hlc_oracle.skew.jumps import JumpDetector, JumpEvent, PhysicalClock
from hlc_oracle.skew.metrics import SkewMetricsCollector
from hlc_oracle.skew.monitor import HistoryEntry, ServerState, SkewMonitor, SkewStatus
from hlc_oracle.skew.ntp import NTP_PORT, NtpSample, NtpServer, SampleStatus, query_server

__all__ = [
    "DEFAULT_MAX_OFFSET_US",
    "NTP_PORT",
    "GuardDecision",
    "GuardPolicy",
    "GuardState",
    "HistoryEntry",
    "JumpDetector",
    "JumpEvent",
    "NtpSample",
    "NtpServer",
    "OffsetEstimate",
    "PhysicalClock",
    "SampleStatus",
    "ServerState",
    "SkewConfig",
    "SkewGuard",
    "SkewMetricsCollector",
    "SkewMonitor",
    "SkewStatus",
    "combine_samples",
    "query_server",
]
