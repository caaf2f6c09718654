"""Fixtures shared by every test directory: real etcd on loopback, ``etcd`` (one member) and
``etcd_cluster`` (three members), each fresh for the test and stopped by pid at its end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.etcd_process import EtcdCluster, EtcdMember


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdMember]:
    with EtcdMember(tmp_path / "etcd") as member:
        yield member


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path / "etcd-cluster", size=3) as cluster:
        yield cluster
