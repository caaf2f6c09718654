"""``python tests/support/held_history_node.py serve ...``: the real ``hlc-oracle`` command
(:func:`hlc_oracle.cli.main`), except that, outside the command's own ``HLC_ORACLE_`` settings:

- ``TEST_HOLD_DECISION_HISTORY`` names a file: while it exists, a new leader's decision history
  load waits;
- ``TEST_HOLD_TAKEOVER`` names a file: while it exists, a node that won the election waits
  before it saves its first window (it stays "taking over"), and requests it holds meanwhile
  are held up to a minute (the command's own bound is one second).

A test holds either to decide, whatever the machine's speed, what happens while the requests
that need the history wait (as ``tests/etcd/test_cluster_takeover.py`` does in process), or
while the next leader takes over."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hlc_oracle.cli import main
from hlc_oracle.cluster.decisions import DecisionLog
from hlc_oracle.node.window import TimestampWindow
from hlc_oracle.server import handler_frame

if TYPE_CHECKING:  # this file is also the nodes' program, run without the tests package
    from tests.support.oracle_cluster import OracleCluster

HOLD_VARIABLE = "TEST_HOLD_DECISION_HISTORY"
HOLD_TAKEOVER_VARIABLE = "TEST_HOLD_TAKEOVER"
#: How long a request is held at a settling gate in this program.
HELD_REQUEST_MAX_S = 60.0


def run_held(cluster: OracleCluster, variable: str, hold: Path) -> None:
    """Makes every node of ``cluster`` run this program, holding what ``variable``
    (:data:`HOLD_VARIABLE` or :data:`HOLD_TAKEOVER_VARIABLE`) names while ``hold`` exists."""
    for node in cluster.nodes:
        node.program = [sys.executable, str(Path(__file__))]
        node.env = {**(node.env or {}), variable: str(hold)}


async def _wait_while(path: Path) -> None:
    while path.exists():
        await asyncio.sleep(0.02)


def hold_history_while(path: Path) -> None:
    load = DecisionLog.load_history

    async def held(log: DecisionLog, *args: Any, **kwargs: Any) -> Any:
        await _wait_while(path)
        return await load(log, *args, **kwargs)

    DecisionLog.load_history = held  # type: ignore[method-assign]


def hold_takeover_while(path: Path) -> None:
    restart = TimestampWindow.restart

    async def held(window: TimestampWindow, saved_limit_us: int) -> None:
        await _wait_while(path)
        await restart(window, saved_limit_us)

    TimestampWindow.restart = held  # type: ignore[method-assign]
    handler_frame.HOLD_MAX_S = HELD_REQUEST_MAX_S


if __name__ == "__main__":
    if HOLD_VARIABLE in os.environ:
        hold_history_while(Path(os.environ[HOLD_VARIABLE]))
    if HOLD_TAKEOVER_VARIABLE in os.environ:
        hold_takeover_while(Path(os.environ[HOLD_TAKEOVER_VARIABLE]))
    sys.exit(main())
