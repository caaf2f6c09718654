"""A leader's group commit on a real etcd, as the decision-log tests drive it: a term taken on
the leader key (:func:`take_leadership`), a :class:`Leader` promoted on it (its decision log
recovered into a fresh scheduler), transactions to commit, and the etcd client they use."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from hlc_oracle import (
    Aborted,
    Clock,
    CommitOptions,
    Committed,
    GroupCommitScheduler,
    Transaction,
)
from hlc_oracle.cluster.decisions import ClusteredGroupCommit, DecisionLog
from hlc_oracle.cluster.etcd import EtcdClient, compare_create_revision, put
from hlc_oracle.cluster.fence import Fence, Term
from hlc_oracle.durable import ExternalDurableStep
from hlc_oracle.node.gate import ServingGate

PREFIX = "/hlc-oracle/test/"
LEADER_KEY = f"{PREFIX}leader".encode()
#: A piece of no decisions (format version 2, count 0).
EMPTY_PIECE = b"\x02\x00"
Outcome = Committed | Aborted


async def take_leadership(client: EtcdClient, node: str) -> Fence:
    """A term for ``node``: the leader key deleted if held, then created (epoch = its revision),
    as an election would after the previous leader's lease ran out."""
    await client.delete(LEADER_KEY)
    value = node.encode()
    result = await client.txn([compare_create_revision(LEADER_KEY, 0)], [put(LEADER_KEY, value)])
    assert result.succeeded
    return Fence(client, Term(LEADER_KEY, value, result.revision))


class Leader:
    """One term's group commit: a scheduler whose durable step is the term's decision log."""

    def __init__(self, log: DecisionLog, scheduler: GroupCommitScheduler, step: Any) -> None:
        self.log = log
        self.scheduler = scheduler
        self.step = step

    @classmethod
    async def promote(
        cls, client: EtcdClient, node: int, *, retention_s: float = 600.0, **log_options: Any
    ) -> tuple[Leader, Any]:
        fence = await take_leadership(client, f"node-{node}")
        clock = Clock(node=node)
        log = DecisionLog(
            client, PREFIX, fence, retention_s=retention_s, clock=clock, **log_options
        )
        first = await log.newest_seq() + 1
        step = ExternalDurableStep(
            log.write, asyncio.get_running_loop(), max_in_flight=4, first_batch_seq=first
        )
        scheduler = GroupCommitScheduler(None, clock, CommitOptions(), durable_step=step)
        engine = scheduler.engine
        recovered = await log.recover(
            None,
            engine.raise_low_watermark,
            engine.replay_pieces,
            engine.raise_forgotten_through,
        )
        return cls(log, scheduler, step), recovered

    async def commit(self, txns: list[Transaction]) -> list[Outcome | BaseException]:
        return list(
            await asyncio.gather(*(self.scheduler.submit(t) for t in txns), return_exceptions=True)
        )


def clustered_group_commit(
    client: EtcdClient, clock: Clock, prefix: str = PREFIX
) -> tuple[ClusteredGroupCommit, list[GroupCommitScheduler | None], list[str]]:
    """A node's clustered group commit on ``clock``, as the server builds it (default options,
    600 s retention): the group commit, the schedulers it installs and the reasons of the terms
    it ends (lists that grow)."""
    installed: list[GroupCommitScheduler | None] = []
    ended: list[str] = []
    group_commit = ClusteredGroupCommit(
        client,
        prefix,
        clock,
        CommitOptions(),
        ServingGate(),
        retention_s=600.0,
        install=installed.append,
        end_term=ended.append,
    )
    return group_commit, installed, ended


def transactions(clock: Clock, first_id: int, count: int, keys: int = 50) -> list[Transaction]:
    """``count`` transactions over ``keys`` keys: some conflict, most commit."""
    rng = random.Random(first_id)
    return [
        Transaction(
            first_id + n, clock.now(), [], [f"k{rng.randrange(keys)}".encode() for _ in range(2)]
        )
        for n in range(count)
    ]


def client_of(endpoints: list[str]) -> EtcdClient:
    return EtcdClient(endpoints, timeout_s=1.0)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())
