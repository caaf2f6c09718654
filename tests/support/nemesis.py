"""The cluster fault suite's cluster, its faults (the nemesis, in Jepsen's words) and the load that
runs while they happen; the checker is :mod:`tests.support.history`.

    with FaultCluster(tmp_path, etcd_proxies=True) as cluster, Load(cluster.targets) as load:
        load.wait_for_success_after(Instant.now())
        leader = cluster.leader_id()
        with cluster.cut_off_from_etcd(leader):                  # a fault, healed on the way out
            cluster.wait_for_leader(other_than=leader)
        load.wait_for_success_after(Instant.now())
    read_back(cluster.targets, load.history)                     # every commit's status
    check(load.history).assert_valid()

:class:`FaultCluster` is real etcd (one member or three, :mod:`tests.support.etcd_process`) and
up to three real nodes (:class:`~tests.support.oracle_cluster.OracleCluster`), with what the faults
need put in place at the start:

- ``etcd_proxies``: each node reaches each etcd member through a :class:`TcpProxy` of its own, so
  that one node can be cut off from etcd silently (:meth:`FaultCluster.cut_off_from_etcd`);
- ``peer_proxies``: each node advertises a proxy in front of its port, so that nodes reach each
  other through it and can be partitioned from each other while clients, whose targets are the
  nodes' own ports, still reach every node (:meth:`FaultCluster.partitioned_from_peers`;
  a client that follows a redirect goes through the proxy too, which the partition lets through);
- ``clock_offsets``: a node's wall clock set ahead or behind, ``{node_id: "+2s"}``
  (:func:`~tests.support.oracle_process.skewed_clock_env`: libfaketime, the monotonic clock
  left true).

The other faults need nothing in place: kill -9, SIGTERM and SIGSTOP of a node
(:meth:`FaultCluster.paused`), and the loss of an etcd member
(:meth:`FaultCluster.etcd_member_lost`).

:class:`Load` is a few client tasks on an event loop of their own, each with its own
:class:`~hlc_oracle.client.AsyncOracleClient` given every node, taking timestamps and committing
small transactions (a key or two of a few dozen, so some conflict) back to back, recording every
call in a :class:`History`; bounded in operations and in time, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self, TypeVar

from hlc_oracle import Aborted, Committed, HlcError, TimestampRange, Transaction
from hlc_oracle.client import AsyncOracleClient

from tests.support.etcd_process import EtcdCluster, EtcdMember
from tests.support.history import CheckResult, History, Instant, Kind, Operation, check
from tests.support.oracle_cluster import OracleCluster
from tests.support.oracle_process import OracleProcess, skewed_clock_env
from tests.support.started_fixture import StartedFixture
from tests.support.tcp_proxy import TcpProxy

#: Long enough for any failover these faults cause, short enough to bound a stuck run.
CALL_TIMEOUT_S = 10.0
T = TypeVar("T")


class _Nodes(OracleCluster):
    """The nodes of a :class:`FaultCluster`, each with its own etcd endpoints, advertised
    address and clock offset."""

    def __init__(self, owner: FaultCluster, directory: Path, size: int, lease_ttl_s: int) -> None:
        self.owner = owner
        node_env = {
            node_id: skewed_clock_env(offset) for node_id, offset in owner.clock_offsets.items()
        }
        super().__init__(directory, "", size=size, lease_ttl_s=lease_ttl_s, node_env=node_env)

    def etcd_endpoints_of(self, node_id: int) -> str:
        return self.owner.etcd_endpoints_of(node_id)

    def advertised(self, node_id: int, address: str) -> str:
        return self.owner.advertised(node_id, address)


class FaultCluster(StartedFixture):
    """Real etcd and ``size`` real nodes (ids 1..size), ready for faults (module docstring)."""

    def __init__(
        self,
        directory: Path,
        size: int = 3,
        etcd_members: int = 1,
        lease_ttl_s: int = 1,
        etcd_proxies: bool = False,
        peer_proxies: bool = False,
        clock_offsets: Mapping[int, str] | None = None,
    ) -> None:
        if etcd_members not in (1, 3):
            raise ValueError(f"etcd_members must be 1 or 3, got {etcd_members}")
        self.directory = directory
        self.size = size
        self.lease_ttl_s = lease_ttl_s
        self.use_etcd_proxies = etcd_proxies
        self.use_peer_proxies = peer_proxies
        self.clock_offsets = dict(clock_offsets or {})
        self.etcd: EtcdMember | EtcdCluster = (
            EtcdMember(directory / "etcd")
            if etcd_members == 1
            else EtcdCluster(directory / "etcd", size=etcd_members)
        )
        #: Per node id: its proxies to the etcd members, and the proxy in front of its port.
        self.etcd_proxies: dict[int, list[TcpProxy]] = {}
        self.peer_proxies: dict[int, TcpProxy] = {}
        self.nodes: _Nodes | None = None

    # -- set-up ---------------------------------------------------------------------------------

    @property
    def etcd_endpoints(self) -> list[str]:
        if isinstance(self.etcd, EtcdMember):
            return [self.etcd.endpoint]
        return self.etcd.endpoints

    def etcd_endpoints_of(self, node_id: int) -> str:
        if not self.use_etcd_proxies:
            return ",".join(self.etcd_endpoints)
        proxies = [TcpProxy(endpoint).start() for endpoint in self.etcd_endpoints]
        self.etcd_proxies[node_id] = proxies
        return ",".join(proxy.target for proxy in proxies)

    def advertised(self, node_id: int, address: str) -> str:
        if not self.use_peer_proxies:
            return address
        proxy = self.peer_proxies[node_id] = TcpProxy(address).start()
        return proxy.target

    def start(self) -> Self:
        self.etcd.start()
        self.nodes = _Nodes(self, self.directory / "nodes", self.size, self.lease_ttl_s)
        self.nodes.start()
        return self

    def close(self) -> None:
        try:
            if self.nodes is not None:
                for node in self.nodes.nodes:
                    node.signal(signal.SIGCONT)  # a stopped process does not act on SIGTERM
                self.nodes.close()
        finally:
            proxies = itertools.chain(*self.etcd_proxies.values(), self.peer_proxies.values())
            for proxy in proxies:
                proxy.close()
            self.etcd.close()

    # -- the nodes ------------------------------------------------------------------------------

    @property
    def cluster(self) -> _Nodes:
        assert self.nodes is not None, "not started"
        return self.nodes

    @property
    def targets(self) -> list[str]:
        """What clients are given: every node's own port (never a proxy)."""
        return self.cluster.targets

    def node(self, node_id: int) -> OracleProcess:
        return self.cluster.nodes[node_id - 1]

    def wait_for_leader(
        self, timeout_s: float = 20.0, other_than: int | None = None, after_epoch: int = 0
    ) -> int:
        """The node id of the node that reports itself leader and serving (see
        :meth:`OracleCluster.wait_for_leader`)."""
        leader = self.cluster.wait_for_leader(timeout_s, other_than, after_epoch)
        return self.cluster.nodes.index(leader) + 1

    def epoch(self) -> int:
        """The highest epoch any running node reports."""
        return max((status.epoch for status in self.cluster.statuses().values()), default=0)

    def pids(self, node_ids: list[int]) -> list[int]:
        return [
            process.pid
            for node_id in node_ids
            if (process := self.node(node_id).process) is not None
        ]

    # -- faults ---------------------------------------------------------------------------------

    def kill(self, node_id: int) -> None:
        """kill -9 (start it again with ``node(node_id).start()``)."""
        self.node(node_id).kill()

    def terminate(self, node_id: int) -> None:
        """SIGTERM, and wait for the graceful stop (resignation) to finish."""
        assert self.node(node_id).stop() == 0

    @contextlib.contextmanager
    def paused(self, node_id: int) -> Iterator[None]:
        """SIGSTOP for the block, SIGCONT after."""
        node = self.node(node_id)
        node.signal(signal.SIGSTOP)
        try:
            yield
        finally:
            node.signal(signal.SIGCONT)

    @contextlib.contextmanager
    def cut_off_from_etcd(self, node_id: int) -> Iterator[None]:
        """A silent partition between the node and every etcd member for the block."""
        proxies = self.etcd_proxies.get(node_id)
        assert proxies, "the cluster was started without etcd_proxies"
        for proxy in proxies:
            proxy.partition()
        try:
            yield
        finally:
            for proxy in proxies:
                proxy.heal()

    @contextlib.contextmanager
    def partitioned_from_peers(self, node_id: int) -> Iterator[None]:
        """A silent partition between the node and the other nodes, both ways, for the block;
        clients still reach every node."""
        assert self.peer_proxies, "the cluster was started without peer_proxies"
        others = [other for other in range(1, self.size + 1) if other != node_id]
        self.peer_proxies[node_id].partition(from_pids=self.pids(others))
        for other in others:
            self.peer_proxies[other].partition(from_pids=self.pids([node_id]))
        try:
            yield
        finally:
            for proxy in self.peer_proxies.values():
                proxy.heal()

    @contextlib.contextmanager
    def etcd_member_lost(self, raft_leader: bool = True) -> Iterator[EtcdMember]:
        """kill -9 of one member of a three-member etcd (its raft leader, or a follower) for the
        block; restarted after (it rejoins)."""
        assert isinstance(self.etcd, EtcdCluster), "the cluster was started with one etcd member"
        leader = self.etcd.raft_leader()
        member = (
            leader
            if raft_leader
            else next(m for m in self.etcd.members if m is not leader and m.running())
        )
        member.kill()
        try:
            yield member
        finally:
            member.restart()


