"""The benchmarks' baseline: an empty grpc.aio service with the oracle's message shapes.

It serves ``hlc_oracle.v1.TimestampOracle``'s ``GetTimestamps`` and ``StreamTimestamps`` with the
same transport settings and the same parse-and-serialize work per message as the oracle, but
answers consecutive ranges from a plain counter: no clock, no gate, no window, no metrics. (A fixed
answer would be refused by the client, which never hands out a timestamp not above one it returned
before.) The oracle's figures divided by this one's show what the oracle adds over the transport.

    python bench/echo_server.py PORT_FILE    # binds 127.0.0.1:0, writes {"port": N} to PORT_FILE
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from hlc_oracle.proto import oracle_pb2 as pb

LOGICAL_BITS = 12
# The next timestamp to answer, in the integer form (physical << 12 | logical).
next_position = 1_795_000_000_000_000 << LOGICAL_BITS


def answer(raw: bytes) -> bytes:
    global next_position
    request = pb.GetTimestampsRequest.FromString(raw)
    physical, logical = divmod(next_position, 1 << LOGICAL_BITS)
    next_position += request.count
    first = pb.Timestamp(physical=physical, logical=logical, node=0)
    return pb.GetTimestampsResponse(first=first, count=request.count).SerializeToString()


async def get_timestamps(raw: bytes, context: Any) -> bytes:
    return answer(raw)


async def stream_timestamps(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for raw in requests:
        yield answer(raw)


async def main(port_file: Path) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "hlc_oracle.v1.TimestampOracle",
                {
                    "GetTimestamps": grpc.unary_unary_rpc_method_handler(get_timestamps),
                    "StreamTimestamps": grpc.stream_stream_rpc_method_handler(stream_timestamps),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    port_file.write_text(json.dumps({"port": port}))
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(1)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
