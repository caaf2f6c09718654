"""New work through the client library while the next leader holds what was sent under the old
one, on real nodes and a real etcd.

After a leader change, the next leader holds the transactions that started under the old leader
(resubmissions included) until its decision history has loaded; new transactions it decides at
once. The client must not put new work behind the held messages: not in its ``commit()`` slots,
not on a ``CommitStream`` behind them (a node answers each stream in order). Here the history
load waits while a file exists (``tests/support/held_history_node.py``), so the held state
lasts as long as the test needs, whatever the machine's speed.

Lease TTL 1 s (etcd runs with --election-timeout 100); client timeout 20 s.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from hlc_oracle import Aborted, Committed, Transaction
from hlc_oracle.client import AsyncOracleClient

from tests.support import held_history_node
from tests.support.client_commit_load import CLIENT_TIMEOUT_S
from tests.support.etcd_process import EtcdMember
from tests.support.oracle_cluster import OracleCluster

LEASE_TTL_S = 1
#: More held commit() calls than the client's four message slots.
HELD_CALLS = 6
#: A bound for a liveness check (fresh work decided), not a timing: far above any answer here.
ANSWER_WITHIN_S = 15.0


def test_new_work_is_decided_while_the_next_leader_holds_the_old(
    etcd: EtcdMember, tmp_path: Path
) -> None:
    hold = tmp_path / "hold-history"
    cluster = OracleCluster(tmp_path, etcd.endpoint, size=2, lease_ttl_s=LEASE_TTL_S)
    held_history_node.run_held(cluster, held_history_node.HOLD_VARIABLE, hold)
    with cluster:
        leader = cluster.wait_for_leader()
        leader_id = cluster.nodes.index(leader) + 1
        epoch = cluster.statuses()[leader_id].epoch

        async def scenario() -> None:
            async with AsyncOracleClient(cluster.targets, timeout=CLIENT_TIMEOUT_S) as client:
                old_start = await client.get_timestamp()
                hold.touch()  # the next leader's history load waits from now on
                leader.signal(signal.SIGTERM)
                await asyncio.to_thread(
                    cluster.wait_for_leader, other_than=leader_id, after_epoch=epoch
                )
                # Started under the old leader: the next one holds them.
                old = [
                    Transaction(n, old_start, [], [b"old/%d" % n])
                    for n in range(1, 1 + 2 * HELD_CALLS)
                ]
                held_calls = [asyncio.ensure_future(client.commit(txn)) for txn in old[:HELD_CALLS]]
                held_batch = asyncio.ensure_future(client.commit_many(old[HELD_CALLS:]))
                await asyncio.sleep(0.5)  # they reach the next leader (and are held there)
                held = [*held_calls, held_batch]

                # New work is decided meanwhile, through commit() and commit_many().
                start = await client.get_timestamp()
                fresh = Transaction(1000, start, [], [b"fresh"])
                decided = await asyncio.wait_for(client.commit(fresh), ANSWER_WITHIN_S)
                assert isinstance(decided, Committed), decided
                batch = [Transaction(1001 + n, start, [], [b"fresh/%d" % n]) for n in range(20)]
                results = await asyncio.wait_for(client.commit_many(batch), ANSWER_WITHIN_S)
                assert results.committed == len(batch), list(results)
                assert not any(call.done() for call in held), "nothing was held: the test is void"

                # Once the history has loaded, the held ones are decided, each once.
                hold.unlink()
                answers = await asyncio.wait_for(
                    asyncio.gather(*held_calls), CLIENT_TIMEOUT_S + ANSWER_WITHIN_S
                )
                answers += list(await asyncio.wait_for(held_batch, CLIENT_TIMEOUT_S))
                assert [answer.txn_id for answer in answers] == [txn.txn_id for txn in old]
                assert all(isinstance(answer, Committed | Aborted) for answer in answers), answers
                again = await client.commit_many(old)
                assert list(again) == answers

        asyncio.run(scenario())


def test_an_abort_and_a_status_naming_a_fresh_start_are_answered_while_the_history_is_held(
    etcd: EtcdMember, tmp_path: Path
) -> None:
    """Through the client: an abort or a status query naming its transaction's start is held
    by the next leader only as a commit with that start would be (a fresh start: answered at
    once); naming none, or an old start, it waits for the history, then hears the first
    decision."""
    hold = tmp_path / "hold-history"
    cluster = OracleCluster(tmp_path, etcd.endpoint, size=2, lease_ttl_s=LEASE_TTL_S)
    held_history_node.run_held(cluster, held_history_node.HOLD_VARIABLE, hold)
    with cluster:
        leader = cluster.wait_for_leader()
        leader_id = cluster.nodes.index(leader) + 1
        epoch = cluster.statuses()[leader_id].epoch

        async def scenario() -> None:
            async with AsyncOracleClient(cluster.targets, timeout=CLIENT_TIMEOUT_S) as client:
                old = Transaction(1, await client.get_timestamp(), [], [b"old"])
                committed = await client.commit_unary(old)
                assert isinstance(committed, Committed), committed
                hold.touch()  # the next leader's history load waits from now on
                leader.signal(signal.SIGTERM)
                await asyncio.to_thread(
                    cluster.wait_for_leader, other_than=leader_id, after_epoch=epoch
                )
                # Held: the committed id, by its old start or by no start; a fresh id, no start.
                held = {
                    "abort of the committed id": client.abort(old.txn_id, old.start_ts),
                    "its status": client.transaction_status(old.txn_id, old.start_ts),
                    "abort naming no start": client.abort(2),
                }
                waiting = {name: asyncio.ensure_future(call) for name, call in held.items()}
                await asyncio.sleep(0.5)  # they reach the next leader (and are held there)

                start = await client.get_timestamp()
                fresh = await asyncio.wait_for(client.abort(3, start), ANSWER_WITHIN_S)
                assert isinstance(fresh, Aborted) and fresh.conflict is None, fresh
                unknown = await asyncio.wait_for(
                    client.transaction_status(4, start), ANSWER_WITHIN_S
                )
                assert unknown is None
                assert not any(call.done() for call in waiting.values()), "nothing was held"

                hold.unlink()
                answers = {
                    name: await asyncio.wait_for(call, CLIENT_TIMEOUT_S + ANSWER_WITHIN_S)
                    for name, call in waiting.items()
                }
                assert answers["abort of the committed id"] == committed
                assert answers["its status"] == committed
                assert isinstance(answers["abort naming no start"], Aborted)
                assert await client.transaction_status(3) == fresh

        asyncio.run(scenario())
