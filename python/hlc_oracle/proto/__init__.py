"""Generated protobuf modules of the ``hlc_oracle.v1`` wire contract (``oracle.proto``).

``make build`` generates ``oracle_pb2.py`` and ``oracle_pb2.pyi`` here with grpcio-tools.
"""

#: Trailing metadata the server puts on statuses it sends itself, so a client can tell them from
#: the network's: "not-serving" on every UNAVAILABLE of the handlers (the oracle is up but refuses:
#: starting, shutting down, clock skew, window or log trouble), "over-limit" on a count above
#: limits.max_count (the caller's request, not the server's load).
REFUSAL_METADATA_KEY = "hlc-oracle-refusal"
