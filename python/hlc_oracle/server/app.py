"""One oracle node: the gRPC server, its clock and window, health, reflection and metrics.

Lifecycle: lock the data dir (one node per data dir, :mod:`~hlc_oracle.server.data_dir`), load
the saved window (the clock's floor), save a new one ahead (before serving), bind, mark SERVING.
On SIGTERM/SIGINT: block the gate (health NOT_SERVING, new timestamp requests get UNAVAILABLE),
stop accepting calls and let in-flight ones finish within the grace period, save the high-water
mark, release the data dir, exit 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import time
from importlib import metadata
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hlc_oracle import (
    Clock,
    CommitLogError,
    GroupCommitScheduler,
    HlcError,
    ManualClock,
    SystemClock,
)
from hlc_oracle.addresses import join_host_port, parse_host_port
from hlc_oracle.cluster.capacity import DecisionCapacityCollector
from hlc_oracle.cluster.control_loop import ControlLoop
from hlc_oracle.cluster.decisions import ClusteredGroupCommit
from hlc_oracle.cluster.etcd import EtcdError
from hlc_oracle.cluster.members import DuplicateNodeError, MemberDirectory
from hlc_oracle.cluster.node import ClusterNode
from hlc_oracle.config import OracleConfig
from hlc_oracle.loop_thread import drop_spurious_poller_wakeups
from hlc_oracle.node.gate import ServingGate
from hlc_oracle.node.metrics import ServerMetrics
from hlc_oracle.node.window import (
    TimestampWindow,
    WindowPersistence,
    WindowSaveError,
    WindowStore,
    floor_for,
    lead_bound_us,
    wait_out_lead,
)
from hlc_oracle.proto import oracle_pb2 as pb
from hlc_oracle.scheduler import CeilingRaised
from hlc_oracle.server.certificates import server_credentials
from hlc_oracle.server.commit import SERVICE_NAME as TRANSACTIONS_SERVICE_NAME
from hlc_oracle.server.commit import TransactionsService
from hlc_oracle.server.service import SERVICE_NAME, TimestampOracleService, wire_timestamp
from hlc_oracle.server.skew_guard import (
    GrpcPeerTransport,
    build_skew_monitor,
    clock_status_fields,
    peer_channel_credentials,
    peers_status_fields,
)
from hlc_oracle.server.startup import (
    StartupConfigError,
    StartupError,
    check_listen_address,
    etcd_security,
    lock_data_dir,
    write_port_file,
)
from hlc_oracle.skew.metrics import PeersMetricsCollector
from hlc_oracle.skew.peers import PeerOffsetMonitor, PeersVerdict
from hlc_oracle.tls import PemError

log = logging.getLogger("hlc_oracle.server")


def _failure_of(future: concurrent.futures.Future[None]) -> BaseException | None:
    if future.cancelled():
        return concurrent.futures.CancelledError("the window save was cancelled")
    return future.exception()


def package_version() -> str:
    try:
        return metadata.version("hlc-oracle")
    except metadata.PackageNotFoundError:
        return "unknown"


class OracleServer:
    """A single oracle node built from an :class:`OracleConfig`."""

    def __init__(
        self, config: OracleConfig, physical_clock: SystemClock | ManualClock | None = None
    ) -> None:
        self.config = config
        self.gate = ServingGate()
        self.metrics = ServerMetrics()
        # Checked before anything is locked or bound: a bad etcd file exits 2, naming it.
        security = etcd_security(config) if config.cluster.clustered else None
        self.data_dir_lock = lock_data_dir(config)
        try:
            self.store = WindowStore(config.server.data_dir)
            # Clustered, the window lives in etcd and the floor comes with each leadership term.
            saved = None if config.cluster.clustered else self.store.load()
        except BaseException:
            self.data_dir_lock.release()
            raise
        self.clock = Clock(
            config.clock.node_id,
            config.clock.max_offset_us,
            physical_clock,
            floor_for(saved),
            # Nothing may be handed out before the first save raises the ceiling.
            ceiling_physical=saved if saved is not None else 0,
        )
        self.cluster: ClusterNode | None = None
        #: Clustered: the leadership thread's loop, where the cluster node, its etcd client, the
        #: window's saves and the decision writes run (see :mod:`hlc_oracle.cluster.control_loop`).
        self.control: ControlLoop | None = None
        persistence: WindowPersistence = self.store
        if config.cluster.clustered:
            self.control = ControlLoop()

            self.cluster = ClusterNode(
                endpoints=config.cluster.etcd_endpoints,
                cluster_name=config.cluster.name,
                lease_ttl_s=config.cluster.lease_ttl_s,
                node_id=config.clock.node_id,
                clock=self.clock,
                gate=self.gate,
                metrics=self.metrics,
                on_fatal=self._fatal_cluster,
                depose_dead_leader=config.cluster.depose_dead_leader,
                security=security,
            )
            persistence = self.cluster.store
            if config.commit.enabled:
                # Clustered, group commit opens with each leadership term.
                self.cluster.group_commit = ClusteredGroupCommit(
                    self.cluster.client,
                    self.cluster.prefix,
                    self.clock,
                    config.commit,
                    self.gate,
                    retention_s=config.cluster.decision_retention_s,
                    install=self._install_scheduler,
                    end_term=self.cluster.end_term,
                    quota_bytes=config.cluster.etcd_quota_bytes,
                    write_timeout_s=config.cluster.lease_ttl_s,
                )
                self.metrics.registry.register(
                    DecisionCapacityCollector(self.cluster.group_commit.capacity)
                )
        self.peers: PeerOffsetMonitor | None = None
        self._peers_refused = False
        if self.cluster is not None and config.peers.enabled:
            self.peers = self._build_peers(self.cluster)
            self.cluster.leadership_check = self.peers.leadership_refusal
            self.cluster.peer_offsets = self.peers.peer_offsets
            self.peers.add_listener(self._peers_verdict)
        self.window = TimestampWindow(
            self.clock,
            persistence,
            size_us=config.window.size_ms * 1000,
            check_interval_s=config.window.check_interval_ms / 1000,
            on_saved=self.metrics.window_saved,
            on_failure=self._window_failure,
        )
        self.service = TimestampOracleService(
            self.clock,
            self.window,
            self.gate,
            self.metrics,
            config.limits.max_count,
            self.status,
        )
        # Set by a signal or by a fatal clock jump; serve() waits on it.
        self.stopping = asyncio.Event()
        self.fatal_reason: str | None = None
        self.skew = build_skew_monitor(
            config.ntp,
            self.clock.max_offset_us,
            self.gate,
            self.metrics.registry,
            on_fatal_jump=self._fatal_clock_jump,
            wall_clock=physical_clock,
        )
        # Group commit: the scheduler opens (and replays its log) in start(), once the window
        # has raised the clock's ceiling.
        self.scheduler: GroupCommitScheduler | None = None
        self.metrics.watch_group_commit(lambda: self.scheduler)
        self.transactions = TransactionsService(
            None, self.gate, self.metrics, enabled=config.commit.enabled
        )
        self.health = health.aio.HealthServicer()
        self.started_at = time.monotonic()
        self.port = 0
        self.metrics_port: int | None = None
        self._stop_metrics: Any = None
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._health_tasks: set[asyncio.Task[None]] = set()
        self.saved_at_start = saved
        self._lead_wait: asyncio.Task[None] | None = None
        # Not serving until the first window save and bind have succeeded.
        self.gate.block("starting", "the server is starting")

    def _build_peers(self, cluster: ClusterNode) -> PeerOffsetMonitor:
        """The peers check: started once this node's member key is in etcd (:meth:`start`)."""
        config = self.config
        try:
            credentials = peer_channel_credentials(config.tls, config.peers.ca_file)
        except OSError as err:
            raise StartupConfigError(f"cannot read the TLS files for peers: {err}") from err
        monitor = PeerOffsetMonitor(
            config.peers,
            node_id=self.clock.node,
            max_offset_us=self.clock.max_offset_us,
            window_us=config.window.size_ms * 1000,
            local_now_us=self.clock.physical_now,
            directory=lambda: MemberDirectory(cluster.client, cluster.prefix),
            transport=lambda: GrpcPeerTransport(credentials),
        )
        self.metrics.registry.register(PeersMetricsCollector(monitor))
        return monitor

    def _peers_verdict(self, verdict: PeersVerdict) -> None:
        refuses = verdict.refuses_leadership
        if self.cluster is not None and refuses != self._peers_refused:
            self._peers_refused = refuses
            self.cluster.leadership_check_changed(verdict.message if refuses else None)

    def _window_failure(self, message: str | None) -> None:
        if message is None:
            self.gate.unblock("window")
        else:
            self.gate.block("window", message)

    def _gate_changed(self, serving: bool, message: str | None) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.metrics.serving.set(1 if serving else 0)
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        # "" is the node's own health: a follower is healthy though it does not serve (its only
        # reason is not leading), so liveness checks and `hlc-oracle status` see it as up.
        member_ok = serving or self.gate.blocking_keys() == {"not-leader"}
        overall = health_pb2.HealthCheckResponse.SERVING if member_ok else status

        def schedule() -> None:
            for name in self._gated_services():
                value = overall if name == "" else status
                task = loop.create_task(self.health.set(name, value))
                self._health_tasks.add(task)
                task.add_done_callback(self._health_tasks.discard)

        # The gate may change from another thread (a skew monitor); health lives on this loop.
        loop.call_soon_threadsafe(schedule)
        log.info(
            "serving" if serving else "not serving",
            extra={"fields": {"reason": message}},
        )

    def _gated_services(self) -> tuple[str, ...]:
        """The health names that follow the gate. A service disabled by configuration is not
        among them: it stays NOT_SERVING for the process's life (see :meth:`start`)."""
        if self.config.commit.enabled:
            return ("", SERVICE_NAME, TRANSACTIONS_SERVICE_NAME)
        return ("", SERVICE_NAME)

    def status(self) -> pb.GetStatusResponse:
        refusal = self.gate.refusal()
        cluster = self.cluster
        leader = cluster.leader if cluster is not None else None
        return pb.GetStatusResponse(
            node_id=self.clock.node,
            role=self.config.server.role if cluster is None else cluster.role,
            leader_address=leader.address if leader is not None else "",
            leader_node_id=max(leader.node_id, 0) if leader is not None else 0,
            epoch=leader.epoch if leader is not None else 0,
            lease_remaining_s=cluster.lease_remaining_s() if cluster is not None else 0.0,
            last_timestamp=wire_timestamp(self.clock.last()),
            persisted_window_us=self.window.limit_us,
            uptime_seconds=round(time.monotonic() - self.started_at, 3),
            version=package_version(),
            clock=pb.ClockStatus(
                max_offset_us=self.clock.max_offset_us,
                backward_jumps=self.clock.backward_jumps,
                physical_now_us=self.clock.physical_now(),
                **clock_status_fields(self.skew.status()),
                **peers_status_fields(
                    self.peers.verdict if self.peers is not None else None,
                    "a standalone node has no peers"
                    if cluster is None
                    else "disabled (peers.enabled = false)",
                ),
            ),
            serving=refusal is None,
            not_serving_reason=refusal or "",
            max_count=self.config.limits.max_count,
            decision_retention_s=self._decision_retention_s(),
        )

    def _decision_retention_s(self) -> float:
        """A clustered leader's decision retention now (0 otherwise)."""
        group_commit = self.cluster.group_commit if self.cluster is not None else None
        capacity = group_commit.capacity() if group_commit is not None else None
        return capacity.retention_s if capacity is not None else 0.0

    def _credentials(self) -> Any:
        try:
            return server_credentials(self.config.tls)
        except OSError as err:
            raise StartupConfigError(err.strerror or str(err)) from err
        except PemError as err:
            raise StartupConfigError(str(err)) from err

    async def start(self) -> None:
        """Saves the first window, binds, starts serving; raises :class:`StartupError`."""
        self._loop = asyncio.get_running_loop()
        if not self.config.commit.enabled:
            # Permanent: clients that watch health must not wait for it to turn SERVING.
            await self.health.set(
                TRANSACTIONS_SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING
            )
        self.gate.add_listener(self._gate_changed)
        limits = self.config.limits
        options = [
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            # Two servers must never share a port by accident.
            ("grpc.so_reuseport", 0),
        ]
        if limits.max_concurrent_streams is not None:
            options.append(("grpc.max_concurrent_streams", limits.max_concurrent_streams))
        server = grpc.aio.server(
            options=options, maximum_concurrent_rpcs=limits.max_concurrent_rpcs
        )
        server.add_generic_rpc_handlers((self.service.handler(), self.transactions.handler()))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, TRANSACTIONS_SERVICE_NAME,
             health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            server,
        )  # fmt: skip
        listen = self.config.server.listen
        credentials = self._credentials()
        check_listen_address(listen)
        try:
            if credentials is None:
                port = server.add_insecure_port(listen)
            else:
                port = server.add_secure_port(listen, credentials)
        except RuntimeError as err:
            hint = (
                " (the TLS files are PEM: check that tls.key_file is the key of tls.cert_file)"
                if credentials is not None
                else ""
            )
            raise StartupError(f"cannot listen on {listen}: {err}{hint}") from err
        if not port:
            raise StartupError(f"cannot listen on {listen}")
        self.port = port
        if self.cluster is not None:
            await self._join_cluster(port)
        else:
            try:
                await self.window.start()
            except WindowSaveError as err:
                raise StartupError(str(err)) from err
            self._wait_out_saved_lead()
        self._open_scheduler()
        if self.config.metrics.port is not None:
            try:
                self.metrics_port, self._stop_metrics = self.metrics.serve(
                    self.config.metrics.host, self.config.metrics.port
                )
            except OSError as err:
                raise StartupError(
                    f"cannot serve metrics on {self.config.metrics.host}:"
                    f"{self.config.metrics.port}: {err.strerror}"
                ) from err
        await server.start()
        self._server = server
        self.skew.start()  # polls on its own thread; its verdicts block or unblock the gate
        self.gate.unblock("starting")
        if self.config.server.port_file is not None:
            write_port_file(self.config.server.port_file, self.port, self.metrics_port)
        log.info(
            "started",
            extra={
                "fields": {
                    "listen": listen,
                    "port": self.port,
                    "tls": credentials is not None,
                    "mutual_tls": self.config.tls.client_ca_file is not None,
                    "metrics_port": self.metrics_port,
                    "node_id": self.clock.node,
                    "data_dir": str(self.store.data_dir),
                    "saved_window_us": self.saved_at_start,
                    "window_us": self.window.limit_us,
                    "version": package_version(),
                }
            },
        )

    async def _join_cluster(self, port: int) -> None:
        assert self.cluster is not None and self.control is not None
        advertise = self.config.advertise_address
        host, advertised_port = parse_host_port(advertise, allow_port_zero=True)
        if advertised_port == 0:
            advertise = join_host_port(host, port)
        # Two loops talk gRPC from here on: this one (the server) and the leadership loop.
        drop_spurious_poller_wakeups(asyncio.get_running_loop())
        self.control.start()
        self.window.run_on(self.control.loop)
        try:
            await self.control.call(self.cluster.start(self.window, advertise))
        except (EtcdError, DuplicateNodeError) as err:
            await asyncio.to_thread(self.control.stop)
            raise StartupError(str(err)) from err
        if self.peers is not None:
            # On the leadership loop, beside the election that reads its verdict, with the
            # node's etcd client, and off the request path.
            await self.control.call(self._start_peers(self.peers))

    @staticmethod
    async def _start_peers(peers: PeerOffsetMonitor) -> None:
        peers.start()

    def _wait_out_saved_lead(self) -> None:
        """The HLC bound after a restart: the clock starts above the saved limit, which may be up
        to the window ahead of the physical clock (more if the clock was stepped back); serve only
        once the first timestamps are within max_offset/2 of it."""
        saved = self.saved_at_start
        if saved is None or saved + 1 - self.clock.physical_now() <= lead_bound_us(
            self.clock.max_offset_us
        ):
            return

        def waiting(message: str) -> None:
            self.gate.block("hlc-bound", message)
            log.warning("waiting out the saved window", extra={"fields": {"reason": message}})

        async def wait() -> None:
            await wait_out_lead(self.clock, saved, waiting)
            self.gate.unblock("hlc-bound")

        # Blocked now, before "starting" is lifted; the task lifts it when the wait is over.
        self.gate.block("hlc-bound", "waiting out the saved timestamp window")
        self._lead_wait = asyncio.create_task(wait(), name="hlc-bound-wait")

    def _open_scheduler(self) -> None:
        """Opens the group-commit scheduler: replays the commit log (decisions, conflict history,
        clock floor) before anything is served."""
        options = self.config.commit
        if not options.enabled or self.cluster is not None:
            return  # clustered: ClusteredGroupCommit opens one per leadership term
        log_dir = options.log_dir or self.store.data_dir / "commit-log"
        try:
            scheduler = GroupCommitScheduler(
                None if options.durability == "memory" else log_dir, self.clock, options
            )
        except (CommitLogError, HlcError, OSError, ValueError) as err:
            raise StartupError(f"cannot open the commit log in {log_dir}: {err}") from err
        self._install_scheduler(scheduler)

    def _install_scheduler(self, scheduler: GroupCommitScheduler | None) -> None:
        """The scheduler the Transactions service decides with (``None``: none, refused)."""
        if scheduler is not None:
            loop = asyncio.get_running_loop()

            waits = self.metrics.ceiling_waits.labels("commit")

            def raise_ceiling(done: CeilingRaised) -> None:
                waits.inc()
                # From the writer thread, or from the loop that confirms a clustered batch's
                # decision write (the leadership loop, the window's home): start the save, never
                # wait for it; the scheduler re-queues the refused requests when it is over.
                future = asyncio.run_coroutine_threadsafe(self.window.extend(0), loop)
                future.add_done_callback(lambda saved: done(_failure_of(saved)))

            scheduler.on_ceiling = raise_ceiling
        self.scheduler = scheduler
        self.transactions.scheduler = scheduler

    def _fatal_clock_jump(self, reason: str) -> None:
        # From the monitor's thread: the gate is already blocked; shut down as on SIGTERM, but
        # remember why, so the process exits non-zero and a supervisor sees a failure.
        log.critical("fatal clock jump, shutting down", extra={"fields": {"reason": reason}})
        self.fatal_reason = reason
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.stopping.set)

    def _fatal_cluster(self, reason: str) -> None:
        # On the leadership loop: the cluster node has blocked the gate; exit non-zero as for a
        # clock jump.
        log.critical(
            "cannot stay in the cluster, shutting down", extra={"fields": {"reason": reason}}
        )
        self.fatal_reason = reason
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.stopping.set)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, finish in-flight calls, save the high-water mark."""
        grace = self.config.server.shutdown_grace_s if grace is None else grace
        handing_over = self.cluster is not None and self.control is not None
        # Clustered, requests wait (settling) while the node hands over, then are refused naming
        # the next leader: clients go there at once instead of sleeping in a retry backoff.
        self.gate.block("shutdown", "the server is shutting down", settling=handing_over)
        if self._lead_wait is not None:
            self._lead_wait.cancel()
        try:
            if self.peers is not None and self.control is not None and self.control.running:
                # Before the etcd client closes; a round in progress is cancelled, not waited
                # for: a peer that does not answer would hold the hand-over up to its timeout.
                await self.control.call(self.peers.stop(timeout_s=0.0))
            if self.cluster is not None and self.control is not None and self.control.running:
                # Hand over first (the pending decisions drained), so a follower takes over
                # while this node drains its connections.
                await self.control.call(self.cluster.resign())
        finally:
            self.gate.block("shutdown", "the server is shutting down")  # final from now on
        # Open streams end now with the gate's refusal (clients retry elsewhere), rather than
        # holding the stop for the whole grace.
        self.service.streams.end_all()
        self.transactions.streams.end_all()
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        await asyncio.to_thread(self.skew.stop)  # joins the poll thread off the event loop
        if self.scheduler is not None:
            # In-flight calls are done: decide what is still queued, sync, release the log.
            await self.scheduler.aclose()
        if self.cluster is None:
            await self.window.stop()
        if self.control is not None:
            await asyncio.to_thread(self.control.stop)
        if self._stop_metrics is not None:
            self._stop_metrics()
            self._stop_metrics = None
        # Last: the final window save above is this node's last write to the data dir.
        self.data_dir_lock.release()
        log.info(
            "stopped",
            extra={"fields": {"last": self.clock.last(), "saved_window_us": self.window.limit_us}},
        )


async def serve(
    config: OracleConfig, physical_clock: SystemClock | ManualClock | None = None
) -> str | None:
    """Runs one node until SIGTERM or SIGINT (then returns ``None``) or a fatal clock jump (then
    returns its reason), shutting down gracefully either way."""
    server = OracleServer(config, physical_clock)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server.stopping.set)
    await server.start()
    await server.stopping.wait()
    log.info(
        "shutting down",
        extra={
            "fields": {
                "grace_s": config.server.shutdown_grace_s,
                "cause": server.fatal_reason or "signal",
            }
        },
    )
    await server.stop()
    return server.fatal_reason
