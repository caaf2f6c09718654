"""A real TCP proxy on loopback that can cut its connections, for tests of lost connections.

    with TcpProxy(server.target) as proxy:          # forwards 127.0.0.1:<proxy.port> to target
        client = OracleClient(proxy.target)
        proxy.hold_answers()                         # server-to-client bytes are held back ...
        proxy.wait_for_held_answer()                 # ... until some arrive,
        proxy.cut()                                  # then every connection is closed, unsent

Threads copy bytes both ways; ``cut()`` closes both sockets of every connection, so the client
sees its connection drop mid-call while the server has already answered. ``unplug()`` makes the
node unreachable (connections cut, new ones refused) while the server keeps serving, and
``plug()`` makes it reachable again on the same port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Self

from tests.started_fixture import StartedFixture


class TcpProxy(StartedFixture):
    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.upstream = (host, int(port))
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._holding = False
        self._held = threading.Event()
        self.cuts = 0
        self.port = 0
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None

    def start(self) -> Self:
        """Listens on a free loopback port (the same one again after :meth:`unplug`)."""
        self._listen()
        return self

    def _listen(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(
            target=self._accept, args=(self._listener,), name="tcp-proxy", daemon=True
        )
        self._acceptor.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            # Without TCP_NODELAY, Nagle's algorithm and delayed ACKs hold small messages back
            # for about 40 ms, a delay no direct connection has.
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, server]
            for source, sink, answers in ((client, server, False), (server, client, True)):
                threading.Thread(
                    target=self._copy, args=(source, sink, answers), daemon=True
                ).start()

    def _copy(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if answers and self._holding:
                    self._held.set()
                    continue  # dropped: cut() ends the connection before they could matter
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def hold_answers(self) -> None:
        """From now on, bytes from the server are not passed on (until :meth:`cut`)."""
        self._held.clear()
        self._holding = True

    def wait_for_held_answer(self, timeout: float = 10.0) -> bool:
        return self._held.wait(timeout)

    def cut(self) -> None:
        """Closes every connection at once, then forwards normally again."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
            self.cuts += 1
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._holding = False

    def unplug(self) -> None:
        """The node becomes unreachable: no listener (connections refused), every connection cut."""
        self.close()

    def plug(self) -> None:
        """The node is reachable again, on the same port."""
        self._listen()

    def close(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the acceptor thread blocked in accept(); close() alone does not.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        self.cut()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
