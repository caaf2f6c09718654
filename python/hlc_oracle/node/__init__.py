"""What one oracle node is, whoever serves it: below both :mod:`hlc_oracle.server` (gRPC) and
:mod:`hlc_oracle.cluster` (etcd), which build on it; it imports neither.

- :mod:`~hlc_oracle.node.gate`: :class:`~hlc_oracle.node.gate.ServingGate`, the one place that
  decides whether the node serves timestamps (health follows it);
- :mod:`~hlc_oracle.node.window`: the persisted timestamp window (its local store is a file in
  the data dir; the clustered one, in etcd, is :mod:`hlc_oracle.cluster.window_store`);
- :mod:`~hlc_oracle.node.metrics`: the node's Prometheus metrics, in their own registry.
"""
