"""Calls on a plain gRPC channel, outside the client library, as another client would make them:
the health service, one unary call by its full method name, and the refusal a call gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hlc_oracle.proto import REFUSAL_METADATA_KEY
from pytest import raises

#: Far above a loaded machine's answer time: these calls assert outcomes, not speed.
TIMEOUT_S = 5.0


def health(target: str, service: str = "", timeout_s: float = TIMEOUT_S) -> int:
    """The gRPC health status of ``service`` (``""``: the node as a whole)."""
    with grpc.insecure_channel(target) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
        )
        return int(response.status)


def call(target: str, method: str, request: bytes | Message, timeout_s: float = TIMEOUT_S) -> bytes:
    """One unary call by its full name (``hlc_oracle.v1.Transactions/Commit``, a leading ``/``
    optional), the raw response bytes; raises ``grpc.RpcError``."""
    raw = request if isinstance(request, bytes) else request.SerializeToString()
    with grpc.insecure_channel(target) as channel:
        answer: bytes = channel.unary_unary(f"/{method.lstrip('/')}")(raw, timeout=timeout_s)
        return answer


@dataclass(frozen=True)
class Refusal:
    """How a call was refused: its status code, details and trailing metadata."""

    code: grpc.StatusCode
    details: str
    metadata: dict[str, Any]

    @property
    def mark(self) -> str | None:
        """The refusal mark (``REFUSAL_METADATA_KEY``), if the server set one."""
        mark = self.metadata.get(REFUSAL_METADATA_KEY)
        return None if mark is None else str(mark)


def refusal_of(
    target: str, method: str, request: bytes | Message, timeout_s: float = TIMEOUT_S
) -> Refusal:
    """The refusal of one unary call (see :func:`call`); fails the test if it is answered."""
    with raises(grpc.RpcError) as raised:
        call(target, method, request, timeout_s)
    error: Any = raised.value
    return Refusal(error.code(), error.details(), dict(error.trailing_metadata() or ()))
