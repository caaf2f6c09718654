"""``host:port`` addresses: the one parser for every address the package reads or connects to.

:func:`parse_host_port` checks one address and says what is wrong with a bad one
(:class:`AddressError`); :func:`parse_address_list` does the same for a comma-separated list (a
client's targets); :func:`parse_host_default_port` lets the port out (an NTP server);
:func:`split_scheme` takes off the ``http://`` or ``https://`` an etcd endpoint may have;
:func:`join_host_port` writes an address back. :func:`split_host_port` is the quiet form, for the
places that connect to an address themselves rather than through gRPC's name resolver (the
client's connect probe and TLS look, a follower's watch of its leader), which skip what is not
``host:port``.

``host`` is a name or an IPv4 address, or an IPv6 address in brackets (``[::1]:50051``); the port
is 1..65535 (0 only where the caller allows it: a listen address, where 0 picks a free port).
gRPC would dial port 443 for ``host:`` and wrap ``host:99999`` around to another port; a URL
(``http://host:port``) or a list separated by anything but commas would wait out the deadline on
a name that cannot resolve. All are refused here, by name.
"""

from __future__ import annotations

from collections.abc import Sequence

#: gRPC target prefixes that name a resolver or a socket, not a host and a port.
RESOLVER_PREFIXES = ("unix:", "unix-abstract:", "vsock:", "ipv4:", "ipv6:", "dns:")

#: Characters that never appear in a host name or an address, with what their presence suggests.
_SEPARATORS = {";": "separate several addresses with commas", " ": "no spaces inside an address"}


class AddressError(ValueError):
    """An address that is not ``host:port``; the message names the address and what is wrong."""


def parse_host_port(address: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """``(host, port)`` of ``host:port`` or ``[v6]:port`` (brackets removed from the host);
    :class:`AddressError` naming the problem otherwise."""
    if not isinstance(address, str):
        raise AddressError(f"an address must be host:port text, got {address!r}")
    low = 0 if allow_port_zero else 1
    if not address:
        raise AddressError("an empty address: give host:port")
    scheme, found, _ = address.partition("://")
    if found:
        raise AddressError(
            f"{address!r} is a URL: give host:port without {scheme + '://'!r} (gRPC targets "
            "have no scheme)"
        )
    if address.startswith(RESOLVER_PREFIXES):
        raise AddressError(f"{address!r} names a gRPC resolver, not a host: give host:port")
    for character, advice in _SEPARATORS.items():
        if character in address:
            raise AddressError(f"{address!r} must be host:port: it has {character!r} ({advice})")
    if any(character.isspace() or character == "/" for character in address):
        raise AddressError(f"{address!r} must be host:port: a host has no '/' or white space")
    host, colon, port = address.rpartition(":")
    if not colon:
        raise AddressError(f"{address!r} must be host:port: the port is missing")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise AddressError(f"{address!r} must be host:port: put an IPv6 address in [brackets]")
    if not host:
        raise AddressError(f"{address!r} must be host:port: the host is missing")
    if not (port.isdigit() and low <= int(port) <= 65535):
        raise AddressError(f"{address!r}: the port must be in {low}..65535, got {port!r}")
    return host, int(port)


def parse_host_default_port(address: str, default_port: int) -> tuple[str, int]:
    """``(host, port)`` of ``host:port`` or ``[v6]:port``, or of ``host``, ``[v6]`` or a bare IPv6
    address with ``default_port`` (an NTP server: port 123 unless given); :class:`AddressError`
    naming the problem otherwise."""
    if not isinstance(address, str):
        raise AddressError(f"an address must be host:port text, got {address!r}")
    if address.startswith("[") and address.endswith("]"):
        return parse_host_port(f"{address}:{default_port}")
    if ":" not in address:
        return parse_host_port(f"{address}:{default_port}")
    if address.count(":") > 1 and not address.startswith("["):
        return parse_host_port(f"[{address}]:{default_port}")
    return parse_host_port(address)


def join_host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets (``[::1]:50051``): what :func:`parse_host_port`
    reads back."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_scheme(endpoint: str) -> tuple[str | None, str]:
    """``("https", "host:port")`` for ``https://host:port``; ``(None, text)`` without a scheme.
    Only etcd endpoints take one (as etcdctl does): ``http://`` or ``https://``."""
    for scheme in ("http", "https"):
        prefix = f"{scheme}://"
        if endpoint.lower().startswith(prefix):
            return scheme, endpoint[len(prefix) :]
    return None, endpoint


def split_host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` or ``[v6]:port`` with a port in 1..65535; ``None`` for
    anything else (no port, port 0, a resolver URI: ``dns:///name:port``, ``unix:path``)."""
    try:
        return parse_host_port(address)
    except AddressError:
        return None


def parse_address_list(addresses: str | Sequence[str], what: str = "target") -> list[str]:
    """The addresses of ``addresses`` (``"a:1,b:2"`` or a list), each checked by
    :func:`parse_host_port` and stripped of surrounding spaces, in order, each once.
    :class:`AddressError` names the bad entry (``what`` says what the list is), an empty entry
    (a stray comma) or an empty list; ``TypeError`` for a list entry that is not text."""
    entries = addresses.split(",") if isinstance(addresses, str) else list(addresses)
    if not entries or entries == [""]:
        raise AddressError(f"the {what} list names no address: give host:port, or several "
                           "comma-separated")  # fmt: skip
    parsed: list[str] = []
    for position, raw in enumerate(entries, start=1):
        if not isinstance(raw, str):
            raise TypeError(f"{what} entries must be str, got {type(raw).__name__}")
        entry = raw.strip()
        if not entry:
            where = "a trailing comma" if position == len(entries) else f"entry {position}"
            raise AddressError(f"{addresses!r} has an empty {what} ({where}): give host:port")
        try:
            parse_host_port(entry)
        except AddressError as err:
            if len(entries) == 1:
                raise
            raise AddressError(f"{what} entry {raw!r} in {addresses!r}: {err}") from None
        if entry not in parsed:
            parsed.append(entry)
    return parsed
