"""The Transactions service on a real server: decisions, merging, bad input and its status codes,
status after restart, and kill -9 under a concurrent commit load."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hlc_oracle import Aborted, Committed, Timestamp, Transaction
from hlc_oracle.client import AsyncOracleClient, OracleClient, OracleError, RetryPolicy
from hlc_oracle.proto import oracle_pb2 as pb

from tests.support.oracle_process import OracleProcess
from tests.support.waiting import wait_for


def test_commit_abort_and_status_over_the_wire(oracle: OracleProcess) -> None:
    with OracleClient(oracle.target) as client:
        start = client.get_timestamp()
        first = client.commit(Transaction(101, start, [b"r"], [b"w1", b"w2"]))
        assert isinstance(first, Committed) and first.commit_ts > start
        lost = client.commit_unary(Transaction(102, start, [], [b"w2"]))
        assert isinstance(lost, Aborted) and lost.reason == "conflict"
        assert lost.conflict is not None
        assert lost.conflict.key == b"w2" and lost.conflict.commit_ts == first.commit_ts
        # Idempotent, over both RPCs.
        assert client.commit_unary(Transaction(101, start, [b"r"], [b"w1", b"w2"])) == first
        assert client.transaction_status(101) == first
        assert client.transaction_status(102) == lost
        assert client.transaction_status(103) is None
        # Abort fencing.
        assert client.abort(103) == Aborted(103, "requested")
        assert client.commit(Transaction(103, start, [], [b"w3"])) == Aborted(103, "requested")
        assert client.abort(101) == first
        # Naming the start (what a new clustered leader looks at): the same decisions.
        assert client.abort(104, start) == Aborted(104, "requested")
        assert client.abort(101, start) == first
        assert client.transaction_status(101, start) == first
        assert client.transaction_status(105, start) is None
        # Timestamps handed out after a commit are above it.
        assert client.get_timestamp() > first.commit_ts


def test_concurrent_commits_are_merged_into_few_messages(oracle: OracleProcess) -> None:
    async def scenario() -> None:
        async with AsyncOracleClient(oracle.target) as client:
            start = await client.get_timestamp()
            outcomes = await asyncio.gather(
                *(
                    client.commit(Transaction(2000 + i, start, [], [b"m%d" % i, b"shared"]))
                    for i in range(300)
                )
            )
            committed = [o for o in outcomes if isinstance(o, Committed)]
            aborted = [o for o in outcomes if isinstance(o, Aborted)]
            # All write "shared" and started together: exactly one wins.
            assert len(committed) == 1 and len(aborted) == 299
            assert client.commit_batches < 300
            for outcome in aborted:
                assert outcome.conflict is not None and outcome.conflict.key == b"shared"

    asyncio.run(scenario())


def _code(client: OracleClient, call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(OracleError) as raised:
        call()
    return raised.value.code


def test_bad_transactions_get_status_codes_and_are_not_logged(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    oracle = start_oracle("--set", "commit.max_write_keys=2", "--set", "commit.max_key_bytes=8")
    with OracleClient(oracle.target) as client:
        start = client.get_timestamp()
        future = Timestamp(start.physical + 3_600_000_000, 0, 0)
        cases = [
            (Transaction(0, start, [], [b"k"]), grpc.StatusCode.INVALID_ARGUMENT),
            (Transaction(11, start, [b"r"], []), grpc.StatusCode.INVALID_ARGUMENT),
            (Transaction(12, start, [], [b"a", b"b", b"c"]), grpc.StatusCode.RESOURCE_EXHAUSTED),
            (Transaction(13, start, [], [b"123456789"]), grpc.StatusCode.RESOURCE_EXHAUSTED),
            (Transaction(14, future, [], [b"k"]), grpc.StatusCode.OUT_OF_RANGE),
        ]
        for txn, code in cases:
            assert _code(client, lambda txn=txn: client.commit(txn)) == code, txn
            assert _code(client, lambda txn=txn: client.commit_unary(txn)) == code, txn
            assert client.transaction_status(txn.txn_id or 1) is None
        ok = client.commit(Transaction(15, start, [], [b"k"]))
        assert isinstance(ok, Committed)
        changed = Transaction(15, start, [], [b"other"])
        assert _code(client, lambda: client.commit(changed)) == grpc.StatusCode.ALREADY_EXISTS
        assert _code(client, lambda: client.abort(0)) == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            _code(client, lambda: client.transaction_status(0)) == grpc.StatusCode.INVALID_ARGUMENT
        )
        assert client.transaction_status(15) == ok  # the server kept going


def test_malformed_messages_are_invalid_argument(oracle: OracleProcess) -> None:
    with grpc.insecure_channel(oracle.target) as channel:
        for method in ("Commit", "Abort", "GetTransactionStatus"):
            call = channel.unary_unary(f"/hlc_oracle.v1.Transactions/{method}")
            with pytest.raises(grpc.RpcError) as raised:
                call(b"\xff\xff\xff", timeout=5)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
        commit = channel.unary_unary(
            "/hlc_oracle.v1.Transactions/Commit",
            request_serializer=pb.CommitRequest.SerializeToString,
            response_deserializer=pb.CommitResult.FromString,
        )
        with pytest.raises(grpc.RpcError) as raised:
            commit(pb.CommitRequest(), timeout=5)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        no_start = pb.CommitRequest(transaction=pb.Transaction(txn_id=5, write_set=[b"k"]))
        with pytest.raises(grpc.RpcError) as raised:
            commit(no_start, timeout=5)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "start_ts is required" in (raised.value.details() or "")
        too_far = pb.Timestamp(physical=2**60)
        for method, request in (
            ("Abort", pb.AbortRequest(txn_id=6, start_ts=too_far)),
            ("GetTransactionStatus", pb.TransactionStatusRequest(txn_id=6, start_ts=too_far)),
        ):
            call = channel.unary_unary(
                f"/hlc_oracle.v1.Transactions/{method}",
                request_serializer=type(request).SerializeToString,
            )
            with pytest.raises(grpc.RpcError) as raised:
                call(request, timeout=5)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert "transaction 6: malformed start_ts" in (raised.value.details() or ""), method
        stream = channel.stream_stream("/hlc_oracle.v1.Transactions/CommitStream")
        with pytest.raises(grpc.RpcError) as raised:
            list(stream(iter([b"\xff\xff\xff"]), timeout=5))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(
            health_pb2.HealthCheckRequest(service="hlc_oracle.v1.Transactions"), timeout=5
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_decisions_survive_a_graceful_restart(start_oracle: Callable[..., OracleProcess]) -> None:
    oracle = start_oracle()
    with OracleClient(oracle.target) as client:
        start = client.get_timestamp()
        outcome = client.commit(Transaction(7, start, [], [b"k"]))
        fenced = client.abort(8)
    assert oracle.stop() == 0
    oracle.start()
    with OracleClient(oracle.target) as client:
        assert client.transaction_status(7) == outcome
        assert client.transaction_status(8) == fenced
        assert isinstance(client.commit(Transaction(9, start, [], [b"k"])), Aborted)
    assert "group commit: recovered 2 records" in oracle.log_text()


CRASH_ROUNDS = 10


async def statuses_of(target: str, txn_ids: list[int]) -> list[Committed | Aborted | None]:
    # Bounded concurrency: well under the server's limits.max_concurrent_streams.
    limit = asyncio.Semaphore(64)
    async with AsyncOracleClient(target) as client:

        async def status(txn_id: int) -> Committed | Aborted | None:
            async with limit:
                return await client.transaction_status(txn_id)

        return await asyncio.gather(*(status(i) for i in txn_ids))


class UnretriedCommitLoad:
    """Threads committing transactions (a hot key each, so some abort) until stopped; records
    what was acknowledged. No retries: a call that fails when the server dies is simply not
    acknowledged."""

    def __init__(self, target: str, first_id: int, rng: random.Random) -> None:
        self.client = OracleClient(target, timeout=2.0, retry=RetryPolicy(attempts=1))
        self.start = self.client.get_timestamp()
        self.next_id = first_id
        self.rng = rng
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acknowledged: list[Committed | Aborted] = []
        self.threads = [threading.Thread(target=self.run) for _ in range(8)]

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                txn_id = self.next_id
                self.next_id += 1
                keys = [b"hot%d" % self.rng.randrange(50), b"cold%d" % txn_id]
            try:
                outcome = self.client.commit(Transaction(txn_id, self.start, [], keys))
            except OracleError:
                return
            with self.lock:
                self.acknowledged.append(outcome)

    def __enter__(self) -> UnretriedCommitLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)
        self.client.close()


def test_kill_9_under_load_keeps_every_acknowledged_decision(tmp_path: Path) -> None:
    """Concurrent committers run against the real server; it is killed with SIGKILL at a random
    moment, restarted, and checked: every acknowledged commit is there with the same timestamp,
    no aborted id turned committed, and no timestamp goes backwards."""
    rng = random.Random(5)
    committed: dict[int, Timestamp] = {}
    aborted: set[int] = set()
    next_id = 1
    newest = Timestamp(0, 0, 0)
    # Small segments, so that kills also land around segment rotations; enough of them kept that
    # no checkpoint forgets the decisions the test checks.
    with OracleProcess(
        tmp_path / "data",
        "--shutdown-grace",
        "0",
        "--set",
        "commit.segment_size=65536",
        "--set",
        "commit.retain_segments=100000",
    ) as oracle:
        for round_number in range(CRASH_ROUNDS):
            with UnretriedCommitLoad(oracle.target, next_id, rng) as load:
                assert load.start > newest, "timestamps went backwards across the restart"
                # The kill lands at a random moment once the load is running: on a busy host
                # the committers' first answers can take longer than the random wait itself.
                wait_for(lambda: len(load.acknowledged) > 0, timeout_s=30)
                time.sleep(0.1 + rng.random() * 0.3)
                oracle.kill()
            next_id = load.next_id
            acknowledged = load.acknowledged
            assert acknowledged, f"round {round_number}: nothing was acknowledged"
            for outcome in acknowledged:
                if isinstance(outcome, Committed):
                    committed[outcome.txn_id] = outcome.commit_ts
                else:
                    aborted.add(outcome.txn_id)
            oracle.start()
            # Everything acknowledged in this round, and a sample of the earlier rounds.
            this_round = [outcome.txn_id for outcome in acknowledged]
            earlier = sorted(set(committed) | aborted - set(this_round))
            to_check = this_round + rng.sample(earlier, min(100, len(earlier)))
            statuses = asyncio.run(statuses_of(oracle.target, to_check))
            for txn_id, status in zip(to_check, statuses, strict=True):
                if txn_id in committed:
                    assert status == Committed(txn_id, committed[txn_id]), (round_number, txn_id)
                else:
                    assert isinstance(status, Aborted), (round_number, txn_id, status)
            newest = max([newest, *committed.values()])
            with OracleClient(oracle.target) as client:
                fresh = client.commit(Transaction(next_id, client.get_timestamp(), [], [b"z"]))
            next_id += 1
            assert isinstance(fresh, Committed) and fresh.commit_ts > newest
            committed[fresh.txn_id] = fresh.commit_ts
            newest = fresh.commit_ts
        assert len(committed) > CRASH_ROUNDS
    segments = list((tmp_path / "data" / "commit-log").glob("*.wal"))
    assert len(segments) > 1, "the load never crossed a segment rotation"


def test_cli_txn_status_abort_and_commit_bench(oracle: OracleProcess) -> None:
    with OracleClient(oracle.target) as client:
        outcome = client.commit(Transaction(9001, client.get_timestamp(), [], [b"cli"]))
    assert isinstance(outcome, Committed)
    done = oracle.cli("txn", "status", "9001")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"transaction 9001: committed at {outcome.commit_ts}"
    unknown = oracle.cli("txn", "status", "9002", "--json")
    assert unknown.returncode == 4
    assert json.loads(unknown.stdout) == {"txn_id": 9002, "status": "unknown"}
    fenced = oracle.cli("txn", "abort", "9002")
    assert fenced.returncode == 0 and "aborted (requested)" in fenced.stdout
    # Aborting a committed transaction cannot take effect: it stays committed, exit 1.
    too_late = oracle.cli("txn", "abort", "9001")
    assert too_late.returncode == 1 and "committed at" in too_late.stdout
    # Naming the start (as `now` prints it): the same decisions.
    start = str(outcome.commit_ts)
    named = oracle.cli("txn", "status", "9001", "--start", start)
    assert named.returncode == 0 and named.stdout == done.stdout, named.stderr
    named = oracle.cli("txn", "abort", "9003", "--start", start)
    assert named.returncode == 0 and "aborted (requested)" in named.stdout, named.stderr
    # Id 0 is refused by the command before it calls (the server's INVALID_ARGUMENT for it is
    # tested with the client).
    bad = oracle.cli("txn", "status", "0")
    assert bad.returncode == 2 and "must be in 1..2**64-1, got 0" in bad.stderr
    bench = oracle.cli("bench", "--mode", "commit", "--concurrency", "16", "--requests", "400")
    assert bench.returncode == 0, bench.stderr
    figures = json.loads(bench.stdout.splitlines()[-1])
    assert figures["mode"] == "commit" and figures["calls"] == 400
    assert figures["merged_requests"] < 400


def test_damaged_commit_log_stops_start_up_naming_file_and_offset(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    oracle = start_oracle("--set", "commit.segment_size=4096")
    with OracleClient(oracle.target) as client:
        start = client.get_timestamp()
        for txn_id in range(1, 200):
            client.commit(Transaction(txn_id, start, [], [b"key%d" % txn_id]))
    assert oracle.stop() == 0
    segments = sorted((oracle.data_dir / "commit-log").glob("*.wal"))
    assert len(segments) > 2
    victim = segments[0]
    data = bytearray(victim.read_bytes())
    data[32 + 20 + 5] ^= 0x20  # inside the first record of the first segment
    victim.write_bytes(bytes(data))
    with pytest.raises(RuntimeError) as raised:
        oracle.start()
    message = str(raised.value)
    assert "cannot open the commit log" in message
    assert str(victim) in message and "at offset 32" in message
    # A torn tail of the last segment, on the other hand, is cut and start-up goes on.
    data[32 + 20 + 5] ^= 0x20
    victim.write_bytes(bytes(data))
    last = segments[-1]
    written = len(last.read_bytes().rstrip(b"\0"))
    with open(last, "r+b") as handle:
        handle.truncate(written - 3)
    oracle.start()
    with OracleClient(oracle.target) as client:
        assert isinstance(client.transaction_status(1), Committed)
    assert "truncated" in oracle.log_text()


def _transaction_counts(oracle: OracleProcess) -> dict[str, float]:
    url = f"http://127.0.0.1:{oracle.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    counts = {"committed": 0.0, "aborted": 0.0, "refused": 0.0}
    for line in text.splitlines():
        if line.startswith("hlc_oracle_transactions_total{"):
            name, value = line.rsplit(" ", 1)
            counts[name.split('outcome="', 1)[1].split('"', 1)[0]] = float(value)
    return counts


def test_a_stream_message_is_decided_per_transaction_and_counted_per_message(
    start_oracle: Callable[..., OracleProcess],
) -> None:
    oracle = start_oracle(
        "--set", "commit.max_write_keys=2", "--max-message-bytes", "4096", "--metrics-port", "0"
    )  # fmt: skip
    with OracleClient(oracle.target) as client:
        start = client.get_timestamp()
    before = _transaction_counts(oracle)
    ts = pb.Timestamp(physical=start.physical, logical=start.logical, node=start.node)
    message = pb.CommitStreamRequest(
        transactions=[
            pb.Transaction(txn_id=1, start_ts=ts, write_set=[b"a"]),
            pb.Transaction(txn_id=2, start_ts=ts, write_set=[b"a"]),  # loses to 1
            pb.Transaction(txn_id=3, write_set=[b"b"]),  # no start_ts
            pb.Transaction(txn_id=4, start_ts=ts, write_set=[b"c", b"d", b"e"]),  # too many keys
            pb.Transaction(txn_id=0, start_ts=ts, write_set=[b"f"]),  # id 0 is unset
            pb.Transaction(txn_id=5, start_ts=ts, write_set=[b"g"]),
        ]
    )
    with grpc.insecure_channel(oracle.target) as channel:
        stream = channel.stream_stream(
            "/hlc_oracle.v1.Transactions/CommitStream",
            request_serializer=pb.CommitStreamRequest.SerializeToString,
            response_deserializer=pb.CommitStreamResponse.FromString,
        )
        (response,) = list(stream(iter([message]), timeout=10))
        outcomes = [
            (r.txn_id, r.WhichOneof("outcome"), r.error.code if r.HasField("error") else None)
            for r in response.results
        ]
        assert outcomes == [
            (1, "commit_ts", None),
            (2, "aborted", None),
            (3, "error", grpc.StatusCode.INVALID_ARGUMENT.value[0]),
            (4, "error", grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]),
            (0, "error", grpc.StatusCode.INVALID_ARGUMENT.value[0]),
            (5, "commit_ts", None),
        ]
        assert response.results[1].aborted.conflict.winner_txn_id == 1
        assert _transaction_counts(oracle) == {
            "committed": before["committed"] + 2,
            "aborted": before["aborted"] + 1,
            "refused": before["refused"] + 3,
        }
        # Over --max-message-bytes: the whole message is refused, nothing of it is decided.
        big = pb.CommitStreamRequest(
            transactions=[
                pb.Transaction(txn_id=100 + i, start_ts=ts, write_set=[b"k" * 100])
                for i in range(50)
            ]
        )
        with pytest.raises(grpc.RpcError) as raised:
            list(stream(iter([big]), timeout=10))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with OracleClient(oracle.target) as client:
        assert client.transaction_status(100) is None


# How long the server's writer holds a batch that is not full before deciding it.
HELD_BATCH_S = 5.0


@pytest.mark.parametrize("how", ["commit", "commit_many"])
def test_a_call_that_waits_for_a_slot_past_its_timeout_fails_unsent(
    start_oracle: Callable[..., OracleProcess], how: str
) -> None:
    """The wait for a message slot counts toward a call's timeout: with every slot taken by
    messages the server holds, a call with a short timeout fails as a timed-out call does
    (``DEADLINE_EXCEEDED``) well before a slot frees, and its transaction never reaches the
    server. The calls in the slots, made with a long timeout, are decided as usual."""
    server = start_oracle(
        "--set", f"commit.max_batch_delay_us={int(HELD_BATCH_S * 1e6)}",
        "--set", "commit.durability=memory",
    )  # fmt: skip

    async def scenario() -> None:
        # One slot (and one held slot) for each kind of call: two calls take both.
        async with AsyncOracleClient(
            server.target, timeout=60, commit_in_flight=1, commit_many_in_flight=1
        ) as client:
            start = await client.get_timestamp()
            batcher = client._commit_batcher if how == "commit" else client._many_batcher

            def call(txn: Transaction) -> asyncio.Future[object]:
                if how == "commit":
                    return asyncio.ensure_future(client.commit(txn))
                return asyncio.ensure_future(client.commit_many([txn]))

            in_slots = []
            for n in (1, 2):  # each its own message: the second once the first left its slot
                in_slots.append(call(Transaction(n, start, [], [b"slot/%d" % n])))
                for _ in range(2000):
                    if batcher.batches == n:
                        break
                    await asyncio.sleep(0.005)
                assert batcher.batches == n, "the call never went out"
            client.timeout = 0.5  # the next call's timeout
            began = time.monotonic()
            with pytest.raises(OracleError, match="never sent") as raised:
                await call(Transaction(3, start, [], [b"queued"]))
            took = time.monotonic() - began
            assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
            assert took < HELD_BATCH_S / 2, f"took {took:.2f} s, past the held batch"
            assert batcher.batches == 2
            client.timeout = 60
            decided = await asyncio.wait_for(asyncio.gather(*in_slots), 60)
            if how == "commit_many":
                decided = [results[0] for results in decided]
            assert all(isinstance(outcome, Committed) for outcome in decided)
            assert await client.transaction_status(3) is None

    asyncio.run(scenario())
