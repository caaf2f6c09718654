"""The etcd v3 client of a clustered node: one gRPC channel to all endpoints.

aetcd's high-level ``Client`` talks to one ``host:port``; losing that member would stop the node.
Here one ``grpc.aio`` channel resolves every endpoint and balances over them (``round_robin``), so
a call made while a member is down goes to a live one, and a call waits for a connection
(``wait_for_ready``) up to its deadline while members restart. The messages and stubs are the
ones aetcd generated from etcd's ``rpc.proto``; every other module of :mod:`hlc_oracle.cluster`
goes through this one, which keeps the untyped generated code in one place.

Streams (lease keepalive, watch) break when their member dies; their owners reopen them.

Secured etcd (:mod:`.etcd_security`): the channel is a TLS one when the node is given TLS
settings, and every member's certificate is checked against one name, the first endpoint's host
(one channel has one authority): a certificate for each member must name it too, as a shared SAN
or a wildcard does. With a user and password, calls carry etcd's auth token, asked for on first
use and again whenever etcd says it is no longer valid (it expires). A call etcd's role refuses
raises :class:`EtcdPermissionError` naming the keys, a refused login :class:`EtcdAuthError`:
neither heals by retrying, so a node stops on them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from aetcd import rpc
from aetcd.rpc import rpc_pb2_grpc

from hlc_oracle import HlcError
from hlc_oracle.addresses import AddressError, parse_host_port, split_scheme
from hlc_oracle.cluster.etcd_security import EtcdSecurity
from hlc_oracle.cluster.reachability import EtcdReachability

log = logging.getLogger("hlc_oracle.cluster")

# etcd's Compare targets and results, and its event types, by name.
EQUAL = rpc.Compare.EQUAL
CREATE = rpc.Compare.CREATE
VALUE = rpc.Compare.VALUE
LEASE = rpc.Compare.LEASE
EVENT_DELETE = rpc.Event.DELETE
#: Pause before trying a broken call again on the channel's other members.
RETRY_PAUSE_S = 0.01
#: A call that ends so got no answer from etcd (any other error is etcd's answer).
UNANSWERED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class EtcdError(HlcError):
    """etcd could not be reached, or refused a request; the message names the endpoints."""


class LeaseNotFoundError(EtcdError):
    """etcd no longer knows the lease (it expired or was revoked)."""


class EtcdQuotaError(EtcdError):
    """etcd refused a write: its database is over ``--quota-backend-bytes`` (the NOSPACE alarm
    is raised, and every write is refused until an operator clears it)."""


class EtcdRefusedError(EtcdError):
    """etcd answered, and refused the node itself: retrying does not help."""


class EtcdPermissionError(EtcdRefusedError):
    """etcd's auth refused a request: the node's user has no role granting it on these keys."""

    def __init__(self, message: str, keys: tuple[bytes, ...]) -> None:
        super().__init__(message)
        self.keys = keys


class EtcdAuthError(EtcdRefusedError):
    """etcd refused the node's login (wrong user or password, auth off, no user given)."""


class EndpointError(EtcdError, ValueError):
    """A malformed ``cluster.etcd_endpoints`` entry."""


