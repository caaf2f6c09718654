"""``hlc-oracle cluster`` (what ``make cluster`` runs): one etcd member and three nodes on
loopback, the printed targets answer a timestamp and a commit, and Ctrl-C leaves nothing
running."""

from __future__ import annotations

import select
import signal
import subprocess
import time
from pathlib import Path

from hlc_oracle import Committed, Transaction
from hlc_oracle.client import OracleClient

from tests.support.commands import CLI

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from /proc (children of children included)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields after the last ')'.
        parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found.update(children)
        frontier.extend(children)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def still_alive(pids: set[int], wait_s: float = 10.0) -> list[int]:
    """The processes of ``pids`` still alive after up to ``wait_s`` (orphans are reaped by
    init a moment after their parent exits)."""
    deadline = time.monotonic() + wait_s
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


def read_until_targets(process: subprocess.Popen[str]) -> tuple[str, list[str]]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if not ready:
            assert process.poll() is None, "\n".join(lines)
            continue
        line = process.stdout.readline()
        assert line, f"the command ended before printing its targets:\n{''.join(lines)}"
        lines.append(line)
        if line.startswith("targets "):
            return line.split()[1], lines
    raise AssertionError(f"no targets within {START_TIMEOUT_S} s:\n{''.join(lines)}")


def test_a_local_cluster_in_one_command_answers_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*CLI, "cluster", "--dir", str(tmp_path / "cluster")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        targets, printed = read_until_targets(process)
        assert len(targets.split(",")) == 3
        assert sum(line.startswith("node ") for line in printed) == 3
        assert any(line.startswith("etcd ") for line in printed)
        children = descendants(process.pid)
        assert len(children) >= 4, children  # etcd and three nodes (and their helpers)
        with OracleClient(targets, timeout=10) as client:
            start = client.get_timestamp()
            outcome = client.commit(Transaction(1, start, write_set=[b"first-hour"]))
            assert isinstance(outcome, Committed) and outcome.commit_ts > start
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out.rstrip().endswith("stopped"), out
    assert not still_alive(children), err
    # The data and logs stay in the directory given (a temporary one would be removed).
    assert (tmp_path / "cluster" / "node1.log").exists()


def test_sigterm_stops_it_too(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*CLI, "cluster", "--nodes", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        targets, printed = read_until_targets(process)
        directories = {Path(line.split("log ")[1].rstrip(")\n")).parent for line in printed
                       if "log " in line}  # fmt: skip
        children = descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=STOP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert not still_alive(children), err
    assert len(targets.split(",")) == 1
    # The temporary directory is gone with the cluster.
    assert directories and not any(directory.exists() for directory in directories)
