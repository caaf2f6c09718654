"""``host:port`` addresses, for the places that connect to one themselves rather than through
gRPC's name resolver: the client's connect probe and TLS look, a follower's watch of its leader.
"""

from __future__ import annotations

#: gRPC target prefixes that name a resolver or a socket, not a host and a port.
RESOLVER_PREFIXES = ("unix:", "unix-abstract:", "vsock:", "ipv4:", "ipv6:", "dns:")


def split_host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` or ``[v6]:port`` with a port in 1..65535; ``None`` for
    anything else (no port, port 0, a resolver URI: ``dns:///name:port``, ``unix:path``)."""
    if "://" in address or address.startswith(RESOLVER_PREFIXES):
        return None
    host, colon, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        return None
    return host, int(port)
