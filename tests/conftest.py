"""The tiers and the fixtures shared by every tier.

A test's folder says what it needs, and this hook marks it so (``pytest -m unit``):
``unit`` (this process only: no server, no etcd, no chrony), ``etcd`` (a real etcd),
``integration`` (starts our servers, chrony or other processes), ``packaging`` (builds the
wheel, checks the deploy files and the docs). Helpers live in ``tests/support/``, fixture files
in ``tests/data/``; a test file anywhere else is refused at collection.

Fixtures: real etcd on loopback, ``etcd`` (one member) and ``etcd_cluster`` (three members), each
fresh for the test and stopped by pid at its end; ``responder``, an NTP server on loopback in this
process (:class:`~tests.support.ntp.responder.NtpResponder`), answering with the true time until
told otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.etcd_process import EtcdCluster, EtcdMember
from tests.support.ntp.responder import NtpResponder

# Hypothesis examples have no deadline: speed is measured in bench/, never asserted in a test, and
# on a shared 2-core host an example's time says more about the host than about the code.
settings.register_profile("hlc-oracle", deadline=None)
settings.load_profile("hlc-oracle")

TIERS = ("unit", "etcd", "integration", "packaging")
TESTS = Path(__file__).resolve().parent


def tier_of(path: Path) -> str | None:
    """The tier folder a test file is in, or None for a file outside every tier."""
    parts = path.resolve().relative_to(TESTS).parts
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    outside = set()
    for item in items:
        if not item.path.resolve().is_relative_to(TESTS):
            continue  # bench/ collected in the same run
        tier = tier_of(item.path)
        if tier is None:
            outside.add(str(item.path.relative_to(TESTS.parent)))
        else:
            item.add_marker(tier)
    if outside:
        raise pytest.UsageError(
            f"test files outside the tier folders tests/{{{','.join(TIERS)}}}: {sorted(outside)}"
        )


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdMember]:
    with EtcdMember(tmp_path / "etcd") as member:
        yield member


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path / "etcd-cluster", size=3) as cluster:
        yield cluster


@pytest.fixture
def responder() -> Iterator[NtpResponder]:
    with NtpResponder() as server:
        yield server
