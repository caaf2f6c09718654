"""Generated protobuf modules of the ``hlc_oracle.v1`` wire contract (``oracle.proto``).

Every build generates ``oracle_pb2.py`` and ``oracle_pb2.pyi`` here with grpcio-tools
(``rust/build.rs``, when maturin builds the package: ``make build``, ``pip install``, an sdist);
they are never checked in.

The trailing-metadata keys and values below are part of the wire contract too: the server sets
them, the client reads them, and both import them from here; so is :func:`status_code`, how a
``CommitError``'s code number reads as a gRPC status code.
"""

import grpc

from hlc_oracle._core import COMMIT_DEFAULTS

_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The gRPC status code of its wire number (``UNKNOWN`` for a number gRPC does not define)."""
    return _STATUS_CODES.get(number, grpc.StatusCode.UNKNOWN)


#: Trailing metadata the server puts on statuses it sends itself, so a client can tell them from
#: the network's. Its values are the ``REFUSAL_*`` constants.
REFUSAL_METADATA_KEY = "hlc-oracle-refusal"
#: On every UNAVAILABLE of the handlers: the oracle is up but refuses for now (starting, shutting
#: down, clock skew, window or log trouble). Worth retrying.
REFUSAL_NOT_SERVING = "not-serving"
#: A count above limits.max_count: the caller's request, not the server's load.
REFUSAL_OVER_LIMIT = "over-limit"
#: The service is disabled by this node's configuration (e.g. ``commit.enabled = false``): the
#: refusal is permanent, so clients do not retry it.
REFUSAL_DISABLED = "disabled"
#: A clustered follower: the leader (if known) is named by ``LEADER_METADATA_KEY``; clients go
#: there at once without counting a failure.
REFUSAL_NOT_LEADER = "not-leader"
#: How the message of every refusal by the serving gate begins (and of a node whose commit log is
#: not loaded yet): the call was refused before anything was decided. A ``CommitStream`` answer
#: carries a refused transaction's code and message without trailing metadata, so a client tells
#: a refusal (safe to send elsewhere) from another ``UNAVAILABLE`` (a decision write that failed or
#: was not confirmed: the outcome is unknown) by this prefix.
NOT_SERVING_PREFIX = "not serving: "

#: Trailing metadata on a follower's refusal: the leader's advertised address, empty when no
#: leader is known.
LEADER_METADATA_KEY = "hlc-oracle-leader"


def _varint_bytes(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def largest_transaction_message_bytes(
    max_read_keys: int, max_write_keys: int, max_key_bytes: int
) -> int:
    """Encoded size of a ``CommitStreamRequest`` (or ``CommitRequest``) carrying one transaction
    at the commit limits: every key of both sets at ``max_key_bytes``, the widest id and start
    timestamp. A message limit at least this large admits every transaction the limits allow."""
    key = 1 + _varint_bytes(max_key_bytes) + max_key_bytes  # tag, length, bytes
    # txn_id (tag + 10-byte varint) and start_ts (tag, length, physical < 2**52, logical < 4096,
    # node < 65536).
    fixed = (1 + 10) + (1 + 1 + (1 + 8) + (1 + 2) + (1 + 3))
    body = (max_read_keys + max_write_keys) * key + fixed
    return 1 + _varint_bytes(body) + body


#: The server's default ``limits.max_message_bytes`` and the client's default: the largest
#: transaction the default commit limits allow (10,000 read and 10,000 write keys of 4,096 bytes,
#: about 78.2 MiB), rounded up to whole MiB.
DEFAULT_MAX_MESSAGE_BYTES = (
    -(
        -largest_transaction_message_bytes(
            COMMIT_DEFAULTS["max_read_keys"],
            COMMIT_DEFAULTS["max_write_keys"],
            COMMIT_DEFAULTS["max_key_bytes"],
        )
        // 2**20
    )
    * 2**20
)
