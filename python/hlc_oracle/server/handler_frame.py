"""The frame every RPC handler of both services shares: the refusal type, the gate's refusal, the
request parse, and the timer / fail / observe around each request.

A handler's own work takes the request's bytes and returns the response's bytes, raising
:class:`RequestError` for any non-OK answer; :func:`unary_rpc` times it, counts it in
``hlc_oracle_requests{method, code}`` and its latency histogram, and turns a :class:`RequestError`
into the call's status, message and trailing metadata (:meth:`RequestError.trailing_metadata`).
A stream handler does the same for each message, with :func:`fail`.

A request that finds the gate :attr:`~hlc_oracle.node.gate.ServingGate.settling` (a node taking
over as leader, a follower about to learn its leader) is held, not refused (:func:`admit`): for at
most :data:`HOLD_MAX_S`, and never past the call's own deadline less :data:`HOLD_MARGIN_S`, so a
held call is always answered (served, or refused naming the leader) before its client gives up.
The frame keeps the call's context in :data:`current_call` for that bound.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from hlc_oracle.node.gate import ServingGate
from hlc_oracle.node.metrics import ServerMetrics
from hlc_oracle.proto import (
    LEADER_METADATA_KEY,
    NOT_SERVING_PREFIX,
    REFUSAL_METADATA_KEY,
    REFUSAL_NOT_LEADER,
    REFUSAL_NOT_SERVING,
)
from hlc_oracle.server.wire import WireCheckError, check_wire


class RequestError(Exception):
    """A request answered with a non-OK status."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        refusal: str | None = None,
        leader: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.refusal = refusal or (
            REFUSAL_NOT_SERVING if code == grpc.StatusCode.UNAVAILABLE else None
        )
        self.leader = leader

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        metadata: tuple[tuple[str, str], ...] = (
            () if self.refusal is None else ((REFUSAL_METADATA_KEY, self.refusal),)
        )
        if self.leader is not None:
            metadata += ((LEADER_METADATA_KEY, self.leader),)
        return metadata


def invalid(message: str) -> RequestError:
    """``INVALID_ARGUMENT`` with ``message``."""
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def gate_refusal(gate: ServingGate, reads: bool = False) -> RequestError | None:
    """The ``UNAVAILABLE`` every gated handler answers while ``gate`` blocks (``reads``: the
    read gate of ``GetTransactionStatus``); a clustered node that does not lead marks it
    not-leader and names the leader it knows (or "")."""
    refusal = gate.read_refusal() if reads else gate.refusal()
    if refusal is None:
        return None
    redirect = gate.redirect
    if redirect is not None:
        return RequestError(
            grpc.StatusCode.UNAVAILABLE,
            f"{NOT_SERVING_PREFIX}{refusal}",
            refusal=REFUSAL_NOT_LEADER,
            leader=redirect,
        )
    return RequestError(grpc.StatusCode.UNAVAILABLE, f"{NOT_SERVING_PREFIX}{refusal}")


def check_gate(gate: ServingGate, reads: bool = False) -> None:
    """Raises :func:`gate_refusal`'s answer while ``gate`` blocks."""
    refused = gate_refusal(gate, reads)
    if refused is not None:
        raise refused


#: The longest a request is held while the gate is settling (a failover's transition takes tens
#: of milliseconds; one that takes longer is refused as before, and the client retries).
HOLD_MAX_S = 1.0
#: What a held request leaves of its call's deadline, to carry the answer back in time.
HOLD_MARGIN_S = 0.05

#: The gRPC context of the call being handled (set by the frame), for its deadline.
current_call: contextvars.ContextVar[Any] = contextvars.ContextVar("current_call", default=None)


def hold_budget() -> float:
    """How long the current call may be held: :data:`HOLD_MAX_S`, or less by its deadline."""
    context = current_call.get()
    remaining: float | None = context.time_remaining() if context is not None else None
    if remaining is None:
        return HOLD_MAX_S
    return max(0.0, min(HOLD_MAX_S, remaining - HOLD_MARGIN_S))


