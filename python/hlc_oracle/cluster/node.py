"""A clustered node's leadership: what the server sees as "serving or not", and the window.

The server knows nothing of etcd beyond this class: it hands over its gate, clock, window and
metrics, calls :meth:`ClusterNode.start` after binding (etcd reachable, node id claimed) and
:meth:`ClusterNode.resign` on SIGTERM. Everything else runs in one task, :meth:`ClusterNode._run`:

- campaign (:mod:`.election`), unless the clock check refuses (a clock far from its peers) or,
  deferred a while, when this node's clock lags the saved window and another node could serve at
  once (:mod:`.candidacy`); a loser follows: its gate stays blocked under ``not-leader`` with
  the leader's address as ``gate.redirect``, and it watches the leader key to campaign again when
  the key is deleted; meanwhile it holds a connection to the leader's address and deposes the
  leader (deletes its key, compared on its term) once that address refuses connections, the
  leader's process being gone (:mod:`.leader_liveness`; ``depose_dead_leader``);
- a winner takes over: reads the saved window limit (the clock's floor), waits until that floor
  is within max_offset/2 of its physical clock (the HLC bound), saves a new window through the
  fence, raises its clock past the floor, puts its lease's serving deadline on the gate, and
  serves;
- it leads until its lease is lost (etcd says it expired), a fenced write fails (another term
  began: stop at once, block the gate under ``fence``), its clock turns far from its peers (it
  resigns: the window saved, the leader key deleted through the fence), its own watch of the leader
  key sees the key deleted or overwritten (deposed by a follower or an operator: the same stop,
  without waiting for the next fenced write; :meth:`.election.Election.wait_for_end_of_term`), or it
  resigns; then it follows again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from hlc_oracle import MAX_LOGICAL, MAX_NODE, Clock, Timestamp
from hlc_oracle.addresses import split_host_port
from hlc_oracle.cluster.candidacy import campaign_deferral, can_serve_at_once
from hlc_oracle.cluster.decisions import ClusteredGroupCommit, DecisionDecodeError
from hlc_oracle.cluster.election import Election, LeaderInfo, leader_info
from hlc_oracle.cluster.etcd import (
    EtcdClient,
    EtcdError,
    EtcdRefusedError,
    KeyValue,
    LeaseNotFoundError,
    RangePage,
)
from hlc_oracle.cluster.etcd_security import EtcdSecurity, diagnose_endpoints
from hlc_oracle.cluster.fence import Fence, FenceError, Term
from hlc_oracle.cluster.leader_liveness import wait_until_refused
from hlc_oracle.cluster.members import DuplicateNodeError, live_members, register
from hlc_oracle.cluster.session import Session, stop_task
from hlc_oracle.cluster.window_store import EtcdWindowStore
from hlc_oracle.log_rate import RateLimitedLog
from hlc_oracle.node.gate import ServingGate
from hlc_oracle.node.metrics import ServerMetrics
from hlc_oracle.node.window import TimestampWindow, WindowSaveError, wait_out_lead

log = logging.getLogger("hlc_oracle.cluster")


def startup_wait_s(lease_ttl_s: int) -> float:
    """How long a node waits for etcd at start before it exits 1 naming the endpoints: two lease
    TTLs, at least 3 s (long enough for an etcd that starts beside it)."""
    return max(3.0, 2.0 * lease_ttl_s)


#: Pause between attempts while etcd cannot be reached (campaign, watch, new lease).
RETRY_S = 0.1
#: Leases granted at start-up before giving up, when each lapses before its first use.
LEASE_ATTEMPTS = 3
#: Pause before campaigning again after a promotion stopped on a decision key that does not decode.
PROMOTION_RETRY_S = 1.0
#: How often a node that may not campaign (its clock far from its peers) looks again.
SIT_OUT_S = 0.5
#: How often a node deferring its campaign looks whether another node took the leader key.
DEFER_CHECK_S = 0.1
#: How long a resigned leader waits to name its successor (its held requests go there).
SUCCESSOR_WAIT_S = 0.5
#: How often a leader compares its serving deadline with the clock, for health and logs (requests
#: check the deadline themselves, see ServingGate.refusal).
LEASE_CHECK_S = 0.02


def key_prefix(cluster_name: str) -> str:
    return f"/hlc-oracle/{cluster_name}/"


class ClusterNode:
    def __init__(
        self,
        *,
        endpoints: Sequence[str],
        cluster_name: str,
        lease_ttl_s: int,
        node_id: int,
        clock: Clock,
        gate: ServingGate,
        metrics: ServerMetrics,
        on_fatal: Callable[[str], None],
        depose_dead_leader: bool = True,
        security: EtcdSecurity | None = None,
        after_grant: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.prefix = key_prefix(cluster_name)
        #: Awaited between a lease's grant and its first use (tests: a pause longer than the TTL).
        self._after_grant = after_grant
        self.lease_ttl_s = lease_ttl_s
        self.depose_dead_leader = depose_dead_leader
        self.node_id = node_id
        self.clock = clock
        self.gate = gate
        self.metrics = metrics
        self._on_fatal = on_fatal
        # Records that repeat while etcd is away, limited in rate.
        self._failures = RateLimitedLog(log)
        # Unary etcd calls get a third of the TTL: a stalled member must not outlast the lease.
        self.client = EtcdClient(endpoints, timeout_s=max(lease_ttl_s / 3, 0.2), security=security)
        self.store = EtcdWindowStore(self.client, self.prefix, self._fenced)
        self.session = self._new_session_object()
        self.window: TimestampWindow | None = None
        self.address = ""
        self.election: Election | None = None
        self.role = "follower"
        self.leader: LeaderInfo | None = None
        self._term: Term | None = None
        # Set once a new term's floor is applied and its first window saved.
        self._took_over = False
        # The term ended at once (fenced write, leader key changed, decision write): _end_reason.
        self._fence_failure = asyncio.Event()
        self._end_reason = ""
        # How this node's last term ended, told in its follower refusals until it leads again.
        self._last_term_note = ""
        self._resigning = asyncio.Event()
        # What etcd refused (its role or login), once the node stops on it.
        self._refusal: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._seen_epochs: set[int] = set()
        #: Clustered group commit (decisions in etcd), set by the server when commit is enabled:
        #: opened by each promotion, closed by each step-down.
        self.group_commit: ClusteredGroupCommit | None = None
        # Epochs whose decision write failed: never led again (a new epoch fences their writes).
        self._abandoned_epochs: set[int] = set()
        #: Why this node must not campaign or lead now (its clock far from its peers), or None;
        #: set by the server to the peers check (hlc_oracle.skew.peers).
        self.leadership_check: Callable[[], str | None] = lambda: None
        #: Each measured peer's clock offset (peer - local, us) by node id; set by the server to
        #: the peers check's estimates (:mod:`.candidacy` asks which peers could serve at once).
        self.peer_offsets: Callable[[], Mapping[int, int]] = dict
        # The reason the last check gave, told in follower refusals while it holds.
        self._campaign_note = ""
        metrics.set_role("follower")
        metrics.cluster_keepalive_age.set_function(
            lambda: time.monotonic() - self.session.last_ack if self.session.last_ack else 0.0
        )
        gate.redirect = ""
        # Settling: requests are held until this node learns the leader (or leads).
        gate.block("not-leader", "this node is a follower; no leader known yet", settling=True)

    # --- what the server reads ---

    @property
    def epoch(self) -> int:
        return self.leader.epoch if self.leader is not None else 0

    def lease_remaining_s(self) -> float:
        return max(0.0, self.session.remaining_s())

    # --- start and stop ---

    def _new_session_object(self) -> Session:
        return Session(self.client, self.lease_ttl_s, on_renewed=self._lease_renewed)

    def _lease_renewed(self) -> None:
        if self.role == "leader":
            self.gate.set_deadline(self.session.deadline)

    async def start(self, window: TimestampWindow, address: str) -> None:
        """Grants the lease and claims the node id, then runs the election in the background.

        Raises :class:`EtcdError` when etcd cannot be reached within :func:`startup_wait_s`, and
        :class:`~hlc_oracle.cluster.members.DuplicateNodeError` when a live node has this id."""
        self.window = window
        self.address = address
        self.election = Election(
            self.client, self.prefix, self.node_id, address, read_with_win=self.store.key
        )
        deadline = time.monotonic() + startup_wait_s(self.lease_ttl_s)
        for attempt in range(1, LEASE_ATTEMPTS + 1):
            await self._grant_lease(deadline)
            if attempt == 1:
                await self._learn_leader()
            if self._after_grant is not None:
                await self._after_grant()
            try:
                await self._register(address, deadline)
                break
            except LeaseNotFoundError as err:
                # The lease lapsed before its first use (a pause longer than its TTL between
                # the grant and this txn): grant another and go on.
                if attempt == LEASE_ATTEMPTS:
                    raise
                log.warning(
                    "the new lease expired before it was used; granting another",
                    extra={"fields": {"lease": hex(self.session.lease_id), "error": str(err)}},
                )
                self.session = self._new_session_object()
        self.session.start()
        # From now on a refusal by etcd's role or login, on any task, stops the node (at start
        # it is the start's own error).
        self.client.on_refused = self._refused
        if self.group_commit is not None:
            self.group_commit.prepare_standby()  # the next takeover's engine, built meanwhile
        self._task = asyncio.create_task(self._run(), name="cluster-election")
        if self.client.security.password_in_clear:
            log.warning(
                "the etcd password and token travel in plaintext: use https:// endpoints or "
                "cluster.etcd_ca",
                extra={"fields": {"etcd": self.client.describe()}},
            )
        log.info(
            "joined the cluster",
            extra={
                "fields": {
                    "etcd": self.client.describe(),
                    **self.client.security.describe(),
                    "prefix": self.prefix,
                    "lease": hex(self.session.lease_id),
                    "lease_ttl_s": self.session.granted_ttl_s,
                    "advertise": address,
                }
            },
        )

    async def _grant_lease(self, deadline: float) -> None:
        """Opens the session, trying until ``deadline`` while etcd cannot be reached (saying once
        what it waits for); then raises :class:`EtcdError` naming the endpoints."""
        reported = False
        while True:
            try:
                await self.session.open(timeout_s=max(0.1, min(1.0, deadline - time.monotonic())))
                return
            except EtcdRefusedError:
                raise
            except EtcdError as err:
                # A handshake that fails looks like an unreachable etcd to gRPC: say which it is,
                # at once (a TLS mismatch does not heal while the node waits).
                cause = await diagnose_endpoints(self.client.endpoints, self.client.security)
                if cause is not None:
                    raise EtcdError(cause) from err
                if time.monotonic() >= deadline:
                    raise EtcdError(
                        f"etcd is unreachable at {self.client.describe()} (waited "
                        f"{startup_wait_s(self.lease_ttl_s):.0f} s): {err}"
                    ) from err
                if not reported:
                    reported = True
                    log.warning(
                        "waiting for etcd to grant this node's lease",
                        extra={
                            "fields": {
                                "etcd": self.client.describe(),
                                "gives_up_in_s": round(deadline - time.monotonic(), 1),
                                "error": str(err),
                            }
                        },
                    )
                await asyncio.sleep(RETRY_S)

    async def _register(self, address: str, deadline: float) -> None:
        """Claims the node id. A txn etcd did not answer in time (a slow etcd or a loaded host)
        is tried again until ``deadline``, as the lease grant is: the claim is safe to repeat
        (the key held by this node's own lease counts as claimed). etcd's answers (a refusal,
        the lease gone, no space) and a live holder of the id are raised at once."""
        while True:
            try:
                await register(
                    self.client, self.prefix, self.node_id, address, self.session.lease_id
                )
                return
            except EtcdError as err:
                if type(err) is not EtcdError or time.monotonic() >= deadline:
                    raise
                log.warning(
                    "claiming the node id: etcd did not answer; trying again",
                    extra={"fields": {"node_id": self.node_id, "error": str(err)}},
                )
                await asyncio.sleep(RETRY_S)

    async def _learn_leader(self) -> None:
        """Names the current leader (status, redirects) before the node id is claimed: a node
        restarted after a kill waits there until its previous process's lease expires."""
        assert self.election is not None
        try:
            leader = await self.election.current()
        except EtcdError:
            return  # the election loop reads it soon enough
        if leader is not None:
            self._follow(leader)

    def _refused(self, err: EtcdRefusedError) -> None:
        """etcd's role or login refuses this node: retrying would never end. Stop (once)."""
        if self._refusal is not None:
            return
        self._refusal = str(err)
        log.error("etcd refused this node", extra={"fields": {"error": str(err)}})
        self.gate.block("member", str(err))
        self._on_fatal(str(err))

    async def resign(self) -> None:
        """Graceful stop: the gate is already blocked by the caller (settling: requests are
        held meanwhile). Stops campaigning; a leader saves its exact high-water mark (fenced),
        deletes the leader key (fenced) so a follower takes over at once, and names the next
        leader once it holds the key (at most :data:`SUCCESSOR_WAIT_S`), so that the requests
        held here are sent there; then the lease is revoked (the member key goes with it)."""
        if self.role == "leader":
            # Refusals name no leader from now on, so clients move on to the other nodes at once
            # instead of retrying this one until it closes its listener.
            self.gate.redirect = ""
        self._resigning.set()
        if self._task is not None:
            await stop_task(self._task, timeout_s=2.0)
            self._task = None
        term = self._term
        if term is not None and self.election is not None and self.window is not None:
            fence = Fence(self.client, term)
            # Watching before the key goes: the successor is seen as soon as it takes the key.
            successor = asyncio.ensure_future(self.election.successor(term))
            resigned = False
            try:
                if self.group_commit is not None:
                    await self.group_commit.close()  # drain decisions before handing over
                await self._save_window_and_resign(fence)
                resigned = True
                log.info("resigned", extra={"fields": {"epoch": term.epoch}})
            except (EtcdError, FenceError, WindowSaveError) as err:
                log.warning("resign failed", extra={"fields": {"error": str(err)}})
            await self._step_down("this node resigned (shutting down)", settling=True)
            await self._name_successor(successor, resigned)
        if self.group_commit is not None:
            await self.group_commit.close()
        await self.session.close(revoke=True)
        await self.client.close()

    # --- the election loop ---

    async def _run(self) -> None:
        while not self._resigning.is_set():
            try:
                if self.session.lost.is_set() or not self.session.kept_alive():
                    # Lost in etcd, or never kept alive (a renewal that failed half-way: no
                    # keepalives will ever come, nor the loss they report): a new lease.
                    await self._renew_session()
                if not self.session.alive():
                    # Keepalives are late (etcd slow or away) but the lease is not known lost:
                    # a term won now would end before it began, and the next round would win
                    # this node's own key again at once, a spin of won/stepped-down records.
                    await asyncio.sleep(RETRY_S)
                    continue
                assert self.election is not None
                if await self._sits_out():
                    continue
                previous_epoch = self.leader.epoch if self.leader is not None else None
                reads = (
                    []
                    if self.group_commit is None
                    else self.group_commit.takeover_reads(previous_epoch)
                )
                outcome = await self.election.campaign(self.session.lease_id, reads)
                self._failures.clear("election")
                if outcome.term is not None and outcome.term.epoch in self._abandoned_epochs:
                    with contextlib.suppress(FenceError):
                        await self.election.resign(Fence(self.client, outcome.term))
                    continue
                if outcome.term is not None:
                    await self._lead(
                        outcome.term,
                        outcome.read if outcome.read_with_win else (),
                        outcome.pages,
                        previous_epoch,
                    )
                    continue
                if outcome.holder is not None:
                    self._follow(outcome.holder)
                await self._wait_for_vacancy(outcome.revision, outcome.holder)
                if not self.session.lost.is_set():
                    self._leader_gone("the leader's term ended")
            except DuplicateNodeError as err:
                # Another node took this id while this one had no lease: two live nodes with one
                # id would hand out equal timestamps. Stop for good.
                self.gate.block("member", str(err))
                self._on_fatal(str(err))
                return
            except LeaseNotFoundError as err:
                log.warning("lease gone", extra={"fields": {"error": str(err)}})
                self.session.lost.set()
            except EtcdRefusedError as err:
                self._refused(err)
                return
            except DecisionDecodeError as err:
                # Never skipped: this node does not lead until the key is repaired.
                log.error("promotion stopped", extra={"fields": {"error": str(err)}})
                await asyncio.sleep(PROMOTION_RETRY_S)
            except (EtcdError, WindowSaveError) as err:
                self._failures.warning("election", "etcd call failed", {"error": str(err)})
                await asyncio.sleep(RETRY_S)
            except Exception:
                # The loop must outlive anything unforeseen: without it the node never leads.
                log.exception("election loop error")
                await asyncio.sleep(RETRY_S)

    def _block_as_follower(self, leader: LeaderInfo) -> None:
        self.gate.block(
            "not-leader",
            f"this node is a follower; the leader is node {leader.node_id} at "
            f"{leader.address or '(unknown address)'} (epoch {leader.epoch})"
            + self._last_term_note
            + self._campaign_note,
        )

    def leadership_check_changed(self, refusal: str | None) -> None:
        """The clock check's verdict flipped: a follower's refusals say so at once (a leader's
        ``_hold`` sees it within :data:`LEASE_CHECK_S`)."""
        self._campaign_note = f"; it does not campaign: {refusal}" if refusal else ""
        if self.role == "follower" and self.leader is not None and self.gate.redirect:
            self._block_as_follower(self.leader)

    async def _sits_out(self) -> bool:
        """Whether this node stays out of this campaign: its clock is far from its peers (it
        follows and looks again in :data:`SIT_OUT_S`), or deferred first because its clock lags
        the saved window (:mod:`.candidacy`; then it campaigns)."""
        assert self.election is not None
        refusal = self.leadership_check()
        self._campaign_note = f"; it does not campaign: {refusal}" if refusal else ""
        if refusal is not None:
            kv, revision = await self.client.get(self.election.key)
            if kv is None:
                self.gate.redirect = ""
                self.gate.block("not-leader", "this node is a follower" + self._campaign_note)
                await asyncio.sleep(SIT_OUT_S)
                return True
            if kv.lease == self.session.lease_id:
                # This node's own term, left behind by a resign that failed: end it now.
                await self.election.resign(
                    Fence(self.client, Term(kv.key, kv.value, kv.create_revision))
                )
                return True
            holder = leader_info(kv)
            self._follow(holder)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_for_vacancy(revision, holder), SIT_OUT_S)
            return True
        deferral = await campaign_deferral(self.clock, await self.store.load(), self._ready_peers)
        if deferral.seconds > 0 and (await self.client.get(self.election.key))[0] is None:
            log.info("campaign deferred", extra={"fields": {"reason": deferral.reason}})
            # Settling: another node is expected to take the key meanwhile, then named.
            self.gate.block(
                "not-leader", f"this node is a follower: {deferral.reason}", settling=True
            )
            until = time.monotonic() + deferral.seconds
            # Until the time is up or another node holds the key (then the campaign just loses).
            while (
                time.monotonic() < until and (await self.client.get(self.election.key))[0] is None
            ):
                await asyncio.sleep(min(DEFER_CHECK_S, max(0.0, until - time.monotonic())))
        return False

    async def _ready_peers(self, lead_us: int) -> int:
        """Live members that could serve at once where this node must wait out ``lead_us``."""
        offsets = self.peer_offsets()
        members = set(await live_members(self.client, self.prefix)) - {self.node_id}
        return sum(
            can_serve_at_once(lead_us, offsets.get(node), self.clock.max_offset_us)
            for node in members
        )

    async def _renew_session(self) -> None:
        """A new lease after the old one expired in etcd, and the node id claimed again (a lease
        that lapses again before the claim raises LeaseNotFoundError: the loop tries again). A
        failure before the keepalives start leaves a session not kept alive: the loop's next
        round renews again."""
        await self.session.close(revoke=False)
        self.session = self._new_session_object()
        await self.session.open()
        if self._after_grant is not None:
            await self._after_grant()
        await register(self.client, self.prefix, self.node_id, self.address, self.session.lease_id)
        self.session.start()
        log.info("new lease", extra={"fields": {"lease": hex(self.session.lease_id)}})

    async def _wait_for_vacancy(self, revision: int, holder: LeaderInfo | None) -> None:
        """Follows ``holder`` until the leader key is deleted or this node's lease is lost; the
        dead-leader watch runs only meanwhile (stopped here, whatever ends the wait)."""
        assert self.election is not None
        watch = asyncio.ensure_future(self.election.wait_for_vacancy(revision, self._follow))
        lost = asyncio.ensure_future(self.session.lost.wait())
        liveness: asyncio.Future[None] | None = None
        verdict = asyncio.Event()
        if holder is not None and self._watches_liveness_of(holder):
            liveness = asyncio.ensure_future(self._depose_when_dead(holder, verdict))
        try:
            await asyncio.wait((watch, lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watch, lost):
                if not task.done():
                    await stop_task(task)
            if liveness is not None:
                if verdict.is_set():
                    # Its txn is in flight, and the vacancy seen may be its own: let it finish
                    # and report (one etcd call, bounded by the client's deadline).
                    await asyncio.wait({liveness}, timeout=self.client.timeout_s + 0.1)
                await stop_task(liveness)
        if watch.done() and not watch.cancelled():
            error = watch.exception()
            if error is not None:
                raise error

    def _watches_liveness_of(self, leader: LeaderInfo) -> bool:
        """Whether to depose ``leader`` once its address refuses connections: a term read from
        etcd, with an address to connect to that is not this node's own."""
        return (
            self.depose_dead_leader
            and leader.lease != 0
            and leader.address != self.address
            and split_host_port(leader.address) is not None
        )

    async def _depose_when_dead(self, leader: LeaderInfo, verdict: asyncio.Event) -> None:
        """Deletes ``leader``'s key (compared on its term) once its process is gone, setting
        ``verdict`` first; the watch of the key then sees the vacancy. Runs while this node
        follows ``leader``. One attempt: if etcd fails it, the lease still ends the term."""
        assert self.election is not None
        fields: dict[str, object] = {
            "epoch": leader.epoch,
            "leader_node_id": leader.node_id,
            "leader_address": leader.address,
        }
        try:
            await wait_until_refused(
                leader.address, on_connected=self.metrics.cluster_leader_connected.set
            )
            verdict.set()
            self._leader_gone(f"the leader at {leader.address} refuses connections; deposing it")
            deposed = await self.election.depose(leader)
        except EtcdError as err:
            log.warning(
                "leader unreachable (connection refused), deposing it failed",
                extra={"fields": {**fields, "error": str(err)}},
            )
            return
        except Exception:
            # The lease still replaces the leader; this follower only loses the shortcut.
            log.exception("dead-leader watch failed", extra={"fields": fields})
            return
        finally:
            self.metrics.cluster_leader_connected.set(0)
        if deposed:
            self.metrics.cluster_leaders_deposed.inc()
            log.info(
                f"leader unreachable (connection refused), deposed epoch {leader.epoch}",
                extra={"fields": fields},
            )
        else:
            log.info(
                "leader unreachable (connection refused); its term had already ended",
                extra={"fields": fields},
            )

    def _saw(self, leader: LeaderInfo) -> None:
        if leader.epoch not in self._seen_epochs:
            self._seen_epochs.add(leader.epoch)
            self.metrics.cluster_leader_changes.inc()
        self.metrics.cluster_epoch.set(leader.epoch)
        self.leader = leader

    def _leader_gone(self, why: str) -> None:
        """The leader followed until now is gone: hold requests (settling) while the next one is
        elected, then name it (:meth:`_follow`) or serve (:meth:`_lead`), instead of sending
        clients to a leader that cannot answer."""
        self.gate.redirect = ""
        self.gate.block(
            "not-leader", f"this node is a follower: {why}; electing the next", settling=True
        )

    def _follow(self, leader: LeaderInfo) -> None:
        known = self.role == "follower" and self.leader == leader
        self._saw(leader)
        self.gate.redirect = leader.address
        self._block_as_follower(leader)
        if known:
            return  # already said
        log.info(
            "following",
            extra={
                "fields": {
                    "leader_node_id": leader.node_id,
                    "leader_address": leader.address,
                    "epoch": leader.epoch,
                }
            },
        )

    async def _lead(
        self,
        term: Term,
        window: KeyValue | tuple[()] | None,
        read: Sequence[RangePage],
        previous_epoch: int | None,
    ) -> None:
        """Takes over ``term``, then leads it. ``window``: the window key as the winning txn read
        it (``()``: not read, read here); ``read``: the pages of the group commit's takeover
        reads the winning txn made (``()``: none); ``previous_epoch``: the term this node knew
        last, most likely the one that wrote the newest decisions."""
        assert self.window is not None
        self._term = term
        self._fence_failure.clear()
        self._last_term_note = ""
        self.store.fence = Fence(self.client, term)
        self._saw(LeaderInfo(self.node_id, self.address, term.epoch))
        self.role = "leader"
        self.metrics.set_role("leader")
        # Requests are held here (settling) while the new term gets ready, then served.
        self.gate.redirect = None
        self.gate.block("not-leader", f"taking over as leader of epoch {term.epoch}", settling=True)
        log.info("won the election", extra={"fields": {"epoch": term.epoch}})
        # Beside the term, off the request path: from the epoch's revision on, so a change made
        # while taking over is seen too.
        own_watch = asyncio.ensure_future(self._watch_own_term(term))
        try:
            saved = (
                await self.store.load()
                if isinstance(window, tuple)
                else self.store.limit_of(window)
            )
            floor = saved if saved is not None else 0
            if not await wait_out_lead(
                self.clock,
                floor,
                lambda message: self.gate.block("not-leader", message, settling=True),
                alive=lambda: self.session.alive() and not self._fence_failure.is_set(),
            ):
                return
            await self._take_over(term, floor, saved, previous_epoch, read)
            self.gate.set_deadline(self.session.deadline)
            if self._fence_failure.is_set():
                return  # the term ended while taking over: never serve in it
            self.gate.unblock("fence")
            self.gate.unblock("not-leader")
            log.info(
                "leading",
                extra={"fields": {"epoch": term.epoch, "floor_us": saved, "window_us": floor}},
            )
            await self._hold()
            refusal = self.leadership_check()
            if refusal is not None and not self._resigning.is_set():
                await stop_task(own_watch)  # the key's delete below is this node's own
                await self._resign_term(term, refusal)
        finally:
            await stop_task(own_watch)
            if not self._resigning.is_set():
                await self._step_down(self._why_not_leading())

    async def _take_over(
        self,
        term: Term,
        floor: int,
        saved: int | None,
        previous_epoch: int | None,
        read: Sequence[RangePage] = (),
    ) -> None:
        """Saves this term's first window and, side by side with it, promotes group commit (its
        low watermark is the saved limit, not the new window: neither waits for the other), then
        raises the clock past the saved limit. A failed save cancels the promotion (it installs
        nothing until its reads are done) and is raised; a failed promotion is raised after the
        save."""
        assert self.window is not None
        promotion = (
            None
            if self.group_commit is None
            else asyncio.ensure_future(
                self.group_commit.promote(Fence(self.client, term), saved, previous_epoch, read)
            )
        )
        try:
            await self.window.restart(floor)
        except BaseException:
            if promotion is not None:
                await stop_task(promotion)
            raise
        if saved is not None and self.clock.last() < Timestamp(saved, MAX_LOGICAL, MAX_NODE):
            # The previous leader handed out nothing past its saved limit: start above it.
            self.clock.update(Timestamp(saved, MAX_LOGICAL, MAX_NODE))
        self._took_over = True
        if promotion is not None:
            # Low watermark set, the history loading behind, the clock past it: then serve.
            await promotion

    async def _hold(self) -> None:
        """Leads until the lease is lost, a fenced write fails, or the node resigns; keeps the
        ``lease`` block of the gate (health) in step with the serving deadline meanwhile."""
        while not (
            self.session.lost.is_set() or self._fence_failure.is_set() or self._resigning.is_set()
        ):
            if self.leadership_check() is not None:
                return  # _lead resigns the term
            if self.session.alive():
                self.gate.unblock("lease")
            else:
                self.gate.block(
                    "lease",
                    "the lease was not renewed in time (etcd unreachable or the process paused)",
                )
            await asyncio.sleep(LEASE_CHECK_S)

    async def _resign_term(self, term: Term, reason: str) -> None:
        """Gives up a term this node must not hold (its clock is far from its peers): stops
        serving, saves its high-water mark and deletes the leader key, both through the fence,
        so that a healthy node takes over at once."""
        assert self.election is not None and self.window is not None
        self.gate.redirect = ""  # clients move on at once
        self.gate.block("not-leader", f"resigning leadership: {reason}")
        self._end_reason = f"resigned: {reason}"
        log.warning("resigning leadership", extra={"fields": {"reason": reason}})
        try:
            if self.group_commit is not None:
                await self.group_commit.demote()  # pending batches settle first
            await self._save_window_and_resign(Fence(self.client, term))
        except (EtcdError, FenceError, WindowSaveError) as err:
            # The lease still ends the term; meanwhile the gate refuses.
            log.warning("resign failed", extra={"fields": {"error": str(err)}})
        self._fence_failure.set()  # _why_not_leading reads _end_reason

    async def _save_window_and_resign(self, fence: Fence) -> None:
        """Saves the exact high-water mark and deletes the leader key, in one fenced txn. The
        window is saved only once this term's floor is applied: before that the clock may be
        below the saved limit, and saving its high-water mark would lower the window."""
        assert self.election is not None and self.window is not None
        election = self.election
        if not self._took_over:
            await election.resign(fence)
            return

        async def save_and_resign(final_us: int) -> None:
            await election.resign(fence, [self.store.save_operation(final_us)])

        await self.window.stop(save_and_resign)

    async def _watch_own_term(self, term: Term) -> None:
        """Ends ``term`` at once when etcd reports its leader key deleted or overwritten, unless
        this node is resigning (its own resign deletes the key)."""
        assert self.election is not None
        try:
            ended = await self.election.wait_for_end_of_term(term, self._own_watch_broke, RETRY_S)
        except Exception:
            # Not a verdict on the term: its fenced writes and its lease still end it.
            log.exception(
                "watch of this leader's key failed", extra={"fields": {"epoch": term.epoch}}
            )
            return
        if self._resigning.is_set() or self._term != term:
            return
        self.metrics.cluster_leader_key_lost.inc()
        event = f"leader key lost, stopping serving (epoch {term.epoch})"
        self._end_term_now(f"{ended}; not serving", ended, event)

    def _own_watch_broke(self, error: EtcdError) -> None:
        self._failures.warning(
            "own-watch",
            "watch of this leader's key broke; reading it and watching again",
            {"error": str(error)},
        )

    def _why_not_leading(self) -> str:
        if self._fence_failure.is_set():
            return self._end_reason
        if self.session.lost.is_set():
            return "this node's lease expired in etcd"
        return "leadership ended"

    def end_term(self, reason: str) -> None:
        """A decision write failed (its outcome unknown): stop leading at once, and never again
        in this epoch."""
        if self._term is not None:
            self._abandoned_epochs.add(self._term.epoch)
        self._end_reason = f"a decision write failed: {reason}"
        log.error("decision write failed, stepping down", extra={"fields": {"reason": reason}})
        self._fence_failure.set()

    def _fenced(self, reason: str) -> None:
        """A fenced write failed: stop serving at once (before anything else runs)."""
        self._end_term_now(reason, f"fenced out ({reason})", "fenced out, stopping serving")

    def _end_term_now(self, gate_message: str, step_down_reason: str, event: str) -> None:
        """Blocks the gate under ``fence`` (requests are refused from now on) and ends the
        ``_hold`` loop, which then steps down with ``step_down_reason``."""
        self._end_reason = step_down_reason
        self.gate.block("fence", gate_message)
        log.error(event, extra={"fields": {"reason": gate_message}})
        self._fence_failure.set()

    async def _name_successor(self, watch: asyncio.Future[LeaderInfo], resigned: bool) -> None:
        """Refusals name the node that took the leader key after this node's resign (``watch``
        finds it), once it does, within :data:`SUCCESSOR_WAIT_S`; otherwise (or not
        ``resigned``: the resign failed) they name no leader, and clients move on by
        themselves."""
        successor: LeaderInfo | None = None
        if resigned:
            with contextlib.suppress(EtcdError, TimeoutError):
                successor = await asyncio.wait_for(asyncio.shield(watch), SUCCESSOR_WAIT_S)
        await stop_task(watch)
        if successor is not None:
            self._saw(successor)
            self.gate.redirect = successor.address
            self._block_as_follower(successor)
            log.info(
                "handed over",
                extra={"fields": {"leader_node_id": successor.node_id, "epoch": successor.epoch}},
            )
        else:
            self.gate.redirect = ""
            self.gate.block("not-leader", "this node resigned (shutting down); no leader known")

    async def _step_down(self, reason: str, settling: bool = False) -> None:
        """Follows again after a term; ``settling``: refusals wait (a resign names the next
        leader right after)."""
        was_leader = self.role == "leader"
        if was_leader and self._term is not None:
            self._last_term_note = f"; this node led epoch {self._term.epoch} until: {reason}"
        self.gate.redirect = ""
        self.gate.block("not-leader", f"this node is a follower: {reason}", settling=settling)
        if self.group_commit is not None:
            await self.group_commit.demote()
        self.gate.set_deadline(None)
        # The reasons now live in the not-leader message; a follower's "" health stays SERVING.
        self.gate.unblock("lease")
        self.gate.unblock("fence")
        # A failed save of the last term's window is not a follower's concern.
        self.gate.unblock("window")
        self.store.fence = None
        self._term = None
        self._took_over = False
        self.role = "follower"
        self.metrics.set_role("follower")
        if self.window is not None:
            await self.window.halt()
        if was_leader:
            # A graceful stop (SIGTERM) hands over on purpose: not a warning.
            level = logging.INFO if self._resigning.is_set() else logging.WARNING
            log.log(level, "stepped down", extra={"fields": {"reason": reason}})
