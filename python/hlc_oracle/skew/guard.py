"""The guard: its configuration (:class:`SkewConfig`) and its decisions (:class:`SkewGuard`).

Estimates become a state: ``ok``, ``warning`` (past ``warning_fraction`` of the max offset),
``unsafe`` (past ``serving_fraction``, 80% by default as in CockroachDB) or ``unknown`` (no server
gave a usable answer recently). ``unsafe`` is left only after the offset stayed under the serving
level for ``recovery_hold_s``. Policies decide what a state does to serving: ``refuse`` (the
default for ``unsafe``) or ``warn`` (the default for ``unknown``: an unreachable NTP server is not
evidence of skew). A node that was ``unsafe`` stays so while its servers are silent: silence is no
evidence of recovery either.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hlc_oracle.setting import setting
from hlc_oracle.skew.combine import OffsetEstimate
from hlc_oracle.skew.ntp import NtpServer

DEFAULT_MAX_OFFSET_US = 500_000


class GuardState(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    UNSAFE = "unsafe"
    UNKNOWN = "unknown"


class GuardPolicy(enum.StrEnum):
    """What a bad state does: ``refuse`` stops serving timestamps, ``warn`` only reports."""

    REFUSE = "refuse"
    WARN = "warn"


@dataclass
class SkewConfig:
    """The NTP and skew-guard settings: the ``[ntp]`` section of the oracle's configuration.

    Thresholds are fractions of the clock's max offset. Strings are accepted for ``servers``
    (``"HOST[:PORT]"``) and the policies; :meth:`validate` (also run on construction) converts
    them and raises ``ValueError``/``TypeError`` naming the field.
    """

    servers: tuple[NtpServer, ...] = setting(
        (),
        "NTP servers to poll, HOST[:PORT], comma-separated (none: the guard stays 'unknown')",
        "--ntp-servers",
    )
    poll_interval_s: float = setting(16.0, "seconds between two polls of every server")
    timeout_s: float = setting(1.0, "seconds to wait for one NTP answer")
    warning_fraction: float = setting(
        0.5, "fraction of the max offset past which the offset is a warning"
    )
    serving_fraction: float = setting(
        0.8, "fraction of the max offset past which the node is unsafe (NOT_SERVING under refuse)"
    )
    policy: GuardPolicy = setting(
        GuardPolicy.REFUSE, "past the serving level: refuse (stop serving timestamps) or warn"
    )
    unknown_policy: GuardPolicy = setting(
        GuardPolicy.WARN, "when no NTP server answered usably: refuse or warn"
    )
    recovery_hold_s: float = setting(
        30.0, "seconds the offset must stay under the serving level before serving again"
    )
    sample_max_age_s: float | None = setting(
        None, "seconds a server's last good answer counts (unset: three poll intervals)"
    )
    jump_threshold_us: int | None = setting(
        None, "wall-clock jump against the monotonic clock that counts (unset: max offset / 2)"
    )
    fatal_forward_jump: bool = setting(
        False,
        "on a forward jump past the threshold, stop serving and shut down (the server exits 1)",
    )
    history_size: int = setting(64, "poll results kept in the history")
    burst: int = setting(
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
        check_number(self.poll_interval_s, "poll_interval_s", 0.01, 86_400)
        check_number(self.timeout_s, "timeout_s", 0.001, 60)
        check_number(self.recovery_hold_s, "recovery_hold_s", 0, 86_400)
        if self.sample_max_age_s is not None:
            check_number(self.sample_max_age_s, "sample_max_age_s", 0.01, 86_400)
        check_number(self.warning_fraction, "warning_fraction", 0.01, 1)
        check_number(self.serving_fraction, "serving_fraction", 0.01, 1)
        if self.warning_fraction > self.serving_fraction:
            raise ValueError(
                f"warning_fraction ({self.warning_fraction}) must not exceed serving_fraction "
                f"({self.serving_fraction})"
            )
        if self.jump_threshold_us is not None:
            check_int(self.jump_threshold_us, "jump_threshold_us", 1, 86_400_000_000)
        if not isinstance(self.fatal_forward_jump, bool):
            raise TypeError("fatal_forward_jump must be a bool")
        check_int(self.history_size, "history_size", 1, 100_000)
        check_int(self.burst, "burst", 1, 16)

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


def check_number(value: object, name: str, low: float, high: float) -> None:
    """A setting that must be a finite number in ``low..high`` (TypeError or ValueError naming
    it)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be in {low:g}..{high:g}, got {value!r}")


def check_int(value: object, name: str, low: int, high: int) -> None:
    """A setting that must be an int in ``low..high`` (TypeError or ValueError naming it)."""
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
        check_int(max_offset_us, "max_offset_us", 1, 86_400_000_000)
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
