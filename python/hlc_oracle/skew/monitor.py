"""The monitor thread, :class:`SkewMonitor`: polls NTP, runs the guard and the jump detector.

Request handling never waits for it; every poll yields a consistent :class:`SkewStatus` snapshot
for ``GetStatus``, metrics and the ``skew`` command, and is handed to listeners (the server's
serving gate).
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from hlc_oracle.skew.combine import OffsetEstimate, combine_samples
from hlc_oracle.skew.guard import (
    DEFAULT_MAX_OFFSET_US,
    GuardDecision,
    GuardPolicy,
    GuardState,
    SkewConfig,
    SkewGuard,
)
from hlc_oracle.skew.jumps import JumpDetector, PhysicalClock
from hlc_oracle.skew.ntp import NtpSample, NtpServer, query_server

log = logging.getLogger("hlc_oracle.skew")


@dataclass(frozen=True)
class ServerState:
    server: str
    last_sample: NtpSample | None
    last_good: NtpSample | None
    good_samples: int
    bad_samples: int
    consecutive_failures: int


@dataclass(frozen=True)
class HistoryEntry:
    wall_s: float
    state: GuardState
    offset_us: int | None
    bound_us: int | None


@dataclass(frozen=True)
class SkewStatus:
    """A consistent snapshot of the monitor, for GetStatus, metrics and the CLI."""

    state: GuardState
    serving: bool
    recovering: bool
    message: str
    estimate: OffsetEstimate | None
    max_offset_us: int
    warning_level_us: int
    serving_level_us: int
    policy: GuardPolicy
    unknown_policy: GuardPolicy
    servers: tuple[ServerState, ...]
    history: tuple[HistoryEntry, ...]
    polls: int
    forward_jumps: int
    backward_jumps: int
    last_poll_wall_s: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (enums as their strings)."""
        return _plain(asdict(self))  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


Listener = Callable[[SkewStatus], None]


def _terminate_process(reason: str) -> None:
    # SIGTERM rather than os._exit: the server's shutdown path closes the log and stops serving.
    log.critical("fatal clock jump, terminating: %s", reason)
    os.kill(os.getpid(), signal.SIGTERM)


