"""Clock offsets between the nodes of a cluster, after CockroachDB's RemoteClockMonitor.

Every clustered node measures, every ``interval_s``, its clock's offset to each peer (the other
live nodes, read from the lease-bound ``members/<node-id>`` keys in etcd) with one small RPC,
``GetPeerClock``, that answers the peer's physical clock::

    offset = peer time + RTT/2 - local time at the answer        error bound: RTT/2

(the sign convention of the NTP code: ``peer - local``; positive means this node's clock is
behind). The peer read its clock somewhere inside the round trip, so the true offset lies within
``offset +- RTT/2``. Each peer's recent samples (the last ``samples_kept``, none older than the
max age) are combined by the one rule of :mod:`.combine` (Marzullo, the median of the
truechimers), those with a bound of at most ``max_bound_us`` only, when there are any.

The verdict (:func:`judge_peers`), over the peers that gave an estimate (the *reachable* ones):

- a peer is *far* when, on the evidence, it is more than the threshold ``T`` away:
  ``|offset| - bound > T`` (whatever the bound); *near* when not far and its bound is at most
  ``max_bound_us``; otherwise (a slow round trip whose interval straddles ``T``) the peer is
  inconclusive and counts as not reachable;
- ``far``: far from a majority of the reachable peers (``2 * far > reachable``). The node does not
  campaign, and a leader resigns; its refusals and status name the offsets;
- ``ok``: near at least half of them;
- ``no-majority``: fewer than two reachable peers (a cluster of two, or every other node out of
  reach): one peer against this node is a tie that says nothing of which clock is wrong. The
  peers check then holds nothing back and the NTP guard decides alone. A node found ``far``
  stays ``far`` through such a spell (as the NTP guard stays ``unsafe`` while its servers are
  silent): losing its peers, e.g. when the leader dies, is no evidence that its clock recovered.
  Only a majority of at least two reachable peers, or a restart, clears it.

How the two checks combine: they are independent and both must pass. The NTP guard (when NTP
servers are configured) blocks serving past its levels, as it does standalone; the peers check
keeps a node that is far from its peers from campaigning or leading. Neither overrides the other:
a node NTP calls fine but its peers call far does not lead, and a node whose peers agree with it
still refuses to serve while NTP calls it unsafe (the whole cluster may have drifted together,
which peers alone cannot see).

Deriving the threshold (``threshold_us`` unset) from the max offset ``M``, the window ``W`` and
the largest accepted error bound ``b`` (``max_bound_us``, default ``M/50``)::

    T = M/2 - W - 2b        (at least M/20)

Assume more than half of the peers each node reaches keep true time (to within ``d``; with no
outside reference, true time is the time that majority keeps, ``d = 0``). A node that leads is not
far from at least half of its reachable peers; the two sets overlap, so it is not far from one peer
that keeps true time: the measured offset to it is at most ``T + b``, the true one at most ``T +
2b``, and the leader's clock is within ``E = T + 2b + d`` of true time. A leader hands out
timestamps at its clock (plus the logical counter), except right after it takes over: its first
timestamps start at the saved window limit, at most ``W`` past the previous leader's clock when it
saved it, and the previous leader's clock was within ``E`` too. So every timestamp is within ``E + W
= M/2 + d`` of true time: with ``d = 0``, within ``M/2``, which every HLC peer with the same max
offset accepts. At the defaults (``M`` = 500 ms, ``W`` = 200 ms, ``b`` = 10 ms) ``T`` = 30 ms. A
window so large that ``M/2 - W - 2b`` falls under ``M/20`` gets the floor ``T = M/20``; then the
bound is ``M/20 + 2b + W`` instead (shrink the window to restore ``M/2``). A behind clock is the
mirror case: its timestamps trail true time by at most ``E``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hlc_oracle.setting import setting
from hlc_oracle.skew.combine import OffsetEstimate, combine_samples
from hlc_oracle.skew.guard import check_int, check_number

log = logging.getLogger("hlc_oracle.skew.peers")
#: How long :meth:`PeerOffsetMonitor.stop` waits for a cancelled round to close its transport.
STOP_CLEANUP_S = 1.0


class PeersState(enum.StrEnum):
    OK = "ok"
    FAR = "far"
    NO_MAJORITY = "no-majority"
    OFF = "off"


@dataclass
class PeersConfig:
    """The peer-offset monitor's settings: the ``[peers]`` section (clustered nodes only)."""

    enabled: bool = setting(
        True,
        "clustered nodes measure their clock offset to every peer; a node far from a majority "
        "of the peers it reaches does not campaign, and resigns if it leads",
    )
    interval_s: float = setting(1.0, "seconds between two measurements of every peer")
    timeout_s: float = setting(0.5, "seconds to wait for one peer's answer")
    threshold_us: int | None = setting(
        None,
        "offset (microseconds) past which a peer counts as far (unset: max_offset/2 - window - "
        "2 * max_bound_us, at least max_offset/20; see hlc_oracle.skew.peers)",
    )
    max_bound_us: int | None = setting(
        None,
        "largest error bound (RTT/2, microseconds) of a sample that counts (unset: max_offset/50)",
    )
    samples_kept: int = setting(5, "recent samples of each peer that are combined")
    sample_max_age_s: float | None = setting(
        None, "seconds a sample counts (unset: three intervals plus the timeout)"
    )
    ca_file: Path | None = setting(
        None,
        "under TLS: PEM CA bundle that signed the peers' server certificates (unset: "
        "tls.client_ca_file, else the system's CAs)",
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.enabled, bool):
            raise TypeError("enabled must be a bool")
        check_number(self.interval_s, "interval_s", 0.01, 3600)
        check_number(self.timeout_s, "timeout_s", 0.001, 60)
        if self.threshold_us is not None:
            check_int(self.threshold_us, "threshold_us", 1, 86_400_000_000)
        if self.max_bound_us is not None:
            check_int(self.max_bound_us, "max_bound_us", 1, 86_400_000_000)
        check_int(self.samples_kept, "samples_kept", 1, 1000)
        if self.sample_max_age_s is not None:
            check_number(self.sample_max_age_s, "sample_max_age_s", 0.01, 86_400)
        if isinstance(self.ca_file, str):
            self.ca_file = Path(self.ca_file)
        if self.ca_file is not None and not isinstance(self.ca_file, Path):
            raise TypeError(f"ca_file must be a path, got {type(self.ca_file).__name__}")

    @property
    def max_sample_age_s(self) -> float:
        if self.sample_max_age_s is not None:
            return self.sample_max_age_s
        return 3 * self.interval_s + self.timeout_s

    def bound_limit_us(self, max_offset_us: int) -> int:
        return self.max_bound_us if self.max_bound_us is not None else max(1, max_offset_us // 50)

    def threshold_for(self, max_offset_us: int, window_us: int) -> int:
        """``T`` (see the module doc): set, or derived from the max offset and the window."""
        if self.threshold_us is not None:
            return self.threshold_us
        return derive_threshold_us(max_offset_us, window_us, self.bound_limit_us(max_offset_us))


def derive_threshold_us(max_offset_us: int, window_us: int, max_bound_us: int) -> int:
    """``max(M/2 - W - 2b, M/20)``: the largest threshold for which a leader's timestamps stay
    within ``M/2`` of true time (the module doc gives the derivation)."""
    return max(max_offset_us // 2 - window_us - 2 * max_bound_us, max(1, max_offset_us // 20))


@dataclass(frozen=True)
class PeerSample:
    """One measurement of one peer (``server`` names it, as :mod:`.combine` reads it)."""

    server: str
    # peer - local (positive: this node's clock is behind); None when the measurement failed.
    offset_us: int | None
    bound_us: int
    healthy: bool
    wall_s: float
    monotonic_s: float
    detail: str = ""


def measure(
    peer: str, peer_now_us: int, rtt_us: int, local_now_us: int, monotonic_s: float
) -> PeerSample:
    """The sample of one answer: the peer read its clock ``peer_now_us`` within a round trip of
    ``rtt_us`` that ended at ``local_now_us``."""
    bound = max(1, (rtt_us + 1) // 2)
    offset = peer_now_us + rtt_us // 2 - local_now_us
    return PeerSample(peer, offset, bound, True, local_now_us / 1e6, monotonic_s)


def failed_sample(peer: str, detail: str, monotonic_s: float) -> PeerSample:
    return PeerSample(peer, None, 0, False, time.time(), monotonic_s, detail)


@dataclass(frozen=True)
class PeerState:
    """One peer as the monitor last saw it."""

    node_id: int
    address: str
    estimate: OffsetEstimate | None
    # True: far (|offset| - bound > threshold); False: near; None: unreachable or inconclusive.
    far: bool | None
    good_samples: int
    failed_samples: int
    last_error: str


@dataclass(frozen=True)
class PeersVerdict:
    state: PeersState
    message: str
    threshold_us: int
    peers: tuple[PeerState, ...] = ()
    # When ``far``: the median offset (peer - local) of the far peers that made it so.
    offset_us: int | None = None

    @property
    def refuses_leadership(self) -> bool:
        return self.state is PeersState.FAR


def describe_offset(offset_us: int) -> str:
    """``peer - local`` in words about this node: ``2.000130 s ahead``."""
    direction = "ahead of" if offset_us < 0 else "behind"
    return f"{abs(offset_us) / 1e6:.6f} s {direction}"


def judge_peers(
    peers: Sequence[PeerState], threshold_us: int, previous: PeersVerdict | None = None
) -> PeersVerdict:
    """The verdict over ``peers`` (their ``far`` already set against ``threshold_us``). A
    ``previous`` verdict of ``far`` stands while there is no majority: losing peers is no
    evidence of recovery."""
    reachable = [p for p in peers if p.far is not None]
    known = len(peers)
    if len(reachable) < 2:
        figures = ", ".join(_figure(p) for p in reachable) or "none"
        spell = f"{len(reachable)} of {known} peer(s) reachable and measured ({figures})"
        if previous is not None and previous.state is PeersState.FAR:
            assert previous.offset_us is not None
            return PeersVerdict(
                PeersState.FAR,
                f"this node's clock is {describe_offset(previous.offset_us)} its peers as the "
                f"last majority found it, more than the threshold {threshold_us} us; no majority "
                f"now ({spell}), which is no evidence of recovery; it does not campaign or lead",
                threshold_us,
                tuple(peers),
                previous.offset_us,
            )
        return PeersVerdict(
            PeersState.NO_MAJORITY,
            f"no majority: {spell}; a majority needs at least two; the peers check holds nothing "
            "back, the NTP guard decides alone",
            threshold_us,
            tuple(peers),
        )
    far = [p for p in reachable if p.far]
    figures = ", ".join(_figure(p) for p in reachable)
    if 2 * len(far) > len(reachable):
        offsets = [p.estimate.offset_us for p in far if p.estimate is not None]
        median = round(statistics.median(offsets))
        return PeersVerdict(
            PeersState.FAR,
            f"this node's clock is {describe_offset(median)} its peers: more than the threshold "
            f"{threshold_us} us from {len(far)} of {len(reachable)} reachable peers ({figures}); "
            "it does not campaign or lead",
            threshold_us,
            tuple(peers),
            median,
        )
    return PeersVerdict(
        PeersState.OK,
        f"within the threshold {threshold_us} us of {len(reachable) - len(far)} of "
        f"{len(reachable)} reachable peers ({figures})",
        threshold_us,
        tuple(peers),
    )


def _figure(peer: PeerState) -> str:
    assert peer.estimate is not None
    return f"node {peer.node_id} {peer.estimate.offset_us:+d} us +-{peer.estimate.bound_us} us"


def classify(estimate: OffsetEstimate | None, threshold_us: int, max_bound_us: int) -> bool | None:
    """Far (``True``), near (``False``) or neither (``None``: no estimate, or one too uncertain
    to call near)."""
    if estimate is None:
        return None
    if abs(estimate.offset_us) - estimate.bound_us > threshold_us:
        return True
    return False if estimate.bound_us <= max_bound_us else None


# --- the monitor thread ---


class PeerDirectory(Protocol):
    """Who the peers are: ``{node_id: address}`` of the other live nodes (etcd's member keys).
    Built on the monitor's own event loop (:class:`PeerOffsetMonitor`'s ``directory`` factory)."""

    async def peers(self) -> Mapping[int, str]: ...

    async def close(self) -> None: ...


class PeerTransport(Protocol):
    """Asks the peer at an address for its clock: (its node id, its physical clock in us)."""

    def call(self, address: str, timeout_s: float) -> Awaitable[tuple[int, int]]: ...

    async def close(self) -> None: ...


Listener = Callable[[PeersVerdict], None]


class PeerOffsetMonitor:
    """Measures every peer each ``interval_s`` in a task of the loop it is started on (the
    server starts it on the leadership loop, beside the election, off the request path) and
    keeps the latest :class:`PeersVerdict`; :meth:`leadership_refusal` is what the election
    asks. A busy loop lengthens the measured round trips: the error bounds widen, which never
    makes a peer look far (``|offset| - bound`` only shrinks) but can leave it inconclusive.
    ``directory`` and ``transport`` are factories called on that loop; ``local_now_us`` reads
    the clock the node's timestamps use. Listeners are called on that loop too.
    """

    def __init__(
        self,
        config: PeersConfig,
        *,
        node_id: int,
        max_offset_us: int,
        window_us: int,
        local_now_us: Callable[[], int],
        directory: Callable[[], PeerDirectory],
        transport: Callable[[], PeerTransport],
    ) -> None:
        config.validate()
        self.config = config
        self.node_id = node_id
        self.max_offset_us = max_offset_us
        self.threshold_us = config.threshold_for(max_offset_us, window_us)
        self.max_bound_us = config.bound_limit_us(max_offset_us)
        self._local_now_us = local_now_us
        self._directory_factory = directory
        self._transport_factory = transport
        self._samples: dict[int, deque[PeerSample]] = {}
        self._counts: dict[int, tuple[int, int, str]] = {}
        self._addresses: dict[int, str] = {}
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self.verdict = PeersVerdict(
            PeersState.NO_MAJORITY,
            "no majority: no peer measured yet; the NTP guard decides alone",
            self.threshold_us,
        )
        #: Round trips attempted (one request and one answer each) and directory reads.
        self.pings = 0
        self.directory_reads = 0
        self.rounds = 0
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def peer_offsets(self) -> dict[int, int]:
        """Each peer's current offset estimate (peer - local, us), by node id."""
        return {
            peer.node_id: peer.estimate.offset_us
            for peer in self.verdict.peers
            if peer.estimate is not None
        }

    def leadership_refusal(self) -> str | None:
        """Why this node must not campaign or lead now (its clock is far from its peers), or
        ``None``. Cheap: reads the last verdict."""
        verdict = self.verdict
        return verdict.message if verdict.refuses_leadership else None

    # -- lifecycle

    def start(self) -> asyncio.Task[None]:
        """Runs the monitor as a task of the running loop."""
        if self._task is not None:
            raise RuntimeError("PeerOffsetMonitor already started")
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="peers-monitor")
        return self._task

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Ends the rounds: one in progress may finish within ``timeout_s``, then it is cancelled
        (a peer that does not answer holds a round up to ``timeout_s`` of the config) and its
        transport and directory closed before this returns (bounded)."""
        task, self._task = self._task, None
        if task is None or self._stop is None:
            return
        self._stop.set()
        await asyncio.wait({task}, timeout=timeout_s)
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_CLEANUP_S)

    async def _run(self) -> None:
        assert self._stop is not None
        directory = self._directory_factory()
        transport = self._transport_factory()
        try:
            deadline = time.monotonic()
            while not self._stop.is_set():
                try:
                    await self.measure_round(directory, transport)
                except Exception:  # the monitor outlives any bug in one round
                    log.exception("peers round failed")
                deadline += self.config.interval_s
                now = time.monotonic()
                if deadline < now:
                    deadline = now + self.config.interval_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), deadline - now)
        finally:
            await transport.close()
            await directory.close()

    # -- one round

    async def measure_round(self, directory: PeerDirectory, transport: PeerTransport) -> None:
        """Reads the peers, measures each once (concurrently), judges; calls the listeners."""
        try:
            self.directory_reads += 1
            found = {
                node: address
                for node, address in (await directory.peers()).items()
                if node != self.node_id
            }
        except Exception as err:
            # Peers known before stay measured; a new member waits for the next read.
            log.warning("cannot read the peers: %s", err)
            found = dict(self._addresses)
        samples = await asyncio.gather(
            *(self._measure(node, address, transport) for node, address in found.items())
        )
        now = time.monotonic()
        with self._lock:
            for node in list(self._samples):
                if node not in found:  # left the cluster (its member key is gone)
                    del self._samples[node]
                    self._counts.pop(node, None)
            self._addresses = found
            for node, sample in zip(found, samples, strict=True):
                self._record(node, sample)
            states = [self._peer_state(node, now) for node in sorted(found)]
            previous = self.verdict
            self.verdict = judge_peers(states, self.threshold_us, previous)
            self.rounds += 1
            listeners = list(self._listeners)
        if previous.state is not self.verdict.state:
            level = logging.WARNING if self.verdict.state is PeersState.FAR else logging.INFO
            log.log(
                level,
                "peers check %s -> %s: %s",
                previous.state,
                self.verdict.state,
                self.verdict.message,
            )
        for listener in listeners:
            try:
                listener(self.verdict)
            except Exception:
                log.exception("peers listener %r failed", listener)

    async def _measure(self, node: int, address: str, transport: PeerTransport) -> PeerSample:
        label = f"node {node}"
        self.pings += 1
        started = time.monotonic_ns()
        try:
            answered_by, peer_now_us = await transport.call(address, self.config.timeout_s)
        except Exception as err:
            return failed_sample(label, f"{address}: {err}", time.monotonic())
        ended = time.monotonic_ns()
        local_now_us = self._local_now_us()
        if answered_by != node:
            return failed_sample(
                label,
                f"{address} answers as node {answered_by}, not node {node}",
                time.monotonic(),
            )
        return measure(label, peer_now_us, (ended - started) // 1000, local_now_us, ended / 1e9)

    def _record(self, node: int, sample: PeerSample) -> None:
        kept = self._samples.setdefault(node, deque(maxlen=self.config.samples_kept))
        good, failed, last_error = self._counts.get(node, (0, 0, ""))
        if sample.healthy:
            kept.append(sample)
            self._counts[node] = (good + 1, failed, last_error)
        else:
            self._counts[node] = (good, failed + 1, sample.detail)

    def _peer_state(self, node: int, now_s: float) -> PeerState:
        fresh = [
            s
            for s in self._samples.get(node, ())
            if now_s - s.monotonic_s <= self.config.max_sample_age_s
        ]
        precise = [s for s in fresh if s.bound_us <= self.max_bound_us]
        estimate = combine_samples(precise) or combine_samples(fresh)
        good, failed, last_error = self._counts.get(node, (0, 0, ""))
        return PeerState(
            node,
            self._addresses.get(node, ""),
            estimate,
            classify(estimate, self.threshold_us, self.max_bound_us),
            good,
            failed,
            last_error,
        )