#: The message etcd answers a call with when its auth token has expired or is unknown.
INVALID_TOKEN = "invalid auth token"


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (an optional ``http://`` or ``https://``, as etcdctl takes it) as a pair."""
    _, text = split_scheme(endpoint.strip())
    try:
        return parse_host_port(text)
    except AddressError as err:
        raise EndpointError(
            f"etcd endpoint {endpoint!r} is not host:port, http://host:port or "
            f"https://host:port (port 1..65535), e.g. 127.0.0.1:2379: {err}"
        ) from None


def channel_target(endpoints: Sequence[str]) -> str:
    """One gRPC target naming every endpoint: ``ipv4:a:p,b:q`` (names resolved now)."""
    if not endpoints:
        raise EndpointError("no etcd endpoints given")
    addresses: list[str] = []
    for endpoint in endpoints:
        host, port = parse_endpoint(endpoint)
        try:
            infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
        except OSError as err:
            raise EndpointError(
                f"etcd endpoint {endpoint!r}: cannot resolve {host!r}: {err}"
            ) from err
        for info in infos:
            address = f"{info[4][0]}:{port}"
            if address not in addresses:
                addresses.append(address)
    return "ipv4:" + ",".join(addresses)


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


def _key_value(kv: Any) -> KeyValue:
    return KeyValue(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.lease)


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    #: For each ``get`` of the branch that ran, the key's value, or ``None`` when absent.
    gets: tuple[KeyValue | None, ...]
    #: For each range read of the branch that ran (a ``get`` too), the whole page, at the txn's
    #: revision.
    pages: tuple[RangePage, ...] = ()


@dataclass(frozen=True)
class WatchEvent:
    deleted: bool
    kv: KeyValue


def compare_value(key: bytes, value: bytes) -> Any:
    return rpc.Compare(key=key, target=VALUE, result=EQUAL, value=value)


def compare_create_revision(key: bytes, revision: int) -> Any:
    return rpc.Compare(key=key, target=CREATE, result=EQUAL, create_revision=revision)


def compare_lease(key: bytes, lease: int) -> Any:
    """The key is bound to ``lease`` (0: to none, or absent)."""
    return rpc.Compare(key=key, target=LEASE, result=EQUAL, lease=lease)


def put(key: bytes, value: bytes, lease: int = 0) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def delete(key: bytes) -> Any:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def delete_range(start: bytes, end: bytes) -> Any:
    """Deletes every key in ``[start, end)``."""
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=start, range_end=end))


@dataclass(frozen=True)
class RangePage:
    kvs: tuple[KeyValue, ...]
    #: More keys lie in the range past the page's last key.
    more: bool
    #: The store's revision the page was read at.
    revision: int
    #: How many keys the whole range holds (etcd counts them in its index, past ``limit``).
    count: int = 0


@dataclass(frozen=True)
class DbSize:
    """A member's database: the file's size (what etcd's quota counts), the part of it in use
    (the rest is free pages, reused before the file grows), and the store's revision."""

    total: int
    in_use: int
    revision: int


def get(key: bytes) -> Any:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key))


def range_op(start: bytes, end: bytes, *, limit: int = 0, keys_only: bool = False) -> Any:
    """A range read in a txn: keys in ``[start, end)``, at most ``limit`` (0: all); its page is
    in :attr:`TxnResult.pages`."""
    return rpc.RequestOp(
        request_range=rpc.RangeRequest(key=start, range_end=end, limit=limit, keys_only=keys_only)
    )


def _request_keys(request: Any) -> tuple[bytes, ...]:
    """The keys a request names (a txn's compares and operations), for messages."""
    if isinstance(request, rpc.TxnRequest):
        keys = [compare.key for compare in request.compare]
        for op in (*request.success, *request.failure):
            kind = op.WhichOneof("request")
            if kind is not None:
                keys.append(getattr(op, kind).key)
        return tuple(dict.fromkeys(keys))
    key = getattr(request, "key", None)
    return (key,) if isinstance(key, bytes) and key else ()


