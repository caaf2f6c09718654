"""The ``hlc_oracle.v1.Transactions`` handlers: parse, check the gate, hand to the scheduler.

With ``commit.enabled = false`` every call is refused with ``UNIMPLEMENTED`` ("not supported or
enabled", in gRPC's words) and the ``REFUSAL_DISABLED`` mark: permanent, so clients do not retry.
``GetTransactionStatus`` is a read: the gate's blocks for skew, the window or start-up do not
close it (see :mod:`hlc_oracle.node.gate`).

All deciding happens in :class:`~hlc_oracle.GroupCommitScheduler`; these handlers only turn wire
messages into :class:`~hlc_oracle.Transaction` objects and answers back into messages, and map the
scheduler's errors to status codes (in a stream, a refused transaction gets a ``CommitError`` in
its result instead, so the other transactions of the message are still answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from hlc_oracle import (
    Aborted,
    Committed,
    GroupCommitScheduler,
    HlcError,
    Timestamp,
    Transaction,
    _core,
)
from hlc_oracle._core import decode_commit_request, encode_commit_result, encode_commit_results
from hlc_oracle.node.gate import ServingGate
from hlc_oracle.node.metrics import ServerMetrics
from hlc_oracle.proto import NOT_SERVING_PREFIX, REFUSAL_DISABLED
from hlc_oracle.proto import oracle_pb2 as pb
from hlc_oracle.proto import status_code as grpc_status
from hlc_oracle.server.handler_frame import (
    RequestError,
    admit,
    check_gate,
    current_call,
    fail,
    invalid,
    parse_request,
    service_handler,
    stopping_refusal,
    unary_rpc,
)
from hlc_oracle.server.open_streams import OpenStreams, StreamEndedError

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Transactions"].full_name

#: The status code of each exception the oracle answers with, most specific first (the first
#: matching class gives the code): the engine's table (``_core.ERROR_CODES``), which also gives the
#: code of each refused transaction in a ``CommitStream`` response.
ERROR_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (kind, grpc_status(number)) for kind, number in _core.ERROR_CODES
]


def status_code(error: BaseException) -> grpc.StatusCode:
    for kind, code in ERROR_CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def transaction_from_wire(message: pb.Transaction) -> Transaction:
    """A wire transaction as a :class:`Transaction`; ``RequestError`` when malformed."""
    if not message.HasField("start_ts"):
        raise invalid(f"transaction {message.txn_id}: start_ts is required")
    start_ts = start_from_wire(message.txn_id, message.start_ts)
    return Transaction(message.txn_id, start_ts, message.read_set, message.write_set)


def start_from_wire(txn_id: int, start: pb.Timestamp) -> Timestamp:
    """A transaction's wire start timestamp as a :class:`Timestamp`; ``RequestError`` when
    malformed."""
    try:
        return Timestamp(start.physical, start.logical, start.node)
    except ValueError as err:
        raise invalid(f"transaction {txn_id}: malformed start_ts: {err}") from err


def refusal_of(answer: object) -> tuple[grpc.StatusCode, str]:
    """The status code and message of an answer that is not a decision."""
    if isinstance(answer, RequestError):
        return answer.code, answer.message
    if isinstance(answer, BaseException):
        return status_code(answer), str(answer)
    return grpc.StatusCode.INTERNAL, f"unexpected answer {answer!r}"  # pragma: no cover


def result_to_wire(txn_id: int, answer: object) -> bytes:
    """A scheduler answer (``Committed``, ``Aborted`` or the exception) as a serialized
    ``CommitResult``, by the engine's codec (the one that encodes ``CommitStream``'s results)."""
    if isinstance(answer, Committed | Aborted):
        return bytes(encode_commit_result(answer))
    code, message = refusal_of(answer)
    return bytes(encode_commit_result((txn_id, code.value[0], message)))


class TransactionsService:
    def __init__(
        self,
        scheduler: GroupCommitScheduler | None,
        gate: ServingGate,
        metrics: ServerMetrics,
        enabled: bool = True,
    ) -> None:
        #: Set by the server once the commit log is open; until then every call is UNAVAILABLE.
        self.scheduler = scheduler
        self.gate = gate
        self.metrics = metrics
        #: ``commit.enabled``: when false, every call is refused for good (``REFUSAL_DISABLED``).
        self.enabled = enabled
        #: Open ``CommitStream``s, ended by a graceful stop.
        self.streams = OpenStreams()

    def _check_enabled(self) -> None:
        """The permanent refusal of a service disabled by configuration, before anything else."""
        if not self.enabled:
            raise RequestError(
                grpc.StatusCode.UNIMPLEMENTED,
                "group commit is disabled on this server (commit.enabled = false); "
                "the Transactions service answers nothing here",
                refusal=REFUSAL_DISABLED,
            )

    def _loaded(self) -> GroupCommitScheduler:
        """The scheduler, once the commit log is replayed."""
        if self.scheduler is None:
            raise RequestError(
                grpc.StatusCode.UNAVAILABLE, f"{NOT_SERVING_PREFIX}the commit log is not loaded yet"
            )
        return self.scheduler

    def _check_gate(self) -> GroupCommitScheduler:
        """For calls that decide: the gate must be open."""
        self._check_enabled()
        check_gate(self.gate)
        return self._loaded()

    async def _admit(self, reads: bool = False) -> GroupCommitScheduler:
        """:meth:`_check_gate` (``reads``: :meth:`_check_reads`), after holding the request while
        the gate is settling (a failover's transition; :func:`admit`)."""
        self._check_enabled()
        if self.gate.settling:
            await admit(self.gate, reads)
        return self._check_reads() if reads else self._check_gate()

    def _check_reads(self) -> GroupCommitScheduler:
        """For ``GetTransactionStatus``: only blocks that make this node's decisions stale close
        it (:meth:`ServingGate.read_refusal`)."""
        self._check_enabled()
        check_gate(self.gate, reads=True)
        return self._loaded()

    def _count(self, answers: list[object]) -> None:
        committed = sum(isinstance(answer, Committed) for answer in answers)
        aborted = sum(isinstance(answer, Aborted) for answer in answers)
        self._count_outcomes(committed, aborted, len(answers) - committed - aborted)

    @staticmethod
    def _parse_id(
        raw: bytes, kind: type[pb.AbortRequest | pb.TransactionStatusRequest]
    ) -> tuple[int, Timestamp | None]:
        """The request's id, and the start timestamp it names (None: none)."""
        request = parse_request(raw, kind)
        if request.txn_id == 0:
            raise invalid("txn_id must be in 1..2**64-1 (0 is reserved as unset), got 0")
        txn_id = int(request.txn_id)
        if not request.HasField("start_ts"):
            return txn_id, None
        return txn_id, start_from_wire(txn_id, request.start_ts)

    async def _decide(self, messages: list[pb.Transaction]) -> list[object]:
        """Decides the transactions of one request message: each one's decision, or the error that
        refused it."""
        answers: list[object] = [None] * len(messages)
        valid: list[int] = []
        requests: list[Transaction] = []
        for index, message in enumerate(messages):
            try:
                requests.append(transaction_from_wire(message))
                valid.append(index)
            except (RequestError, TypeError, ValueError) as err:
                answers[index] = err
        if requests:
            try:
                scheduler = self._check_gate()
                decided = await scheduler.submit_many(requests)
            except (RequestError, HlcError) as err:
                decided = [err] * len(requests)
            for index, answer in zip(valid, decided, strict=True):
                answers[index] = answer
        self._count(answers)
        return answers

    # --- handlers ---

    @unary_rpc("Commit")
    async def commit(self, raw: bytes) -> bytes:
        self._check_enabled()  # a disabled service refuses the call itself, with its mark
        request = parse_request(raw, pb.CommitRequest)
        if not request.HasField("transaction"):
            raise invalid("CommitRequest.transaction is required")
        # A refusal keeps the gate's marks (a follower names its leader), as Abort's does.
        await self._admit()
        (answer,) = await self._decide([request.transaction])
        if not isinstance(answer, Committed | Aborted):
            raise RequestError(*refusal_of(answer))
        return result_to_wire(request.transaction.txn_id, answer)

    async def _decide_message(self, raw: bytes) -> bytes:
        """Decides the transactions of one serialized ``CommitStreamRequest``, bytes in and bytes
        out: the scheduler hands the message to the engine, which decodes, validates, decides,
        makes durable and encodes the response in Rust; this handler counts per message."""
        try:
            scheduler = await self._admit()
            result = await scheduler.submit_stream(raw)
        except ValueError as err:
            raise invalid(str(err)) from err
        except (RequestError, HlcError) as err:
            return self._refuse_message(raw, err)
        self._count_outcomes(result.committed, result.aborted, result.refused)
        return result.response

    def _refuse_message(self, raw: bytes, refusal: RequestError | HlcError) -> bytes:
        """Every transaction of a message the scheduler did not take gets ``refusal`` as its error
        result (the service's refusal path, not its hot path)."""
        try:
            items = decode_commit_request(raw)
        except ValueError as err:
            raise invalid(str(err)) from err
        if isinstance(refusal, RequestError):
            code, message = refusal.code, refusal.message
        else:
            code, message = status_code(refusal), str(refusal)
        results: list[Any] = []
        for item in items:
            if isinstance(item, Transaction):
                results.append((item.txn_id, code.value[0], message))
            else:  # malformed: its own error comes first
                txn_id, error = item
                results.append((txn_id, status_code(error).value[0], str(error)))
        self._count_outcomes(0, 0, len(results))
        return bytes(encode_commit_results(results))

    def _count_outcomes(self, committed: int, aborted: int, refused: int) -> None:
        for label, count in (("committed", committed), ("aborted", aborted), ("refused", refused)):
            if count:
                self.metrics.transactions.labels(label).inc(count)

    async def commit_stream(
        self, requests: AsyncIterator[bytes], context: Any
    ) -> AsyncIterator[bytes]:
        """Each request message is handed to the scheduler as soon as it arrives, so pipelined
        messages share batches; responses go out in request order (results carry their ids)."""
        try:
            self._check_enabled()  # a disabled service refuses the stream itself, with its mark
        except RequestError as err:
            await fail(self.metrics, "CommitStream", err, time.perf_counter(), context)
        current_call.set(context)  # the bound of a message held at the gate (_admit)
        # Each message's decision in request order; then None (the client ended the stream) or
        # StreamEndedError (the server is stopping: answer the refusal after what was handed over).
        order: asyncio.Queue[asyncio.Task[bytes] | StreamEndedError | None] = asyncio.Queue()

        async def read() -> None:
            ended: StreamEndedError | None = None
            iterator = aiter(requests)
            try:
                while (raw := await self.streams.next_request(iterator)) is not None:
                    order.put_nowait(asyncio.create_task(self._decide_message(raw)))
            except StreamEndedError as err:
                ended = err
            finally:
                order.put_nowait(ended)

        reader = asyncio.create_task(read())
        tasks: list[asyncio.Task[bytes]] = []
        try:
            while (item := await order.get()) is not None:
                started = time.perf_counter()
                if isinstance(item, StreamEndedError):
                    await fail(
                        self.metrics, "CommitStream", stopping_refusal(self.gate), started, context
                    )
                tasks.append(item)
                try:
                    response = await item
                except RequestError as err:
                    await fail(self.metrics, "CommitStream", err, started, context)
                tasks.pop()
                self.metrics.observe("CommitStream", "OK", started)
                yield response
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            while not order.empty():
                leftover = order.get_nowait()
                if isinstance(leftover, asyncio.Task):
                    tasks.append(leftover)
            for task in tasks:
                task.cancel()

    @unary_rpc("Abort")
    async def abort(self, raw: bytes) -> bytes:
        txn_id, start_ts = self._parse_id(raw, pb.AbortRequest)
        scheduler = await self._admit()
        try:
            answer = await scheduler.abort(txn_id, start_ts)
        except HlcError as err:
            raise RequestError(status_code(err), str(err)) from None
        return result_to_wire(txn_id, answer)

    @unary_rpc("GetTransactionStatus")
    async def get_transaction_status(self, raw: bytes) -> bytes:
        txn_id, start_ts = self._parse_id(raw, pb.TransactionStatusRequest)
        scheduler = await self._admit(reads=True)
        # status() may wait for the batch being written: keep it off the event loop.
        answer = await asyncio.to_thread(scheduler.status, txn_id, start_ts)
        if answer is None:
            response = pb.TransactionStatusResponse(known=False)
        else:
            response = pb.TransactionStatusResponse(
                known=True, result=pb.CommitResult.FromString(result_to_wire(txn_id, answer))
            )
        return bytes(response.SerializeToString())

    def handler(self) -> grpc.GenericRpcHandler:
        return service_handler(
            SERVICE_NAME,
            {
                "Commit": self.commit,
                "Abort": self.abort,
                "GetTransactionStatus": self.get_transaction_status,
            },
            {"CommitStream": self.commit_stream},
        )
