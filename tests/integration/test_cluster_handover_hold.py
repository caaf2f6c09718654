"""Requests held through a leader change instead of refused, on real nodes and a real etcd.

The next leader, while it takes over, holds the requests it gets (the gate is settling, see
:mod:`hlc_oracle.node.gate`) and answers each the moment it serves: one call, one answer, and no
client asleep in a retry backoff. Here the takeover waits while a file exists
(``tests/support/held_history_node.py``), so the held state lasts as long as the test needs,
whatever the machine's speed; that program holds a request up to a minute.

Lease TTL 1 s (etcd runs with --election-timeout 100).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from hlc_oracle.proto import oracle_pb2 as pb

from tests.support import held_history_node
from tests.support.etcd_process import EtcdMember
from tests.support.oracle_cluster import OracleCluster
from tests.support.raw_calls import call
from tests.support.waiting import wait_for

LEASE_TTL_S = 1
#: A bound for liveness checks, not a timing: far above any answer here.
ANSWER_WITHIN_S = 20.0
#: How long the test leaves the calls at the next leader before it lets the takeover end.
HELD_FOR_S = 0.5


class Outcome:
    """One raw call on its own thread: its answer, or the ``grpc.RpcError`` it got."""

    def __init__(self, send: Callable[[], bytes]) -> None:
        self.answer: bytes | None = None
        self.error: grpc.RpcError | None = None
        self._thread = threading.Thread(target=self._run, args=(send,), daemon=True)
        self._thread.start()

    def _run(self, send: Callable[[], bytes]) -> None:
        try:
            self.answer = send()
        except grpc.RpcError as err:
            self.error = err

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> bytes:
        self._thread.join(ANSWER_WITHIN_S + 5)
        assert self.done, "the call never ended"
        assert self.error is None, (self.error.code(), self.error.details())  # type: ignore[attr-defined]
        assert self.answer is not None
        return self.answer


def test_the_next_leader_holds_requests_while_taking_over_then_serves_them(
    etcd: EtcdMember, tmp_path: Path
) -> None:
    hold = tmp_path / "hold-takeover"
    cluster = OracleCluster(tmp_path, etcd.endpoint, size=2, lease_ttl_s=LEASE_TTL_S)
    held_history_node.run_held(cluster, held_history_node.HOLD_TAKEOVER_VARIABLE, hold)
    with cluster:
        leader = cluster.wait_for_leader()
        leader_id = cluster.nodes.index(leader) + 1
        (successor,) = [node for node in cluster.nodes if node is not leader]
        successor_id = cluster.nodes.index(successor) + 1
        epoch = cluster.statuses()[leader_id].epoch
        start = pb.GetTimestampsResponse.FromString(
            call(
                leader.target,
                "hlc_oracle.v1.TimestampOracle/GetTimestamps",
                pb.GetTimestampsRequest(count=1),
            )
        ).first

        hold.touch()  # the next leader's takeover waits from now on
        leader.signal(signal.SIGTERM)

        def taking_over() -> bool:
            status = cluster.statuses().get(successor_id)
            return (
                status is not None
                and status.role == "leader"
                and status.epoch > epoch
                and not status.serving
            )

        wait_for(taking_over, ANSWER_WITHIN_S)
        timestamps = Outcome(
            lambda: call(
                successor.target,
                "hlc_oracle.v1.TimestampOracle/GetTimestamps",
                pb.GetTimestampsRequest(count=3),
                timeout_s=ANSWER_WITHIN_S,
            )
        )
        commit = Outcome(
            lambda: call(
                successor.target,
                "hlc_oracle.v1.Transactions/Commit",
                pb.CommitRequest(
                    transaction=pb.Transaction(txn_id=7, start_ts=start, write_set=[b"held"])
                ),
                timeout_s=ANSWER_WITHIN_S,
            )
        )
        time.sleep(HELD_FOR_S)
        assert not timestamps.done and not commit.done, "refused, not held"
        hold.unlink()  # the takeover ends: the held calls are served, each on its one attempt

        granted = pb.GetTimestampsResponse.FromString(timestamps.wait())
        assert granted.count == 3 and granted.first.node == successor_id
        # Started under the old leader: decided (aborted as too old, at or below the low
        # watermark), not refused.
        decided = pb.CommitResult.FromString(commit.wait())
        assert decided.txn_id == 7 and decided.WhichOneof("outcome") in ("commit_ts", "aborted")
