"""Several real ``hlc-oracle serve`` nodes on one etcd, and what the cluster tests check.

    with OracleCluster(tmp_path, etcd.endpoint, size=3) as cluster:   # started, a leader elected
        leader = cluster.wait_for_leader()                              # an OracleProcess
        client = leader_client(cluster.targets)                         # the library, all targets
        with calls_under_load(cluster.targets) as calls:                # load threads, every call
            ...                                                         # logged
        calls.check()
    # every node stopped by pid

:func:`leader_client` is the client library's :class:`~hlc_oracle.client.OracleClient` given every
node (it follows a follower's redirect at once and moves on from an unreachable node).
:class:`LeaderClient` does the same over plain gRPC and protobuf messages, for the commit tests,
which compare ``CommitResult`` messages byte for byte with ``GetTransactionStatus`` answers and
send a ``pb.Transaction`` again unchanged when its leader died under it.

:class:`CallLog` records every successful call of the load threads (wall and monotonic times before
the call, after it, the range it got) and has the fault suite's checker
(:mod:`tests.support.history`) judge them: no timestamp twice, real-time order across threads
and nodes, and the HLC bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import grpc
from hlc_oracle import Timestamp, TimestampRange
from hlc_oracle.client import OracleClient, OracleStatus
from hlc_oracle.cluster.etcd import EtcdClient, KeyValue
from hlc_oracle.cluster.node import key_prefix
from hlc_oracle.local_cluster import free_port
from hlc_oracle.proto import LEADER_METADATA_KEY
from hlc_oracle.proto import oracle_pb2 as pb

from tests.support.history import DEFAULT_MAX_OFFSET_US, History, Instant, Operation, check
from tests.support.oracle_process import OracleProcess
from tests.support.started_fixture import StartedFixture

#: Answers about the request itself, the same from every node: never tried again.
FINAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


class OracleCluster(StartedFixture):
    """``size`` nodes with node ids 1..size, the given etcd endpoints and a lease TTL;
    ``node_env`` adds environment variables to some nodes by node id (e.g.
    :func:`~tests.support.oracle_process.skewed_clock_env` for a node whose clock is off)."""

    def __init__(
        self,
        directory: Path,
        etcd_endpoints: str,
        size: int = 3,
        lease_ttl_s: int = 1,
        extra_args: tuple[str, ...] = (),
        node_env: Mapping[int, Mapping[str, str]] | None = None,
    ) -> None:
        # Fixed ports (the last --listen wins over OracleProcess's port 0): a restarted node is
        # found where it was, as in a real deployment.
        self.etcd_endpoints = etcd_endpoints
        self.lease_ttl_s = lease_ttl_s
        self.extra_args = extra_args
        addresses = [f"127.0.0.1:{free_port()}" for _ in range(size)]
        self.nodes = [
            OracleProcess(
                directory / f"node{index}",
                *self.node_args(index, address),
                env=dict((node_env or {}).get(index, {})) or None,
            )
            for index, address in enumerate(addresses, start=1)
        ]

    def node_args(self, node_id: int, address: str) -> list[str]:
        return [
            "--listen", address,
            "--advertise", self.advertised(node_id, address),
            "--etcd-endpoints", self.etcd_endpoints_of(node_id),
            "--node-id", str(node_id),
            "--set", f"cluster.lease_ttl_s={self.lease_ttl_s}",
            "--shutdown-grace", "2",
            *self.extra_args,
        ]  # fmt: skip

    # Hooks for a cluster whose nodes reach etcd and each other through proxies
    # (tests/support/nemesis.py): each node's etcd endpoints, and the address it advertises.
    def etcd_endpoints_of(self, node_id: int) -> str:
        return self.etcd_endpoints

    def advertised(self, node_id: int, address: str) -> str:
        return address

    @property
    def targets(self) -> list[str]:
        return [node.target for node in self.nodes]

    def start(self) -> Self:
        for node in self.nodes:
            node.start()
        self.wait_for_leader()
        return self

    def statuses(self) -> dict[int, OracleStatus]:
        """The status of every running node, by node id (unreachable nodes left out)."""
        found: dict[int, OracleStatus] = {}
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            with contextlib.suppress(Exception), OracleClient(node.target, timeout=1) as client:
                status = client.status()
                found[status.node_id] = status
        return found

    def wait_for_leader(
        self, timeout_s: float = 20.0, other_than: int | None = None, after_epoch: int = 0
    ) -> OracleProcess:
        """The node that reports itself leader and serving (not ``other_than``'s node id), in an
        epoch above ``after_epoch``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node_id, status in self.statuses().items():
                if (
                    status.role == "leader"
                    and status.serving
                    and node_id != other_than
                    and status.epoch > after_epoch
                ):
                    return self.nodes[node_id - 1]
            time.sleep(0.05)
        raise AssertionError(f"no serving leader within {timeout_s} s: {self.statuses()}")

    def wait_for_followers_connected(self, leader: OracleProcess, timeout_s: float = 10.0) -> None:
        """Waits until every other running node holds its liveness connection to ``leader``
        (``hlc_oracle_cluster_leader_connected`` 1; the nodes need ``--metrics-port 0``): from
        then on they depose it at once if its process dies."""
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            if node is leader or node.process is None or node.process.poll() is not None:
                continue
            while metric_value(fetch_metrics(node), "hlc_oracle_cluster_leader_connected") != 1:
                assert time.monotonic() < deadline, f"{node.target} not connected to the leader"
                time.sleep(0.05)

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def fetch_metrics(node: OracleProcess) -> str:
    url = f"http://127.0.0.1:{node.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


def metric_value(metrics: str, name: str) -> float:
    return next(float(line.split()[1]) for line in metrics.splitlines() if line.startswith(name))


def _etcd_key(key: str) -> bytes:
    return f"{key_prefix('hlc-oracle')}{key}".encode()


def read_etcd_key(endpoint: str, key: str) -> KeyValue | None:
    """``key`` (under the default cluster's prefix) as etcd holds it now, or ``None``."""

    async def read() -> KeyValue | None:
        client = EtcdClient([endpoint])
        try:
            kv, _ = await client.get(_etcd_key(key))
            return kv
        finally:
            await client.close()

    return asyncio.run(read())


def write_etcd_key(endpoint: str, key: str, value: bytes | None) -> None:
    """What an operator's ``etcdctl put`` (``value``) or ``etcdctl del`` (``None``) of ``key``
    (under the default cluster's prefix) does: a plain write, compared on nothing."""

    async def write() -> None:
        client = EtcdClient([endpoint])
        try:
            if value is None:
                await client.delete(_etcd_key(key))
            else:
                await client.put(_etcd_key(key), value)
        finally:
            await client.close()

    asyncio.run(write())


def lease_seconds_left(endpoint: str, lease_id: int) -> int:
    """What etcd's LeaseTimeToLive says of ``lease_id``: seconds left, -1 when it is gone."""

    async def read() -> int:
        client = EtcdClient([endpoint])
        try:
            return await client.time_to_live(lease_id)
        finally:
            await client.close()

    return asyncio.run(read())


class LeaderClient:
    """Timestamps from whichever node leads, over plain gRPC (see the module docstring)."""

    def __init__(self, targets: list[str], call_timeout_s: float = 1.0) -> None:
        self.targets = list(targets)
        self.call_timeout_s = call_timeout_s
        self._channels: dict[str, grpc.Channel] = {}
        self._current = 0
        self._lock = threading.Lock()

    def _stub(self, target: str, method: str, response_type: Any) -> Any:
        channel = self._channels.get(target)
        if channel is None:
            # Reconnect to a restarted node within tens of milliseconds (gRPC's default backoff
            # starts at 1 s): the next leader may be the node that came back last.
            channel = self._channels[target] = grpc.insecure_channel(
                target,
                options=[
                    ("grpc.initial_reconnect_backoff_ms", 20),
                    ("grpc.min_reconnect_backoff_ms", 20),
                    ("grpc.max_reconnect_backoff_ms", 200),
                ],
            )
        return channel.unary_unary(
            method,
            request_serializer=lambda request: request.SerializeToString(),
            response_deserializer=response_type.FromString,
        )

    def get_timestamps(self, count: int, give_up_after_s: float = 10.0) -> TimestampRange:
        reply, _ = self.call(
            "/hlc_oracle.v1.TimestampOracle/GetTimestamps",
            pb.GetTimestampsRequest(count=count),
            pb.GetTimestampsResponse,
            give_up_after_s,
        )
        first = reply.first
        return TimestampRange(Timestamp(first.physical, first.logical, first.node), count)

    def commit(self, transaction: Any, give_up_after_s: float = 10.0) -> Any:
        """``Commit`` of a ``pb.Transaction`` on the leader: its ``pb.CommitResult``. A call the
        leader died under is sent again (the same id and contents) to the next one."""
        reply, _ = self.call(
            "/hlc_oracle.v1.Transactions/Commit",
            pb.CommitRequest(transaction=transaction),
            pb.CommitResult,
            give_up_after_s,
        )
        return reply

    def transaction_status(self, txn_id: int, give_up_after_s: float = 10.0) -> Any:
        reply, _ = self.call(
            "/hlc_oracle.v1.Transactions/GetTransactionStatus",
            pb.TransactionStatusRequest(txn_id=txn_id),
            pb.TransactionStatusResponse,
            give_up_after_s,
        )
        return reply

    def call(
        self, method: str, request: Any, response_type: Any, give_up_after_s: float = 10.0
    ) -> tuple[Any, int]:
        """The reply of ``method`` from the leader, and the wall clock (microseconds) when the
        attempt that got it was sent; a failed call is tried again (a redirect at once, else on
        the next target) until ``give_up_after_s``, unless its answer is final (FINAL_CODES)."""
        deadline = time.monotonic() + give_up_after_s
        with self._lock:
            target = self.targets[self._current]
        while True:
            sent_us = time.time_ns() // 1000
            try:
                reply = self._stub(target, method, response_type)(
                    request, timeout=self.call_timeout_s
                )
                with self._lock:
                    self._current = self.targets.index(target) if target in self.targets else 0
                return reply, sent_us
            except grpc.RpcError as err:
                if time.monotonic() > deadline or err.code() in FINAL_CODES:  # type: ignore[attr-defined]
                    raise
                redirect = dict(err.trailing_metadata() or ()).get(LEADER_METADATA_KEY)  # type: ignore[attr-defined]
                if redirect and redirect != target:
                    target = redirect
                    continue
                index = self.targets.index(target) if target in self.targets else -1
                target = self.targets[(index + 1) % len(self.targets)]
                if (index + 1) % len(self.targets) == 0:
                    time.sleep(0.005)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


def get_timestamps_directly(
    target: str, timeout: float = 10.0
) -> pb.GetTimestampsResponse | grpc.RpcError:
    """One ``GetTimestamps(1)`` on ``target`` over plain gRPC (no retries, no redirects): its
    answer, or the error it failed with."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            "/hlc_oracle.v1.TimestampOracle/GetTimestamps",
            request_serializer=pb.GetTimestampsRequest.SerializeToString,
            response_deserializer=pb.GetTimestampsResponse.FromString,
        )
        try:
            return call(pb.GetTimestampsRequest(count=1), timeout=timeout)  # type: ignore[no-any-return]
        except grpc.RpcError as err:
            return err


def leader_client(targets: list[str]) -> OracleClient:
    """The library's client given every node, with its defaults (for several targets, retries
    until the call's deadline: :meth:`~hlc_oracle.client.RetryPolicy.until_deadline`); the 10 s
    timeout outlasts any failover these tests cause."""
    return OracleClient(targets, timeout=10.0)


@dataclass(frozen=True)
class Call:
    """One successful call: the wall clock (microseconds) when it was made and when it returned,
    monotonic ns before the call (with its retries) and after it, and the range it returned."""

    wall_sent_us: int
    wall_after_us: int
    before_ns: int
    after_ns: int
    first: Timestamp
    last: Timestamp


class CallLog:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def record(self, client: OracleClient, count: int) -> None:
        sent_us = time.time_ns() // 1000
        before = time.monotonic_ns()
        got = client.get_timestamps(count)
        after = time.monotonic_ns()
        after_us = time.time_ns() // 1000
        with self._lock:
            self.calls.append(Call(sent_us, after_us, before, after, got.first, got.last))

    def wait_for_more_than(self, count: int, timeout_s: float = 10.0) -> None:
        """Waits until more than ``count`` calls have succeeded: the service resumed. Bounded by
        ``timeout_s``, not a fixed pause: on a loaded machine the first call after a failover
        can take longer than any short sleep (how long is the failover benchmark's figure)."""
        deadline = time.monotonic() + timeout_s
        while len(self.calls) <= count:
            assert time.monotonic() < deadline, f"no call succeeded within {timeout_s} s"
            time.sleep(0.02)

    def largest_gap_ms(self, from_ns: int) -> float:
        """The longest time between two consecutive successful calls ending at or after
        ``from_ns`` (monotonic): around a failover, from the last success before to the first
        success after."""
        ends = sorted(call.after_ns for call in self.calls if call.after_ns >= from_ns)
        return max(((b - a) / 1e6 for a, b in itertools.pairwise(ends)), default=0.0)

    def check(self, max_offset_us: int = DEFAULT_MAX_OFFSET_US) -> None:
        """The calls judged by the fault suite's checker (:mod:`tests.support.history`):
        no timestamp twice, real-time order across threads and nodes, and none more than
        max_offset/2 ahead of the host's clock when its call returned."""
        history = History()
        for call in self.calls:
            history.add(
                Operation(
                    0,
                    "timestamps",
                    Instant(call.before_ns, call.wall_sent_us),
                    Instant(call.after_ns, call.wall_after_us),
                    call.first,
                    call.last,
                )
            )
        check(history, max_offset_us).assert_valid()


@contextlib.contextmanager
def load(client: OracleClient, log: CallLog, threads: int = 3, count: int = 4) -> Iterator[None]:
    """``threads`` threads calling ``client`` back to back until the block ends."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        while not stop.is_set():
            try:
                log.record(client, count)
            except BaseException as err:
                errors.append(err)
                return

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert not errors, errors


@contextlib.contextmanager
def calls_under_load(targets: list[str], threads: int = 3, count: int = 4) -> Iterator[CallLog]:
    """:func:`load` through one :func:`leader_client` given ``targets``: ``threads`` threads, each
    taking ``count`` timestamps a call back to back until the block ends, every call in the
    :class:`CallLog` it yields (``check()`` it after). The client is closed at the end."""
    client = leader_client(targets)
    calls = CallLog()
    try:
        with load(client, calls, threads=threads, count=count):
            yield calls
    finally:
        client.close()
