"""A fatal forward clock jump stops the real server (in-process, on loopback): the gate refuses
at once, the server shuts down as on SIGTERM, and serve() reports the reason so the command
exits non-zero (CockroachDB does the same; a supervisor must see a failure, not a clean stop)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from hlc_oracle import ManualClock
from hlc_oracle.config import OracleConfig
from hlc_oracle.server.app import OracleServer
from hlc_oracle.skew import NtpServer

from tests.support.ntp.responder import NtpResponder


def test_fatal_forward_jump_stops_the_server_with_its_reason(tmp_path: Path) -> None:
    async def scenario(responder: NtpResponder) -> None:
        defaults = OracleConfig()
        config = dataclasses.replace(
            defaults,
            server=dataclasses.replace(
                defaults.server, listen="127.0.0.1:0", data_dir=tmp_path / "data"
            ),
            ntp=dataclasses.replace(
                defaults.ntp,
                servers=(NtpServer.parse(responder.address),),
                fatal_forward_jump=True,
                poll_interval_s=3600,  # only the polls this test makes after the first
            ),
        )
        wall = ManualClock(1_795_269_099_000_000)
        server = OracleServer(config, wall)
        await server.start()
        try:
            await asyncio.to_thread(server.skew.poll_once)
            assert not server.stopping.is_set() and server.fatal_reason is None
            wall.advance(2_000_000)  # far past the forward-jump threshold (half max offset)
            await asyncio.to_thread(server.skew.poll_once)
            await asyncio.wait_for(server.stopping.wait(), timeout=10)
            assert server.fatal_reason is not None and "forward" in server.fatal_reason
            refusal = server.gate.refusal()
            assert refusal is not None and "clock-jump" in refusal
        finally:
            await server.stop(grace=1)

    with NtpResponder() as responder:
        asyncio.run(scenario(responder))
