"""The benchmarks' baseline: an empty grpc.aio service with the oracle's message shapes.

It serves ``hlc_oracle.v1.TimestampOracle``'s ``GetTimestamps`` and ``StreamTimestamps`` with the
same transport settings and the same parse-and-serialize work per message as the oracle, but
answers consecutive ranges from a plain counter: no clock, no gate, no window, no metrics. (A fixed
answer would be refused by the client, which never hands out a timestamp not above one it returned
before.) The oracle's figures divided by this one's show what the oracle adds over the transport.

It also serves ``hlc_oracle.v1.Transactions``' ``CommitStream``: each request message is answered
at once with one committed ``CommitResult`` per transaction (counted in Rust by
``count_commit_request``, the scan the oracle's scheduler starts with), all the same result of the
size of a real one, repeated: no engine, no log, no fsync, no task per message. The client matches
a message's results to its transactions by position and count, so it takes these as it takes the
oracle's. What this costs is what grpcio costs on the machine: the floor of the stream path.

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
from hlc_oracle._core import count_commit_request
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


#: One ``CommitStreamResponse`` result, committed, with an id and a timestamp as wide as the
#: benchmarks' (ids from 10**12, a timestamp of today): a response is this, once per transaction.
COMMITTED = pb.CommitStreamResponse(
    results=[
        pb.CommitResult(
            txn_id=10**12,
            commit_ts=pb.Timestamp(physical=1_795_000_000_000_000, logical=1, node=1),
        )
    ]
).SerializeToString()
#: The oracle's bench servers take messages up to this size (``--max-message-bytes``).
MAX_MESSAGE_BYTES = 4 << 20


async def commit_stream(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for raw in requests:
        yield COMMITTED * count_commit_request(raw)


async def main(port_file: Path) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "hlc_oracle.v1.TimestampOracle",
                {
                    "GetTimestamps": grpc.unary_unary_rpc_method_handler(get_timestamps),
                    "StreamTimestamps": grpc.stream_stream_rpc_method_handler(stream_timestamps),
                },
            ),
            grpc.method_handlers_generic_handler(
                "hlc_oracle.v1.Transactions",
                {"CommitStream": grpc.stream_stream_rpc_method_handler(commit_stream)},
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
