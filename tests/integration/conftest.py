"""Fixtures that run the real oracle on loopback: ``oracle`` (one per module) and
``start_oracle`` (a fresh one per call, stopped at the end of the test); ``pki``, test
certificates (see :mod:`tests.support.pki`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.oracle_process import OracleProcess
from tests.support.pki import make_pki


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OracleProcess]:
    with OracleProcess(tmp_path_factory.mktemp("oracle") / "data", "--metrics-port", "0") as server:
        yield server


@pytest.fixture
def start_oracle(tmp_path: Path) -> Iterator[Callable[..., OracleProcess]]:
    started: list[OracleProcess] = []

    def start(*args: str, data_dir: Path | None = None, **kwargs: object) -> OracleProcess:
        directory = data_dir or tmp_path / f"data{len(started)}"
        server = OracleProcess(directory, *args, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """CAs, server and client certificates as PEM files, by file name (``ca.pem``, ...)."""
    return make_pki(tmp_path_factory.mktemp("pki"))
