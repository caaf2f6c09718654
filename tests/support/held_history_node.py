"""``python tests/support/held_history_node.py serve ...``: the real ``hlc-oracle`` command
(:func:`hlc_oracle.cli.main`), except that a new leader's decision history load waits while the
file named by ``TEST_HOLD_DECISION_HISTORY`` exists (outside the command's
own ``HLC_ORACLE_`` settings). A test holds it to decide, whatever the
machine's speed, what happens while the requests that need the history wait (as
``tests/etcd/test_cluster_takeover.py`` does in process)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from hlc_oracle.cli import main
from hlc_oracle.cluster.decisions import DecisionLog

HOLD_VARIABLE = "TEST_HOLD_DECISION_HISTORY"


def hold_history_while(path: Path) -> None:
    load = DecisionLog.load_history

    async def held(log: DecisionLog, *args: Any, **kwargs: Any) -> Any:
        while path.exists():
            await asyncio.sleep(0.02)
        return await load(log, *args, **kwargs)

    DecisionLog.load_history = held  # type: ignore[method-assign]


if __name__ == "__main__":
    hold_history_while(Path(os.environ[HOLD_VARIABLE]))
    sys.exit(main())
