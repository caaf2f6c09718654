"""One node per data dir: real ``hlc-oracle serve`` processes on one data dir, one after the other
and at the same moment; the second exits 1 naming the dir and the holder's pid, and the lock goes
with its holder (graceful stop or kill -9)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hlc_oracle.client import OracleClient
from hlc_oracle.config import OracleConfig
from hlc_oracle.local_cluster import free_port
from hlc_oracle.server.app import OracleServer
from hlc_oracle.server.data_dir import LOCK_FILE, DataDirLock, DataDirLockedError
from hlc_oracle.server.startup import StartupError

from tests.support.etcd_process import EtcdMember
from tests.support.oracle_process import OracleProcess

# The case: without group commit the commit log's own LOCK was the only lock there was.
NO_COMMIT = ("--set", "commit.enabled=false")


def second_node(data_dir: Path, tmp_path: Path, name: str, *args: str) -> OracleProcess:
    """A node on ``data_dir`` whose port file and log do not collide with the first node's."""
    return OracleProcess(data_dir, *args, run_dir=tmp_path / name)


def start_together(nodes: list[OracleProcess]) -> dict[int, BaseException]:
    """Starts every node at once (one thread each); the start failures, by index."""
    failures: dict[int, BaseException] = {}

    def start(index: int) -> None:
        try:
            nodes[index].start()
        except BaseException as err:
            failures[index] = err

    threads = [threading.Thread(target=start, args=(index,)) for index in range(len(nodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    return failures


def refused_start(node: OracleProcess) -> str:
    """Starts ``node``, which must exit 1; returns its log."""
    with pytest.raises(RuntimeError, match="exited with 1") as refused:
        node.start()
    return str(refused.value)


@pytest.mark.parametrize("mode", [NO_COMMIT, ()], ids=["commit-disabled", "commit-enabled"])
def test_a_second_node_on_a_held_data_dir_exits_1_naming_the_dir_and_the_holder(
    start_oracle: Callable[..., OracleProcess], tmp_path: Path, mode: tuple[str, ...]
) -> None:
    first = start_oracle(*mode)
    assert first.process is not None
    second = second_node(first.data_dir, tmp_path, "second", *mode)
    try:
        log = refused_start(second)
    finally:
        second.kill()
    assert f"the data dir {first.data_dir} is in use" in log
    assert f"pid {first.process.pid}" in log
    # The holder is untouched and still serves.
    with OracleClient(first.target) as client:
        assert client.get_timestamp() < client.get_timestamp()
    # A graceful stop releases the dir: the next node starts on it, above the first's timestamps.
    with OracleClient(first.target) as client:
        last = client.get_timestamp()
    assert first.stop() == 0, first.log_text()
    with (
        second_node(first.data_dir, tmp_path, "third", *mode) as third,
        OracleClient(third.target) as client,
    ):
        assert client.get_timestamp() > last


def test_nodes_started_at_the_same_moment_one_serves_and_the_other_exits_1(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    for round_number in range(3):
        nodes = [
            second_node(data_dir, tmp_path, f"round{round_number}-node{index}")
            for index in range(2)
        ]
        try:
            failures = start_together(nodes)
            assert len(failures) == 1, {index: str(err) for index, err in failures.items()}
            (loser,) = failures
            winner = nodes[1 - loser]
            assert winner.process is not None
            message = str(failures[loser])
            assert "exited with 1" in message
            assert f"the data dir {data_dir} is in use" in message
            # The winner may not have written its pid yet when the loser looked.
            assert f"pid {winner.process.pid}" in message or "pid is unknown" in message
            assert "Traceback" not in message  # no rename race of the window's temporary file
            with OracleClient(winner.target) as client:
                assert client.get_timestamp() < client.get_timestamp()
        finally:
            for node in nodes:
                node.close()


def test_clustered_nodes_lock_their_data_dir_too(etcd: EtcdMember, tmp_path: Path) -> None:
    def clustered(node_id: int, name: str) -> OracleProcess:
        address = f"127.0.0.1:{free_port()}"
        return OracleProcess(
            tmp_path / "data",
            "--listen", address, "--advertise", address,
            "--etcd-endpoints", etcd.endpoint, "--node-id", str(node_id),
            run_dir=tmp_path / name,
        )  # fmt: skip

    with clustered(1, "first") as first:
        assert first.process is not None
        second = clustered(2, "second")
        try:
            log = refused_start(second)
        finally:
            second.kill()
        assert f"the data dir {tmp_path / 'data'} is in use" in log
        assert f"pid {first.process.pid}" in log


def test_kill_9_releases_the_data_dir(
    start_oracle: Callable[..., OracleProcess], tmp_path: Path
) -> None:
    first = start_oracle(*NO_COMMIT)
    with OracleClient(first.target) as client:
        last = client.get_timestamp()
    first.kill()
    with (
        second_node(first.data_dir, tmp_path, "after-kill", *NO_COMMIT) as second,
        OracleClient(second.target) as client,
    ):
        assert client.get_timestamp() > last


def test_the_lock_names_its_holder_and_is_released(tmp_path: Path) -> None:
    held = DataDirLock.acquire(tmp_path / "new" / "dir")  # created when missing
    assert (tmp_path / "new" / "dir" / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    # flock locks belong to the open file: a second acquire conflicts even in the same process.
    with pytest.raises(DataDirLockedError, match=f"pid {os.getpid()} holds") as refused:
        DataDirLock.acquire(tmp_path / "new" / "dir")
    assert refused.value.holder_pid == os.getpid()
    held.release()
    held.release()  # idempotent
    assert not held.held
    DataDirLock.acquire(tmp_path / "new" / "dir").release()


def test_a_commit_log_in_the_data_dir_itself_is_refused_before_anything_is_read(
    tmp_path: Path,
) -> None:
    config = OracleConfig()
    config.server.data_dir = tmp_path / "data"
    config.commit.log_dir = tmp_path / "data" / "." / ""
    with pytest.raises(StartupError, match=r"commit.log_dir .* is the data dir itself"):
        OracleServer(config)
    assert not (tmp_path / "data").exists()
