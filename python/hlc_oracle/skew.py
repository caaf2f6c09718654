"""Clock skew: NTP measurement, the max-offset guard and clock-jump detection.

An HLC is only as correct as its assumption that physical clocks agree within ``max_offset_us``.
This module measures how far the local clock is from NTP and stops the node from handing out
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
"""

from __future__ import annotations

import argparse
import enum
import json
import logging
import math
import os
import signal
import socket
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import ntplib  # type: ignore[import-untyped]
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hlc_oracle._core import SystemClock

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
    "add_skew_arguments",
    "combine_samples",
    "main",
    "query_server",
    "run_skew",
]

log = logging.getLogger("hlc_oracle.skew")

NTP_PORT = 123
DEFAULT_MAX_OFFSET_US = 500_000
# ntplib reads time.time() around the exchange; an origin timestamp outside that window (with
# this slack for float rounding) means the answer is not to our request.
_ORIGIN_SLACK_S = 0.001
_NTP_MODE_SERVER = 4
_LEAP_ALARM = 3
_MAX_STRATUM = 15


class PhysicalClock(Protocol):
    """A wall clock in microseconds since the Unix epoch (``SystemClock``, ``ManualClock``)."""

    def now_us(self) -> int: ...


# --------------------------------------------------------------------------------------------
# Servers and samples