async def admit(gate: ServingGate, reads: bool = False) -> None:
    """:func:`check_gate`, after holding the request while ``gate`` is settling (see the module
    docstring): a final refusal is immediate; a serving gate costs one attribute read more."""
    if gate.settling and (not reads or gate.read_refusal() is not None):
        await gate.hold(hold_budget())
    check_gate(gate, reads)


def stopping_refusal(gate: ServingGate) -> RequestError:
    """What an open stream ends with at a graceful stop (:mod:`.open_streams`): the gate's
    refusal, the gate being blocked by then."""
    return gate_refusal(gate) or RequestError(
        grpc.StatusCode.UNAVAILABLE, "not serving: the server is shutting down"
    )


def check_request_wire(raw: bytes, request: Any) -> None:
    """``INVALID_ARGUMENT`` when the parser truncated or dropped a field of ``raw``. A request that
    serializes back to the same bytes with no unknown fields (what every well-behaved client
    sends) needs no closer look."""
    request.DiscardUnknownFields()
    if request.SerializeToString() == raw:
        return
    try:
        check_wire(raw, request.DESCRIPTOR)
    except WireCheckError as err:
        raise invalid(str(err)) from err


MessageT = TypeVar("MessageT", bound=Message)


def parse_request(raw: bytes, kind: type[MessageT], *, check_wire: bool = True) -> MessageT:
    """``raw`` as a ``kind`` message; ``INVALID_ARGUMENT`` ("malformed <kind>: ...") when it does
    not parse, or (``check_wire``) when the parser truncated or dropped a field."""
    try:
        request = kind.FromString(raw)
    except DecodeError as err:
        raise invalid(f"malformed {kind.__name__}: {err}") from err
    if check_wire:
        check_request_wire(raw, request)
    return request


async def fail(
    metrics: ServerMetrics, method: str, err: RequestError, started: float, context: Any
) -> NoReturn:
    """Counts ``method`` as ended with ``err``'s code and ends the call with it."""
    metrics.observe(method, err.code.name, started)
    await context.abort(err.code, err.message, err.trailing_metadata())
    raise AssertionError("context.abort returned")  # pragma: no cover


class Service(Protocol):
    """What :func:`unary_rpc` needs of the service it frames."""

    @property
    def metrics(self) -> ServerMetrics: ...


ServiceT = TypeVar("ServiceT", bound=Service)
Work = Callable[[ServiceT, bytes], Awaitable[bytes]]
Handler = Callable[[ServiceT, bytes, Any], Awaitable[bytes]]


def unary_rpc(method: str) -> Callable[[Work[ServiceT]], Handler[ServiceT]]:
    """Makes ``work(service, raw) -> bytes`` the gRPC handler of the unary call ``method``:
    timed, counted, and a :class:`RequestError` answered as the call's status."""

    def frame(work: Work[ServiceT]) -> Handler[ServiceT]:
        @functools.wraps(work)
        async def handler(service: ServiceT, raw: bytes, context: Any) -> bytes:
            started = time.perf_counter()
            current_call.set(context)
            try:
                response = await work(service, raw)
            except RequestError as err:
                await fail(service.metrics, method, err, started, context)
            service.metrics.observe(method, "OK", started)
            return response

        return handler

    return frame


UnaryHandler = Callable[[bytes, Any], Awaitable[bytes]]
StreamHandler = Callable[[AsyncIterator[bytes], Any], AsyncIterator[bytes]]


def service_handler(
    service_name: str, unary: dict[str, UnaryHandler], streams: dict[str, StreamHandler]
) -> grpc.GenericRpcHandler:
    """The gRPC handler of ``service_name``: its unary and bidirectional-stream methods by name,
    bytes in and bytes out (no deserializers: the handlers parse, see :func:`parse_request`)."""
    methods: dict[str, Any] = {
        name: grpc.unary_unary_rpc_method_handler(handler) for name, handler in unary.items()
    }
    for name, stream in streams.items():
        methods[name] = grpc.stream_stream_rpc_method_handler(stream)
    return grpc.method_handlers_generic_handler(service_name, methods)
