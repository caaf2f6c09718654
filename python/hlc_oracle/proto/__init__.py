"""Generated protobuf modules of the ``hlc_oracle.v1`` wire contract (``oracle.proto``).

``make build`` generates ``oracle_pb2.py`` and ``oracle_pb2.pyi`` here with grpcio-tools.

The trailing-metadata keys and values below are part of the wire contract too: the server sets
them, the client reads them, and both import them from here.
"""

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

#: Trailing metadata on a follower's refusal: the leader's advertised address, empty when no
#: leader is known.
LEADER_METADATA_KEY = "hlc-oracle-leader"
