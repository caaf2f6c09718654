"""A small NTP server on loopback whose answers the test scripts: offset, silence, KoD, garbage.

It speaks enough of RFC 5905 for any client: it copies the client's transmit timestamp into the
origin field and stamps receive/transmit with its own clock shifted by ``offset_s``.
"""

from __future__ import annotations

import enum
import socket
import struct
import threading
import time
from typing import Self

from tests.support.started_fixture import StartedFixture

NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
_PACKET = struct.Struct("!BBbb II 4s QQQQ")


class Behaviour(enum.Enum):
    ANSWER = "answer"
    SILENT = "silent"
    KISS_OF_DEATH = "kod"
    GARBAGE = "garbage"
    LEAP_ALARM = "leap-alarm"
    BAD_STRATUM = "bad-stratum"
    WRONG_ORIGIN = "wrong-origin"
    CLIENT_MODE = "client-mode"


def to_ntp(unix_s: float) -> int:
    """Unix seconds to a 64-bit NTP timestamp (32.32 fixed point)."""
    return round((unix_s + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFF_FFFF_FFFF_FFFF


class NtpResponder(StartedFixture):
    """``with NtpResponder() as responder``: serves NTP on ``127.0.0.1:<free port>`` from a
    thread until the block ends."""

    def __init__(self, offset_s: float = 0.0, behaviour: Behaviour = Behaviour.ANSWER) -> None:
        self.offset_s = offset_s
        self.behaviour = behaviour
        self.kiss_code = b"RATE"
        self.stratum = 2
        self.queries = 0
        self.port = 0
        self._socket: socket.socket | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ntp-responder", daemon=True)

    def start(self) -> Self:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self.port = self._socket.getsockname()[1]
        self._thread.start()
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, *, offset_s: float | None = None, behaviour: Behaviour | None = None) -> None:
        # Plain attribute stores are atomic under the GIL; the server thread reads them per query.
        if offset_s is not None:
            self.offset_s = offset_s
        if behaviour is not None:
            self.behaviour = behaviour

    def _serve(self) -> None:
        sock = self._socket
        assert sock is not None, "started by start()"
        while not self._stop.is_set():
            try:
                request, client = sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            received = time.time()
            self.queries += 1
            answer = self._answer(request, received)
            if answer is not None:
                try:
                    sock.sendto(answer, client)
                except OSError:
                    return

    def _answer(self, request: bytes, received_s: float) -> bytes | None:
        behaviour = self.behaviour
        if behaviour is Behaviour.SILENT or len(request) < 48:
            return None
        if behaviour is Behaviour.GARBAGE:
            return b"\x1c\x02garbage"
        client_transmit = request[40:48]
        leap, mode, stratum, ref_id = 0, 4, self.stratum, b"LOCL"
        if behaviour is Behaviour.KISS_OF_DEATH:
            stratum, ref_id = 0, self.kiss_code
        elif behaviour is Behaviour.LEAP_ALARM:
            leap = 3
        elif behaviour is Behaviour.BAD_STRATUM:
            stratum = 16
        elif behaviour is Behaviour.CLIENT_MODE:
            mode = 3
        shift = self.offset_s
        receive = to_ntp(received_s + shift)
        transmit = to_ntp(time.time() + shift)
        header = _PACKET.pack(
            leap << 6 | 4 << 3 | mode,
            stratum,
            6,  # poll 2^6 s
            -20,  # precision ~1 us
            0,  # root delay
            0,  # root dispersion
            ref_id,
            receive,  # reference timestamp
            0,
            receive,
            transmit,
        )
        if behaviour is Behaviour.WRONG_ORIGIN:
            return header
        return header[:24] + client_transmit + header[32:]

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        if self._socket is not None:
            self._socket.close()
