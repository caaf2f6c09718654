"""A client given several targets (client failover), against two real standalone servers and an
address where nothing listens: moving on when a node is unreachable, the monotonic guard, bad
entries, and ``hlc-oracle status --target a,b,c``. Redirects from real followers are tested with
the cluster (tests/integration/test_cluster_service.py)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable

import pytest
from hlc_oracle import Committed, Timestamp, Transaction
from hlc_oracle.client import (
    OracleClient,
    OracleTimestampRegressionError,
    OracleUnavailableError,
    RetryPolicy,
    parse_targets,
)
from hlc_oracle.local_cluster import free_port

from tests.support.commands import CLI
from tests.support.oracle_process import OracleProcess


def dead_address() -> str:
    return f"127.0.0.1:{free_port()}"


def test_the_client_moves_on_from_an_unreachable_target(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    server = start_oracle()
    with OracleClient(f"{dead_address()},{server.target}", timeout=10) as client:
        first = client.get_timestamp()
        assert client.get_timestamps(3).first > first
        start = client.get_timestamp()
        assert isinstance(client.commit(Transaction(1, start, [], [b"k"])), Committed)
        assert client.status().serving


def test_one_attempt_passes_over_every_target(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    """Moving on from an unreachable node is not a failed attempt: with a single attempt, two
    dead targets in front of the live one still end in its answer."""
    server = start_oracle()
    targets = [dead_address(), dead_address(), server.target]
    with OracleClient(targets, timeout=10, retry=RetryPolicy(attempts=1)) as client:
        assert client.get_timestamp()
        start = client.get_timestamp()
        assert isinstance(client.commit(Transaction(7, start, [], [b"pass"])), Committed)
    with (
        OracleClient(targets[:2], timeout=2, retry=RetryPolicy(attempts=1)) as client,
        pytest.raises(OracleUnavailableError),
    ):
        client.get_timestamp()  # every target failed: the attempt ends, and with it the call


def test_several_targets_ride_out_an_outage_with_the_default_retries(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    """A failover lasts up to the leader's lease TTL (3 s by default): a client of several nodes
    keeps trying until its timeout by default, not for five quick attempts (about 0.3 s when
    every node refuses at once)."""
    port = dead_address().rsplit(":", 1)[1]
    server = start_oracle("--listen", f"127.0.0.1:{port}")
    with OracleClient(f"{dead_address()},{server.target}", timeout=15) as client:
        first = client.get_timestamp()
        server.kill()
        back = threading.Timer(1.5, server.start)
        back.start()
        try:
            later = client.get_timestamp()
        finally:
            back.join()
        assert later > first


def test_a_node_answering_lower_is_an_error_never_a_regression(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    ahead, behind = start_oracle(), start_oracle()
    with OracleClient(
        [ahead.target, behind.target], timeout=10, retry=RetryPolicy(attempts=10)
    ) as client:
        # The first node's clock follows a remote event 400 ms ahead (within the max offset):
        # its timestamps are then ahead of the second node's for a while.
        now_us = int(time.time() * 1e6)
        before = client.observe(Timestamp(now_us + 400_000, 0, 9))
        assert client.get_timestamp() > before
        ahead.kill()  # the client moves on to the second node, whose clock is behind
        with pytest.raises(OracleTimestampRegressionError, match="not above"):
            while True:
                client.get_timestamp()
        # Once the second node's clock passes everything returned before, it is answered again.
        time.sleep(0.6)
        assert client.get_timestamp() > before


def test_a_bad_entry_in_a_target_list_is_named() -> None:
    assert parse_targets("a:1, b:2 ,a:1") == ["a:1", "b:2"]
    assert parse_targets(["a:1", "b:2"]) == ["a:1", "b:2"]
    with pytest.raises(ValueError, match=re.escape("entry 'nonsense' in '127.0.0.1:1,nonsense'")):
        OracleClient("127.0.0.1:1,nonsense")
    with pytest.raises(ValueError, match=re.escape("port must be in 1..65535, got '99999'")):
        parse_targets("a:1,b:99999")


def status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "status", "--timeout", "3", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_status_of_several_nodes_shows_each(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    one, two = start_oracle(), start_oracle()
    dead = dead_address()
    targets = f"{one.target},{two.target},{dead}"
    text = status("--target", targets)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(one.target) and "standalone node 0, serving" in lines[0]
    assert lines[2].startswith(dead) and "unreachable" in lines[2]
    as_json = status("--json", "--target", targets)
    rows = json.loads(as_json.stdout)
    assert [row["target"] for row in rows] == [one.target, two.target, dead]
    assert rows[0]["role"] == "standalone" and "error" in rows[2]
