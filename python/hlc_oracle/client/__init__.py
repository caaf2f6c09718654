"""Clients of the ``hlc_oracle.v1`` services (``TimestampOracle`` and ``Transactions``).

- :class:`AsyncOracleClient` (asyncio) and :class:`OracleClient` (blocking, thread-safe; it runs an
  :class:`AsyncOracleClient` on a private event-loop thread).
- ``get_timestamp()`` calls made concurrently from one process are merged, as TiDB PD's client
  does: :class:`TimestampBatcher` collects the callers waiting while a request is in flight, asks
  for all of them in one message on one stream (``count`` = number of callers), and splits the
  range back, so each caller still gets a distinct timestamp.
- ``get_timestamps(n)`` returns a :class:`~hlc_oracle.TimestampRange`; concurrent calls merge
  the same way (each gets its own contiguous part); ``get_timestamps_unary(n)`` is one
  ``GetTimestamps`` call of its own.
- ``commit(txn)`` calls made concurrently are merged the same way (:class:`CommitBatcher`: one
  ``CommitStream`` message carries every waiting caller's transaction); ``abort(txn_id)`` and
  ``transaction_status(txn_id)`` are unary. ``commit_many(txns)`` sends many transactions in
  one call (one or a few ``CommitStream`` messages) and returns their results in order;
  concurrent calls are merged into shared messages the same way.
- Every call has a timeout that bounds it end to end; within it, calls wait for the channel to
  connect, and ``UNAVAILABLE`` and lost connections are retried (commits with the same id).
  Failures raise :class:`OracleError` (or a subclass) carrying the gRPC status code.

One concept per module:

=====================  ==========================================================================
``errors``             the error types and how a gRPC failure becomes one (honestly)
``channel``            how the channel connects and reconnects (its options)
``node``               one node: its channel, RPC methods and streams
``targets``            several nodes: target lists, the leader's redirects, moving on
``wire``               conversions between protobuf messages and the package's values
``status``             ``GetStatus`` as :class:`OracleStatus`
``retry``              how the client retries (:class:`RetryPolicy`, :func:`with_retries`)
``timestamp_batcher``  merging concurrent timestamp requests (:class:`TimestampBatcher`)
``streams``            pipelined bidirectional streams (:class:`PipelinedStream`)
``commit_batcher``     merging concurrent commits into ``CommitStream`` messages
``commit_many``        many transactions in one call (``commit_many(txns)``), results in order
``pending_commits``    one message across attempts: refused transactions go again, in order
``credentials``        TLS credentials (:func:`channel_credentials`)
``handshake``          telling a failed TLS handshake from an unreachable oracle, and why
``async_client``       :class:`AsyncOracleClient`
``blocking_client``    :class:`OracleClient`
=====================  ==========================================================================

Import from ``hlc_oracle.client``; the modules are the layout, not the interface.
"""

from __future__ import annotations

from hlc_oracle.client.async_client import DEFAULT_TARGET, AsyncOracleClient
from hlc_oracle.client.blocking_client import OracleClient
from hlc_oracle.client.channel import CHANNEL_OPTIONS
from hlc_oracle.client.commit_batcher import CommitBatcher
from hlc_oracle.client.commit_many import CommitManyResult, CommitManyResults
from hlc_oracle.client.credentials import channel_credentials
from hlc_oracle.client.errors import (
    ConnectionLostError,
    OracleDisabledError,
    OracleError,
    OracleNotServingError,
    OracleOutcomeUnknownError,
    OracleTimeoutError,
    OracleTimestampRegressionError,
    OracleTlsHandshakeError,
    OracleUnavailableError,
    error_from_rpc,
)
from hlc_oracle.client.retry import RetryPolicy, with_retries
from hlc_oracle.client.status import OracleStatus
from hlc_oracle.client.streams import (
    PipelinedStream,
    StreamPool,
    commit_stream,
    commit_streams,
    timestamp_stream,
)
from hlc_oracle.client.targets import parse_targets
from hlc_oracle.client.timestamp_batcher import TimestampBatcher
from hlc_oracle.client.wire import (
    CommitAnswer,
    outcome_from_wire,
    range_from_wire,
    timestamp_from_wire,
    timestamp_to_wire,
    transaction_to_wire,
)

__all__ = [
    "CHANNEL_OPTIONS",
    "DEFAULT_TARGET",
    "AsyncOracleClient",
    "CommitAnswer",
    "CommitBatcher",
    "CommitManyResult",
    "CommitManyResults",
    "ConnectionLostError",
    "OracleClient",
    "OracleDisabledError",
    "OracleError",
    "OracleNotServingError",
    "OracleOutcomeUnknownError",
    "OracleStatus",
    "OracleTimeoutError",
    "OracleTimestampRegressionError",
    "OracleTlsHandshakeError",
    "OracleUnavailableError",
    "PipelinedStream",
    "RetryPolicy",
    "StreamPool",
    "TimestampBatcher",
    "channel_credentials",
    "commit_stream",
    "commit_streams",
    "error_from_rpc",
    "outcome_from_wire",
    "parse_targets",
    "range_from_wire",
    "timestamp_from_wire",
    "timestamp_stream",
    "timestamp_to_wire",
    "transaction_to_wire",
    "with_retries",
]
