"""NTP server settings and the guard's messages, as the skew tests write and read them."""

from __future__ import annotations

import re

from hlc_oracle.skew import NtpServer


def ntp(*addresses: str) -> tuple[NtpServer, ...]:
    """The ``SkewConfig.servers`` of ``addresses`` (``host:port``)."""
    return tuple(NtpServer.parse(address) for address in addresses)


def offset_named(message: str) -> int:
    """The clock offset (microseconds) a guard message names."""
    found = re.search(r"clock offset ([+-]\d+) us", message)
    assert found is not None, message
    return int(found.group(1))
