"""The gRPC timestamp oracle (``hlc-oracle serve``): one node serving ``hlc_oracle.v1``.

It builds on :mod:`hlc_oracle.cluster` and on :mod:`hlc_oracle.node` (the serving gate, the
timestamp window, the metrics), which never import it.

- :mod:`~hlc_oracle.server.app`: :class:`OracleServer`, the node's lifecycle;
- :mod:`~hlc_oracle.server.service`: the thin ``TimestampOracle`` handlers;
- :mod:`~hlc_oracle.server.data_dir`: one node per data dir (the ``LOCK`` file);
- :mod:`~hlc_oracle.server.startup`: what stops a node from starting, and the start-up steps
  around its data dir;
- :mod:`~hlc_oracle.server.certificates`: the TLS files, checked, and their expiry watched;
- :mod:`~hlc_oracle.server.logs`: operations;
  :mod:`~hlc_oracle.server.stderr_relay`: everything on stderr as JSON records.
"""

from hlc_oracle.server.app import OracleServer, serve
from hlc_oracle.server.service import SERVICE_NAME
from hlc_oracle.server.startup import StartupConfigError, StartupError

__all__ = [
    "SERVICE_NAME",
    "OracleServer",
    "StartupConfigError",
    "StartupError",
    "serve",
]
