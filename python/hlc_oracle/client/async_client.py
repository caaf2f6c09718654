"""The asyncio client, :class:`AsyncOracleClient`: every RPC of both services, with timeouts,
retries and request merging.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from hlc_oracle import Aborted, Committed, Timestamp, TimestampRange, Transaction
from hlc_oracle._core import encode_commit_request
from hlc_oracle.client.commit_batcher import CommitBatcher
from hlc_oracle.client.commit_many import CommitManyResults, commit_many
from hlc_oracle.client.errors import (
    OracleError,
    OracleTimestampRegressionError,
    OracleTlsHandshakeError,
    OracleUnavailableError,
    decision_error,
    error_from_rpc,
    outcome_in_doubt,
    refused_message_limit,
    result_error,
    transaction_too_large,
)
from hlc_oracle.client.handshake import HandshakeFailure, diagnose, material_of
from hlc_oracle.client.node import OracleNode
from hlc_oracle.client.pending_commits import PendingCommits
from hlc_oracle.client.retry import RetryPolicy, with_retries
from hlc_oracle.client.status import OracleStatus
from hlc_oracle.client.targets import NodeSet, parse_targets
from hlc_oracle.client.timestamp_batcher import TimestampBatcher
from hlc_oracle.client.wire import (
    CommitAnswers,
    answer_list,
    outcome_from_wire,
    range_from_wire,
    status_code,
    timestamp_from_wire,
    timestamp_to_wire,
    transaction_to_wire,
)
from hlc_oracle.proto import DEFAULT_MAX_MESSAGE_BYTES, REFUSAL_NOT_LEADER
from hlc_oracle.proto import oracle_pb2 as pb

T = TypeVar("T")

DEFAULT_TARGET = "127.0.0.1:50051"
#: Merged ``CommitStream`` messages stop growing here: past a few MiB a bigger message only
#: delays its first answer. A single transaction may still use the whole message limit.
MERGED_MESSAGE_BYTES = 4 * 2**20
#: Concurrent ``commit_many`` batches merged into one message stop at this many transactions:
#: each message costs the client (and the server) about 180 µs of CPU whatever its size, so
#: past a few thousand transactions a bigger one saves little and only delays its answers.
MERGED_MANY_TRANSACTIONS = 8192
#: How long a call waits for a connection before it also looks at the TLS handshake, in
#: parallel (a quarter of the timeout when that is shorter): a healthy node connects in far
#: less, so the look costs nothing on the way to a node that answers.
LOOK_AFTER_S = 0.25
#: A look needs at least this long (a TCP connect and a handshake on the network).
MIN_LOOK_S = 0.05
#: Redirects one attempt follows (a leader changing under it): more is a failed attempt.
_MAX_REDIRECTS = 3
#: A timestamp call unanswered this long by a node of several is sent to the others too (a
#: hedge), leaving that node aside: a leader stopped (SIGSTOP) or hung holds its calls without
#: failing them, and its successor serves once its lease has expired. Timestamps are many
#: times faster than this, even from a loaded leader.
HEDGE_AFTER_S = 0.5


class AsyncOracleClient:
    """asyncio client. Use ``async with AsyncOracleClient(target) as client:``.

    ``target`` is ``"host:port"``, or the nodes of a cluster (``"a:1,b:2"`` or a list): the
    client follows the leader's redirects and moves on from unreachable nodes
    (:mod:`hlc_oracle.client.targets`), and never returns a timestamp not above one it returned
    before (:class:`OracleTimestampRegressionError`).
    ``timeout`` bounds every call end to end, retries and connection setup included (seconds);
    ``retry`` governs the attempts within it (see :mod:`hlc_oracle.client.retry`; by default 5
    for one node, and for several as many as fit in the timeout, to ride out a failover);
    ``credentials`` (see :func:`channel_credentials`) switches to TLS; ``options`` are gRPC
    channel options over the client's defaults (:mod:`hlc_oracle.client.channel`);
    ``max_batch`` caps the count of one merged timestamp request (keep it at or below the
    server's ``limits.max_count``); ``commit_batch`` how many ``commit()`` callers share one
    ``CommitStream`` message, with at most ``commit_in_flight`` messages in flight;
    ``commit_many_in_flight`` how many ``commit_many()`` messages are in flight before further
    concurrent calls wait and go out merged into one message (see
    :mod:`hlc_oracle.client.commit_many`);
    ``max_message_bytes`` the server's ``limits.max_message_bytes`` (its default by default):
    merged messages are split by encoded size under it, and a transaction that alone exceeds it
    raises :class:`~hlc_oracle.TransactionTooLargeError` before it is sent (a server refusing a
    message as too large teaches the client its lower limit); ``max_concurrent_calls`` bounds the
    unary calls in progress (more wait their turn).
    """

    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        *,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        max_batch: int = 1_000_000,
        options: list[tuple[str, Any]] | None = None,
        commit_batch: int = 512,
        commit_in_flight: int = 4,
        commit_many_in_flight: int = 2,
        max_concurrent_calls: int = 256,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if not (isinstance(timeout, int | float) and 0 < timeout < float("inf")):
            raise ValueError(f"timeout must be a number of seconds above 0, got {timeout!r}")
        if not isinstance(max_message_bytes, int) or max_message_bytes < 64:
            raise ValueError(f"max_message_bytes must be at least 64, got {max_message_bytes!r}")
        self.target = target if isinstance(target, str) else ",".join(target)
        self.timeout = float(timeout)
        addresses = parse_targets(target)
        if retry is None:
            retry = RetryPolicy() if len(addresses) == 1 else RetryPolicy.until_deadline(timeout)
        self.retry = retry
        self.max_message_bytes = max_message_bytes
        self._tls = credentials is not None
        self._tls_material = material_of(credentials)
        self._nodes = NodeSet(addresses, credentials, options)
        # The highest timestamp handed to a caller: a node answering at or below it is an error.
        self._highest: Timestamp | None = None
        # grpcio refuses part of a burst of more than about a thousand calls opened at once on a
        # new connection (CANCELLED / RST_STREAM, measured against a bare grpcio server too), so
        # unary calls queue here instead.
        self._unary_calls = asyncio.Semaphore(max_concurrent_calls)
        self._batcher = TimestampBatcher(self._fetch_for_batch, max_batch=max_batch)
        self._commit_batcher = CommitBatcher(
            self._send_commits, max_batch=commit_batch, max_in_flight=commit_in_flight
        )
        self._many_batcher = CommitBatcher(
            self._send_commits,
            max_batch=MERGED_MANY_TRANSACTIONS,
            max_in_flight=commit_many_in_flight,
            max_bytes=lambda: self._message_limit(2),
        )

    async def _call(
        self,
        call: Callable[[OracleNode, float], Awaitable[T]],
        changes_state: bool = False,
        aside: str | None = None,
        timeout: float | None = None,
    ) -> T:
        """``call(node, remaining_seconds)`` on the current node under the retry policy, within
        ``timeout`` (the client's by default; see :mod:`hlc_oracle.client.targets` for moving
        between nodes; ``aside``: see :meth:`_on_current_node`).
        When the oracle stays unreachable, a look at the TLS handshake tells a handshake failure
        (:class:`OracleTlsHandshakeError`) from a server that is not there. The look runs beside
        the call once it has waited a while for a connection (:data:`LOOK_AFTER_S`, or a quarter
        of the timeout), and within the same deadline: a look not finished by then is dropped and
        the call fails as unreachable, on time."""
        loop = asyncio.get_running_loop()
        timeout = self.timeout if timeout is None else timeout
        deadline = loop.time() + timeout
        retried = with_retries(
            self.retry,
            lambda remaining: self._on_current_node(call, remaining, changes_state, aside),
            timeout,
            changes_state=changes_state,
            connected=lambda: self._nodes.current.ready(),
        )
        look: asyncio.Future[HandshakeFailure | None] | None = None
        try:
            if self._nodes.current.ready():
                return await retried  # the common case: connected, no look to start beside it
            attempt = asyncio.ensure_future(retried)
            try:
                await asyncio.wait((attempt,), timeout=min(LOOK_AFTER_S, self.timeout / 4))
                if not attempt.done() and not self._nodes.current.ready():
                    look = self._look_at_handshake(deadline)
                return await attempt
            finally:
                if not attempt.done():
                    attempt.cancel()
        except OracleUnavailableError as err:
            # Only a plain transport failure: a refusal (any mark) came from a server that the
            # handshake let through; a lost connection had one.
            if type(err) is not OracleUnavailableError or err.refusal is not None:
                raise
            look = look or self._look_at_handshake(deadline)
            if look is None:
                raise
            await asyncio.wait((look,), timeout=max(0.0, deadline - loop.time()))
            failure = look.result() if look.done() else None
            if failure is None:
                raise
            raise OracleTlsHandshakeError(err.code, failure.cause, err.details) from err
        finally:
            if look is not None and not look.done():
                look.cancel()

    def _look_at_handshake(self, deadline: float) -> asyncio.Future[HandshakeFailure | None] | None:
        """The TLS look at the current node, started now and bounded by ``deadline`` (loop time;
        at most 1 s); ``None`` when too little time is left for one."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining < MIN_LOOK_S:
            return None
        return asyncio.ensure_future(
            diagnose(
                self._nodes.current.target,
                self._tls_material,
                self._tls,
                timeout=min(1.0, remaining),
            )
        )

    async def _on_current_node(
        self,
        call: Callable[[OracleNode, float], Awaitable[T]],
        remaining: float,
        changes_state: bool = False,
        aside: str | None = None,
    ) -> T:
        """One attempt, a pass over the nodes: a follower's redirect is followed at once; a node
        that is unreachable or names no leader sends the call on to the next target at once. The
        attempt fails (and the retry policy backs off) once every target failed in it, or a
        redirect leads back to a node that already failed in it. ``changes_state``: the node's
        ``UNAVAILABLE`` is read as :func:`~hlc_oracle.client.errors.decision_error` says.
        ``aside``: a node not to call (silent, see :meth:`_hedged`), as if it had failed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + remaining
        failed: set[str] = set()
        redirects = 0
        while True:
            node = self._nodes.current
            if node.target == aside:
                failed.add(node.target)
                self._nodes.move_on(node)
                if self._nodes.current.target in failed:
                    raise OracleUnavailableError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"{node.target} is silent and no other node answered",
                    )
                continue
            try:
                await node.connect(deadline)
                return await call(node, max(deadline - loop.time(), 0.001))
            except grpc.RpcError as err:
                error = error_from_rpc(err)
            except OracleError as err:
                error = err
            except grpc.aio.UsageError as err:  # the channel was closed before the call
                raise OracleError(grpc.StatusCode.CANCELLED, f"client closed: {err}") from None
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this call was cancelled
                # grpc.aio ends a call whose channel closed under it this way: not the caller's
                # cancellation, so an error the caller can catch as the client's.
                raise OracleError(grpc.StatusCode.CANCELLED, "client closed") from None
            if changes_state:
                error = decision_error(error)
            if error.refusal == REFUSAL_NOT_LEADER and self._nodes.follow(error.leader or "", node):
                redirects += 1
                if self._nodes.current.target not in failed and redirects <= _MAX_REDIRECTS:
                    continue
                raise error
            if not isinstance(error, OracleUnavailableError) or (
                error.refusal not in (None, REFUSAL_NOT_LEADER) and error.leader != ""
            ):
                raise error  # an answer to give, or a node to try again after a pause
            failed.add(node.target)
            self._nodes.move_on(node)
            # A lost answer ends the attempt: a commit may have been decided on it, and the retry
            # policy must see that to report an unknown outcome if no later answer comes.
            lost = outcome_in_doubt(error)
            if lost or self._nodes.current.target in failed or loop.time() >= deadline:
                raise error

    def _monotonic(
        self, node: OracleNode, floor: Timestamp | None, first: Timestamp, last: Timestamp
    ) -> None:
        """Refuses timestamps not above ``floor``, the highest this client had handed out when
        the call began (see :class:`OracleTimestampRegressionError`); otherwise remembers the new
        highest. Calls in flight together may finish in any order: only a call that returned
        before another began must have the lower timestamp (real-time order)."""
        if floor is not None and first <= floor:
            raise OracleTimestampRegressionError(
                grpc.StatusCode.DATA_LOSS,
                f"{node.target} answered {first}, not above {floor} that this client returned "
                "before: refused, so time never goes backwards for its callers",
            )
        if self._highest is None or last > self._highest:
            self._highest = last

    async def _unary(
        self,
        call: Callable[[OracleNode, float], Awaitable[T]],
        changes_state: bool = False,
        hedged: bool = False,
    ) -> T:
        """A unary call with retries, at most ``max_concurrent_calls`` at a time; ``hedged``: see
        :meth:`_hedged`."""
        async with self._unary_calls:
            if hedged:
                return await self._hedged(call)
            return await self._call(call, changes_state)

    async def _hedged(
        self, call: Callable[[OracleNode, float], Awaitable[T]], timeout: float | None = None
    ) -> T:
        """:meth:`_call` for a call that may be made twice (timestamps: the ones not handed out
        are skipped, nothing else changes). With several targets, when the node it waits on has
        not answered after :data:`HEDGE_AFTER_S`, a second call starts beside it that leaves
        that node aside (a follower's redirect to it counts as a failure); the first answer
        wins, the other call is cancelled. Both end within ``timeout`` (the client's by
        default)."""
        timeout = self.timeout if timeout is None else timeout
        if len(self._nodes.targets) == 1 or timeout <= HEDGE_AFTER_S:
            return await self._call(call, timeout=timeout)
        waited_on: list[str] = []

        def tracked(node: OracleNode, remaining: float) -> Awaitable[T]:
            waited_on.append(node.target)
            return call(node, remaining)

        first = asyncio.ensure_future(self._call(tracked, timeout=timeout))
        calls = [first]
        try:
            await asyncio.wait(calls, timeout=HEDGE_AFTER_S)
            if first.done():
                return first.result()
            if waited_on:
                left = timeout - HEDGE_AFTER_S
                hedge = self._call(call, aside=waited_on[-1], timeout=left)
                calls.append(asyncio.ensure_future(hedge))
            pending = set(calls)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    if finished.exception() is None:
                        return finished.result()
            return first.result()  # both failed: the first call's error
        finally:
            for task in calls:
                if not task.done():
                    task.cancel()

    async def _fetch_for_batch(self, count: int, deadline: float) -> TimestampRange:
        """A merged fetch of ``count`` timestamps, answered by ``deadline`` (``time.monotonic()``,
        its callers' earliest)."""
        request = pb.GetTimestampsRequest(count=count)

        async def fetch(node: OracleNode, remaining: float) -> TimestampRange:
            floor = self._highest
            answer = await node.timestamps.request(request, remaining)
            if len(answer):
                self._monotonic(node, floor, answer.first, answer[len(answer) - 1])
            return answer

        return await self._hedged(fetch, max(0.0, deadline - time.monotonic()))

    def get_timestamp(self) -> Awaitable[Timestamp]:
        """One timestamp; concurrent callers share one stream message. The wait behind the
        message in flight counts toward the call's timeout: a call whose timeout runs out before
        it was sent raises :class:`OracleTimeoutError` saying so."""
        return self._batcher.get(self.timeout)

    async def get_timestamps(self, count: int) -> TimestampRange:
        """``count`` consecutive timestamps. Concurrent calls (and ``get_timestamp()`` calls)
        share one stream message; each gets its own contiguous part of the merged range."""
        if not isinstance(count, int) or isinstance(count, bool):
            raise TypeError(f"count must be an int, got {type(count).__name__}")
        if not 1 <= count < 2**32:
            raise ValueError(f"count must be in 1..2**32-1, got {count}")
        return await self._batcher.get_range(count, self.timeout)

    async def get_timestamps_unary(self, count: int) -> TimestampRange:
        """``count`` consecutive timestamps from one ``GetTimestamps`` call of its own (no
        merging): the server sees exactly this count."""
        if not isinstance(count, int) or isinstance(count, bool):
            raise TypeError(f"count must be an int, got {type(count).__name__}")
        if not 0 <= count < 2**32:
            raise ValueError(f"count must be in 0..2**32-1, got {count}")
        request = pb.GetTimestampsRequest(count=count)

        async def fetch(node: OracleNode, remaining: float) -> TimestampRange:
            floor = self._highest
            response = await node.get_timestamps(
                request, timeout=remaining, wait_for_ready=node.wait_for_ready
            )
            answer = range_from_wire(response)
            if len(answer):
                self._monotonic(node, floor, answer.first, answer[len(answer) - 1])
            return answer

        return await self._unary(fetch, hedged=True)

    async def observe(self, remote: Timestamp) -> Timestamp:
        """Receive event on the oracle's clock; returns its new timestamp (above ``remote``)."""
        if not isinstance(remote, Timestamp):
            raise TypeError(f"remote must be a Timestamp, got {type(remote).__name__}")
        request = pb.ObserveRequest(remote=timestamp_to_wire(remote))

        async def observe(node: OracleNode, remaining: float) -> Timestamp:
            floor = self._highest
            response = await node.observe(
                request, timeout=remaining, wait_for_ready=node.wait_for_ready
            )
            answer = timestamp_from_wire(response.timestamp)
            self._monotonic(node, floor, answer, answer)
            return answer

        return await self._unary(observe)

    async def statuses(self) -> dict[str, OracleStatus | OracleError]:
        """``GetStatus`` of every node in the target list (each within the timeout, no retries,
        no redirects): its status, or the error it failed with. On a cluster this shows every
        node's role."""

        async def one(node: OracleNode) -> OracleStatus | OracleError:
            try:
                response = await node.get_status(
                    pb.GetStatusRequest(), timeout=self.timeout, wait_for_ready=node.wait_for_ready
                )
            except grpc.RpcError as err:
                return error_from_rpc(err)
            return OracleStatus.from_wire(response)

        nodes = self._nodes.all()
        answers = await asyncio.gather(*(one(node) for node in nodes))
        return {node.target: answer for node, answer in zip(nodes, answers, strict=True)}

    async def status(self) -> OracleStatus:
        response = await self._unary(
            lambda node, remaining: node.get_status(
                pb.GetStatusRequest(), timeout=remaining, wait_for_ready=node.wait_for_ready
            )
        )
        return OracleStatus.from_wire(response)

    @property
    def batches(self) -> int:
        """How many merged requests ``get_timestamp()`` has sent so far."""
        return self._batcher.batches

    # --- transactions ---

    def _message_limit(self, transactions: int) -> int:
        if transactions == 1:
            return self.max_message_bytes
        return min(self.max_message_bytes, MERGED_MESSAGE_BYTES)

    def _learn_message_limit(self, err: OracleError) -> int:
        """The message limit a server named refusing a message as too large: lower than this
        client was told, so it becomes the client's. ``err`` is raised again when it is not
        such a refusal."""
        limit = refused_message_limit(err)
        if limit is None:
            raise err
        self.max_message_bytes = min(self.max_message_bytes, limit)
        return limit

    async def _send_commits(
        self,
        transactions: list[Transaction],
        retrying: Callable[[], None] | None = None,
        message: bytes | None = None,
        deadline: float | None = None,
    ) -> CommitAnswers:
        """One ``CommitStream`` message for ``transactions`` (several when it would be too large);
        their answers in order. A lost connection resends the message on a new stream, and the
        transactions a node refused without deciding go again to the next leader
        (:mod:`hlc_oracle.client.pending_commits`): the same ids, so a transaction decided before
        gets its first decision back. ``retrying`` is called before the first such resend (the
        merging of ``commit()`` calls gives the message's slot to new work then). ``message``:
        ``transactions`` already encoded. ``deadline`` (``time.monotonic()``; now plus the
        client's timeout when None): every attempt, every part of a split, ends by it."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        if message is None:
            message = encode_commit_request(transactions)
        if len(message) > self._message_limit(len(transactions)):
            return await self._send_split(transactions, len(message), retrying, deadline)
        pending = PendingCommits(transactions, message, retrying)
        try:
            return await self._call(
                pending.send, changes_state=True, timeout=max(0.0, deadline - time.monotonic())
            )
        except OracleError as err:
            if pending.answered:
                return pending.finish(err)
            self._learn_message_limit(err)
            # Resend: the refusal ended the stream, so messages that fit were refused too.
            if len(message) <= self._message_limit(len(transactions)):
                return await self._send_commits(transactions, retrying, message, deadline)
            return await self._send_split(transactions, len(message), retrying, deadline)

    async def _send_split(
        self,
        transactions: list[Transaction],
        size: int,
        retrying: Callable[[], None] | None,
        deadline: float,
    ) -> CommitAnswers:
        if len(transactions) == 1:
            return [transaction_too_large(transactions[0].txn_id, size, self.max_message_bytes)]
        half = len(transactions) // 2
        first, second = await asyncio.gather(
            self._send_commits(transactions[:half], retrying, None, deadline),
            self._send_commits(transactions[half:], retrying, None, deadline),
        )
        return answer_list(first) + answer_list(second)

    async def commit(self, txn: Transaction) -> Committed | Aborted:
        """Commits ``txn`` through group commit: ``Committed`` or ``Aborted``, as in-process.
        Concurrent calls share one ``CommitStream`` message; a refused transaction raises
        :class:`OracleError` with the status code (``INVALID_ARGUMENT``, ``OUT_OF_RANGE``,
        ``ALREADY_EXISTS``, ``RESOURCE_EXHAUSTED``, ...); one that does not fit in a message
        :class:`~hlc_oracle.TransactionTooLargeError`; a commit whose connection was lost and
        whose retries ran out :class:`OracleOutcomeUnknownError`. A node's refusal to decide
        (not the leader, taking over, shutting down) is no answer: the transaction goes again, the
        same id, to the next leader, within the call's timeout: the wait for a free message
        slot counts toward it, and a call whose timeout runs out before it was sent raises
        :class:`OracleTimeoutError` saying so (nothing was committed)."""
        if not isinstance(txn, Transaction):
            raise TypeError(f"txn must be a Transaction, got {type(txn).__name__}")
        answer = await self._commit_batcher.submit(txn, self.timeout)
        if isinstance(answer, tuple):
            _, code_number, message = answer
            raise result_error(status_code(code_number), message)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _send_many(self, transactions: list[Transaction]) -> Awaitable[CommitAnswers]:
        # Encoded here, so that a batch with a wrong element fails alone (TypeError) and a
        # merged message is its batches' encodings joined. The call's time starts before.
        started = time.monotonic()
        return self._many_batcher.submit_many(
            transactions, encode_commit_request(transactions), self.timeout, started
        )

    async def commit_many(self, txns: Sequence[Transaction]) -> CommitManyResults:
        """Commits many transactions in one call, as one or a few ``CommitStream`` messages
        (split by encoded bytes); their results in order: ``Committed``, ``Aborted``, or the
        error that refused that transaction alone (returned, not raised). Concurrent calls
        pipeline on the stream, ``commit_many_in_flight`` messages at a time; the calls that
        arrive meanwhile go out merged into the next message. See
        :mod:`hlc_oracle.client.commit_many`."""
        return await commit_many(self._send_many, txns)

    async def commit_unary(self, txn: Transaction) -> Committed | Aborted:
        """Like :meth:`commit`, as one unary ``Commit`` call (no merging)."""
        if not isinstance(txn, Transaction):
            raise TypeError(f"txn must be a Transaction, got {type(txn).__name__}")
        request = pb.CommitRequest(transaction=transaction_to_wire(txn))
        size = request.ByteSize()
        if size > self.max_message_bytes:
            raise transaction_too_large(txn.txn_id, size, self.max_message_bytes)
        try:
            result = await self._unary(
                lambda node, remaining: node.commit(
                    request, timeout=remaining, wait_for_ready=node.wait_for_ready
                ),
                changes_state=True,
            )
        except OracleError as err:
            limit = self._learn_message_limit(err)
            raise transaction_too_large(txn.txn_id, size, limit) from None
        return outcome_from_wire(result)

    @staticmethod
    def _txn_id(txn_id: object) -> int:
        if not isinstance(txn_id, int) or isinstance(txn_id, bool):
            raise TypeError(f"txn_id must be an int, got {type(txn_id).__name__}")
        if not 0 <= txn_id < 2**64:
            raise ValueError(f"txn_id must be in 1..2**64-1, got {txn_id}")
        return txn_id

    @staticmethod
    def _start(start_ts: object) -> pb.Timestamp | None:
        if start_ts is None:
            return None
        if not isinstance(start_ts, Timestamp):
            raise TypeError(f"start_ts must be a Timestamp, got {type(start_ts).__name__}")
        return timestamp_to_wire(start_ts)

    async def abort(self, txn_id: int, start_ts: Timestamp | None = None) -> Committed | Aborted:
        """Aborts an undecided id (a late commit of it is then refused); returns the decision.
        ``start_ts``: the transaction's start timestamp, when known. A leader that just took
        over then decides the abort as soon as no decision it is still loading can be about the
        transaction, instead of after all of them (a large history takes seconds to minutes).
        Name only the start this transaction really took: a later one may let the abort win
        over an earlier commit of the id (``docs/cluster.md``)."""
        request = pb.AbortRequest(txn_id=self._txn_id(txn_id), start_ts=self._start(start_ts))
        result = await self._unary(
            lambda node, remaining: node.abort(
                request, timeout=remaining, wait_for_ready=node.wait_for_ready
            ),
            changes_state=True,
        )
        return outcome_from_wire(result)

    async def transaction_status(
        self, txn_id: int, start_ts: Timestamp | None = None
    ) -> Committed | Aborted | None:
        """The decision on ``txn_id``, or None when the oracle does not know it. ``start_ts``:
        the transaction's start, when known (a new leader answers sooner, as for :meth:`abort`)."""
        request = pb.TransactionStatusRequest(
            txn_id=self._txn_id(txn_id), start_ts=self._start(start_ts)
        )
        response = await self._unary(
            lambda node, remaining: node.transaction_status(
                request, timeout=remaining, wait_for_ready=node.wait_for_ready
            )
        )
        return outcome_from_wire(response.result) if response.known else None

    @property
    def commit_batches(self) -> int:
        """How many merged ``CommitStream`` messages ``commit()`` has sent so far."""
        return self._commit_batcher.batches

    async def close(self) -> None:
        """Fails what still waits, ends the streams and closes the channel; every task the
        client started has finished when this returns."""
        await self._commit_batcher.close()
        await self._many_batcher.close()
        await self._batcher.close()
        await self._nodes.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