@dataclass(frozen=True)
class NtpServer:
    """One NTP server: ``host`` (name or address) and UDP ``port``."""

    host: str
    port: int = NTP_PORT

    def __post_init__(self) -> None:
        if not isinstance(self.host, str):
            raise TypeError(f"ntp server host must be a str, got {type(self.host).__name__}")
        if not self.host or any(c.isspace() for c in self.host):
            raise ValueError(f"ntp server host must be a non-empty name, got {self.host!r}")
        if not isinstance(self.port, int) or isinstance(self.port, bool):
            raise TypeError(f"ntp server port must be an int, got {type(self.port).__name__}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"ntp server port must be in 1..65535, got {self.port}")

    @classmethod
    def parse(cls, text: str) -> NtpServer:
        """``host``, ``host:port``, ``[v6-address]:port`` or a bare IPv6 address."""
        if not isinstance(text, str):
            raise TypeError(f"ntp server must be a str 'HOST[:PORT]', got {type(text).__name__}")
        text = text.strip()
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(f"ntp server {text!r}: expected '[address]:port'")
            return cls(host, _parse_port(text, rest[1:]) if rest else NTP_PORT)
        if text.count(":") == 1:
            host, _, port = text.partition(":")
            return cls(host, _parse_port(text, port))
        return cls(text)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == NTP_PORT else f"{host}:{self.port}"


def _parse_port(text: str, port: str) -> int:
    if not port.isdigit():
        raise ValueError(f"ntp server {text!r}: port must be a number in 1..65535")
    return int(port)


class SampleStatus(enum.StrEnum):
    """What one NTP query gave. Everything but ``OK`` is an unhealthy sample."""

    OK = "ok"
    TIMEOUT = "timeout"
    UNRESOLVABLE = "unresolvable"
    UNREACHABLE = "unreachable"
    GARBAGE = "garbage"
    KISS_OF_DEATH = "kiss-o'-death"
    LEAP_ALARM = "leap-alarm"
    BAD_STRATUM = "bad-stratum"
    BAD_ORIGIN = "bad-origin"


@dataclass(frozen=True)
class NtpSample:
    """One query to one server. Figures are ``None`` when the answer was unusable."""

    server: str
    status: SampleStatus
    detail: str
    wall_s: float
    monotonic_s: float
    offset_us: int | None = None
    delay_us: int | None = None
    root_distance_us: int | None = None
    stratum: int | None = None
    leap: int | None = None

    @property
    def healthy(self) -> bool:
        return self.status is SampleStatus.OK

    @property
    def bound_us(self) -> int:
        """Half the round trip plus the server's own distance to its reference."""
        return (self.delay_us or 0) // 2 + (self.root_distance_us or 0)


def query_server(server: NtpServer, timeout_s: float = 1.0, client: Any | None = None) -> NtpSample:
    """Queries ``server`` once. Never raises for anything the network or the server does."""
    client = client if client is not None else ntplib.NTPClient()
    name = str(server)
    wall_before = time.time()
    monotonic = time.monotonic()

    def make_sample(status: SampleStatus, detail: str, **figures: Any) -> NtpSample:
        return NtpSample(name, status, detail, wall_before, monotonic, **figures)

    try:
        answer = client.request(server.host, version=4, port=server.port, timeout=timeout_s)
    except socket.gaierror as err:
        return make_sample(SampleStatus.UNRESOLVABLE, f"cannot resolve {server.host!r}: {err}")
    except ntplib.NTPException as err:
        text = str(err)
        if text.startswith("No response"):
            return make_sample(SampleStatus.TIMEOUT, f"no answer within {timeout_s:g} s")
        return make_sample(SampleStatus.GARBAGE, text)
    except TimeoutError:
        return make_sample(SampleStatus.TIMEOUT, f"no answer within {timeout_s:g} s")
    except OSError as err:
        return make_sample(SampleStatus.UNREACHABLE, f"{type(err).__name__}: {err}")
    except Exception as err:  # a malformed answer must never stop the monitor
        return make_sample(SampleStatus.GARBAGE, f"{type(err).__name__}: {err}")
    wall_after = time.time()
    return _judge_answer(answer, wall_before, wall_after, make_sample)


def _judge_answer(
    answer: Any,
    wall_before: float,
    wall_after: float,
    make_sample: Callable[..., NtpSample],
) -> NtpSample:
    try:
        mode, stratum, leap = int(answer.mode), int(answer.stratum), int(answer.leap)
        offset_s, delay_s = float(answer.offset), float(answer.delay)
        root_distance_s = float(answer.root_delay) / 2 + float(answer.root_dispersion)
        origin_s, transmit = float(answer.orig_time), float(answer.tx_timestamp)
        ref_id = int(answer.ref_id)
    except Exception as err:
        return make_sample(SampleStatus.GARBAGE, f"unreadable answer: {err}")
    figures = {"stratum": stratum, "leap": leap}
    if mode != _NTP_MODE_SERVER:
        return make_sample(SampleStatus.GARBAGE, f"answer mode {mode}, expected 4", **figures)
    if stratum == 0:
        code = ref_id.to_bytes(4, "big").decode("ascii", "replace").strip("\x00")
        return make_sample(SampleStatus.KISS_OF_DEATH, f"kiss code {code!r}", **figures)
    if stratum > _MAX_STRATUM:
        return make_sample(
            SampleStatus.BAD_STRATUM, f"stratum {stratum} (unsynchronized, > 15)", **figures
        )
    if leap == _LEAP_ALARM:
        return make_sample(
            SampleStatus.LEAP_ALARM, "leap indicator 3: server unsynchronized", **figures
        )
    if not wall_before - _ORIGIN_SLACK_S <= origin_s <= wall_after + _ORIGIN_SLACK_S:
        return make_sample(
            SampleStatus.BAD_ORIGIN, "origin timestamp does not match the request", **figures
        )
    valid = all(math.isfinite(v) for v in (offset_s, delay_s, root_distance_s))
    if not valid or transmit == 0 or delay_s < -_ORIGIN_SLACK_S or root_distance_s < 0:
        return make_sample(
            SampleStatus.GARBAGE,
            f"implausible figures (delay {delay_s!r} s, root distance {root_distance_s!r} s)",
            **figures,
        )
    return make_sample(
        SampleStatus.OK,
        "ok",
        offset_us=round(offset_s * 1e6),
        delay_us=max(0, round(delay_s * 1e6)),
        root_distance_us=round(root_distance_s * 1e6),
        **figures,
    )


# --------------------------------------------------------------------------------------------
# Combining samples


@dataclass(frozen=True)
class OffsetEstimate:
    """The combined offset of the local clock: the truth lies in ``offset_us +- bound_us``."""

    offset_us: int
    bound_us: int
    servers: tuple[str, ...]
    falsetickers: tuple[str, ...]
    # False when no majority of servers agreed: every server was used and the bound is wide.
    agreement: bool
    wall_s: float


def combine_samples(samples: Sequence[NtpSample]) -> OffsetEstimate | None:
    """Combines healthy samples (one per server); ``None`` when there is none."""
    good = [s for s in samples if s.healthy and s.offset_us is not None]
    if not good:
        return None
    intervals = [(s.offset_us - s.bound_us, s.offset_us + s.bound_us) for s in good]  # type: ignore[operator]
    low, high, count = _largest_overlap(intervals)
    agreement = count * 2 > len(good)
    if agreement:
        chimers = [
            s for s, (lo, hi) in zip(good, intervals, strict=True) if lo <= low and hi >= high
        ]
    else:
        chimers = good
    chimer_ids = {id(s) for s in chimers}
    offsets = [s.offset_us for s in chimers if s.offset_us is not None]
    median = round(statistics.median(offsets))
    bound = max(abs(s.offset_us - median) + s.bound_us for s in chimers)  # type: ignore[operator]
    return OffsetEstimate(
        offset_us=median,
        bound_us=bound,
        servers=tuple(s.server for s in chimers),
        falsetickers=tuple(s.server for s in good if id(s) not in chimer_ids),
        agreement=agreement,
        wall_s=max(s.wall_s for s in good),
    )


def _largest_overlap(intervals: Sequence[tuple[int, int]]) -> tuple[int, int, int]:
    """Marzullo's sweep: the region covered by the most intervals, and how many cover it."""
    edges = sorted([(lo, 0) for lo, _ in intervals] + [(hi, 1) for _, hi in intervals])
    best, depth, best_low, best_high = 0, 0, 0, 0
    for index, (point, kind) in enumerate(edges):
        if kind == 0:
            depth += 1
            if depth > best:
                best, best_low = depth, point
                best_high = next(p for p, k in edges[index + 1 :] if k == 1)
        else:
            depth -= 1
    return best_low, best_high, best


# --------------------------------------------------------------------------------------------
# Configuration and the guard


class GuardState(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    UNSAFE = "unsafe"
    UNKNOWN = "unknown"


class GuardPolicy(enum.StrEnum):
    """What a bad state does: ``refuse`` stops serving timestamps, ``warn`` only reports."""

    REFUSE = "refuse"
    WARN = "warn"


def _setting(default: Any, doc: str, flag: str | None = None) -> Any:
    # The same metadata as hlc_oracle.config.setting, so the ``[ntp]`` section documents itself.
    return field(default=default, metadata={"doc": doc, "flag": flag})


@dataclass
class SkewConfig:
    """The NTP and skew-guard settings: the ``[ntp]`` section of the oracle's configuration.

    Thresholds are fractions of the clock's max offset. Strings are accepted for ``servers``
    (``"HOST[:PORT]"``) and the policies; :meth:`validate` (also run on construction) converts
    them and raises ``ValueError``/``TypeError`` naming the field.
    """

    servers: tuple[NtpServer, ...] = _setting(
        (),
        "NTP servers to poll, HOST[:PORT], comma-separated (none: the guard stays 'unknown')",
        "--ntp-servers",
    )
    poll_interval_s: float = _setting(16.0, "seconds between two polls of every server")
    timeout_s: float = _setting(1.0, "seconds to wait for one NTP answer")
    warning_fraction: float = _setting(
        0.5, "fraction of the max offset past which the offset is a warning"
    )
    serving_fraction: float = _setting(
        0.8, "fraction of the max offset past which the node is unsafe (NOT_SERVING under refuse)"
    )
    # _setting only wraps dataclasses.field; the enum defaults are immutable.
    policy: GuardPolicy = _setting(  # noqa: RUF009
        GuardPolicy.REFUSE, "past the serving level: refuse (stop serving timestamps) or warn"
    )
    unknown_policy: GuardPolicy = _setting(  # noqa: RUF009
        GuardPolicy.WARN, "when no NTP server answered usably: refuse or warn"
    )
    recovery_hold_s: float = _setting(
        30.0, "seconds the offset must stay under the serving level before serving again"
    )
    sample_max_age_s: float | None = _setting(
        None, "seconds a server's last good answer counts (unset: three poll intervals)"
    )
    jump_threshold_us: int | None = _setting(
        None, "wall-clock jump against the monotonic clock that counts (unset: max offset / 2)"
    )
    fatal_forward_jump: bool = _setting(
        False,
        "on a forward jump past the threshold, stop serving and shut down (the server exits 1)",
    )
    history_size: int = _setting(64, "poll results kept in the history")
    burst: int = _setting(
        1,
        "queries per server per poll, keeping the one with the smallest delay; raise it only "
        "for servers you run (public servers may answer a burst with a kiss-o'-death)",
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        servers: Any = self.servers
        if isinstance(servers, str):
            # One string from an environment variable or a flag: comma-separated.
            servers = [part for part in servers.split(",") if part.strip()]
        if isinstance(servers, NtpServer) or not isinstance(servers, Iterable):
            raise TypeError("servers must be a list of 'HOST[:PORT]' strings")
        self.servers = tuple(s if isinstance(s, NtpServer) else NtpServer.parse(s) for s in servers)
        self.policy = _policy(self.policy, "policy")
        self.unknown_policy = _policy(self.unknown_policy, "unknown_policy")
        _check_seconds(self.poll_interval_s, "poll_interval_s", 0.01, 86_400)
        _check_seconds(self.timeout_s, "timeout_s", 0.001, 60)
        _check_seconds(self.recovery_hold_s, "recovery_hold_s", 0, 86_400)
        if self.sample_max_age_s is not None:
            _check_seconds(self.sample_max_age_s, "sample_max_age_s", 0.01, 86_400)
        _check_seconds(self.warning_fraction, "warning_fraction", 0.01, 1)
        _check_seconds(self.serving_fraction, "serving_fraction", 0.01, 1)
        if self.warning_fraction > self.serving_fraction:
            raise ValueError(
                f"warning_fraction ({self.warning_fraction}) must not exceed serving_fraction "
                f"({self.serving_fraction})"
            )
        if self.jump_threshold_us is not None:
            _check_int(self.jump_threshold_us, "jump_threshold_us", 1, 86_400_000_000)
        if not isinstance(self.fatal_forward_jump, bool):
            raise TypeError("fatal_forward_jump must be a bool")
        _check_int(self.history_size, "history_size", 1, 100_000)
        _check_int(self.burst, "burst", 1, 16)

    @property
    def max_sample_age_s(self) -> float:
        if self.sample_max_age_s is not None:
            return self.sample_max_age_s
        return 3 * self.poll_interval_s + self.timeout_s


def _policy(value: object, name: str) -> GuardPolicy:
    if isinstance(value, GuardPolicy):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be 'refuse' or 'warn', got {type(value).__name__}")
    try:
        return GuardPolicy(value)
    except ValueError:
        raise ValueError(f"{name} must be 'refuse' or 'warn', got {value!r}") from None


def _check_seconds(value: object, name: str, low: float, high: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be in {low:g}..{high:g}, got {value!r}")


def _check_int(value: object, name: str, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")


@dataclass(frozen=True)
class GuardDecision:
    state: GuardState
    serving: bool
    # True while ``unsafe`` only because of the recovery hold.
    recovering: bool
    message: str


class SkewGuard:
    """The state machine from offset estimates to ok / warning / unsafe / unknown.

    Pure: it reads no clock and no network, so tests drive it with a table of (time, estimate).
    Not thread-safe; :class:`SkewMonitor` serializes calls.
    """

    def __init__(self, config: SkewConfig, max_offset_us: int = DEFAULT_MAX_OFFSET_US) -> None:
        _check_int(max_offset_us, "max_offset_us", 1, 86_400_000_000)
        self.config = config
        self.max_offset_us = max_offset_us
        self.warning_level_us = round(max_offset_us * config.warning_fraction)
        self.serving_level_us = round(max_offset_us * config.serving_fraction)
        self._latched_unsafe = False
        self._under_since: float | None = None
        self._last_unsafe = ""
        self.decision = GuardDecision(
            GuardState.UNKNOWN,
            self._serves(GuardState.UNKNOWN),
            False,
            "clock offset unknown: no NTP measurement yet",
        )

    def _serves(self, state: GuardState) -> bool:
        if state is GuardState.UNSAFE:
            return self.config.policy is GuardPolicy.WARN
        if state is GuardState.UNKNOWN:
            return self.config.unknown_policy is GuardPolicy.WARN
        return True

    def observe(
        self, now_s: float, estimate: OffsetEstimate | None, why_unknown: str = ""
    ) -> GuardDecision:
        """Feeds one poll round's estimate (``None``: no usable answer) at monotonic ``now_s``."""
        self.decision = self._decide(now_s, estimate, why_unknown)
        return self.decision

    def _decide(
        self, now_s: float, estimate: OffsetEstimate | None, why_unknown: str
    ) -> GuardDecision:
        if estimate is None:
            # Continuity under the level is broken: a latched ``unsafe`` starts its hold again.
            self._under_since = None
            detail = f": {why_unknown}" if why_unknown else ""
            if self._latched_unsafe:
                # Silence is no evidence of recovery: the last measurement was past the limit.
                return self._make(
                    GuardState.UNSAFE,
                    False,
                    f"clock offset unknown{detail}; the last measurement, {self._last_unsafe}, "
                    "was past the serving limit",
                )
            return self._make(GuardState.UNKNOWN, False, f"clock offset unknown{detail}")
        magnitude = abs(estimate.offset_us)
        figure = f"clock offset {estimate.offset_us:+d} us (+-{estimate.bound_us} us) from NTP"
        serving_limit = (
            f"the serving limit {self.serving_level_us} us "
            f"({self.config.serving_fraction:.0%} of max offset {self.max_offset_us} us)"
        )
        if magnitude >= self.serving_level_us:
            self._latched_unsafe, self._under_since = True, None
            self._last_unsafe = f"{estimate.offset_us:+d} us"
            return self._make(GuardState.UNSAFE, False, f"{figure} is past {serving_limit}")
        if self._latched_unsafe:
            if self._under_since is None:
                self._under_since = now_s
            waited = now_s - self._under_since
            if waited < self.config.recovery_hold_s:
                left = self.config.recovery_hold_s - waited
                return self._make(
                    GuardState.UNSAFE,
                    True,
                    f"{figure} is back under {serving_limit}; "
                    f"recovery hold {self.config.recovery_hold_s:g} s, {left:.1f} s left",
                )
            self._latched_unsafe, self._under_since = False, None
        if magnitude >= self.warning_level_us:
            return self._make(
                GuardState.WARNING,
                False,
                f"{figure} is past the warning level {self.warning_level_us} us "
                f"({self.config.warning_fraction:.0%} of max offset {self.max_offset_us} us)",
            )
        return self._make(GuardState.OK, False, f"{figure}, within limits")

    def _make(self, state: GuardState, recovering: bool, message: str) -> GuardDecision:
        return GuardDecision(state, self._serves(state), recovering, message)


# --------------------------------------------------------------------------------------------
# Clock jumps


@dataclass(frozen=True)
class JumpEvent:
    forward: bool
    # How far the wall clock moved beyond (forward) or behind (backward) the monotonic clock.
    size_us: int
    wall_us: int


class JumpDetector:
    """Compares the wall clock's progress with the monotonic clock's between two checks."""

    def __init__(
        self,
        threshold_us: int,
        wall_clock: PhysicalClock | None = None,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        _check_int(threshold_us, "jump_threshold_us", 1, 86_400_000_000)
        self.threshold_us = threshold_us
        self._wall = wall_clock if wall_clock is not None else SystemClock()
        self._monotonic_ns = monotonic_ns
        self._last = self._read()
        self.forward_jumps = 0
        self.backward_jumps = 0

    def _read(self) -> tuple[int, int]:
        return self._wall.now_us(), self._monotonic_ns() // 1000

    def check(self) -> JumpEvent | None:
        (wall0, mono0), (wall1, mono1) = self._last, self._read()
        self._last = (wall1, mono1)
        drift = (wall1 - wall0) - (mono1 - mono0)
        if drift > self.threshold_us:
            self.forward_jumps += 1
            return JumpEvent(True, drift, wall1)
        if drift < -self.threshold_us:
            self.backward_jumps += 1
            return JumpEvent(False, -drift, wall1)
        return None


# --------------------------------------------------------------------------------------------
# The monitor


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
            log.warning("ntp server %s: %s (%s)", sample.server, sample.status, sample.detail)
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


# --------------------------------------------------------------------------------------------
# Prometheus


class SkewMetricsCollector(Collector):
    """Prometheus metrics read from :meth:`SkewMonitor.status` at scrape time (seconds, as
    Prometheus prefers; the rest of this module speaks microseconds).

    ``registry.register(SkewMetricsCollector(monitor))``.
    """

    def __init__(self, monitor: SkewMonitor) -> None:
        self.monitor = monitor

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self.monitor.status())

    def _families(self, status: SkewStatus | None) -> list[Metric]:
        offset = GaugeMetricFamily(
            "hlc_oracle_clock_offset_seconds",
            "Combined NTP offset of the local clock (server - local; positive: local is behind)",
        )
        bound = GaugeMetricFamily(
            "hlc_oracle_clock_offset_bound_seconds",
            "Error bound of the combined offset: the truth is within offset +- bound",
        )
        levels = GaugeMetricFamily(
            "hlc_oracle_clock_offset_level_seconds",
            "Guard levels on the absolute offset",
            labels=["level"],
        )
        state = GaugeMetricFamily(
            "hlc_oracle_clock_skew_state",
            "1 for the skew guard's current state (ok, warning, unsafe, unknown)",
            labels=["state"],
        )
        serving = GaugeMetricFamily(
            "hlc_oracle_clock_skew_serving", "1 while the skew guard lets the node serve"
        )
        server_offset = GaugeMetricFamily(
            "hlc_oracle_ntp_server_offset_seconds",
            "Offset in the last good answer of each NTP server",
            labels=["server"],
        )
        server_delay = GaugeMetricFamily(
            "hlc_oracle_ntp_server_delay_seconds",
            "Round-trip delay of the last good answer of each NTP server",
            labels=["server"],
        )
        server_stratum = GaugeMetricFamily(
            "hlc_oracle_ntp_server_stratum",
            "Stratum in the last good answer of each NTP server",
            labels=["server"],
        )
        server_last_good = GaugeMetricFamily(
            "hlc_oracle_ntp_server_last_good_timestamp_seconds",
            "Unix time of the last good answer of each NTP server",
            labels=["server"],
        )
        samples = CounterMetricFamily(
            "hlc_oracle_ntp_samples",
            "NTP queries by server and result (good, or unhealthy: timeout, garbage, ...)",
            labels=["server", "result"],
        )
        polls = CounterMetricFamily("hlc_oracle_ntp_polls", "Poll rounds of the skew monitor")
        jumps = CounterMetricFamily(
            "hlc_oracle_clock_wall_jumps",
            "Wall-clock jumps against the monotonic clock past the threshold",
            labels=["direction"],
        )
        families = [
            offset,
            bound,
            levels,
            state,
            serving,
            server_offset,
            server_delay,
            server_stratum,
            server_last_good,
            samples,
            polls,
            jumps,
        ]
        if status is None:
            return families
        if status.estimate is not None:
            offset.add_metric([], status.estimate.offset_us / 1e6)
            bound.add_metric([], status.estimate.bound_us / 1e6)
        levels.add_metric(["warning"], status.warning_level_us / 1e6)
        levels.add_metric(["serving"], status.serving_level_us / 1e6)
        levels.add_metric(["max_offset"], status.max_offset_us / 1e6)
        for candidate in GuardState:
            state.add_metric([candidate.value], 1.0 if candidate is status.state else 0.0)
        serving.add_metric([], 1.0 if status.serving else 0.0)
        for server in status.servers:
            good = server.last_good
            if good is not None and good.offset_us is not None:
                server_offset.add_metric([server.server], good.offset_us / 1e6)
                server_delay.add_metric([server.server], (good.delay_us or 0) / 1e6)
                server_stratum.add_metric([server.server], float(good.stratum or 0))
                server_last_good.add_metric([server.server], good.wall_s)
            samples.add_metric([server.server, "good"], float(server.good_samples))
            samples.add_metric([server.server, "unhealthy"], float(server.bad_samples))
        polls.add_metric([], float(status.polls))
        jumps.add_metric(["forward"], float(status.forward_jumps))
        jumps.add_metric(["backward"], float(status.backward_jumps))
        return families


# --------------------------------------------------------------------------------------------
# `hlc-oracle skew`: measure once, before a deploy

EXIT_PAST_LIMIT = 1
EXIT_UNKNOWN = 3


def add_skew_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        action="append",
        required=True,
        metavar="HOST[:PORT]",
        help="NTP server to query (repeat for several)",
    )
    parser.add_argument(
        "--max-offset-us",
        type=int,
        default=DEFAULT_MAX_OFFSET_US,
        help="the clock's max offset in microseconds (default %(default)s)",
    )
    parser.add_argument(
        "--serving-fraction",
        type=float,
        default=SkewConfig.serving_fraction,
        help="fraction of the max offset past which the node would stop serving "
        "(default %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds per query")
    parser.add_argument(
        "--burst",
        type=int,
        default=1,
        help="queries per server, keeping the shortest round trip (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the status as JSON")


def run_skew(args: argparse.Namespace) -> int:
    """Measures once and prints. Exit 0 when serving would go on, 1 past the serving limit,
    3 when no server answered usably, 2 on bad arguments."""
    try:
        config = SkewConfig(
            servers=tuple(args.server),
            timeout_s=args.timeout,
            burst=args.burst,
            serving_fraction=args.serving_fraction,
            warning_fraction=min(SkewConfig.warning_fraction, args.serving_fraction),
            recovery_hold_s=0,
            policy=GuardPolicy.REFUSE,
            unknown_policy=GuardPolicy.REFUSE,
        )
        monitor = SkewMonitor(config, max_offset_us=args.max_offset_us)
    except (TypeError, ValueError) as err:
        print(f"hlc-oracle skew: {err}", file=sys.stderr)
        return 2
    status = monitor.poll_once()
    monitor.stop()
    if args.json:
        print(json.dumps(status.to_dict(), indent=2, sort_keys=True))
    else:
        print(_render(status))
    if status.state is GuardState.UNSAFE:
        return EXIT_PAST_LIMIT
    if status.state is GuardState.UNKNOWN:
        return EXIT_UNKNOWN
    return 0


def _render(status: SkewStatus) -> str:
    lines = [f"{'server':<28} {'status':<14} {'offset us':>12} {'delay us':>10} {'stratum':>7}"]
    for server in status.servers:
        sample = server.last_sample
        if sample is None:
            continue
        offset = f"{sample.offset_us:+d}" if sample.offset_us is not None else "-"
        delay = str(sample.delay_us) if sample.delay_us is not None else "-"
        stratum = str(sample.stratum) if sample.stratum is not None else "-"
        lines.append(
            f"{server.server:<28} {sample.status:<14} {offset:>12} {delay:>10} {stratum:>7}"
        )
        if not sample.healthy:
            lines.append(f"    {sample.detail}")
    estimate = status.estimate
    if estimate is not None:
        lines.append(
            f"offset {estimate.offset_us:+d} us +- {estimate.bound_us} us "
            f"(servers used: {', '.join(estimate.servers)}"
            + (
                f"; falsetickers: {', '.join(estimate.falsetickers)}"
                if estimate.falsetickers
                else ""
            )
            + ")"
        )
    lines.append(
        f"limits: warning {status.warning_level_us} us, serving {status.serving_level_us} us "
        f"(max offset {status.max_offset_us} us)"
    )
    lines.append(f"{status.state}: {status.message}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hlc-oracle skew",
        description="Measure this machine's clock offset against NTP servers once.",
    )
    add_skew_arguments(parser)
    return run_skew(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