class Load(StartedFixture):
    """``tasks`` client tasks taking timestamps and committing until the block ends, or
    ``max_operations`` calls, or ``max_seconds``; every call recorded in :attr:`history`."""

    def __init__(
        self,
        targets: list[str],
        tasks: int = 3,
        count: int = 4,
        keys: int = 40,
        max_operations: int = 20_000,
        max_seconds: float = 120.0,
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self.targets = list(targets)
        self.tasks = tasks
        self.count = count
        self.keys = keys
        self.max_operations = max_operations
        self.max_seconds = max_seconds
        self.timeout_s = timeout_s
        self.history = History()
        #: Exceptions no client call should raise (not an ``OracleError``): a bug.
        self.crashes: list[BaseException] = []
        #: Every transaction a task sent, by id (for :meth:`resubmit`).
        self.transactions: dict[int, Transaction] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="fault-load", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 30)
            assert not self._thread.is_alive(), "the load did not stop"
        assert not self.crashes, self.crashes[:3]

    async def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        budget = iter(range(self.max_operations))
        processes = range(1, self.tasks + 1)
        await asyncio.gather(*(self._task(process, deadline, budget) for process in processes))

    async def _task(self, process: int, deadline: float, budget: Iterator[int]) -> None:
        rng = random.Random(process)
        client = AsyncOracleClient(self.targets, timeout=self.timeout_s)
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                if next(budget, None) is None:
                    return
                got = await self._call(process, "timestamps", client.get_timestamps(self.count))
                if got is None:
                    await asyncio.sleep(0.01)  # the cluster is down: do not spin
                    continue
                keys = [f"k{rng.randrange(self.keys)}".encode() for _ in range(2)]
                txn = Transaction(next(self._ids), got.first, keys[:1], keys[1:])
                self.transactions[txn.txn_id] = txn
                await self._call(process, "commit", client.commit(txn), txn.txn_id)
        finally:
            await client.close()

    async def _call(
        self, process: int, kind: Kind, call: Awaitable[T], txn_id: int | None = None
    ) -> T | None:
        invoke = Instant.now()
        try:
            result = await call
        except Exception as err:
            complete = Instant.now()
            self.history.add(Operation.failed(process, kind, invoke, complete, err, txn_id))
            if not isinstance(err, HlcError):
                self.crashes.append(err)
            return None
        complete = Instant.now()
        if isinstance(result, TimestampRange):
            self.history.add(Operation.timestamps(process, invoke, complete, result))
        elif isinstance(result, Committed | Aborted):
            self.history.add(Operation.commit(process, invoke, complete, result))
        return result

    def resubmit(self, decided_sample: int = 50) -> None:
        """After the run: sends again, with the same id and contents, every transaction whose
        commit failed and ``decided_sample`` of those acknowledged, each recorded as a commit of
        process 0. A decided id must answer its first decision (the checker's
        ``decided-twice``); an undecided one is decided now."""
        assert self._thread is None or not self._thread.is_alive(), "the load still runs"
        commits = [op for op in self.history.operations if op.kind == "commit" and op.txn_id]
        failed = sorted({op.txn_id for op in commits if not op.ok and op.txn_id})
        decided = sorted(op.txn_id for op in commits if op.decision is not None and op.txn_id)
        chosen = failed + random.Random(7).sample(decided, min(decided_sample, len(decided)))

        async def run() -> None:
            async with AsyncOracleClient(self.targets, timeout=self.timeout_s) as client:
                calls = (
                    self._call(0, "commit", client.commit(self.transactions[txn_id]), txn_id)
                    for txn_id in chosen
                )
                await asyncio.gather(*calls)

        asyncio.run(run())
        assert not self.crashes, self.crashes[:3]

    def successes_after(self, instant: Instant, kind: Kind) -> int:
        return sum(
            op.ok and op.kind == kind and op.invoke.monotonic_ns > instant.monotonic_ns
            for op in list(self.history.operations)
        )

    def wait_for_success_after(self, instant: Instant, timeout_s: float = 30.0) -> None:
        """Waits until a timestamp call and a commit invoked after ``instant`` have succeeded:
        the cluster serves (again). Bounded: on a loaded machine a failover can take seconds."""
        deadline = time.monotonic() + timeout_s
        while not (
            self.successes_after(instant, "timestamps") and self.successes_after(instant, "commit")
        ):
            assert time.monotonic() < deadline, (
                f"nothing succeeded within {timeout_s} s after the fault: "
                f"{[op.error for op in self.history.operations[-5:]]}"
            )
            assert self._thread is not None and self._thread.is_alive(), "the load ended"
            time.sleep(0.02)