class EtcdClient:
    """Unary calls with a deadline of ``timeout_s`` each; failures raise :class:`EtcdError`.
    ``security``: TLS and etcd's auth (plaintext without auth when ``None``)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        timeout_s: float = 1.0,
        security: EtcdSecurity | None = None,
    ) -> None:
        self.endpoints = tuple(endpoints)
        self.timeout_s = timeout_s
        self.target = channel_target(self.endpoints)
        self.security = security or EtcdSecurity()
        #: Told of every unary call's outcome (logs etcd's loss and return once each).
        self.reachability = EtcdReachability(self.describe())
        # Made on first use, on the running event loop (grpc.aio channels belong to one loop).
        self._channel: Any = None
        self._stubs: tuple[Any, Any, Any] | None = None
        # etcd's auth token (user and password only), and how many times one was asked for.
        self._token: str | None = None
        self._token_lock: asyncio.Lock | None = None
        self.authentications = 0
        #: Told of every refusal (:class:`EtcdRefusedError`) as it is raised, whichever task
        #: made the call: the owner stops on it, since retrying never helps.
        self.on_refused: Callable[[EtcdRefusedError], None] | None = None

    def _connect(self) -> tuple[Any, Any, Any]:
        if self._stubs is not None:
            return self._stubs
        credentials = self.security.channel_credentials()
        options: list[tuple[str, Any]] = [
            ("grpc.lb_policy_name", "round_robin"),
            # Reconnect to a restarted member quickly (the default backoff reaches 120 s).
            ("grpc.initial_reconnect_backoff_ms", 50),
            ("grpc.min_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 500),
            # Pings find a dead connection (a watch would wait on it forever); not more often
            # than etcd's --grpc-keepalive-min-time (5 s by default), or etcd answers an idle
            # connection's pings with GOAWAY too_many_pings.
            ("grpc.keepalive_time_ms", 5000),
            ("grpc.keepalive_timeout_ms", 2000),
        ]
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=options)
        else:
            # One channel, one name to check every member's certificate against.
            first_host = parse_endpoint(self.endpoints[0])[0]
            options.append(("grpc.ssl_target_name_override", first_host))
            self._channel = grpc.aio.secure_channel(self.target, credentials, options=options)
        self._stubs = (
            rpc_pb2_grpc.KVStub(self._channel),
            rpc_pb2_grpc.LeaseStub(self._channel),
            rpc_pb2_grpc.WatchStub(self._channel),
        )
        return self._stubs

    @property
    def kv(self) -> Any:
        return self._connect()[0]

    @property
    def lease(self) -> Any:
        return self._connect()[1]

    @property
    def watch_stub(self) -> Any:
        return self._connect()[2]

    def describe(self) -> str:
        return ",".join(self.endpoints)

    def _error(
        self, what: str, err: grpc.aio.AioRpcError, keys: tuple[bytes, ...] = ()
    ) -> EtcdError:
        details = err.details() or ""
        message = f"etcd ({self.describe()}): {what}: {err.code().name} {details}"
        if err.code() == grpc.StatusCode.PERMISSION_DENIED:
            return self.permission_error(what, keys)
        if err.code() == grpc.StatusCode.UNAUTHENTICATED or (
            err.code() == grpc.StatusCode.INVALID_ARGUMENT and "authentication failed" in details
        ):
            return EtcdAuthError(f"{message} (as {self.security.who()})")
        if "lease not found" in details:
            return LeaseNotFoundError(message)
        if "database space exceeded" in details:
            return EtcdQuotaError(message)
        return EtcdError(message)

    def _reported(self, error: EtcdError) -> EtcdError:
        if isinstance(error, EtcdRefusedError) and self.on_refused is not None:
            self.on_refused(error)
        return error

    def permission_error(self, what: str, keys: tuple[bytes, ...]) -> EtcdPermissionError:
        named = ", ".join(key.decode(errors="replace") for key in keys) or "(no key)"
        return EtcdPermissionError(
            f"etcd ({self.describe()}): permission denied: {what} of {named} refused to "
            f"{self.security.who()}: its role needs readwrite on the cluster's key prefix",
            keys,
        )

    async def _call(
        self,
        what: str,
        method: Any,
        request: Any,
        timeout_s: float | None,
        *,
        authenticated: bool = True,
    ) -> Any:
        """One unary call, tried again within its deadline when the member it went to broke
        the connection (gRPC retries by itself only calls that never reached the wire), or when
        etcd no longer takes the auth token (a new one is asked for first). Every request sent
        here is safe to repeat: reads, lease calls, and txns whose compare fails harmlessly on a
        repeat (see Election.campaign and members.register)."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            metadata = await self._auth_metadata(deadline) if authenticated else None
            try:
                reply = await method(
                    request,
                    timeout=max(0.001, deadline - time.monotonic()),
                    wait_for_ready=True,
                    metadata=metadata,
                )
            except grpc.aio.AioRpcError as err:
                expired = err.code() == grpc.StatusCode.UNAUTHENTICATED and INVALID_TOKEN in (
                    err.details() or ""
                )
                if expired and metadata is not None and time.monotonic() < deadline:
                    self._token_expired(metadata)
                    continue
                if err.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() >= deadline:
                    error = self._error(what, err, _request_keys(request))
                    if err.code() in UNANSWERED:
                        self.reachability.failed(what, str(error))
                    else:
                        self.reachability.answered()
                    raise self._reported(error) from err
            else:
                self.reachability.answered()
                return reply
            await asyncio.sleep(RETRY_PAUSE_S)

    # --- etcd's auth token (user and password) ---

    async def _auth_metadata(self, deadline: float) -> tuple[tuple[str, str], ...] | None:
        """The ``token`` metadata for a call, asking etcd for a token when there is none."""
        if self.security.user is None:
            return None
        if self._token_lock is None:
            self._token_lock = asyncio.Lock()
        async with self._token_lock:
            if self._token is None:
                self._token = await self._authenticate(max(0.001, deadline - time.monotonic()))
        return (("token", self._token),)

    async def _authenticate(self, timeout_s: float) -> str:
        request = rpc.AuthenticateRequest(
            name=self.security.user or "", password=self.security.password or ""
        )
        self._connect()
        auth = rpc_pb2_grpc.AuthStub(self._channel)
        reply = await self._call(
            "authenticate", auth.Authenticate, request, timeout_s, authenticated=False
        )
        self.authentications += 1
        if self.authentications > 1:
            log.info(
                "new etcd auth token (the last one expired)",
                extra={"fields": {"etcd_user": self.security.user}},
            )
        return str(reply.token)

    def _token_expired(self, metadata: tuple[tuple[str, str], ...] | None) -> None:
        """Forgets the token ``metadata`` carried (unless a newer one replaced it meanwhile)."""
        if metadata is not None and self._token == metadata[0][1]:
            self._token = None

    def stream_metadata(self) -> tuple[tuple[str, str], ...] | None:
        """The current token for a stream opened without waiting (etcd 3.4 checks none on the
        lease keepalive stream; the watch asks for a fresh one itself)."""
        return (("token", self._token),) if self._token is not None else None

    async def grant(self, ttl_s: int, timeout_s: float | None = None) -> tuple[int, int]:
        """A new lease: ``(id, granted ttl in seconds)``."""
        reply = await self._call(
            "lease grant", self.lease.LeaseGrant, rpc.LeaseGrantRequest(TTL=ttl_s), timeout_s
        )
        if reply.error:
            raise EtcdError(f"etcd ({self.describe()}): lease grant: {reply.error}")
        return int(reply.ID), int(reply.TTL)

    async def revoke(self, lease_id: int) -> None:
        await self._call(
            "lease revoke", self.lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease_id), None
        )

    async def time_to_live(self, lease_id: int) -> int:
        """Seconds the lease has left; -1 when it is gone."""
        reply = await self._call(
            "lease ttl",
            self.lease.LeaseTimeToLive,
            rpc.LeaseTimeToLiveRequest(ID=lease_id),
            None,
        )
        return int(reply.TTL)

    def keepalive_stream(self) -> Any:
        """A ``LeaseKeepAlive`` stream (``write`` a request, ``read`` the answer)."""
        return self.lease.LeaseKeepAlive(wait_for_ready=True, metadata=self.stream_metadata())

    @staticmethod
    def keepalive_request(lease_id: int) -> Any:
        return rpc.LeaseKeepAliveRequest(ID=lease_id)

    async def get(self, key: bytes) -> tuple[KeyValue | None, int]:
        """The key (or ``None``) and the store's revision at the read."""
        reply = await self._call("get", self.kv.Range, rpc.RangeRequest(key=key), None)
        kv = _key_value(reply.kvs[0]) if reply.kvs else None
        return kv, int(reply.header.revision)

    async def range(
        self,
        start: bytes,
        end: bytes,
        *,
        limit: int = 0,
        revision: int = 0,
        newest_first: bool = False,
        keys_only: bool = False,
    ) -> RangePage:
        """Keys in ``[start, end)`` in key order (``newest_first``: descending), at most
        ``limit`` (0: all), at ``revision`` (0: the latest; page on at the first page's)."""
        request = rpc.RangeRequest(
            key=start, range_end=end, limit=limit, revision=revision, keys_only=keys_only
        )
        if newest_first:
            request.sort_order = rpc.RangeRequest.DESCEND
            request.sort_target = rpc.RangeRequest.KEY
        reply = await self._call("range", self.kv.Range, request, None)
        kvs = tuple(_key_value(kv) for kv in reply.kvs)
        return RangePage(kvs, bool(reply.more), int(reply.header.revision), int(reply.count))

    async def compact(self, revision: int) -> None:
        """Drops the history before ``revision`` (etcd's keyspace compaction)."""
        await self._call("compact", self.kv.Compact, rpc.CompactionRequest(revision=revision), None)

    async def nospace_alarm(self) -> bool:
        """Whether etcd's NOSPACE alarm (database over its quota) is raised on any member."""
        self._connect()
        maintenance = rpc_pb2_grpc.MaintenanceStub(self._channel)
        request = rpc.AlarmRequest(action=rpc.AlarmRequest.GET, memberID=0, alarm=rpc.NONE)
        reply = await self._call("alarm list", maintenance.Alarm, request, None)
        return any(alarm.alarm == rpc.NOSPACE for alarm in reply.alarms)

    async def db_size(self) -> DbSize:
        """The database size of the member the call reaches (etcd's Status RPC)."""
        self._connect()
        maintenance = rpc_pb2_grpc.MaintenanceStub(self._channel)
        reply = await self._call("status", maintenance.Status, rpc.StatusRequest(), None)
        return DbSize(int(reply.dbSize), int(reply.dbSizeInUse), int(reply.header.revision))

    async def put(self, key: bytes, value: bytes) -> int:
        reply = await self._call("put", self.kv.Put, rpc.PutRequest(key=key, value=value), None)
        return int(reply.header.revision)

    async def delete(self, key: bytes) -> None:
        await self._call("delete", self.kv.DeleteRange, rpc.DeleteRangeRequest(key=key), None)

    async def txn(
        self,
        compare: Sequence[Any],
        success: Sequence[Any],
        failure: Sequence[Any] = (),
        timeout_s: float | None = None,
    ) -> TxnResult:
        reply = await self._call(
            "txn",
            self.kv.Txn,
            rpc.TxnRequest(compare=compare, success=success, failure=failure),
            timeout_s,
        )
        revision = int(reply.header.revision)
        gets: list[KeyValue | None] = []
        pages: list[RangePage] = []
        for response in reply.responses:
            if response.WhichOneof("response") == "response_range":
                read = response.response_range
                kvs = tuple(_key_value(kv) for kv in read.kvs)
                gets.append(kvs[0] if kvs else None)
                pages.append(RangePage(kvs, bool(read.more), revision, int(read.count)))
        return TxnResult(bool(reply.succeeded), revision, tuple(gets), tuple(pages))

    async def watch(
        self,
        key: bytes,
        start_revision: int,
        on_created: Callable[[int], None] | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Events of ``key`` from ``start_revision`` on, until the stream breaks (then
        :class:`EtcdError`) or the caller stops iterating. ``start_revision`` 0: from etcd's
        revision when the watch is created, reported to ``on_created`` (a watch from a past
        revision is caught up by etcd's resync loop, every 100 ms, before it reports new events;
        one from now reports them at once)."""
        create = rpc.WatchRequest(
            create_request=rpc.WatchCreateRequest(key=key, start_revision=start_revision)
        )
        metadata = await self._auth_metadata(time.monotonic() + self.timeout_s)
        # The request side stays open: etcd ends a watch whose client half-closes.
        call = self.watch_stub.Watch(wait_for_ready=True, metadata=metadata)
        try:
            await call.write(create)
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    break
                if response.canceled:
                    reason = response.cancel_reason or "compacted"
                    if INVALID_TOKEN in reason:
                        self._token_expired(metadata)  # the watch's owner opens a new one
                    if "permission denied" in reason:
                        raise self._reported(self.permission_error("watch", (key,)))
                    raise EtcdError(
                        f"etcd ({self.describe()}): watch of {key!r} canceled: {reason}"
                    )
                if response.created and on_created is not None:
                    on_created(response.header.revision)
                for event in response.events:
                    yield WatchEvent(event.type == EVENT_DELETE, _key_value(event.kv))
        except grpc.aio.AioRpcError as err:
            raise self._error("watch", err) from err
        finally:
            call.cancel()
        raise EtcdError(f"etcd ({self.describe()}): watch of {key!r} ended")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stubs = None
