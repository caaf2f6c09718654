"""Commit load on the wire, through the tests' :class:`LeaderClient` (plain gRPC that follows the
leader and sends a call the leader died under again, same id and contents, to the next one):
:class:`GrpcCommitLoad`, and the check that every decision it was told survived.

Unlike :class:`tests.support.client_commit_load.ClientCommitLoad` (the client library's calls and
retries), this load sees the wire messages themselves, so :meth:`GrpcCommitLoad.check` compares
them byte for byte with what the current leader reads back."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hlc_oracle.client import outcome_from_wire
from hlc_oracle.proto import oracle_pb2 as pb

from tests.support.history import History, Instant, Operation, check
from tests.support.oracle_cluster import LeaderClient

#: The keys the load's transactions read and write: two each, so some conflict.
KEYS = 200


@dataclass(frozen=True)
class Decided:
    transaction: Any  # pb.Transaction
    result: Any  # pb.CommitResult
    invoke: Instant
    complete: Instant

    @property
    def after_ns(self) -> int:
        return self.complete.monotonic_ns


class GrpcCommitLoad:
    """Threads committing small transactions (two of ``KEYS`` keys: some conflict) back to
    back, each on a fresh start timestamp, through a :class:`LeaderClient`."""

    def __init__(self, client: LeaderClient, threads: int = 4) -> None:
        self.client = client
        self.threads = threads
        self.decided: list[Decided] = []
        self.errors: list[BaseException] = []
        self._ids = iter(range(1, 2**62))
        self.lock = threading.Lock()
        self._stop = threading.Event()

    def next_id(self) -> int:
        with self.lock:
            return next(self._ids)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            try:
                start = self.client.get_timestamps(1).first
                txn = pb.Transaction(
                    txn_id=self.next_id(),
                    start_ts=pb.Timestamp(
                        physical=start.physical, logical=start.logical, node=start.node
                    ),
                    read_set=[f"k{rng.randrange(KEYS)}".encode()],
                    write_set=[f"k{rng.randrange(KEYS)}".encode()],
                )
                before = Instant.now()
                result = self.client.commit(txn)
                after = Instant.now()
            except BaseException as err:
                self.errors.append(err)
                return
            with self.lock:
                self.decided.append(Decided(txn, result, before, after))

    @contextmanager
    def running(self) -> Iterator[None]:
        workers = [
            threading.Thread(target=self._run, args=(seed,), daemon=True)
            for seed in range(self.threads)
        ]
        for worker in workers:
            worker.start()
        try:
            yield
        finally:
            self._stop.set()
            for worker in workers:
                worker.join(30)
        assert not self.errors, self.errors[:3]

    def check(self, reader: LeaderClient) -> None:
        errors = [d.result for d in self.decided if d.result.HasField("error")]
        assert not errors, errors[:3]
        committed = [d for d in self.decided if d.result.HasField("commit_ts")]
        assert committed, "no commit got through"
        # Every acknowledged decision reads back from the current leader, the same (byte for
        # byte), and the fault suite's checker judges the whole history (tests/support/
        # history.py): commit timestamps unique, in real-time order, within the HLC bound.
        history = History()
        for decided in self.decided:
            outcome = outcome_from_wire(decided.result)
            history.add(Operation.commit(0, decided.invoke, decided.complete, outcome))
            status = reader.transaction_status(decided.transaction.txn_id)
            assert status.known and status.result == decided.result, (decided.result, status)
            history.read_back(outcome.txn_id, outcome_from_wire(status.result))
        # (A call the leader died under, undecided, is aborted as too old by the next leader:
        # that abort is one of the acknowledged decisions read back above.)
        check(history).assert_valid()
        # A resubmitted decided id gets its first decision.
        for decided in random.Random(7).sample(self.decided, min(50, len(self.decided))):
            assert reader.commit(decided.transaction) == decided.result
