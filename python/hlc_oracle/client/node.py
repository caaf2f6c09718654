"""One oracle node as the client sees it: its channel, its RPC methods and its streams."""

from __future__ import annotations

from typing import Any

import grpc

from hlc_oracle.client.channel import NodeChannel
from hlc_oracle.client.streams import commit_streams, timestamp_stream
from hlc_oracle.client.wire import TIMESTAMP_ORACLE_METHODS, TRANSACTIONS_METHODS
from hlc_oracle.proto import oracle_pb2 as pb


class OracleNode:
    """The channel to one node (``target``, ``host:port``) and what the client calls on it.

    Unary methods are gRPC multicallables (call them with ``timeout=`` and
    ``wait_for_ready=node.wait_for_ready``); ``timestamps`` is the pipelined
    ``StreamTimestamps`` call and ``commits`` a pool of ``CommitStream`` calls
    (:func:`~hlc_oracle.client.streams.commit_streams`), opened on first use. When the channel is
    replaced (:class:`~hlc_oracle.client.channel.NodeChannel`), all of them move to the new one.
    """

    def __init__(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None,
        options: list[tuple[str, Any]] | None,
        wait_for_ready: bool = True,
    ) -> None:
        self.target = target
        #: Whether calls wait for the channel to connect (one target) or fail fast (several).
        self.wait_for_ready = wait_for_ready
        self.connection = NodeChannel(target, credentials, options, self._moved)
        channel = self.connection.channel
        self._bind_methods(channel)
        self.timestamps = timestamp_stream(channel, wait_for_ready)
        self.commits = commit_streams(channel, wait_for_ready)

    def _moved(self, channel: grpc.aio.Channel) -> None:
        self._bind_methods(channel)
        self.timestamps.move_to(channel)
        self.commits.move_to(channel)

    def _bind_methods(self, channel: grpc.aio.Channel) -> None:
        self.get_timestamps = channel.unary_unary(
            TIMESTAMP_ORACLE_METHODS + "GetTimestamps",
            request_serializer=pb.GetTimestampsRequest.SerializeToString,
            response_deserializer=pb.GetTimestampsResponse.FromString,
        )
        self.observe = channel.unary_unary(
            TIMESTAMP_ORACLE_METHODS + "Observe",
            request_serializer=pb.ObserveRequest.SerializeToString,
            response_deserializer=pb.ObserveResponse.FromString,
        )
        self.get_status = channel.unary_unary(
            TIMESTAMP_ORACLE_METHODS + "GetStatus",
            request_serializer=pb.GetStatusRequest.SerializeToString,
            response_deserializer=pb.GetStatusResponse.FromString,
        )
        self.commit = channel.unary_unary(
            TRANSACTIONS_METHODS + "Commit",
            request_serializer=pb.CommitRequest.SerializeToString,
            response_deserializer=pb.CommitResult.FromString,
        )
        self.abort = channel.unary_unary(
            TRANSACTIONS_METHODS + "Abort",
            request_serializer=pb.AbortRequest.SerializeToString,
            response_deserializer=pb.CommitResult.FromString,
        )
        self.transaction_status = channel.unary_unary(
            TRANSACTIONS_METHODS + "GetTransactionStatus",
            request_serializer=pb.TransactionStatusRequest.SerializeToString,
            response_deserializer=pb.TransactionStatusResponse.FromString,
        )

    def ready(self) -> bool:
        """Whether the channel is connected now."""
        return self.connection.ready()

    async def connect(self, deadline: float) -> None:
        """Before an attempt: waits (until ``deadline``, loop time) for a channel that is down to
        connect again, or, for a node that is not waited for, probes it in the background."""
        await self.connection.connect(deadline, self.wait_for_ready)

    async def close(self) -> None:
        """Ends the streams (failing what waits on them), then closes the channel."""
        await self.commits.close()
        await self.timestamps.close()
        await self.connection.close()
