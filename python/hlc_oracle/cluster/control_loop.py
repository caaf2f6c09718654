"""The leadership thread: a clustered node's own event loop for its etcd and leadership work.

Request work (gRPC handlers, group commit's answers) fills the server's event loop under load. The
lease keepalives, the watch of the leader key, the fenced window renewals, the election and the
decision writes must never wait behind it: a leader saturated by requests keeps its lease. So they
run here, on a thread of their own with its own asyncio event loop:

- the etcd client's ``grpc.aio`` channel is created, and used, only on this loop;
- another event loop reaches it with ``await control.call(coroutine)``, never by blocking on a
  result; a thread without a loop gets a ``concurrent.futures.Future`` from
  :meth:`~hlc_oracle.loop_thread.LoopThread.submit` and adds a callback to it (the thread and its
  loop: :class:`~hlc_oracle.loop_thread.LoopThread`);
- nothing on this loop waits for another loop, so neither can deadlock the other.
"""

from __future__ import annotations

from hlc_oracle.loop_thread import LoopThread


class ControlLoop(LoopThread):
    """The leadership thread and its event loop; see the module docstring."""

    def __init__(self, name: str = "hlc-oracle-leadership") -> None:
        super().__init__(name)
