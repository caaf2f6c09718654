"""The capacity guard on a real etcd with a 64 MiB quota under full commit load: the leader
shortens the decision retention before etcd's database fills, says so, and etcd never raises its
NOSPACE alarm; and the guard's rule, and reading the quota from etcd's /metrics."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from pathlib import Path

import pytest
from hlc_oracle import Transaction
from hlc_oracle.cluster.capacity import (
    LENGTHEN_FACTOR,
    CapacityGuard,
    next_retention,
    parse_quota,
    read_quota,
)

from tests.support.decision_leader import Leader, client_of, run
from tests.support.etcd_process import EtcdMember

QUOTA = 64 << 20
#: Filler written first: the decisions then reach the guard's threshold within seconds.
FILLER = 16 << 20
CONFIGURED_S = 30.0
FLOOR_S = 1.0
LOAD_LIMIT_S = 180.0
#: Load kept up after the first shortening: trims must keep up with it.
AFTER_S = 10.0


def test_the_rule_shortens_in_proportion_to_a_floor_and_lengthens_slowly() -> None:
    # (retention, in use share) -> retention
    assert next_retention(600, 600, 45, 100, 60) == 600
    assert next_retention(600, 600, 70, 100, 60) == pytest.approx(300)
    assert next_retention(100, 600, 99, 100, 60) == 60  # never below the floor
    assert next_retention(100, 600, 10, 100, 60) == 100 * LENGTHEN_FACTOR
    assert next_retention(590, 600, 10, 100, 60) == 600  # never above the configured one


def test_the_quota_is_read_from_etcds_metrics(tmp_path: Path) -> None:
    assert parse_quota("# HELP x\netcd_server_quota_backend_bytes 6.7108864e+07\n") == QUOTA
    assert parse_quota("other 1\n") is None
    with EtcdMember(tmp_path / "etcd", extra_args=(f"--quota-backend-bytes={QUOTA}",)) as etcd:
        assert read_quota([etcd.endpoint]) == QUOTA
    assert read_quota([etcd.endpoint], timeout_s=0.5) is None  # stopped


async def fill(client: object, total: int) -> None:
    put = client.put  # type: ignore[attr-defined]
    for n in range(total // (64 << 10)):
        await put(f"/filler/{n}".encode(), bytes(64 << 10))


def test_the_guard_keeps_a_64_mib_etcd_under_its_quota_under_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(etcd: EtcdMember) -> None:
        client = client_of([etcd.endpoint])
        await fill(client, FILLER)
        leader, _ = await Leader.promote(client, 1, retention_s=CONFIGURED_S)
        guard = CapacityGuard(client, leader.log, floor_s=FLOOR_S, interval_s=0.5)
        guard_task = asyncio.ensure_future(guard.run())
        scheduler = leader.scheduler
        ids = itertools.count(1)
        shortened_at: list[float] = []
        decided = 0

        async def sender() -> None:
            nonlocal decided
            began = time.monotonic()
            while time.monotonic() - began < LOAD_LIMIT_S:
                if shortened_at and time.monotonic() > shortened_at[0] + AFTER_S:
                    return
                start = scheduler.clock.now()
                group = [Transaction(next(ids), start, [], [b"k"]) for _ in range(1_000)]
                answers = await scheduler.submit_many(group)
                assert all(not isinstance(a, BaseException) for a in answers), answers[0]
                decided += len(answers)
                if guard.capacity.retention_s < CONFIGURED_S and not shortened_at:
                    shortened_at.append(time.monotonic())

        try:
            await asyncio.gather(*(sender() for _ in range(8)))
        finally:
            guard_task.cancel()
            await scheduler.aclose()
        assert shortened_at, f"never shortened: {guard.capacity}"
        assert not await client.nospace_alarm()
        size = await client.db_size()
        assert size.total < 0.8 * QUOTA, size
        assert guard.capacity.quota_bytes == QUOTA
        assert FLOOR_S <= guard.capacity.retention_s < CONFIGURED_S
        print(f"decided {decided}, capacity {guard.capacity}")

    caplog.set_level(logging.INFO, "hlc_oracle.cluster.capacity")
    quota = (f"--quota-backend-bytes={QUOTA}",)
    with EtcdMember(tmp_path / "etcd", extra_args=quota) as etcd:
        run(lambda: scenario(etcd))
    assert any("decision retention shortened" in r.getMessage() for r in caplog.records)