class SkewMonitor:
    """Polls NTP servers in the background and runs the guard and the jump detector.

    ``start()`` runs :meth:`poll_once` every ``poll_interval_s`` on a daemon thread (the first
    poll at once); ``stop()`` ends it. Listeners added with :meth:`add_listener` are called from
    that thread after every poll with the new :class:`SkewStatus`; their exceptions are logged.
    """

    def __init__(
        self,
        config: SkewConfig,
        *,
        max_offset_us: int = DEFAULT_MAX_OFFSET_US,
        wall_clock: PhysicalClock | None = None,
        on_fatal_jump: Callable[[str], None] | None = None,
    ) -> None:
        if not isinstance(config, SkewConfig):
            raise TypeError(f"config must be a SkewConfig, got {type(config).__name__}")
        config.validate()  # a config section may have been filled field by field
        self.config = config
        self.guard = SkewGuard(config, max_offset_us)
        threshold = config.jump_threshold_us or max(1, max_offset_us // 2)
        self.jumps = JumpDetector(threshold, wall_clock)
        self._on_fatal_jump = on_fatal_jump or _terminate_process
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._servers: dict[str, ServerState] = {
            str(s): ServerState(str(s), None, None, 0, 0, 0) for s in config.servers
        }
        self._history: deque[HistoryEntry] = deque(maxlen=config.history_size)
        self._listeners: list[Listener] = []
        self._polls = 0
        self._last_poll_wall_s: float | None = None
        self._estimate: OffsetEstimate | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None

    # -- lifecycle

    def start(self) -> SkewMonitor:
        if self._thread is not None:
            raise RuntimeError("SkewMonitor already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hlc-skew-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s if timeout_s is not None else self.config.timeout_s + 5)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> SkewMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def _run(self) -> None:
        interval = self.config.poll_interval_s
        deadline = time.monotonic()
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # the monitor outlives any bug in one round
                log.exception("skew poll failed")
            deadline += interval
            now = time.monotonic()
            if deadline < now:  # a slow round: skip the missed ticks rather than burst
                deadline = now + interval
            self._stop.wait(deadline - now)

    # -- one round

    def poll_once(self) -> SkewStatus:
        """Queries every server once (in parallel), updates the guard, returns the status."""
        with self._poll_lock:
            self._check_jumps()
            samples = self._query_all()
            now = time.monotonic()
            with self._lock:
                for sample in samples:
                    self._record(sample)
                fresh = [
                    s.last_good
                    for s in self._servers.values()
                    if s.last_good is not None
                    and now - s.last_good.monotonic_s <= self.config.max_sample_age_s
                ]
                estimate = combine_samples(fresh)
                previous = self.guard.decision
                decision = self.guard.observe(now, estimate, self._why_unknown())
                self._estimate = estimate
                if self._servers:  # a round without servers polled nothing
                    self._polls += 1
                self._last_poll_wall_s = time.time()
                self._history.append(
                    HistoryEntry(
                        self._last_poll_wall_s,
                        decision.state,
                        estimate.offset_us if estimate else None,
                        estimate.bound_us if estimate else None,
                    )
                )
                status = self._snapshot()
                listeners = list(self._listeners)
            self._log_decision(previous, decision, estimate)
            for listener in listeners:
                try:
                    listener(status)
                except Exception:
                    log.exception("skew listener %r failed", listener)
            return status

    def _query_all(self) -> list[NtpSample]:
        servers = self.config.servers
        if len(servers) <= 1:
            return [self._query_burst(s) for s in servers]
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=min(8, len(servers)), thread_name_prefix="hlc-ntp"
            )
        return list(self._executor.map(self._query_burst, servers))

    def _query_burst(self, server: NtpServer) -> NtpSample:
        """``burst`` queries; the healthy answer with the smallest delay wins (NTP's clock
        filter: the shortest round trip has the least room for asymmetry, including the wait
        for the GIL after the answer arrives)."""
        best: NtpSample | None = None
        last: NtpSample | None = None
        for _ in range(self.config.burst):
            last = query_server(server, self.config.timeout_s)
            if last.healthy and (best is None or (last.delay_us or 0) < (best.delay_us or 0)):
                best = last
        assert last is not None  # burst >= 1
        return best or last

    def _record(self, sample: NtpSample) -> None:
        old = self._servers.get(sample.server) or ServerState(sample.server, None, None, 0, 0, 0)
        if sample.healthy:
            new = ServerState(
                sample.server, sample, sample, old.good_samples + 1, old.bad_samples, 0
            )
        else:
            new = ServerState(
                sample.server,
                sample,
                old.last_good,
                old.good_samples,
                old.bad_samples + 1,
                old.consecutive_failures + 1,
            )
            # An unreachable server (a host offline) fails every poll the same way: say it once,
            # and again when the failure changes; the repeats go to the debug level.
            repeated = (
                old.consecutive_failures > 0
                and old.last_sample is not None
                and old.last_sample.status == sample.status
            )
            log.log(
                logging.DEBUG if repeated else logging.WARNING,
                "ntp server %s: %s (%s)%s",
                sample.server,
                sample.status,
                sample.detail,
                "" if repeated else "; repeats of this failure are logged at debug level",
            )
        self._servers[sample.server] = new

    def _why_unknown(self) -> str:
        if not self._servers:
            return "no NTP servers configured"
        parts = [
            f"{s.server} {s.last_sample.status}" if s.last_sample else f"{s.server} not polled"
            for s in self._servers.values()
        ]
        return "no usable NTP answer (" + ", ".join(parts) + ")"

    def _check_jumps(self) -> None:
        event = self.jumps.check()
        if event is None:
            return
        direction = "forward" if event.forward else "backward"
        reason = (
            f"wall clock jumped {direction} by {event.size_us} us against the monotonic clock "
            f"(threshold {self.jumps.threshold_us} us)"
        )
        log.error("%s", reason)
        if event.forward and self.config.fatal_forward_jump:
            self._on_fatal_jump(reason)

    def _log_decision(
        self, previous: GuardDecision, decision: GuardDecision, estimate: OffsetEstimate | None
    ) -> None:
        if (previous.state, previous.serving) == (decision.state, decision.serving):
            return
        level = logging.INFO if decision.state is GuardState.OK else logging.WARNING
        log.log(
            level,
            "skew guard %s -> %s (serving: %s): %s",
            previous.state,
            decision.state,
            decision.serving,
            decision.message,
            extra={"skew_offset_us": estimate.offset_us if estimate else None},
        )

    # -- reading

    def status(self) -> SkewStatus:
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> SkewStatus:
        decision = self.guard.decision
        return SkewStatus(
            state=decision.state,
            serving=decision.serving,
            recovering=decision.recovering,
            message=decision.message,
            estimate=self._estimate,
            max_offset_us=self.guard.max_offset_us,
            warning_level_us=self.guard.warning_level_us,
            serving_level_us=self.guard.serving_level_us,
            policy=self.config.policy,
            unknown_policy=self.config.unknown_policy,
            servers=tuple(self._servers.values()),
            history=tuple(self._history),
            polls=self._polls,
            forward_jumps=self.jumps.forward_jumps,
            backward_jumps=self.jumps.backward_jumps,
            last_poll_wall_s=self._last_poll_wall_s,
        )
