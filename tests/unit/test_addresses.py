"""The one host:port parser (hlc_oracle.addresses): the forms each caller accepts, and the
errors that name what is wrong."""

from __future__ import annotations

import pytest
from hlc_oracle.addresses import (
    AddressError,
    join_host_port,
    parse_host_default_port,
    parse_host_port,
    split_scheme,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pool.ntp.org", ("pool.ntp.org", 123)),
        ("127.0.0.1:1123", ("127.0.0.1", 1123)),
        ("[::1]:1123", ("::1", 1123)),
        ("[::1]", ("::1", 123)),
        ("::1", ("::1", 123)),
    ],
)
def test_default_port_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_default_port(text, 123) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "host is missing"),
        ("host:0", "port must be in 1..65535"),
        ("host:abc", "port must be in 1..65535"),
        ("[::1", "IPv6"),
        ("a b", "no spaces"),
        ("udp://host:123", "is a URL"),
    ],
)
def test_default_port_refusals_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(AddressError, match=problem):
        parse_host_default_port(text, 123)


@pytest.mark.parametrize(("host", "port"), [("127.0.0.1", 50051), ("::1", 1), ("node-1", 65535)])
def test_join_reads_back(host: str, port: int) -> None:
    assert parse_host_port(join_host_port(host, port)) == (host, port)


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("127.0.0.1:2379", (None, "127.0.0.1:2379")),
        ("http://etcd-0:2379", ("http", "etcd-0:2379")),
        ("HTTPS://etcd-0:2379", ("https", "etcd-0:2379")),
        ("ftp://etcd-0:2379", (None, "ftp://etcd-0:2379")),
    ],
)
def test_split_scheme(endpoint: str, expected: tuple[str | None, str]) -> None:
    assert split_scheme(endpoint) == expected
