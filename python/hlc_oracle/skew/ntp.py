"""Querying NTP servers: :class:`NtpServer`, :func:`query_server`, its :class:`NtpSample`.

Every answer becomes a sample; an unresolvable name, a timeout, a garbage packet, a
kiss-o'-death, a leap alarm or a bad stratum is an *unhealthy* sample, never an exception.
Offsets follow the NTP sign convention: ``server - local``; positive means the local clock is
behind. All figures are integer microseconds. ``ntplib`` works in float seconds, whose resolution
near the current NTP era is about one microsecond.
"""

from __future__ import annotations

import enum
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ntplib  # type: ignore[import-untyped]

from hlc_oracle.addresses import AddressError, join_host_port, parse_host_default_port

NTP_PORT = 123


# ntplib reads time.time() around the exchange; an origin timestamp outside that window (with
# this slack for float rounding) means the answer is not to our request.
_ORIGIN_SLACK_S = 0.001
_NTP_MODE_SERVER = 4
_LEAP_ALARM = 3
_MAX_STRATUM = 15


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
        try:
            host, port = parse_host_default_port(text.strip(), NTP_PORT)
        except AddressError as err:
            raise ValueError(f"ntp server: {err}") from None
        return cls(host, port)

    def __str__(self) -> str:
        address = join_host_port(self.host, self.port)
        return address.removesuffix(f":{NTP_PORT}") if self.port == NTP_PORT else address


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