def read_back(targets: list[str], history: History, timeout_s: float = 30.0) -> None:
    """Reads the status of every transaction ``history`` names into it (after the run, once the
    cluster serves again)."""

    async def run() -> None:
        async with AsyncOracleClient(targets, timeout=timeout_s) as client:
            ids = sorted(history.commit_ids())
            decisions = await asyncio.gather(*(client.transaction_status(i) for i in ids))
            for txn_id, decision in zip(ids, decisions, strict=True):
                history.read_back(txn_id, decision)

    asyncio.run(run())


# -- scenarios: one definition each, run by the tests (a round or a few) and the benchmark ------

#: How long a fault that needs no failover is held while the load runs through it.
HOLD_S = 1.5
#: Figures of a round start this long before its fault: the last success before it is in view.
BEFORE_FAULT_NS = 200_000_000

Round = Callable[[FaultCluster, Load], None]


@dataclass(frozen=True)
class Scenario:
    """A fault scenario: what its cluster needs, and one round of it (the fault, the wait for
    the cluster to serve again, the fault healed or the lost node restarted)."""

    name: str
    round: Round
    etcd_members: int = 1
    etcd_proxies: bool = False
    peer_proxies: bool = False
    clock_offsets: Mapping[int, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """What a run of a scenario gave: the checker's verdict over the whole history, and each
    round's gap (milliseconds without a successful call, from just before the fault to the
    first success after it), and how many rounds changed the leader's term."""

    result: CheckResult
    gaps_ms: list[float]
    #: Rounds that ended under a new leader's term (a higher epoch than before the fault).
    new_terms: int = 0


def run_scenario(scenario: Scenario, directory: Path, rounds: int) -> Outcome:
    """``rounds`` rounds of ``scenario`` under :class:`Load`; after them, failed commits and a
    sample of the decided ones sent again (:meth:`Load.resubmit`), every commit read back."""
    gaps: list[float] = []
    new_terms = 0
    with FaultCluster(
        directory,
        etcd_members=scenario.etcd_members,
        etcd_proxies=scenario.etcd_proxies,
        peer_proxies=scenario.peer_proxies,
        clock_offsets=scenario.clock_offsets,
    ) as cluster:
        try:
            with Load(cluster.targets) as load:
                load.wait_for_success_after(Instant.now())
                for _ in range(rounds):
                    epoch = cluster.epoch()
                    before = Instant.now()
                    scenario.round(cluster, load)
                    load.wait_for_success_after(Instant.now())
                    start = Instant(before.monotonic_ns - BEFORE_FAULT_NS, before.wall_us)
                    gaps.append(load.history.largest_gap_ms(start, Instant.now()))
                    new_terms += cluster.epoch() > epoch
            load.resubmit()
            read_back(cluster.targets, load.history)
        except BaseException:
            print_node_logs(cluster)  # pytest shows it beside the failure
            raise
        outcome = Outcome(check(load.history), gaps, new_terms)
        if outcome.result.anomalies:
            print_node_logs(cluster)  # beside the checker's verdict, when the caller asserts it
    return outcome


#: Log records of each node shown when a scenario fails (its run dir keeps the whole log).
LOG_TAIL = 25


def print_node_logs(cluster: FaultCluster) -> None:
    """The last records of each node's log, but the routine ones (not serving, peers)."""
    for node_id in range(1, cluster.size + 1):
        node = cluster.node(node_id)
        records = [
            line
            for line in node.log_text().splitlines()
            if '"not serving"' not in line and '"level": "debug"' not in line
        ]
        print(f"--- node {node_id} ({node.log_path}):", *records[-LOG_TAIL:], sep="\n")


def kill_the_leader(cluster: FaultCluster, load: Load) -> None:
    leader = cluster.wait_for_leader()
    cluster.kill(leader)
    cluster.wait_for_leader(other_than=leader)
    cluster.node(leader).start()


def stop_the_leader(cluster: FaultCluster, load: Load) -> None:
    leader = cluster.wait_for_leader()
    cluster.terminate(leader)
    cluster.wait_for_leader(other_than=leader)
    cluster.node(leader).start()


def pause_the_leader(held_s: float) -> Round:
    """SIGSTOP past the lease, held ``held_s`` after a successor serves, then SIGCONT. Commits
    already sent to the paused leader wait at its socket meanwhile (the client moves on only
    from a node that refuses or fails, not from one that says nothing); timestamp calls it
    leaves unanswered for 0.5 s also go to the other nodes, and the successor answers them."""

    def pause(cluster: FaultCluster, load: Load) -> None:
        leader = cluster.wait_for_leader()
        with cluster.paused(leader):
            cluster.wait_for_leader(other_than=leader)
            time.sleep(held_s)

    return pause


def cut_the_leader_off_from_etcd(cluster: FaultCluster, load: Load) -> None:
    """It stops serving by its own lease deadline; a follower wins once etcd expires the lease;
    healed, the old leader's late writes are fenced out."""
    leader = cluster.wait_for_leader()
    with cluster.cut_off_from_etcd(leader):
        cluster.wait_for_leader(other_than=leader)
        time.sleep(0.5)


def cut_a_follower_off_from_etcd(cluster: FaultCluster, load: Load) -> None:
    """Harmless: the leader keeps its term and serves throughout (``new_terms`` says whether
    it did: on an overloaded host a leader may lose its lease for reasons of its own)."""
    leader = cluster.wait_for_leader()
    follower = next(node for node in range(1, cluster.size + 1) if node != leader)
    with cluster.cut_off_from_etcd(follower):
        time.sleep(HOLD_S)
        load.wait_for_success_after(Instant.now())


def partition_the_leader_from_its_peers(cluster: FaultCluster, load: Load) -> None:
    """Followers lose their connection to the leader without a refusal: no proof of death, no
    deposition; etcd still sees the leader, which keeps its term and serves throughout."""
    leader = cluster.wait_for_leader()
    with cluster.partitioned_from_peers(leader):
        time.sleep(HOLD_S)
        load.wait_for_success_after(Instant.now())


def kill_the_leader_behind_a_partition(cluster: FaultCluster, load: Load) -> None:
    """Its death reaches no follower as a refusal: the next leader waits for the lease."""
    leader = cluster.wait_for_leader()
    with cluster.partitioned_from_peers(leader):
        cluster.kill(leader)
        cluster.wait_for_leader(other_than=leader)
    cluster.node(leader).start()


def lose_an_etcd_member(raft_leader: bool) -> Round:
    def lose(cluster: FaultCluster, load: Load) -> None:
        with cluster.etcd_member_lost(raft_leader):
            time.sleep(HOLD_S)
            load.wait_for_success_after(Instant.now())

    return lose


def lose_an_etcd_member_and_the_leader(cluster: FaultCluster, load: Load) -> None:
    leader = cluster.wait_for_leader()
    with cluster.etcd_member_lost():
        cluster.kill(leader)
        cluster.wait_for_leader(other_than=leader)
    cluster.node(leader).start()


def cut_the_leader_off_then_kill_its_successor(cluster: FaultCluster, load: Load) -> None:
    """The cut-off leader still holds its window when the next one dies: the third must start
    above both."""
    first = cluster.wait_for_leader()
    with cluster.cut_off_from_etcd(first):
        second = cluster.wait_for_leader(other_than=first)
        cluster.kill(second)
        third = cluster.wait_for_leader(other_than=second)
        assert third != first, "a leader cut off from etcd serves"
    cluster.node(second).start()


#: The node whose wall clock is off: started last, so the first leader keeps true time.
SKEWED = 3

SCENARIOS = {
    scenario.name: scenario
    for scenario in [
        Scenario("kill -9 of the leader", kill_the_leader),
        Scenario("SIGTERM of the leader", stop_the_leader),
        Scenario("leader paused past its lease", pause_the_leader(0.3)),
        Scenario("leader paused 3 s past its successor", pause_the_leader(3.0)),
        Scenario("leader cut off from etcd", cut_the_leader_off_from_etcd, etcd_proxies=True),
        Scenario("follower cut off from etcd", cut_a_follower_off_from_etcd, etcd_proxies=True),
        Scenario(
            "leader partitioned from its peers",
            partition_the_leader_from_its_peers,
            peer_proxies=True,
        ),
        Scenario(
            "leader killed behind a partition",
            kill_the_leader_behind_a_partition,
            peer_proxies=True,
        ),
        Scenario("etcd raft leader lost", lose_an_etcd_member(True), etcd_members=3),
        Scenario("etcd follower lost", lose_an_etcd_member(False), etcd_members=3),
        Scenario(
            "etcd member and the leader lost",
            lose_an_etcd_member_and_the_leader,
            etcd_members=3,
        ),
        Scenario(
            "leader cut off from etcd, successor killed",
            cut_the_leader_off_then_kill_its_successor,
            etcd_proxies=True,
        ),
        *(
            Scenario(f"one clock 2 s {way}, leaders killed", kill_the_leader, clock_offsets=offset)
            for way, offset in (("ahead", {SKEWED: "+2s"}), ("behind", {SKEWED: "-2s"}))
        ),
    ]
}
