"""A real TCP proxy on loopback that can cut its connections, or silently partition them, for
tests of lost connections and network faults.

    with TcpProxy(server.target) as proxy:          # forwards 127.0.0.1:<proxy.port> to target
        client = OracleClient(proxy.target)
        proxy.hold_answers()                         # server-to-client bytes are held back ...
        proxy.wait_for_held_answer()                 # ... until some arrive,
        proxy.cut()                                  # then every connection is closed, unsent

Threads copy bytes both ways; ``cut()`` closes both sockets of every connection, so the client
sees its connection drop mid-call while the server has already answered. ``unplug()`` makes the
node unreachable (connections cut, new ones refused) while the server keeps serving, and
``plug()`` makes it reachable again on the same port.

``partition()`` is a silent network partition: nothing is closed or refused, bytes simply stop
flowing both ways (each side's writes succeed, into buffers, and nothing arrives), as when
packets are dropped; a connection opened meanwhile is accepted and hangs the same way (and does
not reach the server: a dead server cannot answer through a partition either). ``heal()``
delivers what was held, in order, as TCP's retransmissions would. ``partition(from_pids=...)``
cuts only the connections opened by those processes (found by the client socket's owner in
``/proc``), so that a node can be cut off from its peers while clients still reach it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Self

from tests.support.started_fixture import StartedFixture


@dataclass
class _Connection:
    client: socket.socket
    client_port: int
    server: socket.socket | None = None
    #: Set while bytes may flow; cleared during a partition that applies to this connection.
    flowing: threading.Event = field(default_factory=threading.Event)
    closed: bool = False
    #: The pid of the process that opened it, once looked up (0: none of those asked about).
    owner: int | None = None

    def sockets(self) -> list[socket.socket]:
        return [self.client] + ([self.server] if self.server is not None else [])


class TcpProxy(StartedFixture):
    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.upstream = (host, int(port))
        self._lock = threading.Lock()
        self._connections: list[_Connection] = []
        self._holding = False
        self._held = threading.Event()
        #: The current partition: None (none), every connection, or those of these pids.
        self._partition: frozenset[int] | None = None
        self._partition_all = False
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
                client, address = listener.accept()
            except OSError:
                return  # closed
            connection = _Connection(client, address[1])
            with self._lock:
                self._connections.append(connection)
                if not self._partitioned(connection):
                    connection.flowing.set()
            threading.Thread(target=self._connect, args=(connection,), daemon=True).start()

    def _connect(self, connection: _Connection) -> None:
        connection.flowing.wait()  # through a partition, not even the connect gets through
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            self._close(connection)
            return
        # Without TCP_NODELAY, Nagle's algorithm and delayed ACKs hold small messages back
        # for about 40 ms, a delay no direct connection has.
        for sock in (connection.client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            connection.server = server
            if connection.closed:  # cut meanwhile
                server.close()
                return
        client = connection.client
        for source, sink, answers in ((client, server, False), (server, client, True)):
            threading.Thread(
                target=self._copy, args=(connection, source, sink, answers), daemon=True
            ).start()

    def _copy(
        self, connection: _Connection, source: socket.socket, sink: socket.socket, answers: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if answers and self._holding:
                    self._held.set()
                    continue  # dropped: cut() ends the connection before they could matter
                connection.flowing.wait()
                sink.sendall(data)
        connection.flowing.wait()  # a close, too, crosses a partition only once it heals
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def hold_answers(self) -> None:
        """From now on, bytes from the server are not passed on (until :meth:`cut`)."""
        self._held.clear()
        self._holding = True

    def wait_for_held_answer(self, timeout: float = 10.0) -> bool:
        return self._held.wait(timeout)

    def partition(self, from_pids: Collection[int] | None = None) -> None:
        """Silently partitions every connection, or only those opened by ``from_pids`` (see
        the module docstring), until :meth:`heal`."""
        with self._lock:
            self._partition_all = from_pids is None
            self._partition = frozenset(from_pids or ())
            for connection in self._connections:
                if self._partitioned(connection):
                    connection.flowing.clear()

    def heal(self) -> None:
        """Ends the partition: held bytes (and closes) go through, new connections connect."""
        with self._lock:
            self._partition, self._partition_all = None, False
            for connection in self._connections:
                connection.flowing.set()

    def _partitioned(self, connection: _Connection) -> bool:
        if self._partition is None:
            return False
        if self._partition_all:
            return True
        if connection.owner is None:
            found = socket_owner(connection.client_port, self.port, self._partition)
            connection.owner = found or 0
        return connection.owner in self._partition

    def _close(self, connection: _Connection) -> None:
        connection.closed = True
        for sock in connection.sockets():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        connection.flowing.set()  # wakes its threads, which find the sockets closed

    def cut(self) -> None:
        """Closes every connection at once, then forwards normally again."""
        with self._lock:
            connections, self._connections = self._connections, []
            self.cuts += 1
            for connection in connections:
                self._close(connection)
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
        self.heal()
        self.cut()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)


def socket_owner(local_port: int, remote_port: int, pids: Collection[int]) -> int | None:
    """Which of ``pids`` holds the loopback TCP socket from ``local_port`` to ``remote_port``
    (from ``/proc/net/tcp`` and each process's open files), or None."""
    inode = None
    with contextlib.suppress(OSError), open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1].split(":"), fields[2].split(":")
            if int(local[1], 16) == local_port and int(remote[1], 16) == remote_port:
                inode = fields[9]
                break
    if inode is None:
        return None
    wanted = f"socket:[{inode}]"
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                        return pid
    return None
