"""Generated protobuf modules of the ``hlc_oracle.v1`` wire contract (``oracle.proto``).

``make build`` generates ``oracle_pb2.py`` and ``oracle_pb2.pyi`` here with grpcio-tools.
"""
