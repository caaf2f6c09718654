"""The client at the edges of its life: a program that never closes its client, or whose server is
killed under it, exits without asyncio's complaints; and a call against a node that never answers
ends at its deadline, the TLS look included."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest
from hlc_oracle.client import OracleClient, OracleUnavailableError

from tests.support.oracle_process import OracleProcess

StartOracle = Callable[..., OracleProcess]

#: What asyncio prints when a program leaves tasks or failed futures behind.
COMPLAINTS = (
    "Task was destroyed but it is pending",
    "Event loop is closed",
    "exception was never retrieved",
    "Traceback",
)

NEVER_CLOSED = {
    "blocking": """
        import os, signal, sys, time
        from hlc_oracle.client import OracleClient
        client = OracleClient(sys.argv[1], timeout=1)
        print(client.get_timestamp())
        os.kill(int(sys.argv[2]), signal.SIGKILL)
        time.sleep(0.2)
        try:
            client.get_timestamp()
        except Exception as err:
            print("failed:", type(err).__name__)
        # never closed
    """,
    "async": """
        import asyncio, os, signal, sys
        from hlc_oracle import Transaction
        from hlc_oracle.client import AsyncOracleClient
        async def main():
            client = AsyncOracleClient(sys.argv[1], timeout=5)
            start = await client.get_timestamp()
            print(start)
            os.kill(int(sys.argv[2]), signal.SIGKILL)
            # Calls still waiting for the dead node when the program ends (asyncio.run cancels
            # them); the client is never closed.
            pending = [asyncio.ensure_future(client.get_timestamp()) for _ in range(3)]
            pending.append(
                asyncio.ensure_future(client.commit(Transaction(7, start, write_set=[b"k"])))
            )
            await asyncio.sleep(0.3)
            print("failed:", "left with calls pending")
        asyncio.run(main())
    """,
}


@pytest.mark.parametrize("kind", NEVER_CLOSED)
def test_a_client_never_closed_with_its_server_killed_exits_quietly(
    start_oracle: StartOracle, kind: str
) -> None:
    oracle = start_oracle()
    assert oracle.process is not None
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NEVER_CLOSED[kind]), oracle.target,
         str(oracle.process.pid)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "failed:" in done.stdout
    for complaint in COMPLAINTS:
        assert complaint not in done.stderr, done.stderr


def test_a_call_to_a_silent_node_ends_at_its_deadline() -> None:
    # A listener that never accepts: the kernel completes TCP handshakes, nothing answers, so
    # the TLS look (which connects and waits for an answer) is still running at the deadline.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        timeout = 2.0
        with OracleClient(target, timeout=timeout) as client:
            started = time.monotonic()
            with pytest.raises(OracleUnavailableError):
                client.get_timestamp()
            took = time.monotonic() - started
    # The look used to start after the deadline and add up to half the timeout (3 s here).
    assert took < timeout + 0.8, took
